"""The read path a routing decision takes (issue 22): ``snapshot.lua`` returns only the newest
millisecond's members (more only while none of them is this package's event), and the
snapshot's histogram is a prefix sum over the sketch; the results are the same as before."""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

import redis

from redis_telemetry import ModelPerformanceSnapshot, TelemetryStore
from redis_telemetry.core import scripts, sketch
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
