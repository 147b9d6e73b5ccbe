"""The latency sketch: its bucket layout, Lua and Python agreeing on it, percentiles within
1/128 of exact nearest rank on a long-tailed mix, and buckets equal to a recount."""

from __future__ import annotations

import math
import random
import sys
from array import array

import redis

from redis_telemetry import TelemetryStore
from redis_telemetry.core import scripts, sketch

from .helpers import event, recount, stored_derived

#: Edges of the layout: around every power of two up to 2^40, and the exact range.
EDGES = sorted(
    {x for k in range(41) for x in (2**k - 1, 2**k, 2**k + 1) if x >= 0}
    | set(range(300))
    | {10**12, 10**12 - 1, 999_999_999}
)


def test_every_latency_lies_in_its_bucket_and_buckets_keep_order() -> None:
    previous = -1
    for x in sorted({*range(100_000), *EDGES}):
        b = sketch.bucket(x)
        low, high = sketch.bounds(b)
        assert low <= x <= high, x
        assert b >= previous
        previous = b
    assert sketch.bucket(127) == 127
    assert sketch.bounds(sketch.bucket(2400)) == (2400, 2431)  # the docs' bucket 395
    assert sketch.bucket(2400) == 395


def test_a_buckets_value_is_within_1_128_of_every_latency_in_it() -> None:
    rng = random.Random(7)
    sample = EDGES + [rng.randrange(1, 10**12) for _ in range(20_000)]
    worst = max(abs(sketch.value(sketch.bucket(x)) - x) / x for x in sample if x)
    assert worst < sketch.RELATIVE_ERROR == 1 / 128
    assert sketch.value(sketch.bucket(0)) == 0.0


def test_buckets_per_doubling_and_count_for_a_wide_range() -> None:
    """What the memory note in docs/data.md says: 64 buckets per doubling, so a range of
    1000x (about 10 doublings) takes at most about 640."""
    assert sketch.bucket(2**20) - sketch.bucket(2**19) == sketch.SUB
    assert sketch.bucket(1_000_000) - sketch.bucket(1_000) <= 640


def test_lua_puts_every_latency_in_the_same_bucket_as_python(r: redis.Redis) -> None:
    """record.lua and snapshot.lua compute buckets in Lua; a disagreement would make the
    totals drift on trims. Checked on each backend's own Lua and math library."""
    library = scripts.SCRIPTS["snapshot"]
    start = library.index("local byte = string.byte")
    end = library.index("local function decoded(")
    probe = (
        "local FIELDS = {}\n"
        + library[start:end]
        + "local out = {}\nfor i, x in ipairs(ARGV) do out[i] = bucket(tonumber(x)) end\n"
        + "return out\n"
    )
    rng = random.Random(11)
    values = EDGES + [rng.randrange(10**12) for _ in range(2000)]
    for chunk in range(0, len(values), 500):
        part = values[chunk : chunk + 500]
        key = "telemetry:{probe}:events"  # a cluster routes the script by its one key
        got = r.eval(probe, 1, key, *part)
        assert [int(b) for b in got] == [sketch.bucket(x) for x in part]


def test_percentiles_are_within_1_128_of_exact_on_a_long_tailed_mix(
    store: TelemetryStore, r: redis.Redis
) -> None:
    rng = random.Random(3)
    latencies = [max(1, int(rng.lognormvariate(math.log(2000), 1.2))) for _ in range(4000)]
    store.record_batch([event("m", True, x) for x in latencies])
    store.record_batch([event("m", False, 5, error="boom") for _ in range(50)])
    fast = store.model_performance("m")
    exact = store.model_performance("m", percentiles=True)
    ordered = sorted(latencies)
    for name, pct in (("latency_p50_ms", 50), ("latency_p95_ms", 95), ("latency_p99_ms", 99)):
        truth = float(ordered[math.ceil(pct / 100 * len(ordered)) - 1])
        assert getattr(exact, name) == truth
        got = getattr(fast, name)
        assert abs(got - truth) / truth < 1 / 128, (name, got, truth)
    assert stored_derived(r, "m").buckets == recount(r, "m").buckets


def test_a_window_without_successes_has_no_percentiles(store: TelemetryStore) -> None:
    store.record(event("m", False, 900, error="boom"))
    snap = store.model_performance("m")
    assert (snap.latency_p50_ms, snap.latency_p95_ms, snap.latency_p99_ms) == (None, None, None)


def blob(counts: dict[int, int]) -> bytes:
    """A latency key's value holding ``counts`` (bucket -> count), as BITFIELD writes it."""
    out = array("i", [0] * (max(counts) + 1))
    for b, c in counts.items():
        out[b] = c
    if sys.byteorder == "little":
        out.byteswap()
    return out.tobytes()


def test_percentile_arithmetic_matches_nearest_rank() -> None:
    latencies = [100, 200, 300, 400, 500, 600, 700, 800, 900, 10_000]
    counts: dict[int, int] = {}
    for x in latencies:
        counts[sketch.bucket(x)] = counts.get(sketch.bucket(x), 0) + 1
    got = sketch.percentiles(blob(counts), [], (50, 95, 99))
    assert got == [sketch.value(sketch.bucket(500)), *[sketch.value(sketch.bucket(10_000))] * 2]
    # less the aged ones: 10,000 and 900 gone, p95 of 8 is the 8th
    aged = [sketch.bucket(10_000), sketch.bucket(900)]
    assert sketch.percentiles(blob(counts), aged, (95,)) == [sketch.value(sketch.bucket(800))]
    assert sketch.percentiles(b"", [], (50,)) == [None]
    assert [sketch.rank(10, p) for p in (1, 50, 95, 99, 100)] == [1, 5, 10, 10, 10]


def test_the_stored_counters_read_back_with_redis_bitfield(r: redis.Redis) -> None:
    """The latency key is what BITFIELD reads: the recipe in docs/data.md works."""
    TelemetryStore(r).record(event("m", True, 2400))
    assert r.bitfield("telemetry:{m}:latency").get("i32", "#395").execute() == [1]
    assert sketch.decode(r.get("telemetry:{m}:latency"))[395] == 1


def test_histogram_counts_each_latency_at_or_below_each_bound() -> None:
    bounds = (10, 100, math.inf)
    assert sketch.histogram([(10, 1), (11, 2), (100, 1), (101, 4)], bounds) == (1, 4, 8)
    assert sketch.histogram([], bounds) == (0, 0, 0)
    assert sketch.LE_MS[-1] == math.inf
    assert list(sketch.LE_MS) == sorted(sketch.LE_MS)


def test_the_sketch_histogram_takes_each_bucket_at_its_value() -> None:
    latencies = [3, 100, 101, 2400, 2431, 9_000_000]
    counts = [0] * (sketch.bucket(max(latencies)) + 1)
    for x in latencies:
        counts[sketch.bucket(x)] += 1
    got = dict(zip(sketch.LE_MS, sketch.sketch_histogram(counts), strict=True))
    assert got[5] == 1
    assert got[100] == 2  # exact below 128 ms
    assert got[250] == 3
    assert got[2_500] == 5  # bucket 395 (2400-2431) lies below 2.5 s
    assert got[600_000] == 5
    assert got[math.inf] == 6
    # the same as the exact count wherever no bucket straddles a bound
    exact = sketch.histogram((x, 1) for x in latencies)
    assert sketch.sketch_histogram(counts) == exact
