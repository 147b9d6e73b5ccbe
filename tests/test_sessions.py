"""session_usage() from each model's session index: equal to a brute-force scan of the
window through aging, trims, retries, the cap, dump/restore and an older layout."""

from __future__ import annotations

import random

import pytest
import redis

from redis_telemetry import (
    AsyncTelemetryStore,
    CompletionEvent,
    ModelUsage,
    TelemetryStore,
    TokenBreakdown,
)
from redis_telemetry.core import codec, scripts

from .helpers import event, recount, server_ms, stored_derived, wait_for_server_ms

MODELS = ("a", "b/c", "d")
SESSIONS = ("s1", "s2", "", "sé{x}")


def _random_events(rng: random.Random, n: int, ago: tuple[float, float]) -> list[CompletionEvent]:
    return [
        event(
            rng.choice(MODELS),
            success=rng.random() < 0.8,
            latency_ms=rng.randrange(50, 20_000),
            session_id=rng.choice(SESSIONS),
            ago_secs=rng.uniform(*ago),
            tokens=TokenBreakdown(
                total=rng.randrange(10_000), input=rng.randrange(5000), output=rng.randrange(900)
            ),
            cost_usd=rng.choice((0.0, 0.003, 1e6)),
            event_id=f"e{rng.getrandbits(48):012x}",
        )
        for _ in range(n)
    ]


def brute_force(r: redis.Redis, session: str, window_secs: int) -> dict[str, list[float]]:
    """Every model's usage of ``session`` in the window, scanning every member (cost in
    USD, to the micro-dollar: ``ModelUsage.cost_usd`` is a float)."""
    cutoff = server_ms(r) - window_secs * 1000
    out: dict[str, list[float]] = {}
    for model in MODELS:
        for member, score in r.zrange(f"telemetry:{{{model}}}:events", 0, -1, withscores=True):
            e = codec.decode(member)
            if e.session_id == session and score > cutoff:
                u = out.setdefault(model, [0] * 5)
                values = (1, e.input, e.output, e.total, codec.nano_usd(e.cost_usd))
                for j, v in enumerate(values):
                    u[j] += v
    for u in out.values():
        u[4] = round(u[4] / 1e9, 6)
    return out


def as_lists(by_model: dict[str, ModelUsage]) -> dict[str, list[float]]:
    return {
        m: [
            u.message_count,
            u.input_tokens,
            u.output_tokens,
            u.total_tokens,
            round(u.cost_usd, 6),
        ]
        for m, u in by_model.items()
    }


def check(r: redis.Redis, store: TelemetryStore) -> None:
    for session in SESSIONS:
        got = store.session_usage(session)
        assert as_lists(got.by_model) == brute_force(r, session, store.window_secs), session
        assert got.totals.message_count == sum(u.message_count for u in got.by_model.values())
    for model in MODELS:
        assert stored_derived(r, model) == recount(r, model), model


def test_session_usage_equals_a_brute_force_scan(r: redis.Redis) -> None:
    rng = random.Random(5)
    store = TelemetryStore(r, window_secs=3600)
    sent: list[CompletionEvent] = []
    for _ in range(6):
        batch = _random_events(rng, rng.randrange(1, 300), (0, 3000))
        batch += rng.sample(sent, min(len(sent), 20))  # retries: counted once
        store.record_batch(batch)
        sent += batch
        store.record(_random_events(rng, 1, (0, 10))[0])
        check(r, store)
    assert store.session_usage("nobody").by_model == {}


@pytest.fixture
def few_aged(monkeypatch: pytest.MonkeyPatch) -> None:
    """Read scripts that subtract at most 3 aged members, and window pages of 4."""
    monkeypatch.setattr(scripts, "MAX_AGED", 3)
    monkeypatch.setattr(scripts, "WINDOW_PAGE", 4)


@pytest.mark.parametrize("aged", [2, 30], ids=["subtracted-by-the-script", "read-from-events"])
def test_members_that_aged_since_the_last_trim_are_left_out(
    r: redis.Redis, few_aged: None, aged: int
) -> None:
    """Up to MAX_AGED aged members the script subtracts them; past it the model is read
    from its events, a page at a time. Both exact."""
    store = TelemetryStore(r, window_secs=60)
    rng = random.Random(aged)
    old = [e.model_copy(update={"model": "a"}) for e in _random_events(rng, aged, (59.4, 59.5))]
    store.record_batch(old)
    fresh = [e.model_copy(update={"model": "a"}) for e in _random_events(rng, 9, (0, 1))]
    store.record_batch(fresh)
    wait_for_server_ms(r, server_ms(r) + 700)  # the old ones age out; no write trims them
    assert r.zcard("telemetry:{a}:events") == aged + 9
    for session in SESSIONS:
        got = as_lists(store.session_usage(session).by_model)
        assert got == brute_force(r, session, 60), session
    perf = store.model_performance("a")
    assert perf.successful_completions + perf.failed_completions == 9


def test_the_index_follows_the_cap_and_a_restore(r: redis.Redis) -> None:
    store = TelemetryStore(r, window_secs=3600, max_events_per_model=40)
    rng = random.Random(9)
    store.record_batch(_random_events(rng, 200, (0, 3000)))
    check(r, store)
    dump = store.dump()
    r.flushall()
    restored = TelemetryStore(r, window_secs=3600, max_events_per_model=40)
    restored.restore(dump)
    restored.restore(dump)  # twice: changes nothing
    check(r, restored)


def test_an_index_of_an_older_layout_is_never_read_short(r: redis.Redis) -> None:
    """A model whose index is not whole (an older release's keys) is read from its events."""
    store = TelemetryStore(r, window_secs=3600)
    rng = random.Random(2)
    store.record_batch(_random_events(rng, 120, (0, 3000)))
    expected = {s: brute_force(r, s, 3600) for s in SESSIONS}
    for model in MODELS:
        r.hdel(f"telemetry:{{{model}}}:totals", "layout")
        r.delete(f"telemetry:{{{model}}}:sessions")
    for session in SESSIONS:
        assert as_lists(store.session_usage(session).by_model) == expected[session]
    store.reindex()
    check(r, store)


async def test_the_async_store_reads_the_same_index(
    r: redis.Redis, astore: AsyncTelemetryStore
) -> None:
    TelemetryStore(r, window_secs=3600).record_batch(_random_events(random.Random(4), 50, (0, 100)))
    for session in SESSIONS:
        got = as_lists((await astore.session_usage(session)).by_model)
        assert got == brute_force(r, session, 3600)
