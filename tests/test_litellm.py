"""LiteLLM calls (``mock_response``, no network) recorded into, and routed on, a real
redis-server: exact totals across Router processes, limits shared across replicas, Redis down.

Written against LiteLLM 1.110.2.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, cast

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network at import

import httpx
import litellm
import pytest
from litellm import Router

from redis_telemetry import AsyncTelemetryStore, CompletionEvent, ConnectionSettings, TelemetryStore
from redis_telemetry.integrations.litellm import SharedStateRouting, TelemetryLogger
from redis_telemetry.tier import TierSettings

from .servers import RedisServer, free_port

ROOT = Path(__file__).resolve().parents[1]
# LiteLLM 1.110's own types make pydantic warn when it builds their schemas: not ours
pytestmark = pytest.mark.filterwarnings("ignore:.*using the `ReadOnly` qualifier:UserWarning")
# One event loop for the module's async tests, as an app has: LiteLLM's logging worker loses
# failure callbacks queued on a loop after the first one has closed.
ONE_LOOP = pytest.mark.asyncio(loop_scope="module")
MESSAGES = [{"role": "user", "content": "hi"}]
NO_RETRIES = ConnectionSettings(socket_timeout=1.0, socket_connect_timeout=0.5, retries=0)
LOG = "redis_telemetry.integrations.litellm"


def deployments(bad: str | None = None) -> list[dict[str, Any]]:
    """Two deployments of one model group; ``bad`` answers every call with a 429."""
    return [
        {
            "model_name": "coder",
            "litellm_params": {
                "model": model,
                "api_key": "sk-test",
                "mock_response": "litellm.RateLimitError" if dep == bad else "hello",
            },
            "model_info": {"id": dep},
        }
        for dep, model in (("dep-a", "openai/gpt-4o-mini"), ("dep-b", "openai/gpt-4o"))
    ]


def settle(logger: TelemetryLogger, calls: int, timeout: float = 30.0) -> None:
    """Wait until LiteLLM handed ``calls`` calls to the logger (its own logging worker runs
    the hooks a little later), then until they are written."""
    deadline = time.monotonic() + timeout
    while logger.stats().submitted < calls:
        assert time.monotonic() < deadline, logger.stats()
        time.sleep(0.01)  # poll interval of a readiness check
    assert logger.flush(timeout)


async def asettle(logger: TelemetryLogger, calls: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while logger.stats().submitted < calls:
        assert time.monotonic() < deadline, logger.stats()
        await asyncio.sleep(0.01)  # poll interval of a readiness check
    assert await logger.aflush(timeout)


# -- worker processes (module level, so that spawn can import them) ---------------------------


def replica(url: str, calls: int, use_async: bool, exploration: float = 0.05) -> dict[str, Any]:
    """One Router process: ``calls`` mock completions, recorded and routed on the store."""

    async def run() -> dict[str, Any]:
        store: Any = (AsyncTelemetryStore if use_async else TelemetryStore).from_url(url)
        logger = TelemetryLogger(store)
        litellm.callbacks = [logger]
        router = Router(model_list=deployments(), num_retries=0)
        router.register_plugin(SharedStateRouting(router, store, exploration=exploration))
        cost, used = 0.0, []
        for i in range(calls):
            response = await router.acompletion(
                model="coder", messages=MESSAGES, metadata={"session_id": f"replica-{os.getpid()}"}
            )
            cost += response._hidden_params["response_cost"]
            used.append(response._hidden_params["model_id"])
            assert i == 0 or response.usage.total_tokens == 30
        await asettle(logger, calls)
        stats = logger.stats()
        if use_async:
            await store.aclose()
        return {"cost": cost, "used": used, "written": stats.written, "dropped": stats.dropped}

    return asyncio.run(run())


def limited_replica(url: str) -> dict[str, Any]:
    """A replica whose dep-b answers 429: it calls until it meets the limit once."""

    async def run() -> dict[str, Any]:
        store = AsyncTelemetryStore.from_url(url)
        logger = TelemetryLogger(store, cooldown_secs=600)  # outlasts the other replicas' calls
        litellm.callbacks = [logger]
        router = Router(model_list=deployments(bad="dep-b"), num_retries=0)
        router.register_plugin(SharedStateRouting(router, store, exploration=1.0))
        calls = 0
        for attempt in range(1, 11):  # exploration=1.0 tries the unknown dep-b by the 2nd call
            calls = attempt
            try:
                await router.acompletion(model="coder", messages=MESSAGES)
            except litellm.RateLimitError:
                break
        await asettle(logger, calls)
        stats = logger.stats()
        await store.aclose()
        return {"calls": calls, "limits": stats.limits}

    return asyncio.run(run())


def healthy_replica(url: str, calls: int) -> list[str]:
    """A replica configured like the limited one: which deployment served each call."""

    async def run() -> list[str]:
        store = AsyncTelemetryStore.from_url(url)
        router = Router(model_list=deployments(bad="dep-b"), num_retries=0)
        router.register_plugin(SharedStateRouting(router, store, exploration=0.5))
        used = []
        for _ in range(calls):
            response = await router.acompletion(model="coder", messages=MESSAGES)
            used.append(response._hidden_params["model_id"])
        await store.aclose()
        return used

    return asyncio.run(run())


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture
def server_url(redis_server: RedisServer) -> str:
    with redis_server.client() as c:
        c.flushall()
    return redis_server.url


@pytest.fixture(autouse=True)
def _no_global_callbacks() -> Iterator[None]:
    """Each test starts with no callback: LiteLLM keeps the ones it has seen in lists of its
    own, and skips a new logger whose class and settings match one there (the old store's)."""
    litellm.logging_callback_manager._reset_all_callbacks()
    yield
    litellm.logging_callback_manager._reset_all_callbacks()


def dead_url() -> str:
    return f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there


# -- recording --------------------------------------------------------------------------------


@ONE_LOOP
async def test_async_calls_record_tokens_cost_latency_and_session(server_url: str) -> None:
    store = AsyncTelemetryStore.from_url(server_url)
    logger = TelemetryLogger(store)
    litellm.callbacks = [logger]
    router = Router(model_list=deployments(), num_retries=0)
    cost = 0.0
    for _ in range(10):
        response = await router.acompletion(
            model="coder", messages=MESSAGES, metadata={"session_id": "agent-1"}
        )
        cost += response._hidden_params["response_cost"]
    # LiteLLM runs its hooks in the background, after each call returns: aflush waits for them
    assert await logger.aflush(30)
    assert logger.stats().written == 10
    perfs = {p.model: p for p in await store.all_model_performances()}
    assert set(perfs) <= {"dep-a", "dep-b"}
    assert sum(p.successful_completions for p in perfs.values()) == 10
    assert sum(p.tokens.total for p in perfs.values()) == 10 * 30
    assert sum(p.tokens.input for p in perfs.values()) == 10 * 10
    assert sum(p.total_cost_usd for p in perfs.values()) == pytest.approx(cost, rel=1e-9)
    assert cost > 0
    usage = await store.session_usage("agent-1")
    assert usage.totals.message_count == 10
    events = await store.events(next(iter(perfs)))
    assert all(0 <= e.latency_ms < 5000 for e in events)
    await store.aclose()


def test_a_flush_waits_for_the_calls_litellm_started_and_no_longer_than_its_timeout() -> None:
    import fakeredis

    store = TelemetryStore(fakeredis.FakeRedis())
    logger = TelemetryLogger(store, exit_timeout=None)
    started = {"litellm_call_id": "call-1", "standard_logging_object": {"model": "m"}}
    logger.log_pre_api_call("m", MESSAGES, started)
    assert not logger.flush(0.2)  # LiteLLM has not reported the call yet
    logger.log_success_event(started, None, None, None)
    assert logger.flush(30)
    assert store.model_performance("m").successful_completions == 1
    logger.log_pre_api_call("m", MESSAGES, {"litellm_call_id": None})  # no id: not waited for
    assert logger.flush(30)


def test_only_litellms_public_api_is_imported() -> None:
    """The integration imports LiteLLM's documented entry points, no private module (such as
    ``litellm.litellm_core_utils``), which may change in any release."""
    import ast

    public = {
        "litellm",
        "litellm.exceptions",
        "litellm.router",
        "litellm.types.router",
        "litellm.integrations.custom_logger",
    }
    found = set()
    for path in (ROOT / "redis_telemetry" / "integrations" / "litellm").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
    used = {name for name in found if name.split(".")[0] == "litellm"}
    assert used
    assert used <= public, used - public


def test_sync_calls_record_through_a_blocking_store(server_url: str) -> None:
    store = TelemetryStore.from_url(server_url)
    logger = TelemetryLogger(store, model_key="model_group")
    litellm.callbacks = [logger]
    router = Router(model_list=deployments(), num_retries=0)
    for _ in range(5):
        router.completion(model="coder", messages=MESSAGES)
    settle(logger, 5)
    perf = store.model_performance("coder")
    assert (perf.successful_completions, perf.failed_completions) == (5, 0)
    assert perf.tokens.total == 150
    assert logger.stats().written == 5


async def limited_by(logger: TelemetryLogger, model: str, exc: Exception) -> tuple[int, str]:
    """A call answered by ``exc``: how long ``model`` is blocked after it (ms) and the text its
    limit key holds."""
    with pytest.raises(litellm.RateLimitError):
        await litellm.acompletion(model=model, messages=MESSAGES, mock_response=exc)
    await asettle(logger, 1)
    store = cast(AsyncTelemetryStore, logger._recorder.store)
    key = store._core.keys.limit(model)
    return await store.client.pttl(key), (await store.client.get(key)).decode()


@ONE_LOOP
async def test_a_429_with_retry_after_blocks_for_the_providers_time(server_url: str) -> None:
    store = AsyncTelemetryStore.from_url(server_url, subscription_limit_ttl_secs=3600)
    logger = TelemetryLogger(store)
    litellm.callbacks = [logger]
    response = httpx.Response(
        429, headers={"retry-after": "120"}, request=httpx.Request("POST", "https://x.example")
    )
    limit = litellm.RateLimitError(
        "Error code: 429 - rate limit exceeded",
        llm_provider="openai",
        model="openai/gpt-4o",
        response=response,
    )
    pttl, reason = await limited_by(logger, "openai/gpt-4o", limit)
    assert 110_000 < pttl <= 120_000  # the provider's time, not the store's 3600 s
    assert reason.startswith("litellm.RateLimitError: Error code: 429 - rate limit exceeded")
    assert await store.known_models() == ["openai/gpt-4o"]  # no Router: the provider's model
    perf = await store.model_performance("openai/gpt-4o")
    assert (perf.failed_completions, perf.is_subscription_limited()) == (1, True)
    assert logger.stats().limits == 1
    await store.aclose()


@ONE_LOOP
async def test_a_429_without_a_retry_time_blocks_for_the_cooldown(server_url: str) -> None:
    store = AsyncTelemetryStore.from_url(server_url, subscription_limit_ttl_secs=3600)
    logger = TelemetryLogger(store, cooldown_secs=60)  # 5 s by default; 60 leaves time to look
    litellm.callbacks = [logger]
    pttl, reason = await limited_by(
        logger, "openai/x", litellm.RateLimitError("slow", "openai", "x")
    )
    assert 0 < pttl <= 60_000  # the cooldown, not the store's 3600 s
    assert reason.startswith("litellm.RateLimitError")  # the provider's text, not "manual"
    (event,) = await store.events("openai/x")
    assert (event.error or "").endswith("(HTTP 429; no retry time given; retry after 60 seconds)")
    # the provider backs off too, for every replica; a success ends it
    backoff = await store.provider_status("openai")
    assert (backoff.backoff_level, backoff.block_reason) == (1, "429 backoff")
    await litellm.acompletion(model="openai/x", messages=MESSAGES, mock_response="fine")
    await asettle(logger, 2)
    assert (await store.provider_status("openai")).backoff_level == 0
    await store.aclose()


@ONE_LOOP
async def test_a_429_whose_text_says_when_blocks_until_then(server_url: str) -> None:
    store = AsyncTelemetryStore.from_url(server_url, subscription_limit_ttl_secs=3600)
    logger = TelemetryLogger(store)
    litellm.callbacks = [logger]
    said = litellm.RateLimitError("Rate limit reached, retry after 120 seconds", "openai", "x")
    pttl, reason = await limited_by(logger, "openai/x", said)
    assert 110_000 < pttl <= 120_000  # not the cooldown, nor the hour
    assert "Rate limit reached, retry after 120 seconds" in reason
    await store.aclose()


@ONE_LOOP
async def test_timeouts_and_5xx_are_recorded_as_failures_not_limits(server_url: str) -> None:
    store = AsyncTelemetryStore.from_url(server_url)
    logger = TelemetryLogger(store)
    litellm.callbacks = [logger]
    with pytest.raises(litellm.InternalServerError):
        await litellm.acompletion(
            model="openai/gpt-4o", messages=MESSAGES, mock_response="litellm.InternalServerError"
        )
    with pytest.raises(litellm.Timeout):
        await litellm.acompletion(
            model="openai/gpt-4o", messages=MESSAGES, mock_timeout=True, timeout=0.01
        )
    await asettle(logger, 2)
    assert await store.known_models() == ["openai/gpt-4o"]
    perf = await store.model_performance("openai/gpt-4o")
    assert (perf.failed_completions, perf.is_subscription_limited()) == (2, False)
    errors = sorted(e.error or "" for e in await store.events("openai/gpt-4o"))
    assert "InternalServerError" in errors[0]
    assert "Timeout" in errors[1]
    assert logger.stats().limits == 0
    await store.aclose()


SYNC_APP = """
import os
import sys

os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
import litellm

from redis_telemetry import TelemetryStore
from redis_telemetry.integrations.litellm import TelemetryLogger

store = TelemetryStore.from_url(sys.argv[1], namespace="exit")
litellm.callbacks = [TelemetryLogger(store, exit_timeout=float(sys.argv[2]))]
for _ in range(5):
    litellm.completion(model="openai/gpt-4o-mini", messages=[{"role": "user", "content": "hi"}],
                       mock_response="ok")
print("exiting", flush=True)  # no flush(): the logger writes what is queued at exit
"""


def run_sync_app(tmp_path: Path, url: str, exit_timeout: float) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "app.py"
    script.write_text(SYNC_APP)
    return subprocess.run(
        [sys.executable, str(script), url, str(exit_timeout)],
        capture_output=True,
        text=True,
        timeout=120,  # does not hang
    )


def test_a_sync_app_that_exits_without_flushing_records_its_calls(
    server_url: str, tmp_path: Path
) -> None:
    done = run_sync_app(tmp_path, server_url, 30.0)
    assert done.returncode == 0, done.stderr
    store = TelemetryStore.from_url(server_url, namespace="exit")
    assert sum(p.successful_completions for p in store.all_model_performances()) == 5


def test_the_flush_at_exit_is_bounded_by_its_timeout(tmp_path: Path) -> None:
    """A hung server (it accepts, never answers): the app still exits, after exit_timeout, and
    says how many calls were not recorded."""
    import socket

    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(16)  # connections queue in the backlog; nothing ever reads them
        url = f"redis://127.0.0.1:{hung.getsockname()[1]}/0"
        done = run_sync_app(tmp_path, url, 1.0)
    assert done.returncode == 0, done.stderr
    assert "exiting" in done.stdout
    assert "5 LiteLLM calls were not recorded at exit" in done.stderr


@ONE_LOOP
async def test_redis_down_drops_are_counted_logged_once_and_never_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger=LOG)
    store = AsyncTelemetryStore.from_url(dead_url(), connection=NO_RETRIES)
    logger = TelemetryLogger(store, batch_size=1)
    litellm.callbacks = [logger]
    router = Router(model_list=deployments(), num_retries=0)
    for _ in range(5):
        response = await router.acompletion(model="coder", messages=MESSAGES)
        assert response.choices[0].message.content == "hello"
    await asettle(logger, 5)
    stats = logger.stats()
    assert (stats.submitted, stats.written, stats.dropped) == (5, 0, 5)
    warnings = [r for r in caplog.records if r.name.startswith(LOG)]
    assert len(warnings) == 1
    assert "cannot record LiteLLM calls" in warnings[0].getMessage()
    await store.aclose()


def test_a_sync_store_down_is_counted_too() -> None:
    logger = TelemetryLogger(TelemetryStore.from_url(dead_url(), connection=NO_RETRIES))
    litellm.callbacks = [logger]
    litellm.completion(model="openai/gpt-4o", messages=MESSAGES, mock_response="ok")
    settle(logger, 1)
    assert (logger.stats().written, logger.stats().dropped) == (0, 1)


@ONE_LOOP
async def test_missing_fields_and_broken_payloads_never_raise_into_litellm(
    server_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = AsyncTelemetryStore.from_url(server_url)
    logger = TelemetryLogger(store)
    # what an older LiteLLM or a custom provider may send
    await logger.async_log_success_event(
        {"standard_logging_object": {"model": "custom/x"}}, None, None, None
    )
    await logger.async_log_failure_event({"model": "custom/y"}, None, None, None)
    logger.log_success_event({"standard_logging_object": None, "model": "custom/z"}, None, 0, 0)
    await logger.async_log_success_event(None, None, None, None)  # not even a dict
    await asettle(logger, 3)
    perfs = {p.model: p for p in await store.all_model_performances()}
    assert perfs["custom/x"].successful_completions == 1
    assert perfs["custom/y"].failed_completions == 1
    assert perfs["custom/z"].successful_completions == 1
    assert logger.stats().submitted == 3
    assert any("could not read a LiteLLM payload" in r.getMessage() for r in caplog.records)
    await store.aclose()


# -- routing ----------------------------------------------------------------------------------


@ONE_LOOP
async def test_routing_sends_traffic_to_the_fastest_deployment(server_url: str) -> None:
    store = AsyncTelemetryStore.from_url(server_url)
    await store.record_batch(
        [CompletionEvent(model="dep-a", latency_ms=4000, success=True)] * 5
        + [CompletionEvent(model="dep-b", latency_ms=300, success=True)] * 5
    )
    router = Router(model_list=deployments(), num_retries=0)
    router.register_plugin(SharedStateRouting(router, store, exploration=0.0))
    used = [
        (await router.acompletion(model="coder", messages=MESSAGES))._hidden_params["model_id"]
        for _ in range(10)
    ]
    assert used == ["dep-b"] * 10
    cheap = SharedStateRouting(router, store, strategy="most_reliable", exploration=0.0)
    assert cheap.strategy == "most_reliable"
    await store.aclose()


@pytest.mark.parametrize("strategy", ["fastest", "cheapest", "most_reliable"])
def test_without_data_traffic_spreads_evenly_until_each_deployment_has_some(
    server_url: str, strategy: str
) -> None:
    """dep-a has data, dep-b none yet: before, dep-a took 1 - exploration (95%) of the picks."""
    import random

    store = TelemetryStore.from_url(server_url)
    store.record_batch([CompletionEvent(model="dep-a", latency_ms=100, success=True)])
    router = Router(model_list=deployments(), num_retries=0)
    routing = SharedStateRouting(router, store, strategy, rng=random.Random(7))
    picks = [routing.get_available_deployment("coder")["model_info"]["id"] for _ in range(400)]
    assert 160 <= picks.count("dep-b") <= 240  # about half (binomial: 200 +- 10 sd)
    # once each has data, the strategy decides again
    store.record_batch([CompletionEvent(model="dep-b", latency_ms=900, success=False)])
    routing.exploration = 0.0
    picks = [routing.get_available_deployment("coder")["model_info"]["id"] for _ in range(20)]
    assert picks == ["dep-a"] * 20
    store.client.close()


def test_sync_routing_with_a_blocking_store(server_url: str) -> None:
    store = TelemetryStore.from_url(server_url)
    store.record_batch(
        [CompletionEvent(model="dep-a", latency_ms=100, success=True)] * 3
        + [CompletionEvent(model="dep-b", latency_ms=900, success=True)] * 3
    )
    router = Router(model_list=deployments(), num_retries=0)
    router.register_plugin(SharedStateRouting(router, store, exploration=0.0))
    used = [
        router.completion(model="coder", messages=MESSAGES)._hidden_params["model_id"]
        for _ in range(5)
    ]
    assert used == ["dep-a"] * 5


@pytest.mark.slow
def test_a_429_seen_by_one_replica_steers_the_others(server_url: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(3, mp_context=ctx) as pool:
        first = pool.submit(limited_replica, server_url).result(timeout=180)
        assert first["limits"] == 1  # it met dep-b's 429 and recorded the limit
        others = [pool.submit(healthy_replica, server_url, 20) for _ in range(2)]
        used = [f.result(timeout=180) for f in others]
    # every call of the other replicas succeeded, all of them on the healthy deployment
    assert used == [["dep-a"] * 20] * 2
    store = TelemetryStore.from_url(server_url)
    assert store.model_performance("dep-b").is_subscription_limited()


@ONE_LOOP
@pytest.mark.parametrize("tier", [None, TierSettings()], ids=["round-trips", "tier"])
async def test_redis_down_falls_back_to_a_random_healthy_deployment(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, tier: TierSettings | None
) -> None:
    caplog.set_level(logging.WARNING, logger=LOG)
    server = RedisServer(workdir=tmp_path).start()
    try:
        store = AsyncTelemetryStore.from_url(server.url, connection=NO_RETRIES)
        await store.mark_subscription_limited("dep-b", ttl_secs=600)
        router = Router(model_list=deployments(), num_retries=0)
        routing = SharedStateRouting(router, store, exploration=0.0, tier=tier)
        router.register_plugin(routing)
        response = await router.acompletion(model="coder", messages=MESSAGES)
        assert response._hidden_params["model_id"] == "dep-a"
        server.stop()
        used = [
            (await router.acompletion(model="coder", messages=MESSAGES))._hidden_params["model_id"]
            for _ in range(10)
        ]
    finally:
        server.cleanup()
    assert used == ["dep-a"] * 10  # dep-b was limited when last seen: not "healthy"
    if tier is not None:  # the tier's memory served them: the fallback comes past stale_after
        assert routing.fallbacks == 0
        await store.aclose()
        return
    assert routing.fallbacks == 10
    warnings = [r.getMessage() for r in caplog.records if r.name.startswith(LOG)]
    assert len(warnings) == 1
    assert "routing to a random healthy deployment" in warnings[0]
    await store.aclose()


@ONE_LOOP
async def test_fallback_without_any_known_state_picks_among_all() -> None:
    store = AsyncTelemetryStore.from_url(dead_url(), connection=NO_RETRIES)
    router = Router(model_list=deployments(), num_retries=0)
    routing = SharedStateRouting(router, store)
    router.register_plugin(routing)
    used = {
        (await router.acompletion(model="coder", messages=MESSAGES))._hidden_params["model_id"]
        for _ in range(30)
    }
    assert used == {"dep-a", "dep-b"}
    assert routing.fallbacks == 30
    await store.aclose()


# -- exact totals across processes ------------------------------------------------------------


@pytest.mark.slow
def test_four_router_processes_count_400_of_400(server_url: str) -> None:
    replicas, calls = 4, 100
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(replicas, mp_context=ctx) as pool:
        futures = [pool.submit(replica, server_url, calls, i % 2 == 0) for i in range(replicas)]
        results = [f.result(timeout=300) for f in futures]
    assert [(r["written"], r["dropped"]) for r in results] == [(calls, 0)] * replicas
    store = TelemetryStore.from_url(server_url)
    perfs = store.all_model_performances()
    assert {p.model for p in perfs} <= {"dep-a", "dep-b"}
    assert sum(p.successful_completions for p in perfs) == replicas * calls
    assert sum(p.failed_completions for p in perfs) == 0
    assert sum(p.tokens.total for p in perfs) == replicas * calls * 30
    cost = sum(r["cost"] for r in results)
    assert sum(p.total_cost_usd for p in perfs) == pytest.approx(cost, rel=1e-9)
    for p in perfs:  # each deployment's count is what the replicas saw it serve
        assert p.successful_completions == sum(r["used"].count(p.model) for r in results)


# -- the docs example -------------------------------------------------------------------------


def docs_example() -> str:
    text = (ROOT / "docs" / "litellm.md").read_text()
    blocks = re.findall(r"```py\n(.*?)```", text, flags=re.S)
    assert len(blocks) == 1, "docs/litellm.md has one runnable example, fenced ```py"
    return blocks[0]


@pytest.mark.slow
def test_the_docs_example_runs_as_written(server_url: str, tmp_path: Path) -> None:
    code = docs_example()
    assert "redis://localhost:6379/0" in code
    script = tmp_path / "example.py"
    script.write_text(code.replace("redis://localhost:6379/0", server_url))
    env = {k: v for k, v in os.environ.items() if k != "LITELLM_LOCAL_MODEL_COST_MAP"}
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300, env=env
    )
    assert result.returncode == 0, result.stderr
    assert "recorded 20 of 20 calls" in result.stdout
    store = TelemetryStore.from_url(server_url)
    assert sum(p.successful_completions for p in store.all_model_performances()) == 20


# -- the LiteLLM Proxy ------------------------------------------------------------------------


def proxy_files() -> tuple[str, str]:
    """docs/litellm.md's callbacks module and config.yaml for the Proxy."""
    text = (ROOT / "docs" / "litellm.md").read_text()
    (module,) = re.findall(r"```python\n(# telemetry_callbacks.py.*?)```", text, flags=re.S)
    (config,) = re.findall(r"```yaml\n(.*?)```", text, flags=re.S)
    return module, config


@ONE_LOOP
async def test_the_proxy_config_of_the_docs_records_the_proxys_calls(
    server_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Proxy's config, loaded by LiteLLM's own loader of ``litellm_settings.callbacks``
    (``initialize_callbacks_on_proxy``, which ``ProxyConfig.load_config`` calls)."""
    import importlib
    import types

    import yaml
    from litellm.proxy.common_utils.callback_utils import initialize_callbacks_on_proxy

    try:
        importlib.import_module("litellm.proxy.proxy_server")  # the loader reads its prisma_client
    except ImportError:  # the proxy's own dependencies (fastapi, ...) are not installed here
        stub = types.ModuleType("litellm.proxy.proxy_server")
        stub.prisma_client = None  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, "litellm.proxy.proxy_server", stub)
    module, config = proxy_files()
    (tmp_path / "telemetry_callbacks.py").write_text(module)
    (tmp_path / "config.yaml").write_text(config)
    monkeypatch.setenv("REDIS_TELEMETRY_URL", server_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.delitem(sys.modules, "telemetry_callbacks", raising=False)
    loaded = yaml.safe_load((tmp_path / "config.yaml").read_text())
    settings = loaded["litellm_settings"]
    initialize_callbacks_on_proxy(
        value=settings["callbacks"],
        premium_user=False,
        config_file_path=str(tmp_path / "config.yaml"),
        litellm_settings=settings,
    )
    (logger,) = [cb for cb in litellm.callbacks if isinstance(cb, TelemetryLogger)]
    router = Router(model_list=loaded["model_list"], num_retries=0)
    for _ in range(3):
        await router.acompletion(model="coder", messages=MESSAGES, mock_response="hello")
    assert await logger.aflush(30)
    store = AsyncTelemetryStore.from_url(server_url)
    perf = await store.model_performance("coder-mini-eu")
    assert (perf.successful_completions, perf.tokens.total > 0) == (3, True)
    await store.aclose()
    await logger._recorder.store.aclose()  # type: ignore[attr-defined]  # the module's store
