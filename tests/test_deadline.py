"""A hung Redis never stalls a caller: every call answers or raises TelemetryUnavailable within
its deadline, against a listener that accepts and never replies, a SIGSTOPped redis-server and
a SIGSTOPped cluster node, for both stores, the CLI and the exporter; the breaker then makes
callers fail at once. The bounds are generous (twice a short deadline): they prove "does not
hang"; the assertions on connections and attempts prove the mechanism."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import redis
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from redis_telemetry import (
    AsyncTelemetryStore,
    ConnectionSettings,
    InvalidInputError,
    TelemetryError,
    TelemetryStore,
    TelemetryUnavailable,
)
from redis_telemetry.core import deadline as deadlines
from redis_telemetry.core.deadline import Breaker, Guard, Pause, Policy
from redis_telemetry.exporter import SnapshotCollector

from .helpers import event
from .servers import HungListener, RedisClusterServers, RedisServer, free_port, sigstopped

#: the deadline these tests set, short so the suite stays fast
T = 1.0
#: a generous upper bound on one call: proves "does not hang", not a speed
BOUND = 2 * T
#: no breaker: each call meets the hung server itself
EACH_CALL = ConnectionSettings(timeout=T, breaker_secs=0)
#: the same with a shorter deadline, for the tests that try every call in turn
EVERY_CALL = ConnectionSettings(timeout=0.6, breaker_secs=0)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- what the core decides (no I/O) ------------------------------------------------------------


def test_the_breaker_fails_calls_at_once_then_lets_one_probe() -> None:
    clock = FakeClock()
    breaker = Breaker(2.0, clock)
    assert breaker.admit() is False  # closed: every call goes through
    breaker.failed(TelemetryUnavailable("Redis is unreachable: Timeout reading"))
    with pytest.raises(TelemetryUnavailable, match=r"Timeout reading .*next try in 2\.0s"):
        breaker.admit()
    clock.now += 2.0
    assert breaker.admit() is True  # the probe
    with pytest.raises(TelemetryUnavailable, match="a call is trying again now"):
        breaker.admit()  # only one probe at a time
    breaker.failed(TelemetryUnavailable("Redis is unreachable: still hung"))  # it failed too
    with pytest.raises(TelemetryUnavailable, match="still hung"):
        breaker.admit()
    clock.now += 2.0
    assert breaker.admit() is True
    breaker.released(True)  # the probe ended without I/O: another call may probe
    assert breaker.admit() is True
    breaker.answered()  # Redis answered: closed
    assert breaker.admit() is False
    assert breaker.admit() is False


def test_a_disabled_breaker_never_opens() -> None:
    breaker = Breaker(0.0, FakeClock())
    breaker.failed(TelemetryUnavailable("down"))
    assert breaker.admit() is False


def _drive(sender: deadlines.Sender, answers: list[Any], clock: FakeClock) -> tuple[Any, int]:
    """Run a sender with canned answers, the pauses moving the fake clock; (result, sends)."""
    sends = 0
    step = next(sender)
    try:
        while True:
            if isinstance(step, Pause):
                clock.now += step.delay
                step = sender.send(None)
            else:
                sends += 1
                answer = answers.pop(0)
                if isinstance(answer, float):  # an attempt that timed out after this long
                    clock.now += answer
                    answer = RedisTimeoutError("Timeout reading")
                step = sender.send(answer)
    except StopIteration as stop:
        return stop.value, sends


def _guard(clock: FakeClock, timeout: float = 5.0, attempt: float = 2.5) -> Guard:
    policy = Policy(timeout, attempt, retries=3, backoff=NoBackoff())
    return Guard(policy, breaker_secs=1.0, clock=clock)


def test_a_retry_starts_only_when_it_can_end_before_the_deadline() -> None:
    clock = FakeClock()
    deadline = _guard(clock).start()
    with pytest.raises(TelemetryUnavailable, match=r"1 attempt in 2\.5s; deadline 5s"):
        _drive(deadlines.send(["cmd"], deadline), [2.5, 2.5], clock)  # 2.5 + 2.5 is not < 5
    clock = FakeClock()
    deadline = _guard(clock, attempt=1.0).start()
    with pytest.raises(TelemetryUnavailable, match=r"4 attempts in 4\.0s"):
        _drive(deadlines.send(["cmd"], deadline), [1.0] * 5, clock)  # 3 retries, then no more
    clock = FakeClock()
    deadline = _guard(clock, attempt=1.0).start()
    refused = RedisConnectionError("Connection refused")
    assert _drive(deadlines.send(["cmd"], deadline), [refused, refused, ["ok"]], clock) == (
        ["ok"],
        3,
    )


def test_what_a_new_connection_cannot_cure_is_not_retried() -> None:
    clock = FakeClock()
    for error in (AuthenticationError("WRONGPASS"), redis.ResponseError("ERR bad")):
        deadline = _guard(clock).start()
        with pytest.raises(type(error)):
            _drive(deadlines.send(["cmd"], deadline), [error], clock)


def test_each_reply_renews_the_deadline() -> None:
    clock = FakeClock()
    with _guard(clock, timeout=5.0, attempt=1.0).start() as deadline:
        clock.now += 4.5
        assert not deadline.allows(0)
        deadline.answered()  # a call that keeps getting replies is never cut short
        assert deadline.allows(3.5)
        assert not deadline.expired()


def test_a_call_outcome_feeds_the_breaker() -> None:
    clock = FakeClock()
    guard = _guard(clock)
    with pytest.raises(TelemetryUnavailable), guard.start():
        raise TelemetryUnavailable("Redis is unreachable: hung")
    with pytest.raises(TelemetryUnavailable, match="failing at once"):
        guard.start()
    clock.now += 1.0
    with guard.start() as deadline:  # the probe
        deadline.answered()
    with guard.start():  # closed again
        pass


# -- from_url's settings ----------------------------------------------------------------------


def test_from_url_caps_each_attempt_at_half_the_deadline_and_leaves_retries_to_the_store() -> None:
    store = TelemetryStore.from_url(f"redis://127.0.0.1:{free_port()}/0", timeout=T)
    kwargs = store.client.connection_pool.connection_kwargs
    assert kwargs["socket_timeout"] == T / 2
    assert kwargs["socket_connect_timeout"] == T / 2
    assert kwargs["retry"].get_retries() == 0  # redis-py's nested retries are off
    assert store._guard.policy.timeout == T
    default = TelemetryStore.from_url(f"redis://127.0.0.1:{free_port()}/0")
    assert default._guard.policy.timeout == 5.0
    assert default.client.connection_pool.connection_kwargs["socket_timeout"] == 2.5
    store.client.close()
    default.client.close()


@pytest.mark.parametrize("bad", [0, -1, math.nan, math.inf, "5"])
def test_a_bad_timeout_is_refused_by_name(bad: Any) -> None:
    with pytest.raises(InvalidInputError, match="timeout must be seconds above 0"):
        TelemetryStore.from_url("redis://127.0.0.1:1/0", timeout=bad)


# -- the synchronous store --------------------------------------------------------------------

FAKE = TelemetryStore(fakeredis.FakeRedis(), window_secs=3600)
FAKE.record_batch([event("m", session_id="s1"), event("n")])
SUMMARY = FAKE.export_summary()
DUMP = FAKE.dump()

#: every public call that reaches Redis, by name
CALLS: dict[str, Callable[[Any], Any]] = {
    "record": lambda s: s.record(event("m")),
    "record_batch": lambda s: s.record_batch([event("m"), event("n")]),
    "reindex": lambda s: s.reindex(),
    "model_performance": lambda s: s.model_performance("m"),
    "all_model_performances": lambda s: s.all_model_performances(),
    "session_usage": lambda s: s.session_usage("s1"),
    "known_models": lambda s: s.known_models(),
    "export_summary": lambda s: s.export_summary(),
    "import_summary": lambda s: s.import_summary(SUMMARY),
    "mark_subscription_limited": lambda s: s.mark_subscription_limited("m", 60),
    "clear_subscription_limit": lambda s: s.clear_subscription_limit("m"),
    "events": lambda s: s.events("m"),
    "dump": lambda s: s.dump(),
    "restore": lambda s: s.restore(DUMP),
    "stored_window": lambda s: s.stored_window(),
    "rank_models": lambda s: s.rank_models(["m", "n"]),
    "select_model": lambda s: s.select_model(["m", "n"]),
    "set_window": lambda s: s.set_window(3600),
    "provider_of": lambda s: s.provider_of("p/m"),
    "providers": lambda s: s.providers(),
    "provider_status": lambda s: s.provider_status("p"),
    "budget": lambda s: s.budget("p"),
    "set_budget": lambda s: s.set_budget("p", hour_usd=1.0),
    "exhaust": lambda s: s.exhaust("p"),
    "block_provider": lambda s: s.block_provider("p", "resets in 2h"),
    "unblock_provider": lambda s: s.unblock_provider("p"),
    "provider_blocked_until": lambda s: s.provider_blocked_until("p"),
    "provider_throttled": lambda s: s.provider_throttled("p"),
    "provider_succeeded": lambda s: s.provider_succeeded("p"),
    "provider_failed": lambda s: s.provider_failed("p", "429 Too Many Requests"),
    "provider_feedback": lambda s: s.provider_feedback(
        [event("p/m", False, error="429 Too Many Requests")]
    ),
    "block_provider_of": lambda s: s.block_provider_of("p/m", "usage limit reached"),
    "set_alias": lambda s: s.set_alias("q", "p"),
    "aliases": lambda s: s.aliases(),
}
#: public names that do no I/O
NO_IO = {"from_url", "with_window", "namespace", "window_secs", "subscription_limit_ttl_secs"}


@pytest.mark.parametrize("cls", [TelemetryStore, AsyncTelemetryStore])
def test_the_list_names_every_public_call(cls: type) -> None:
    public = {n for n in dir(cls) if not n.startswith("_") and n not in {"client", "is_cluster"}}
    assert public - NO_IO - {"aclose", "close"} == set(CALLS)


@pytest.fixture
def hung() -> Iterator[HungListener]:
    listener = HungListener()
    yield listener
    listener.close()


def unavailable_in_time(call: Callable[[], Any], bound: float = BOUND) -> TelemetryUnavailable:
    start = time.monotonic()
    with pytest.raises(TelemetryUnavailable) as info:
        call()
    assert time.monotonic() - start < bound
    return info.value


async def aunavailable_in_time(
    call: Callable[[], Awaitable[Any]], bound: float = BOUND
) -> TelemetryUnavailable:
    start = time.monotonic()
    with pytest.raises(TelemetryUnavailable) as info:
        await call()
    assert time.monotonic() - start < bound
    return info.value


#: a few calls: on a new store each first meets the eviction check (the same path for all)
FIRST_CALLS = ["record", "rank_models", "all_model_performances", "dump"]


@pytest.mark.parametrize("name", FIRST_CALLS)
def test_calls_give_up_on_a_hung_listener_in_time(hung: HungListener, name: str) -> None:
    store = TelemetryStore.from_url(hung.url, connection=EACH_CALL)
    error = unavailable_in_time(lambda: CALLS[name](store))
    assert hung.accepted == 1  # one connection: no handshake retries inside command retries
    assert "1 attempt in" in str(error)
    store.client.close()


def test_the_handshake_retries_do_not_multiply_the_commands(hung: HungListener) -> None:
    quick = ConnectionSettings(
        timeout=T, socket_timeout=0.1, retries=3, backoff_base=0.01, backoff_cap=0.02
    )
    store = TelemetryStore.from_url(hung.url, connection=quick)
    error = unavailable_in_time(lambda: store.record(event("m")))
    assert hung.accepted == 4  # 1 + 3 retries; redis-py's nested ones made (1 + 3) x (1 + 3)
    assert "4 attempts in" in str(error)
    store.client.close()


def test_a_refused_connection_fails_sooner_than_a_hung_one() -> None:
    store = TelemetryStore.from_url(f"redis://127.0.0.1:{free_port()}/0", connection=EACH_CALL)
    start = time.monotonic()
    with pytest.raises(TelemetryUnavailable, match="refused"):
        store.record(event("m"))
    assert time.monotonic() - start < T  # retried, but no attempt waits for a reply
    store.client.close()


def test_once_the_server_is_known_dead_callers_fail_at_once(
    hung: HungListener, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = TelemetryStore.from_url(hung.url, timeout=T)  # the default breaker: 1 s
    unavailable_in_time(lambda: store.record(event("m")))
    assert hung.accepted == 1
    for call in (lambda: store.record(event("m")), lambda: store.rank_models(["m"])):
        start = time.monotonic()
        with pytest.raises(TelemetryUnavailable, match="failing at once"):
            call()
        assert time.monotonic() - start < T / 10  # generous: no attempt was made
    assert hung.accepted == 1  # no caller paid the timeout again
    breaker = store._guard.breaker
    monkeypatch.setattr(breaker, "clock", lambda: time.monotonic() + 60)  # the interval passed
    error = unavailable_in_time(lambda: store.rank_models(["m"]))  # the probe
    assert "failing at once" not in str(error)
    assert hung.accepted == 2
    with pytest.raises(TelemetryUnavailable, match="failing at once"):
        store.record(event("m"))  # the probe failed: open again
    store.client.close()


@pytest.fixture(scope="module")
def frozen() -> Iterator[RedisServer]:
    """A redis-server of this module's own, SIGSTOPped by the tests that need it."""
    server = RedisServer().start()
    yield server
    server.cleanup()


def test_every_call_gives_up_on_a_sigstopped_server_in_time(frozen: RedisServer) -> None:
    store = TelemetryStore.from_url(frozen.url, connection=EVERY_CALL)
    store.record_batch([event("m", session_id="s1"), event("n")])  # connected, checked
    fresh = TelemetryStore.from_url(frozen.url, timeout=T)
    bound = 2 * EVERY_CALL.timeout
    with sigstopped(frozen):
        for name, call in CALLS.items():  # each call's own path, past the eviction check
            error = unavailable_in_time(lambda call=call: call(store), bound)  # type: ignore[misc]
            assert "1 attempt in" in str(error), name
        unavailable_in_time(lambda: fresh.record(event("m")))  # its connection: accepted, mute
    assert store.record(event("m")).stored == 1  # back once the server runs again
    store.client.close()
    fresh.client.close()


def test_a_store_that_waits_for_replicas_gives_the_wait_on_top(frozen: RedisServer) -> None:
    store = TelemetryStore.from_url(
        frozen.url, timeout=T, wait_for_replicas=1, wait_timeout_ms=1500
    )
    assert store.client.connection_pool.connection_kwargs["socket_timeout"] == T / 2 + 1.5
    with pytest.raises(TelemetryError, match="only 0 of 1 replicas acknowledged") as info:
        store.record(event("w"))  # WAIT blocks 1.5 s (no replica), then answers: no timeout
    assert not isinstance(info.value, TelemetryUnavailable)
    store.client.close()


# -- the asyncio store ------------------------------------------------------------------------


@pytest.mark.parametrize("name", FIRST_CALLS)
async def test_async_calls_give_up_on_a_hung_listener_in_time(
    hung: HungListener, name: str
) -> None:
    store = AsyncTelemetryStore.from_url(hung.url, connection=EACH_CALL)
    error = await aunavailable_in_time(lambda: CALLS[name](store))
    assert hung.accepted == 1
    assert "1 attempt in" in str(error)
    await store.aclose()


async def test_every_async_call_gives_up_on_a_sigstopped_server_in_time(
    frozen: RedisServer,
) -> None:
    store = AsyncTelemetryStore.from_url(frozen.url, connection=EVERY_CALL)
    await store.record(event("m"))
    bound = 2 * EVERY_CALL.timeout
    with sigstopped(frozen):
        for name, call in CALLS.items():
            error = await aunavailable_in_time(lambda c=call: c(store), bound)  # type: ignore[misc]
            assert "1 attempt in" in str(error), name
        opened = AsyncTelemetryStore.from_url(frozen.url, timeout=T)
        await aunavailable_in_time(lambda: opened.record(event("m")))
        await aunavailable_in_time(lambda: opened.record(event("m")))  # the breaker: at once
    assert (await store.record(event("m"))).stored == 1
    await store.aclose()
    await opened.aclose()


# -- a cluster ---------------------------------------------------------------------------------


def test_a_cluster_client_on_a_hung_listener_gives_up_in_time(hung: HungListener) -> None:
    url = f"redis+cluster://127.0.0.1:{hung.port}/0"
    unavailable_in_time(lambda: TelemetryStore.from_url(url, timeout=T))  # reads the slot map
    assert hung.accepted == 1


async def test_an_async_cluster_client_on_a_hung_listener_gives_up_in_time(
    hung: HungListener,
) -> None:
    store = AsyncTelemetryStore.from_url(f"redis+cluster://127.0.0.1:{hung.port}/0", timeout=T)
    await aunavailable_in_time(lambda: store.record(event("m")))
    assert hung.accepted == 1
    await store.aclose()


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisClusterServers]:
    """A 3-master cluster of this module's own: its nodes get SIGSTOPped."""
    servers = RedisClusterServers(masters=3).start()
    yield servers
    servers.cleanup()


MODELS = [f"m{i}" for i in range(12)]


def _victim(cluster: RedisClusterServers) -> tuple[RedisServer, str, str]:
    """A node to freeze, a model it holds and a model another node holds."""
    client = redis.cluster.RedisCluster(host="127.0.0.1", port=cluster.nodes[0].port)
    with client:
        port_of = {m: client.get_node_from_key(f"telemetry:{{{m}}}:events").port for m in MODELS}
    node = cluster.nodes[1]
    mine = next(m for m in MODELS if port_of[m] == node.port)
    other = next(m for m in MODELS if port_of[m] != node.port)
    return node, mine, other


@pytest.fixture
def thawed(cluster: RedisClusterServers) -> Iterator[RedisClusterServers]:
    """The cluster, whole again after the test (its frozen node resumed and agreed on)."""
    yield cluster
    cluster.wait_ok(30)


def test_a_sigstopped_cluster_node_costs_a_call_its_deadline_at_most(
    thawed: RedisClusterServers,
) -> None:
    node, mine, other = _victim(thawed)
    store = TelemetryStore.from_url(thawed.url, timeout=T)
    store.record_batch([event(m) for m in MODELS])
    ranker = TelemetryStore.from_url(thawed.url, timeout=T)
    ranker.rank_models(MODELS)  # connected, eviction check done
    with sigstopped(node):
        error = unavailable_in_time(lambda: store.record(event(mine)))
        assert "the cluster did not answer in time" in str(error)
        unavailable_in_time(lambda: ranker.rank_models(MODELS))  # one node mute: the whole rank
        with pytest.raises(TelemetryUnavailable, match="failing at once"):
            store.record(event(other))  # the breaker covers the store, all nodes alike
    thawed.wait_ok(30)
    assert TelemetryStore.from_url(thawed.url).record(event(other)).stored == 1


async def test_a_sigstopped_cluster_node_costs_an_async_call_its_deadline_at_most(
    thawed: RedisClusterServers,
) -> None:
    node, mine, _ = _victim(thawed)
    store = AsyncTelemetryStore.from_url(thawed.url, connection=EACH_CALL)
    await store.record_batch([event(m) for m in MODELS])
    with sigstopped(node):
        for call in (lambda: store.record(event(mine)), lambda: store.rank_models(MODELS)):
            await aunavailable_in_time(call)
    await store.aclose()


# -- the CLI -----------------------------------------------------------------------------------


def _cli(
    *args: str, env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], float]:
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "redis_telemetry", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )
    return result, time.monotonic() - start


@pytest.mark.parametrize("how", ["--timeout", "REDIS_TELEMETRY_TIMEOUT"])
def test_the_cli_gives_up_on_a_hung_server_in_time(hung: HungListener, how: str) -> None:
    refused, baseline = _cli(
        "--url", f"redis://127.0.0.1:{free_port()}/0", "--timeout", "1", "status"
    )
    assert refused.returncode == 3  # the interpreter's start, and a refused connection
    if how == "--timeout":
        result, took = _cli("--url", hung.url, "--timeout", str(T), "status")
    else:
        result, took = _cli("--url", hung.url, "status", env={how: str(T)})
    assert result.returncode == 3  # the documented "unavailable" code
    (line,) = result.stderr.splitlines()  # one line
    assert f"cannot reach Redis at {hung.url}" in line
    assert took < baseline + BOUND
    assert hung.accepted == 1


@pytest.mark.parametrize(
    ("args", "env", "says"),
    [
        (["--timeout", "0", "status"], {}, "argument --timeout: expected seconds between 0.1"),
        (["--timeout", "x", "status"], {}, "argument --timeout: expected seconds between 0.1"),
        (["status"], {"REDIS_TELEMETRY_TIMEOUT": "-3"}, "$REDIS_TELEMETRY_TIMEOUT: expected"),
    ],
)
def test_a_bad_timeout_is_one_usage_line(args: list[str], env: dict[str, str], says: str) -> None:
    result, _ = _cli(*args, env=env)
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert says in line, line


# -- the exporter -------------------------------------------------------------------------------


async def _app_get(
    app: Callable[..., Any], path: str, headers: dict[str, str] | None = None
) -> tuple[int, str]:
    """One GET through serve's ASGI application, in this process."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    await app(scope, receive, send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:]).decode()


async def test_a_scrape_and_readyz_answer_in_time_against_a_hung_server(
    hung: HungListener,
) -> None:
    from redis_telemetry.server import create_app

    apps = []
    for path, code in (("/readyz", 503), ("/metrics", 200)):  # each meets the server
        store = AsyncTelemetryStore.from_url(hung.url, timeout=T)
        collector = SnapshotCollector(TelemetryStore.from_url(hung.url, timeout=T))
        apps.append((create_app(store, metrics=collector), store))
        start = time.monotonic()
        status, body = await _app_get(apps[-1][0], path)
        assert time.monotonic() - start < BOUND
        assert status == code
    assert 'redis_telemetry_up{store_namespace="telemetry"} 0.0' in body
    assert 'redis_telemetry_redis_errors_total{store_namespace="telemetry"} 1.0' in body
    assert hung.accepted == 2  # one attempt each
    status, body = await _app_get(apps[0][0], "/readyz")  # after a failed read: the breaker
    assert status == 503
    assert json.loads(body)["error"].startswith("Redis is unreachable")
    assert "failing at once" in body
    assert hung.accepted == 2
    for _, store in apps:
        await store.aclose()


async def test_a_scrape_answers_within_prometheus_scrape_timeout(hung: HungListener) -> None:
    """Prometheus says how long it waits (X-Prometheus-Scrape-Timeout-Seconds): a scrape
    answers within it, with ``up`` 0, even when the store's own deadline is longer."""
    from redis_telemetry.server import create_app

    store = AsyncTelemetryStore.from_url(hung.url, timeout=30)
    collector = SnapshotCollector(TelemetryStore.from_url(hung.url, timeout=30))
    app = create_app(store, metrics=collector)
    start = time.monotonic()
    status, body = await _app_get(app, "/metrics", {"X-Prometheus-Scrape-Timeout-Seconds": "1"})
    assert time.monotonic() - start < 2.0
    assert status == 200
    assert 'redis_telemetry_up{store_namespace="telemetry"} 0.0' in body
    assert "# TYPE redis_telemetry_window_completions" in body  # the families, no model
    await store.aclose()


@pytest.mark.parametrize(
    ("header", "budget"), [(None, None), ("10", 9.75), ("0.1", 0.05), ("x", None), ("-1", None)]
)
def test_the_scrape_budget_is_prometheus_timeout_less_a_margin(
    header: str | None, budget: float | None
) -> None:
    from redis_telemetry.exporter import scrape_budget

    assert scrape_budget(header) == budget


def _http_get(url: str) -> tuple[int, str, float]:
    start = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            code, text = r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        code, text = exc.code, exc.read().decode()
    return code, text, time.monotonic() - start


def test_serve_answers_in_time_against_a_hung_server(hung: HungListener) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "redis_telemetry", "--url", hung.url, "serve", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "REDIS_TELEMETRY_TIMEOUT": str(T)},
    )
    assert proc.stdout is not None
    base = f"http://127.0.0.1:{port}"
    try:
        assert f"{base}/metrics" in proc.stdout.readline()  # listening; its first read failed
        code, text, took = _http_get(base + "/metrics")
        assert (code, took < BOUND) == (200, True)
        assert 'redis_telemetry_up{store_namespace="telemetry"} 0.0' in text
        assert _http_get(base + "/healthz")[:2] == (200, "ok\n")  # the process answers
        while True:  # until the breaker lets a probe meet the hung server
            code, text, took = _http_get(base + "/readyz")
            assert (code, took < BOUND) == (503, True), text
            if "failing at once" not in text:
                break
            time.sleep(0.05)  # poll interval while the breaker waits
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    # the first read and the probe (and, on a slow machine, a scrape that came after the
    # breaker's interval); the breaker spared every other request
    assert 2 <= hung.accepted <= 3


def test_the_hung_server_benchmark_runs(tmp_path: Path) -> None:
    """benchmarks/hung_server.py, whose figures docs/reliability.md gives, with a short deadline."""
    out = tmp_path / "hung.json"
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "hung_server.py"
    run = subprocess.run(
        [sys.executable, str(script), "--timeout", "0.4", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert "| record() again at once | 0.00 s, TelemetryUnavailable, 0 connections" in run.stdout
    results = json.loads(out.read_text())
    for server in ("listener", "SIGSTOP"):
        outcomes = {row["call"]: row["outcome"] for row in results[server]}
        assert outcomes == {
            "record()": "TelemetryUnavailable",
            "record() again at once": "TelemetryUnavailable",
            "rank_models()": "TelemetryUnavailable",
            "redis-telemetry status": "exit 3",
            "exporter /metrics": "HTTP 200",
            "exporter /readyz": "HTTP 503",
        }
        assert all(row["secs"] < 2 * 0.4 + 5 for row in results[server])  # status: + a start
    assert [row["conns"] for row in results["listener"]] == [1, 0, 1, 1, 1, 1]
