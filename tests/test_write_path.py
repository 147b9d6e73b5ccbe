"""record.lua's path for the common call (one new event into a model in today's layout, no
upkeep due): it keeps every invariant the general path keeps, and hands every other call to
the general path before writing anything (issue 22, item 4)."""

from __future__ import annotations

import time
from typing import Any

import redis

from redis_telemetry import TelemetryStore, TokenBreakdown
from redis_telemetry.core import codec, scripts

from .helpers import event, recount, server_ms, stored_derived
from .servers import RedisServer

WINDOW = 600
KEYS = ("events", "totals", "sessions", "latency", "ids")


def _mixed(i: int) -> Any:
    """Successes timed and not, failures, three sessions, costs and tokens that differ."""
    kind = i % 4
    return event(
        "m",
        success=kind != 3,
        latency_ms=None if kind == 2 else 50 + 37 * i,
        session_id=f"s{i % 3}",
        ago_secs=30 - i * 0.1,
        cost_usd=0.001 * (i + 1),
        tokens=TokenBreakdown(total=100 + i, input=60 + i, output=40, reasoning=i % 5),
    )


def test_single_events_keep_totals_sketch_sessions_and_ids_equal_to_the_members(
    r: redis.Redis,
) -> None:
    store = TelemetryStore(r, window_secs=WINDOW)
    for i in range(40):
        assert store.record(_mixed(i)).stored == 1
        assert stored_derived(r, "m") == recount(r, "m"), f"after event {i}"


def test_duplicates_aged_events_and_limit_errors_take_the_general_path(r: redis.Redis) -> None:
    store = TelemetryStore(r, window_secs=WINDOW)
    store.record_batch([_mixed(i) for i in range(5)])
    first = event("m", event_id="e1", ago_secs=5)
    assert store.record(first).stored == 1
    again = store.record(event("m", event_id="e1", ago_secs=4, latency_ms=999))
    assert (again.stored, again.duplicates) == (0, 1)
    assert store.record(event("m", ago_secs=WINDOW + 60)).outside_window == 1
    limited = event("m", success=False, error="usage limit reached", ago_secs=1)
    assert store.record(limited).stored == 1
    assert r.exists("telemetry:{m}:limit") == 1
    assert stored_derived(r, "m") == recount(r, "m")


def test_a_newer_event_extends_every_keys_ttl(r: redis.Redis) -> None:
    store = TelemetryStore(r, window_secs=WINDOW)
    store.record(event("m", ago_secs=300))
    store.record(event("m", ago_secs=200))  # steady state: the model's keys all exist
    store.record(event("m", ago_secs=0))  # 200 s newer: past `expires`
    need = server_ms(r) - 1000 + WINDOW * 1000  # its keys must outlive it by the window
    for kind in KEYS:
        left = r.pttl(f"telemetry:{{m}}:{kind}")
        assert left > 0, kind
        assert server_ms(r) + left >= need, kind


def test_a_total_past_two_to_the_52_stays_exact(r: redis.Redis) -> None:
    store = TelemetryStore(r, window_secs=WINDOW)
    store.record(event("m", ago_secs=10))
    big = 2**60 + 1  # doubles cannot hold it: the write must not go through one
    r.hset("telemetry:{m}:totals", "input", big)
    store.record(event("m", ago_secs=5))
    assert int(r.hget("telemetry:{m}:totals", "input") or 0) == big + 800


def test_the_common_call_uses_fewer_commands_than_the_general_path(
    redis_server: RedisServer,
) -> None:
    """The fast path's Redis commands, counted by INFO commandstats (a real server)."""
    r = redis.Redis.from_url(redis_server.url)
    r.flushall()
    store = TelemetryStore(r, window_secs=WINDOW)
    store.record_batch([event("m", ago_secs=1.5 - 0.1 * i) for i in range(3)])

    def commands(e: Any) -> int:
        r.config_resetstat()
        assert store.record(e).stored == 1
        stats = r.info("commandstats")
        skip = ("cmdstat_evalsha", "cmdstat_config|resetstat")
        return sum(v["calls"] for k, v in stats.items() if k not in skip)

    fresh = commands(event("m", ago_secs=1))  # the 4th member: the oldest is checked; no
    # TTL to extend (the model's keys already outlive it by the window)
    limited = commands(event("m", success=False, error="usage limit reached"))
    r.close()
    assert fresh <= 14 + 2  # and the provider spend's two HINCRBY (the hour and the day)
    assert limited > fresh + 5  # the general path: a HINCRBY per total


def test_a_model_written_every_few_seconds_is_not_extended_on_every_write(
    redis_server: RedisServer,
) -> None:
    """An extended TTL reaches a sixteenth of the window (at most ``TTL_SLACK_MS``) further, so
    writes 5 s apart in a 600 s window extend the keys once per 30 s, not each time."""
    r = redis.Redis.from_url(redis_server.url)
    r.flushall()
    store = TelemetryStore(r, window_secs=WINDOW)
    store.record(event("m", ago_secs=60))
    r.config_resetstat()
    for ago in (55, 50, 45, 40, 35, 30):
        assert store.record(event("m", ago_secs=ago)).stored == 1
    extended = r.info("commandstats").get("cmdstat_pexpireat", {"calls": 0})["calls"]
    r.close()
    assert extended == 0
    assert scripts.TTL_SLACK_MS == 30_000 < WINDOW * 1000 // 16


def test_one_events_arguments_are_a_batchs_layout() -> None:
    """``record_call`` builds one event's arguments directly; they are what the batch
    layout (``index_args``) gives for it: timed, untimed, failed and limit errors alike."""
    now_ms = int(time.time() * 1000)
    keys = tuple(f"k{i}" for i in range(6))
    for e in (
        event("m"),
        event("m", latency_ms=None),
        event("m", success=False),
        event("m", success=False, error="usage limit reached"),
    ):
        p = codec.prepare(e, now_ms)
        nb, ns, index = scripts.index_args([p])
        head = scripts.HEAD_FORMAT % (1, p.score_ms, p.score_ms, *p.sums, nb, ns)
        limit = scripts.limit_triples((p.limit_reason,), (p.limit_until_ms,))
        expected = ("s", head, p.score_ms, p.member, p.event_id, *index, *limit)
        assert scripts.record_call(keys, "s", [p]).args == expected
