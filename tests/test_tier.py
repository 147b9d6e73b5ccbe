"""The local read tier (redis_telemetry.tier): decisions from memory, bounded staleness, one
refresh in flight, this store's own writes at once, stale serving while Redis is down or hung.

The tier's clock is a test clock moved by hand, so the staleness rules are checked by what the
tier does at each age, never by how long anything takes."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Any

import pytest
import redis

from redis_telemetry import AsyncTelemetryStore, ConnectionSettings, TelemetryStore
from redis_telemetry.core.tier import TierSettings, TierState
from redis_telemetry.errors import InvalidInputError, TelemetryUnavailable
from redis_telemetry.tier import AsyncLocalTier, LocalTier

from .helpers import event
from .servers import HungListener, RedisServer, sigstopped

SETTINGS = TierSettings(max_age=5.0, limits_max_age=1.0, stale_after=30.0, retry_secs=2.0)
FAST = ConnectionSettings(
    timeout=0.5, socket_timeout=0.5, socket_connect_timeout=0.5, retries=0, breaker_secs=0
)
MODELS = ["fast", "slow"]


class Clock:
    """The tier's clock, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Counted:
    """Counts the store calls a tier makes, and the threads they ran in."""

    def __init__(self, store: Any) -> None:
        self.threads: list[threading.Thread] = []
        inner = store._run

        def run(op: Any) -> Any:
            self.threads.append(threading.current_thread())
            return inner(op)

        store._run = run

    @property
    def calls(self) -> int:
        return len(self.threads)


def seed(store: TelemetryStore) -> None:
    store.record_batch([event("fast", latency_ms=100)] * 3 + [event("slow", latency_ms=900)] * 3)


def tier_of(store: TelemetryStore, clock: Clock) -> LocalTier:
    return LocalTier(store, SETTINGS, clock=clock)


# -- settings --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        {"max_age": 0},
        {"limits_max_age": -1},
        {"retry_secs": float("inf")},
        {"first_read_secs": True},
        {"max_age": 60.0, "stale_after": 30.0},
    ],
)
def test_settings_out_of_range_are_refused_by_name(bad: dict[str, Any]) -> None:
    with pytest.raises(InvalidInputError) as info:
        TierState(TierSettings(**bad))
    assert next(iter(bad)) in str(info.value)


# -- the staleness bound ---------------------------------------------------------------------


def test_decisions_come_from_memory_until_max_age_then_a_refresh_shows_new_data(
    store: TelemetryStore,
) -> None:
    seed(store)
    clock = Clock()
    tier = tier_of(store, clock)
    counted = Counted(store)
    first = tier.select_model(MODELS)
    assert (first.model, first.age_secs, first.stale) == ("fast", 0.0, False)
    assert counted.calls == 1  # the first decision read
    writer = TelemetryStore(store.client)  # another process's writes
    writer.record_batch([event("slow", latency_ms=1)] * 50)  # slow is now much the fastest
    clock.now += 0.9
    held = tier.select_model(MODELS)
    assert (held.model, held.age_secs, held.stale) == ("fast", pytest.approx(0.9), False)
    assert tier.settle()
    assert counted.calls == 1  # nothing was due: memory only
    clock.now += 0.2  # limits are past limits_max_age: a limits-only refresh
    assert tier.select_model(MODELS).model == "fast"
    assert tier.settle()
    assert counted.calls == 2
    assert tier.select_model(MODELS).model == "fast"  # performance numbers are not re-read
    clock.now += 4.0  # performance past max_age: served stale while the refresh runs
    during = tier.select_model(MODELS)
    assert (during.model, during.stale) == ("fast", True)
    assert tier.settle()
    after = tier.select_model(MODELS)
    assert (after.model, after.age_secs, after.stale) == ("slow", 0.0, False)
    assert counted.calls == 3
    assert all(t is not threading.current_thread() for t in counted.threads[1:])


def test_a_limit_set_elsewhere_shows_within_limits_max_age(store: TelemetryStore) -> None:
    seed(store)
    clock = Clock()
    tier = tier_of(store, clock)
    other = TelemetryStore(store.client)  # another process's store, not watched
    assert tier.select_model(MODELS).model == "fast"
    other.mark_subscription_limited("fast", 600)
    clock.now += 0.5
    assert tier.select_model(MODELS).model == "fast"  # within limits_max_age: memory
    clock.now += 0.6
    tier.select_model(MODELS)  # due: starts the limits refresh
    assert tier.settle()
    decision = tier.rank_models(MODELS)
    assert [e.model for e in decision.ranking.excluded] == ["fast"]
    assert tier.select_model(MODELS).model == "slow"


def test_a_provider_blocked_elsewhere_leaves_within_limits_max_age(store: TelemetryStore) -> None:
    """Provider blocks, backoff and budgets ride with every refresh: a provider blocked by
    another replica leaves the tier's decisions at the next limits refresh."""
    store.record_batch(
        [event("fastco/a", latency_ms=100)] * 3 + [event("slowco/b", latency_ms=900)] * 3
    )
    clock = Clock()
    tier = tier_of(store, clock)
    other = TelemetryStore(store.client)
    assert tier.select_model(["fastco/a", "slowco/b"]).model == "fastco/a"
    other.block_provider("fastco", reason="usage limit reached, resets in 2 hours")
    clock.now += 1.1
    tier.select_model(["fastco/a", "slowco/b"])  # due: starts the limits refresh
    assert tier.settle()
    decision = tier.rank_models(["fastco/a", "slowco/b"])
    assert [(e.model, e.reason) for e in decision.ranking.excluded] == [
        ("fastco/a", "provider_blocked")
    ]
    other.set_budget("slowco", day_usd=0.01)  # spent: 3 x $0.01
    other.unblock_provider("fastco")
    clock.now += 1.1
    tier.select_model(["fastco/a", "slowco/b"])
    assert tier.settle()
    assert tier.select_model(["fastco/a", "slowco/b"]).model == "fastco/a"
    reasons = {e.model: e.reason for e in tier.rank_models(["slowco/b"]).ranking.excluded}
    assert reasons == {"slowco/b": "budget_exhausted"}


# -- this store's own writes -------------------------------------------------------------------


def test_own_limit_writes_show_in_the_next_decision_at_once(store: TelemetryStore) -> None:
    seed(store)
    clock = Clock()
    tier = tier_of(store, clock)
    counted = Counted(store)
    assert tier.select_model(MODELS).model == "fast"
    store.mark_subscription_limited("fast", 600)
    assert tier.select_model(MODELS).model == "slow"
    store.clear_subscription_limit("fast")
    assert tier.select_model(MODELS).model == "fast"
    store.record(event("fast", success=False))  # a limit error recorded
    assert tier.select_model(MODELS).model == "slow"
    assert tier.settle()
    assert counted.calls == 4  # the first read and the three writes: no refresh
    clock.now += 6  # a read that started after the writes has Redis's word: still limited
    tier.select_model(MODELS)
    assert tier.settle()
    assert tier.select_model(MODELS).model == "slow"
    assert tier.state._own == {}


def test_a_model_first_recorded_by_this_store_is_read_before_the_next_decision(
    store: TelemetryStore,
) -> None:
    store.record_batch([event("slow", latency_ms=900)])
    tier = tier_of(store, Clock())
    unknown = tier.rank_models(MODELS)
    assert unknown.ranking.unknown == ["fast"]
    store.record(event("fast", latency_ms=100))
    known = tier.rank_models(MODELS)
    assert known.ranking.unknown == []
    assert known.ranking.ranked[0].model == "fast"


def test_a_store_not_watched_after_close(store: TelemetryStore) -> None:
    seed(store)
    tier = tier_of(store, Clock())
    assert tier.select_model(MODELS).model == "fast"
    tier.close()
    store.mark_subscription_limited("fast", 600)
    assert tier.select_model(MODELS).model == "fast"  # memory, until the next refresh


# -- one refresh in flight ----------------------------------------------------------------------


def test_concurrent_first_decisions_share_one_read(store: TelemetryStore) -> None:
    seed(store)
    tier = tier_of(store, Clock())
    counted = Counted(store)
    threads, start, picks = 16, threading.Barrier(16), []

    def decide() -> None:
        start.wait()
        picks.append(tier.select_model(MODELS).model)

    workers = [threading.Thread(target=decide) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert picks == ["fast"] * threads
    assert counted.calls == 1
    assert tier.state.refreshes == 1


def test_concurrent_due_decisions_start_one_refresh(store: TelemetryStore) -> None:
    seed(store)
    clock = Clock()
    tier = tier_of(store, clock)
    tier.select_model(MODELS)
    counted = Counted(store)
    clock.now += 10
    start = threading.Barrier(16)

    def decide() -> None:
        start.wait()
        tier.select_model(MODELS)

    workers = [threading.Thread(target=decide) for _ in range(16)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert tier.settle()
    assert counted.calls == 1


async def test_async_concurrent_decisions_share_one_read(astore: AsyncTelemetryStore) -> None:
    await astore.record_batch(
        [event("fast", latency_ms=100)] * 3 + [event("slow", latency_ms=900)] * 3
    )
    clock = Clock()
    tier = AsyncLocalTier(astore, SETTINGS, clock=clock)
    runs: list[Any] = []
    inner = astore._run

    async def run(op: Any) -> Any:
        runs.append(op)
        return await inner(op)

    astore._run = run  # type: ignore[method-assign]
    picks = await asyncio.gather(*(tier.select_model(MODELS) for _ in range(50)))
    assert {p.model for p in picks} == {"fast"}
    assert len(runs) == 1
    clock.now += 10
    due = await asyncio.gather(*(tier.select_model(MODELS) for _ in range(50)))
    assert all(d.stale for d in due)
    await tier.settle()
    assert len(runs) == 2
    await astore.mark_subscription_limited("fast", 600)
    assert (await tier.select_model(MODELS)).model == "slow"


# -- Redis down or hung ------------------------------------------------------------------------


def served_stale_then_unavailable(
    tier: LocalTier, clock: Clock, counted: Counted, broken: Callable[[], None]
) -> None:
    """With Redis broken by ``broken``: the last state is served, marked stale, from memory;
    one refresh a ``retry_secs`` runs, never on the caller's thread; past ``stale_after`` a
    decision raises."""
    assert tier.select_model(MODELS).model == "fast"
    broken()
    clock.now += 6
    stale = tier.select_model(MODELS)  # starts a refresh, which fails in its thread
    assert (stale.model, stale.stale) == ("fast", True)
    assert tier.settle()
    assert tier.state.failures == 1
    calls = counted.calls
    for _ in range(100):  # the breaker holds: memory only
        assert tier.select_model(MODELS).model == "fast"
    assert counted.calls == calls
    clock.now += SETTINGS.retry_secs  # one more try, off the caller's path
    assert tier.select_model(MODELS).stale
    assert tier.settle()
    assert counted.calls == calls + 1
    assert tier.state.failures == 2
    assert all(t is not threading.current_thread() for t in counted.threads[1:])
    clock.now += SETTINGS.stale_after
    with pytest.raises(TelemetryUnavailable, match="stale_after"):
        tier.select_model(MODELS)  # a try is due, too: it fails off the caller's path
    assert tier.settle()
    assert tier.state.failures == 3


def test_stale_serving_while_redis_is_down(own_server: RedisServer) -> None:
    store = TelemetryStore.from_url(own_server.url, connection=FAST)
    seed(store)
    clock = Clock()
    tier = tier_of(store, clock)
    served_stale_then_unavailable(tier, clock, Counted(store), own_server.stop)


def test_stale_serving_while_redis_is_hung(own_server: RedisServer) -> None:
    store = TelemetryStore.from_url(own_server.url, connection=FAST)
    seed(store)
    clock = Clock()
    tier = tier_of(store, clock)
    counted = Counted(store)
    with contextlib.ExitStack() as stack:
        freeze = lambda: stack.enter_context(sigstopped(own_server))  # noqa: E731
        served_stale_then_unavailable(tier, clock, counted, freeze)
    clock.now += SETTINGS.retry_secs  # Redis answers again: a refresh starts
    with pytest.raises(TelemetryUnavailable):  # this decision's data is still too old
        tier.select_model(MODELS)
    assert tier.settle()
    back = tier.select_model(MODELS)
    assert (back.model, back.stale) == ("fast", False)


def test_a_first_decision_on_a_hung_redis_fails_then_fails_at_once() -> None:
    hung = HungListener()
    try:
        store = TelemetryStore.from_url(hung.url, connection=FAST)
        tier = LocalTier(store, TierSettings(retry_secs=60.0), clock=Clock())
        counted = Counted(store)
        with pytest.raises(TelemetryUnavailable):
            tier.select_model(MODELS)
        assert counted.calls == 1
        for _ in range(20):  # the breaker holds: no read is even started
            with pytest.raises(TelemetryUnavailable, match="no data yet"):
                tier.select_model(MODELS)
        assert counted.calls == 1
    finally:
        hung.close()


def test_only_blocking_stores_make_a_local_tier(r: redis.Redis) -> None:
    with pytest.raises(Exception, match="TelemetryStore"):
        AsyncLocalTier(TelemetryStore(r))  # type: ignore[arg-type]


# -- SharedStateRouting on the tier, Redis hung ---------------------------------------------------


@pytest.mark.filterwarnings("ignore:.*using the `ReadOnly` qualifier:UserWarning")
def test_router_calls_with_redis_hung_never_wait_on_redis(
    own_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No Redis call runs on the caller's thread: from memory while the data is fresh, then
    stale (its refresh failing in the tier's thread), then with the breaker open, not even
    that. So what Redis adds to a call while hung is a dictionary lookup, not a timeout."""
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network at import
    pytest.importorskip("litellm")
    from litellm.router import Router

    from redis_telemetry.integrations.litellm import SharedStateRouting

    store = TelemetryStore.from_url(own_server.url, connection=FAST)
    store.record_batch([event("dep-a", latency_ms=100)] * 3 + [event("dep-b", latency_ms=900)] * 3)
    router = Router(
        model_list=[
            {
                "model_name": "coder",
                "litellm_params": {"model": m, "api_key": "sk-test", "mock_response": "hi"},
                "model_info": {"id": dep},
            }
            for dep, m in (("dep-a", "openai/gpt-4o-mini"), ("dep-b", "openai/gpt-4o"))
        ],
        num_retries=0,
    )
    routing = SharedStateRouting(router, store, exploration=0.0, tier=SETTINGS)
    router.register_plugin(routing)
    assert routing.tier is not None
    clock = Clock()
    routing.tier.state.clock = clock

    def call() -> str:
        reply = router.completion(model="coder", messages=[{"role": "user", "content": "hi"}])
        return str(reply._hidden_params["model_id"])

    assert call() == "dep-a"
    counted = Counted(store)
    with sigstopped(own_server):
        fresh = [call() for _ in range(10)]
        clock.now += 6  # past max_age: a refresh starts in the tier's thread and fails there
        stale = [call() for _ in range(10)]
        assert isinstance(routing.tier, LocalTier)
        assert routing.tier.settle()
        assert counted.calls == 1
        held = [call() for _ in range(30)]  # the breaker is open: no refresh, no Redis
        assert counted.calls == 1
    assert fresh + stale + held == ["dep-a"] * 50
    assert routing.fallbacks == 0
    assert routing.data_age_secs == 6
    assert routing.tier.state.failures == 1
    assert all(t is not threading.current_thread() for t in counted.threads)


async def test_async_tier_serves_stale_while_redis_is_down(own_server: RedisServer) -> None:
    store = AsyncTelemetryStore.from_url(own_server.url, connection=FAST)
    await store.record_batch(
        [event("fast", latency_ms=100)] * 3 + [event("slow", latency_ms=900)] * 3
    )
    clock = Clock()
    tier = AsyncLocalTier(store, SETTINGS, clock=clock)
    assert (await tier.select_model(MODELS)).model == "fast"
    own_server.stop()
    clock.now += 6
    stale = await tier.select_model(MODELS)  # the refresh starts, as a task, and fails there
    assert (stale.model, stale.stale) == ("fast", True)
    await tier.settle()
    assert tier.state.failures == 1
    refreshes = tier.state.refreshes
    held = await asyncio.gather(*(tier.select_model(MODELS) for _ in range(20)))
    assert {c.model for c in held} == {"fast"}
    assert tier.state.refreshes == refreshes  # the breaker holds: no read started
    clock.now += SETTINGS.stale_after
    with pytest.raises(TelemetryUnavailable, match="stale_after"):
        await tier.select_model(MODELS)
    await tier.settle()
    await store.aclose()
