"""record.lua's general path writes the session index by reading the fields a call touches and
writing their new values in one HSET (issue 22, item 4): the index stays equal to the members
through batches of many sessions, sessions trimmed to nothing and values past what doubles
hold."""

from __future__ import annotations

from typing import Any

import redis

from redis_telemetry import TelemetryStore, TokenBreakdown

from .helpers import event, recount, stored_derived
from .servers import RedisServer

WINDOW = 600
SESSIONS_KEY = "telemetry:{m}:sessions"


def _spread(n: int, sessions: int, ago: float, prefix: str = "s") -> list[Any]:
    """``n`` events of model m over ``sessions`` sessions, tokens and costs that differ."""
    return [
        event(
            "m",
            session_id=f"{prefix}{i % sessions}",
            ago_secs=ago - i * 0.001,
            latency_ms=None if i % 5 == 0 else 40 + i,
            success=i % 7 != 0,
            cost_usd=0.0001 * (i % 9),
            tokens=TokenBreakdown(total=10 + i, input=i % 4, output=3),
        )
        for i in range(n)
    ]


def test_a_batch_over_hundreds_of_sessions_keeps_the_index_exact(r: redis.Redis) -> None:
    """More sessions than one read-and-write covers (SESSIONS in record.lua), some new, some
    already in the index, some with zero tokens (their fields stay absent)."""
    store = TelemetryStore(r, window_secs=WINDOW)
    assert store.record_batch(_spread(300, 150, 60)).stored == 300
    assert store.record_batch(_spread(900, 450, 50)).stored == 900
    assert stored_derived(r, "m") == recount(r, "m")


def test_sessions_the_cap_trims_to_nothing_leave_the_index(r: redis.Redis) -> None:
    store = TelemetryStore(r, window_secs=WINDOW, max_events_per_model=400)
    store.record_batch(_spread(400, 250, 60, prefix="old"))
    assert store.record_batch(_spread(400, 250, 50, prefix="new")).capped == 400
    store.reindex()  # what the cap left for later calls (bounded work a call)
    assert stored_derived(r, "m") == recount(r, "m")
    assert r.hkeys(SESSIONS_KEY)
    assert not [k for k in r.hkeys(SESSIONS_KEY) if k.startswith(b"old")]


def test_session_values_past_two_to_the_52_stay_exact(r: redis.Redis) -> None:
    """A value doubles cannot hold, or a sum they cannot (both set by hand here), is added by
    Redis, exactly, on both paths (the common call's HINCRBYs, the general path's fallback
    from its one write); the session's other fields still go through that write."""
    store = TelemetryStore(r, window_secs=WINDOW)
    store.record(event("m", session_id="big", ago_secs=20))
    store.record(event("m", session_id="big", ago_secs=19))
    huge, near = 2**60 + 1, 2**53 - 2  # near: a double, but near + 201 is not
    r.hset(SESSIONS_KEY, mapping={"big:i": huge, "big:o": near})
    odd = TokenBreakdown(total=1001, input=800, output=201)
    store.record(event("m", session_id="big", ago_secs=10, tokens=odd))  # the common call
    assert int(r.hget(SESSIONS_KEY, "big:i") or 0) == huge + 800
    assert int(r.hget(SESSIONS_KEY, "big:o") or 0) == near + 201
    assert int(r.hget(SESSIONS_KEY, "big:n") or 0) == 3
    batch = [event("m", session_id="big", ago_secs=5 - i, tokens=odd) for i in range(3)]
    store.record_batch(batch)
    assert int(r.hget(SESSIONS_KEY, "big:i") or 0) == huge + 4 * 800
    assert int(r.hget(SESSIONS_KEY, "big:o") or 0) == near + 4 * 201
    assert int(r.hget(SESSIONS_KEY, "big:t") or 0) == 2 * 1000 + 4 * 1001


def test_a_batch_writes_the_index_in_one_read_and_one_write_not_a_hincrby_a_field(
    redis_server: RedisServer,
) -> None:
    """INFO commandstats on a real server: a batch over 300 sessions calls HINCRBY for the
    totals (eleven at most), their gen and the provider spend (two an hour and day), not five
    times a session."""
    r = redis.Redis.from_url(redis_server.url)
    r.flushall()
    store = TelemetryStore(r, window_secs=WINDOW)
    store.record_batch(_spread(8, 4, 30))
    r.config_resetstat()
    assert store.record_batch(_spread(600, 300, 20, prefix="b")).stored == 600
    stats = r.info("commandstats")
    r.close()
    assert stats.get("cmdstat_hincrby", {"calls": 0})["calls"] <= 11 + 1 + 2 * 24
