"""The latency sketch: log-spaced buckets that the running totals keep per model.

A successful completion's latency (whole ms) falls in one bucket. Below 128 ms every value
has its own bucket; above, each power of two is cut in 64 equal parts (the HDR-histogram
layout, log-spaced at 64 buckets per doubling). A bucket's representative value is within
1/128 (0.78%) of any latency in it, so a percentile read from the bucket counts is within that
of the exact nearest-rank value. The mapping is integer arithmetic only, so Python and
``record.lua``/``snapshot.lua`` agree on every value (no floating-point ``log``).

The counts live in the string ``<ns>:{<model>}:latency``: a big-endian signed 32-bit counter
per bucket, bucket ``b`` at bit offset ``32 * b`` (``BITFIELD key INCRBY i32 #<b> 1``). One
command updates them all, a read is one GET, and Python sums them at C speed. Memory: 4 bytes
per bucket up to the highest in use: about 2.8 KB for latencies up to 100 s, at most 9 KB.
"""

from __future__ import annotations

import math
import sys
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Mapping, Sequence
from itertools import accumulate

#: Buckets per doubling above ``EXACT_BELOW``; the relative error is at most 1 / (2 * SUB).
SUB = 64
#: Latencies below this have a bucket each (value = bucket).
EXACT_BELOW = 2 * SUB
#: The percentiles every snapshot carries.
PERCENTILES = (50, 95, 99)
#: A bound on the relative error of a percentile read from the buckets.
RELATIVE_ERROR = 1 / (2 * SUB)
#: The coarse upper bounds (ms) of the histogram the exporter publishes (Prometheus ``le``
#: buckets), from 5 ms to 10 minutes; ``math.inf`` closes it.
LE_MS = (
    5,
    10,
    25,
    50,
    100,
    250,
    500,
    1_000,
    2_500,
    5_000,
    10_000,
    30_000,
    60_000,
    120_000,
    300_000,
    600_000,
    math.inf,
)


def bucket(latency_ms: int) -> int:
    """The bucket of a latency (whole ms, not negative)."""
    if latency_ms < EXACT_BELOW:
        return latency_ms
    k = latency_ms.bit_length() - 1  # 2^k <= latency < 2^(k+1), k >= 7
    sub = (latency_ms - (1 << k)) >> (k - 6)
    return EXACT_BELOW + (k - 7) * SUB + sub


def bounds(b: int) -> tuple[int, int]:
    """The smallest and largest latency in bucket ``b``."""
    if b < EXACT_BELOW:
        return b, b
    k = 7 + (b - EXACT_BELOW) // SUB
    width = 1 << (k - 6)
    low = (1 << k) + (b - EXACT_BELOW) % SUB * width
    return low, low + width - 1


def value(b: int) -> float:
    """The bucket's representative latency: the harmonic mean of its bounds, which keeps the
    relative error to either end below ``RELATIVE_ERROR``."""
    low, high = bounds(b)
    return float(low) if low == high else 2 * low * high / (low + high)


def rank(count: int, pct: int) -> int:
    """The 1-based nearest rank of percentile ``pct`` among ``count`` values."""
    return max(1, math.ceil(pct / 100 * count))


def decode(blob: bytes) -> array[int]:
    """The counters of a latency key's value, by bucket."""
    counts = array("i")
    counts.frombytes(blob[: len(blob) // 4 * 4])
    if sys.byteorder == "little":
        counts.byteswap()
    return counts


#: The bytes below 0x80, deleted to find a counter's first byte with the sign bit set.
_LOW_BYTES = bytes(range(0x80))


def counts(blob: bytes, minus: Iterable[int] | Mapping[int, int]) -> array[int]:
    """The counts by bucket in ``blob`` (a latency key's value), less one for each bucket in
    ``minus`` (members that aged out, not yet trimmed), or less ``minus[bucket]`` when it maps
    buckets to counts; never negative."""
    out = decode(blob)
    less = minus.items() if isinstance(minus, Mapping) else ((b, 1) for b in minus)
    negative = False
    for b, n in less:
        if 0 <= b < len(out):
            out[b] -= n
            negative = negative or out[b] < 0
    # a counter written negative by hand has its top bit set: in its first byte
    if negative or blob[: 4 * len(out) : 4].translate(None, _LOW_BYTES):
        out = array("i", (max(0, c) for c in out))
    return out


def percentiles(
    blob: bytes, minus: Iterable[int] | Mapping[int, int], pcts: Sequence[int]
) -> list[float | None]:
    """Percentiles ``pcts`` of the latencies counted in ``blob`` (a latency key's value),
    less the aged members' counts ``minus`` (as :func:`counts` takes them)."""
    return percentiles_of(counts(blob, minus), pcts)


def percentiles_of(counts: Sequence[int], pcts: Sequence[int]) -> list[float | None]:
    """Percentiles ``pcts`` of the latencies counted by bucket in ``counts``."""
    return summary(counts, pcts, ())[0]


def summary(
    counts: Sequence[int], pcts: Sequence[int] = PERCENTILES, bounds: Sequence[float] = LE_MS
) -> tuple[list[float | None], tuple[int, ...]]:
    """Percentiles ``pcts`` and the histogram at ``bounds`` (see :func:`sketch_histogram`) of
    the latencies counted by bucket in ``counts``, from one prefix sum (at C speed): every
    snapshot of a routing decision's read computes both."""
    n = len(counts)
    cumulative = [0, *accumulate(counts)]
    values = _values(n)
    histogram = tuple(cumulative[bisect_right(values, bound, 0, n)] for bound in bounds)
    total = cumulative[-1]
    if not total:
        return [None] * len(pcts), histogram
    return [value(bisect_left(cumulative, rank(total, p)) - 1) for p in pcts], histogram


def histogram(
    weighted: Iterable[tuple[float, int]], bounds: Sequence[float] = LE_MS
) -> tuple[int, ...]:
    """Cumulative counts at each of ``bounds`` (ascending, ms) of latencies given as (value,
    count) pairs: how many are at or below each bound, as Prometheus ``le`` buckets are."""
    per_bound = [0] * len(bounds)
    for latency, count in weighted:
        i = bisect_left(bounds, latency)
        if i < len(bounds):
            per_bound[i] += count
    return tuple(accumulate(per_bound))


def sketch_histogram(counts: Sequence[int], bounds: Sequence[float] = LE_MS) -> tuple[int, ...]:
    """:func:`histogram` of the sketch's counts, each bucket taken at its representative value
    (the one percentiles report): a bound within a bucket's range counts the bucket on the side
    of its value, within 0.78%. No I/O: the snapshot already read the counts. Values rise with
    the bucket, so the count at a bound is a prefix sum (see :func:`summary`)."""
    return summary(counts, (), bounds)[1]


#: value(b) for b = 0, 1, ...: replaced by a longer list when a caller needs more buckets
#: (never changed in place, so threads may share it).
_VALUES: list[float] = []


def _values(n: int) -> list[float]:
    """The representative values of buckets 0 to at least ``n - 1``, ascending."""
    global _VALUES
    held = _VALUES
    if len(held) < n:
        held = _VALUES = [value(b) for b in range(n)]
    return held
