"""The read path a routing decision takes (issue 22): ``snapshot.lua`` returns only the newest
millisecond's members (more only while none of them is this package's event), and the
snapshot's histogram is a prefix sum over the sketch; the results are the same as before."""

from __future__ import annotations

import logging
import random
from bisect import bisect_left, bisect_right
from collections import Counter
from datetime import timedelta
from itertools import accumulate
from typing import Any

import pytest
import redis

from redis_telemetry import ModelPerformanceSnapshot, TelemetryStore, TokenBreakdown
from redis_telemetry.core import codec, scripts, sketch, snapshot
from redis_telemetry.core.commands import Op

from .helpers import event, now


def _newest(store: TelemetryStore, model: str) -> list[Any]:
    call = scripts.snapshot_call(store._core.keys, model, store.window_secs * 1000)

    def op() -> Op[Any]:
        (reply,) = yield [call]
        return reply

    return list(scripts.snapshot_reply(store._run(op()), 0).newest)


def test_the_snapshot_returns_the_newest_millisecond_only(store: TelemetryStore) -> None:
    at = now() - timedelta(seconds=5)
    store.record_batch([event("m", completed_at=at - timedelta(milliseconds=i)) for i in range(40)])
    newest = _newest(store, "m")
    assert len(newest) == 2  # one member, one score: not the 32 newest
    assert store.model_performance("m").last_event_at == at


def test_members_not_of_this_package_in_the_newest_millisecond_are_read_past(
    r: redis.Redis, store: TelemetryStore
) -> None:
    at = now() - timedelta(seconds=5)
    store.record_batch([event("m", completed_at=at - timedelta(milliseconds=i)) for i in range(5)])
    newer_ms = int((at + timedelta(seconds=1)).timestamp() * 1000)
    r.zadd("telemetry:{m}:events", {b"written by hand": newer_ms, b"\x9e\x02also": newer_ms - 1})
    newest = _newest(store, "m")
    assert newest[::2][:2] == [b"written by hand", b"\x9e\x02also"]
    assert len(newest) == 6  # then the newest millisecond holding an event of this package
    assert store.model_performance("m").last_event_at == at


def test_the_sketch_histogram_is_the_histogram_of_its_bucket_values() -> None:
    rng = random.Random(22)
    for n in [0, 1, 127, 128, 129, 700, 1500]:
        counts = [rng.choice([0, 0, 1, 3, 1000]) for _ in range(n)]
        weighted = ((sketch.value(b), c) for b, c in enumerate(counts) if c)
        assert sketch.sketch_histogram(counts) == sketch.histogram(weighted)
        bounds = [*sorted(rng.uniform(0, 5000) for _ in range(5)), float("inf")]
        weighted = ((sketch.value(b), c) for b, c in enumerate(counts) if c)
        assert sketch.sketch_histogram(counts, bounds) == sketch.histogram(weighted, bounds)


def test_snapshots_built_without_validation_equal_validated_ones(store: TelemetryStore) -> None:
    store.record_batch([event("m", latency_ms=300)] * 3 + [event("m", success=False)])
    store.record_batch([event("free", cost_usd=0.0, latency_ms=None)])
    store.mark_subscription_limited("blocked", 600)
    for snap in store.all_model_performances():
        checked = ModelPerformanceSnapshot.model_validate(snap.model_dump())
        assert checked == snap
        for name, value in checked:
            assert type(getattr(snap, name)) is type(value), name


def test_counters_written_negative_by_hand_or_aged_below_zero_read_as_zero() -> None:
    def blob(values: list[int]) -> bytes:
        return b"".join(v.to_bytes(4, "big", signed=True) for v in values)

    assert list(sketch.counts(blob([3, -5, 2, 0]), [])) == [3, 0, 2, 0]
    assert list(sketch.counts(blob([3, 5, -1]), [])) == [3, 5, 0]
    assert list(sketch.counts(blob([1, 1]), [0, 0, 1])) == [0, 0]
    assert list(sketch.counts(blob([1, 4]), {1: 2})) == [1, 2]
    assert list(sketch.counts(blob([1, 2]) + b"\xff", [])) == [1, 2]  # a torn tail is dropped


def _internals(model: Any) -> tuple[Any, ...]:
    """Everything pydantic keeps of a model: its fields in order, which were set, its extra
    and private attributes."""
    return (
        list(model.__dict__.items()),
        model.model_fields_set,
        model.__pydantic_extra__,
        model.__pydantic_private__,
    )


def test_snapshots_are_the_objects_model_construct_builds(store: TelemetryStore) -> None:
    """``snapshot.constructed`` sets what ``model_construct`` and then setting the percentiles
    and the histogram would: the same fields in the same order, fields set, extra and private
    attributes (a model with successes sets its percentiles, one without does not)."""
    store.record_batch([event("m", latency_ms=300)] * 3 + [event("m", success=False)])
    store.record_batch([event("failing", success=False)])
    for snap in [*store.all_model_performances(), store.model_performance("m", True)]:
        given = {k: v for k, v in snap.__dict__.items() if not k.startswith("latency_p")}
        given["tokens"] = TokenBreakdown.model_construct(**snap.tokens.__dict__)
        built = ModelPerformanceSnapshot.model_construct(**given)
        if snap.successful_completions:
            built.latency_p50_ms = snap.latency_p50_ms
            built.latency_p95_ms = snap.latency_p95_ms
            built.latency_p99_ms = snap.latency_p99_ms
        built._latency_histogram = snap._latency_histogram
        assert _internals(snap) == _internals(built)
        assert _internals(snap.tokens) == _internals(built.tokens)
    assert "latency_p50_ms" not in store.model_performance("failing").model_fields_set


def test_the_memos_give_what_a_read_without_them_gives(store: TelemetryStore) -> None:
    """A model's sketch summary and newest time are remembered by their bytes: a read after
    a write that changes either sees the change, and equals a read with the memos empty."""
    at = now() - timedelta(seconds=5)
    store.record_batch([event("m", latency_ms=100 + i, completed_at=at) for i in range(50)])
    first = store.model_performance("m")
    store.record(event("m", latency_ms=90_000, completed_at=at + timedelta(seconds=1)))
    second = store.model_performance("m")
    assert second.latency_p99_ms != first.latency_p99_ms
    assert second.last_event_at == at + timedelta(seconds=1)
    snapshot.forget()
    assert store.model_performance("m") == second


def test_the_newest_memo_is_not_used_once_a_member_left_the_window() -> None:
    """The newest members are the same bytes, but the cutoff passed one of them: its time no
    longer counts."""
    member = codec.prepare(event("m"), int(now().timestamp() * 1000)).member
    flat = [member, b"1000"]
    assert snapshot._newest_memo("k", flat, 999.0) is not None
    assert snapshot._newest_memo("k", flat, 1000.0) is None


def test_an_unreadable_newest_member_is_logged_at_every_read(
    r: redis.Redis, store: TelemetryStore, caplog: pytest.LogCaptureFixture
) -> None:
    store.record(event("m"))
    newer_ms = int((now() + timedelta(seconds=1)).timestamp() * 1000)
    r.zadd("telemetry:{m}:events", {b"\x9e\x01 not an event": newer_ms})
    seen = []
    for _ in range(2):
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            seen.append(store.model_performance("m"))
        assert "unreadable member" in caplog.text
    assert seen[0] == seen[1]


def _summary_by_prefix_sum(
    counts: list[int], pcts: tuple[int, ...], bounds: tuple[float, ...]
) -> tuple[list[float | None], tuple[int, ...]]:
    """The sketch summary as a prefix sum over every bucket: the reference for the runs."""
    cumulative = [0, *accumulate(counts)]
    values = [sketch.value(b) for b in range(len(counts))]
    histogram = tuple(cumulative[bisect_right(values, bound)] for bound in bounds)
    if not cumulative[-1]:
        return [None] * len(pcts), histogram
    ranks = [sketch.rank(cumulative[-1], p) for p in pcts]
    return [sketch.value(bisect_left(cumulative, r) - 1) for r in ranks], histogram


def test_the_sketch_summary_equals_a_prefix_sum_over_every_bucket() -> None:
    rng = random.Random(7)
    pcts = (0, 1, 50, 95, 99, 100)
    for n in [0, 1, 5, 127, 128, 129, 600, 700, 1500]:
        for _ in range(20):
            counts = [rng.choice([0, 0, 0, 1, 2, 5, 1000]) for _ in range(n)]
            if counts and rng.random() < 0.3:  # everything in one bucket
                counts = [0] * n
                counts[rng.randrange(n)] = rng.randrange(1, 50)
            for bounds in (sketch.LE_MS, (10.0, 300.0, 2000.0), (float("inf"),)):
                expect = _summary_by_prefix_sum(counts, pcts, bounds)
                assert sketch.summary(counts, pcts, bounds) == expect
                blob = b"".join(c.to_bytes(4, "big") for c in counts)
                zeros = sketch.leading_zeros(blob)
                assert counts[:zeros] == [0] * zeros
                assert counts[zeros : zeros + 1] != [0]
                assert sketch.summary(counts, pcts, bounds, zeros) == expect


def test_the_memos_hold_a_bounded_number_of_models() -> None:
    snapshot.forget()
    blob = (3).to_bytes(4, "big")
    member = codec.prepare(event("m"), int(now().timestamp() * 1000)).member
    for i in range(snapshot.MEMO + 5):
        snapshot._summary_memo(f"k{i}", blob, Counter())
        snapshot._newest_memo(f"k{i}", [member, b"1000"], 0.0)
        assert len(snapshot._SUMMARIES) <= snapshot.MEMO
        assert len(snapshot._NEWEST) <= snapshot.MEMO
    tied = [member, b"1000"] * (snapshot.MEMO_NEWEST + 1)
    snapshot._newest_memo("tied", tied, 0.0)
    assert "tied" not in snapshot._NEWEST  # a large tie is not held
    snapshot.forget()


def test_a_blocks_end_reads_back_to_the_millisecond(store: TelemetryStore) -> None:
    """The limit key is set to expire at the end itself (PXAT) and read back from its absolute
    expiry (PEXPIRETIME), so a block's end is what was asked, whichever millisecond the
    script's clock and the commands' clock are in; by totals and by the window alike."""
    base = now().replace(microsecond=0) + timedelta(hours=1)
    for i in range(300):
        model = f"m{i % 3}"
        until = base + timedelta(milliseconds=i)  # later each time: the block moves
        store.mark_subscription_limited(model, until=until)
        assert store.model_performance(model).subscription_limit_expires_at == until
        exact = store.model_performance(model, percentiles=True)
        assert exact.subscription_limit_expires_at == until
