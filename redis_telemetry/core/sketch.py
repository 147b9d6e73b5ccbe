"""The latency sketch: log-spaced buckets that the running totals keep per model.

A successful completion's latency (whole ms) falls in one bucket. Below 128 ms every value
has its own bucket; above, each power of two is cut in 64 equal parts (the HDR-histogram
layout, log-spaced at 64 buckets per doubling). A bucket's representative value is within
1/128 (0.78%) of any latency in it, so a percentile read from the bucket counts is within that
of the exact nearest-rank value. The mapping is integer arithmetic only, so Python and
``record.lua``/``snapshot.lua`` agree on every value (no floating-point ``log``).

In the totals hash the count of bucket ``b`` is field ``l<b>``. Memory: one field per bucket in
use; latencies spread over a factor of 1000 use at most about 640 of them, usually far fewer.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

#: Buckets per doubling above ``EXACT_BELOW``; the relative error is at most 1 / (2 * SUB).
SUB = 64
#: Latencies below this have a bucket each (value = bucket).
EXACT_BELOW = 2 * SUB
#: The field prefix of the bucket counts in the totals hash.
PREFIX = "l"
#: The percentiles every snapshot carries.
PERCENTILES = (50, 95, 99)
#: A bound on the relative error of a percentile read from the buckets.
RELATIVE_ERROR = 1 / (2 * SUB)


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


def percentile(counts: Mapping[int, int], pct: int) -> float | None:
    """Percentile ``pct`` of the latencies counted in ``counts`` (bucket -> count)."""
    total = sum(c for c in counts.values() if c > 0)
    if not total:
        return None
    want, seen = rank(total, pct), 0
    for b in sorted(counts):
        seen += max(0, counts[b])
        if seen >= want:
            return value(b)
    raise AssertionError("unreachable: the counts add up to total")


def counts(latencies: Iterable[int]) -> dict[int, int]:
    """Bucket counts of ``latencies`` (a recount, for checks and tests)."""
    out: dict[int, int] = {}
    for latency in latencies:
        b = bucket(latency)
        out[b] = out.get(b, 0) + 1
    return out


def field(b: int) -> str:
    """The totals hash field holding bucket ``b``'s count."""
    return f"{PREFIX}{b}"


def bucket_of_field(name: str) -> int | None:
    """The bucket a totals hash field counts, or None for another field (``latency``...)."""
    digits = name[len(PREFIX) :]
    return int(digits) if name.startswith(PREFIX) and digits.isdigit() else None
