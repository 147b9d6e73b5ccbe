"""The fast snapshot (running totals) equals a naive computation over the raw events.

Random event streams arrive in random batches and random order, with duplicates; the server's
clock jumps forward at random between writes and reads (fakeredis with a controlled clock).
Every field of every snapshot is checked against a naive recomputation, and against the
snapshot computed by decoding the whole window.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from unittest import mock

import fakeredis
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from redis_telemetry import (
    CompletionEvent,
    ModelPerformanceSnapshot,
    TelemetryStore,
    TokenBreakdown,
)
from redis_telemetry.core import codec, sketch
from redis_telemetry.core.codec import nano_usd

from .helpers import event, server_ms

MODELS = ("m-a", "m-b")
TOKEN_KINDS = ("total", "input", "output", "reasoning", "cache_read", "cache_write")


class Clock:
    """The fake server's clock: only moves when told to."""

    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@dataclass
class Sent:
    """An event as sent, and whether the store should have kept it."""

    event: CompletionEvent
    score_ms: int
    stored: bool


@st.composite
def scenario(
    draw: st.DrawFn,
) -> tuple[int, list[list[tuple[int, dict[str, object]]]], list[int], list[bool]]:
    """(window_secs, batches of (offset_ms, fields), clock steps before each batch/read,
    whether each batch is sent event by event with record() instead of record_batch())."""
    window = draw(st.integers(1, 120))
    n = draw(st.integers(1, 40))
    span = window * 2000
    raw = [
        (
            draw(st.integers(-span, span // 4)),
            {
                "model": draw(st.sampled_from(MODELS)),
                "success": draw(st.booleans()),
                "latency_ms": draw(st.none() | st.integers(0, 10**6)),  # None: not measured
                "cost_usd": draw(st.floats(0, 5, allow_nan=False)),
                "tokens": TokenBreakdown(
                    total=draw(st.integers(0, 10**6)), input=draw(st.integers(0, 10**5))
                ),
                "error": draw(st.sampled_from([None, "boom", "429 Too Many Requests"])),
                "event_id": draw(st.sampled_from([None, f"id-{i}"])),
            },
        )
        for i in range(n)
    ]
    # re-sends: the same event (same id, same fields) arriving again, as a retry would
    with_ids = [r for r in raw if r[1]["event_id"] is not None]
    if with_ids:
        raw += draw(st.lists(st.sampled_from(with_ids), max_size=5))
    n = len(raw)
    order = draw(st.permutations(range(n)))
    cuts = sorted(draw(st.lists(st.integers(0, n), max_size=4)))
    batches, prev = [], 0
    for cut in [*cuts, n]:
        batches.append([raw[i] for i in order[prev:cut]])
        prev = cut
    steps = draw(
        st.lists(st.integers(0, span), min_size=len(batches) + 3, max_size=len(batches) + 3)
    )
    singly = draw(st.lists(st.booleans(), min_size=len(batches), max_size=len(batches)))
    return window, batches, steps, singly


def naive(model: str, sent: list[Sent], window: int, now_ms: int) -> dict[str, object]:
    cutoff = now_ms - window * 1000
    live = [s.event for s in sent if s.stored and s.event.model == model and s.score_ms > cutoff]
    ok = [e for e in live if e.success]
    timed = [e for e in ok if e.latency_ms is not None]
    cost_nusd = sum(nano_usd(e.cost_usd) for e in live)
    tokens = {
        kind: sum(getattr(e.tokens, kind) for e in live)
        for kind in ("total", "input", "output", "reasoning", "cache_read", "cache_write")
    }
    return {
        "successful_completions": len(ok),
        "failed_completions": len(live) - len(ok),
        "avg_latency_ms": sum(e.latency_ms or 0 for e in timed) / len(timed) if timed else 0.0,
        "success_rate": len(ok) / len(live) if live else 0.0,
        "throughput": len(ok) / window,
        "last_event_at": max((e.completed_at for e in live), default=None),
        "total_cost_usd": cost_nusd / 1e9,
        "tokens": tokens,
        "avg_cost_per_1k_tokens": cost_nusd / 1e9 / tokens["output"] * 1000
        if tokens["output"]
        else 0.0,
        "is_free": bool(live) and cost_nusd == 0,
        "avg_cost_per_1k_total_tokens": cost_nusd / 1e9 / tokens["total"] * 1000
        if tokens["total"]
        else 0.0,
        "latency_p50_ms": rank(timed, 0.50),
        "latency_p95_ms": rank(timed, 0.95),
        "latency_p99_ms": rank(timed, 0.99),
        "latency_samples": len(timed),
    }


def rank(ok: list[CompletionEvent], q: float) -> float | None:
    """Nearest-rank percentile, the textbook way."""
    if not ok:
        return None
    ordered = sorted(e.latency_ms or 0 for e in ok)
    return float(ordered[math.ceil(q * len(ordered)) - 1])


def comparable(snap: ModelPerformanceSnapshot) -> dict[str, object]:
    data = snap.model_dump()
    for key in (
        "model",
        "window_secs",
        "subscription_limit_reached",
        "subscription_limit_expires_at",
    ):
        data.pop(key)
    return data


def sketched(expected: dict[str, object]) -> dict[str, object]:
    """``expected`` with each exact percentile as the latency sketch gives it: the value of
    the bucket holding the exact nearest-rank latency (the counts are exact, so it is that
    bucket, never a neighbour)."""
    out = dict(expected)
    for k, v in expected.items():
        if k.startswith("latency_p") and v is not None:
            assert isinstance(v, float)
            out[k] = sketch.value(sketch.bucket(int(v)))
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario())
def test_fast_snapshot_equals_naive_computation(case: tuple) -> None:  # type: ignore[type-arg]
    window, batches, steps, singly = case
    clock = Clock(time.time())
    with mock.patch("time.time", clock):
        r = fakeredis.FakeRedis(server=fakeredis.FakeServer())
        store = TelemetryStore(r, window_secs=window, subscription_limit_ttl_secs=window * 3)
        sent: list[Sent] = []
        seen_ids: set[str] = set()
        base = clock.now
        for batch, step, one_by_one in zip(batches, steps, singly, strict=False):
            clock.now += step / 1000
            events = []
            for offset, fields in batch:
                at = datetime.fromtimestamp(base, UTC) + timedelta(milliseconds=offset)
                events.append(CompletionEvent(completed_at=at, **fields))  # type: ignore[arg-type]
            now_ms = server_ms(r)
            if one_by_one:  # a single write may leave aged events for a later one to trim
                for e in events:
                    store.record(e)
            else:
                store.record_batch(events)
            for e in events:
                score = _ms(e)
                fresh = e.event_id is None or e.event_id not in seen_ids
                stored = fresh and score > now_ms - window * 1000
                if stored and e.event_id is not None:
                    seen_ids.add(e.event_id)
                sent.append(Sent(e, score, stored))
        for step in steps[len(batches) :]:
            clock.now += step / 1000
            now_ms = server_ms(r)
            fast = {s.model: s for s in store.all_model_performances()}
            for model in MODELS:
                expected = naive(model, sent, window, now_ms)
                got = store.model_performance(model)
                assert comparable(got) == sketched(expected), (model, got, expected)
                exact = store.model_performance(model, percentiles=True)
                assert comparable(exact) == expected
                if model in fast:
                    assert comparable(fast[model]) == sketched(expected)
                else:  # not listed: it has no event in the window
                    assert expected["successful_completions"] == 0
                    assert expected["failed_completions"] == 0
            _assert_window_read_agrees(store, window, sent)
        r.close()


def _assert_window_read_agrees(store: TelemetryStore, window: int, sent: list[Sent]) -> None:
    """The decode-everything path gives the same numbers as the naive computation."""
    for model in MODELS:
        before = server_ms(store.client)
        slow = store.model_performance(model, percentiles=True)
        after = server_ms(store.client)
        candidates = [naive(model, sent, window, t) for t in range(before, after + 1)]
        assert comparable(slow) in candidates


def test_exact_on_a_real_server_across_the_window_edge(redis_server) -> None:  # type: ignore[no-untyped-def]
    """Real redis-server, real clock: events straddling the cutoff, read as it passes them."""
    client = redis.Redis(port=redis_server.port)
    client.flushall()
    store = TelemetryStore(client, window_secs=2)
    now = datetime.now(UTC)
    events = [
        event("m", i % 3 != 0, 10 * i, completed_at=now - timedelta(milliseconds=1900 - 25 * i))
        for i in range(60)
    ]
    store.record_batch(events)
    deadline = time.monotonic() + 10
    checks = 0
    while time.monotonic() < deadline:
        before = server_ms(client)
        snap = store.model_performance("m")
        after = server_ms(client)
        # the snapshot is exact at some instant between `before` and `after`
        candidates = [
            naive("m", [Sent(e, _ms(e), True) for e in events], 2, t)
            for t in range(before, after + 1)
        ]
        assert comparable(snap) in [sketched(c) for c in candidates]
        checks += 1
        if snap.successful_completions + snap.failed_completions == 0:
            break
    assert checks > 5
    client.close()


def _ms(e: CompletionEvent) -> int:
    return (e.completed_at - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


BIG = {
    "latency_ms": 10**12,
    "cost_usd": 1e6,
    "tokens": TokenBreakdown(**dict.fromkeys(TOKEN_KINDS, 10**12)),
}


def _big(at: datetime, ms: int) -> CompletionEvent:
    """A maximal event ``ms`` after ``at``: its cost alone is 1e15 nano-USD."""
    return CompletionEvent(
        model="m", success=ms % 3 != 0, completed_at=at + timedelta(milliseconds=ms), **BIG
    )  # type: ignore[arg-type]


def _write_and_check(
    r: redis.Redis, store: TelemetryStore, later: list[CompletionEvent], sent: list[CompletionEvent]
) -> None:
    """Write ``later`` (a batch of 6: 6e15 nano-USD, past 2^52, then 5 single writes), then
    check that the totals hash equals the sums over the members it covers, and the snapshot
    the naive computation."""
    store.record_batch(later[5:])  # trims: its sums and the trimmed ones meet
    for e in later[:5]:
        store.record(e)
    sent += later
    members = r.zrange("telemetry:{m}:events", 0, -1)
    stored = [codec.stored_sums(codec.decode(m)) for m in members]
    expected = [sum(column) for column in zip(*stored, strict=True)]
    totals = r.hmget("telemetry:{m}:totals", codec.TOTALS_FIELDS)
    assert [int(v or 0) for v in totals] == expected
    before = server_ms(r)
    snap = store.model_performance("m")
    after = server_ms(r)
    live = [Sent(e, _ms(e), True) for e in sent]
    candidates = [naive("m", live, store.window_secs, t) for t in range(before, after + 1)]
    assert comparable(snap) in [sketched(c) for c in candidates]


def test_totals_stay_exact_with_the_largest_values() -> None:
    """Sums far past 2^53 (a batch of maximal events), trimmed and re-added by single writes
    and batches: the totals hash always equals the sums over the members it covers."""
    clock = Clock(time.time())
    with mock.patch("time.time", clock):
        r = fakeredis.FakeRedis(server=fakeredis.FakeServer())
        store = TelemetryStore(r, window_secs=10)
        start = datetime.fromtimestamp(clock.now, UTC)
        sent = [_big(start, -9990 + 10 * i) for i in range(1000)]
        store.record_batch(sent)
        assert int(r.hget("telemetry:{m}:totals", "cost_nusd") or 0) > 2**53
        for step in range(6):
            clock.now += 2.5
            _write_and_check(
                r, store, [_big(start, 2500 * (step + 1) + i) for i in range(11)], sent
            )
        r.close()


def test_totals_stay_exact_with_the_largest_values_on_a_real_server(redis_server) -> None:  # type: ignore[no-untyped-def]
    """The same on a real redis-server (its own Lua and 64-bit HINCRBY), on its real clock:
    writes go on until the first batch has left the 2-second window."""
    client = redis.Redis(port=redis_server.port)
    client.flushall()
    store = TelemetryStore(client, window_secs=2)
    start = datetime.now(UTC)
    sent = [_big(start, -1900 + 2 * i) for i in range(950)]
    store.record_batch(sent)
    assert int(client.hget("telemetry:{m}:totals", "cost_nusd") or 0) > 2**53
    last_of_first = _ms(sent[-1])
    deadline = time.monotonic() + 10
    rounds = 0
    while client.zcount("telemetry:{m}:events", "-inf", last_of_first):  # the first batch stays
        assert time.monotonic() < deadline
        _write_and_check(client, store, [_big(datetime.now(UTC), i) for i in range(11)], sent)
        rounds += 1
    assert rounds > 1
    client.close()
