"""Snapshot arithmetic over decoded events: no I/O, shared by every front end."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from ..models import ModelPerformanceSnapshot, ModelUsage, TokenBreakdown, UsageSnapshot
from . import codec, rules, scripts, sketch, totals
from .codec import nano_usd
from .totals import Totals

log = logging.getLogger(__name__)

#: (member bytes, score) pairs as ZRANGEBYSCORE ... WITHSCORES returns them.
Members = Sequence[tuple[bytes, float]]


def ms_to_datetime(ms: int) -> datetime:
    """Epoch milliseconds to a UTC datetime."""
    return rules.from_epoch_us(ms * 1000)


def pairs(flat: Sequence[Any]) -> list[tuple[bytes, float]]:
    """A script's flat member, score, member, score... list as (member, score) pairs."""
    return [(m, float(sc)) for m, sc in zip(flat[::2], flat[1::2], strict=True)]


def decode_window(key: str, members: Members, cutoff_ms: float) -> list[codec.StoredEvent]:
    """Decode the members scored after ``cutoff_ms``; skip and log the ones that are corrupt."""
    events: list[codec.StoredEvent] = []
    bad: list[str] = []
    for raw, score in members:
        if score <= cutoff_ms:
            continue
        try:
            events.append(codec.decode(raw))
        except codec.CorruptMember as exc:
            bad.append(str(exc))
    if bad:
        log.warning("skipped %d unreadable member(s) of %s: %s", len(bad), key, bad[0])
    return events


def limit_state(pttl: int, now_ms: int) -> tuple[bool, datetime | None]:
    """(limited, expires_at) from the limit key's PTTL: -2 absent, -1 no expiry."""
    if pttl == -2:
        return False, None
    if pttl == -1:
        return True, None
    return True, ms_to_datetime(now_ms + pttl)


def performance(
    model: str,
    events: Iterable[codec.StoredEvent],
    window_secs: int,
    now_ms: int,
    limit_pttl: int,
    percentiles: bool = True,
) -> ModelPerformanceSnapshot:
    """The reference's snapshot, over events already limited to the window, with (unless not
    asked for) the latency percentiles of its successful completions (exact, nearest rank)."""
    sums = totals.zero()
    newest: int | None = None
    latencies = []
    for e in events:
        for i, v in enumerate(codec.stored_sums(e)):
            sums[i] += v
        if newest is None or e.completed_at_us > newest:
            newest = e.completed_at_us
        if e.success and e.latency_ms is not None:
            latencies.append(e.latency_ms)
    snap = _snapshot(model, Totals._make(sums), newest, window_secs, now_ms, limit_pttl)
    if latencies and percentiles:
        latencies.sort()
        _set_percentiles(snap, [float(nearest_rank(latencies, p)) for p in sketch.PERCENTILES])
    snap._latency_histogram = sketch.histogram((x, 1) for x in latencies)
    return snap


def _set_percentiles(snap: ModelPerformanceSnapshot, values: Sequence[float | None]) -> None:
    """Set the snapshot's latency percentiles, in ``sketch.PERCENTILES`` order."""
    snap.latency_p50_ms, snap.latency_p95_ms, snap.latency_p99_ms = values


def nearest_rank(ordered: Sequence[int], pct: int) -> int:
    """The smallest value with at least ``pct`` percent of ``ordered`` at or below it."""
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


def _snapshot(
    model: str,
    t: Totals,
    newest_us: int | None,
    window_secs: int,
    now_ms: int,
    limit_pttl: int,
) -> ModelPerformanceSnapshot:
    """The snapshot of the totals ``t``: one formula for both paths. Built without pydantic's
    validation (it is on every routing decision's path): every value here is already of its
    field's type, as ``test_read_path`` checks against a validated copy."""
    ok, latency, cost_nusd = t.ok, t.latency, t.cost_nusd
    timed = ok - t.untimed
    total = ok + t.failed
    cost = cost_nusd / 1e9
    tokens = TokenBreakdown.model_construct(**{n: getattr(t, n) for n in totals.TOKEN_FIELDS})
    limited, expires = limit_state(limit_pttl, now_ms)
    return ModelPerformanceSnapshot.model_construct(
        model=model,
        successful_completions=ok,
        failed_completions=t.failed,
        window_secs=window_secs,
        throughput=ok / window_secs,
        avg_latency_ms=latency / timed if timed > 0 else 0.0,
        success_rate=ok / total if total else 0.0,
        last_event_at=None if newest_us is None else rules.from_epoch_us(newest_us),
        subscription_limit_reached=limited,
        subscription_limit_expires_at=expires,
        total_cost_usd=cost,
        tokens=tokens,
        avg_cost_per_1k_tokens=cost / tokens.output * 1000 if tokens.output else 0.0,
        is_free=total > 0 and cost_nusd == 0,
        avg_cost_per_1k_total_tokens=cost / tokens.total * 1000 if tokens.total else 0.0,
        latency_samples=max(0, timed),
    )


def from_totals(
    *, model: str, key: str, reply: scripts.SnapshotReply, window_secs: int
) -> ModelPerformanceSnapshot:
    """A snapshot from ``snapshot.lua``'s reply, without reading the window's events: the
    running totals less the members that aged out since the last trim, the percentiles from
    the latency sketch, and ``last_event_at`` from the newest members."""
    cutoff = reply.now_ms - window_secs * 1000
    held = _parse_sums(key, reply.totals)
    left = [have - gone for have, gone in zip(held, reply.minus, strict=True)]
    if reply.skipped:
        log.warning("skipped %d unreadable aged member(s) of %s", reply.skipped, key)
    if any(v < 0 for v in left):
        log.warning(
            "running totals of %s went negative (%s); members were written by hand?", key, left
        )
        left = [max(0, v) for v in left]
    last = newest_us(key, pairs(reply.newest), cutoff)
    snap = _snapshot(model, Totals._make(left), last, window_secs, reply.now_ms, reply.limit_pttl)
    percentiles, snap._latency_histogram = sketch.summary(
        sketch.counts(reply.sketch, reply.aged_buckets)
    )
    if left[_INDEX["ok"]]:
        _set_percentiles(snap, percentiles)
    return snap


_INDEX = {name: i for i, name in enumerate(totals.FIELDS)}


def newest_us(key: str, newest: Members, cutoff: float) -> int | None:
    """The newest readable event's completion time among ``newest`` (newest first): the
    latest of the newest millisecond that holds a readable member; corrupt ones are skipped."""
    for score in dict.fromkeys(sc for _, sc in newest if sc > cutoff):
        tied = decode_window(key, [m for m in newest if m[1] == score], -math.inf)
        if tied:
            return max(e.completed_at_us for e in tied)
    return None


def _parse_sums(key: str, sums: Sequence[Any]) -> list[int]:
    out = []
    for raw in list(sums) + [None] * (len(totals.FIELDS) - len(sums)):
        try:
            out.append(0 if raw is None else int(raw))
        except ValueError:
            log.warning("skipped an unreadable running total of %s: %r", key, raw)
            out.append(0)
    return out


def usage_of(session_id: str, events: Iterable[codec.StoredEvent]) -> ModelUsage | None:
    """One session's usage among ``events`` (None when it has none): the brute-force scan,
    for models read from their events."""
    n = inp = out = total = cost_nusd = 0
    for e in events:
        if e.session_id == session_id:
            n += 1
            inp += e.input
            out += e.output
            total += e.total
            cost_nusd += nano_usd(e.cost_usd)
    return usage_from_index([n, inp, out, total, cost_nusd]) if n else None


def usage_from_index(values: Sequence[int]) -> ModelUsage:
    """A session's usage from its index entry: events, input, output, total, cost_nusd."""
    n, inp, out, total, cost_nusd = values
    return ModelUsage(
        input_tokens=inp,
        output_tokens=out,
        total_tokens=total,
        cost_usd=cost_nusd / 1e9,
        message_count=n,
    )


def usage(
    session_id: str, by_model: Mapping[str, ModelUsage], window_secs: int, now_ms: int
) -> UsageSnapshot:
    """One session's usage per model within the window, plus totals."""
    models = {m: by_model[m].model_copy() for m in sorted(by_model)}
    sums = ModelUsage()
    for u in models.values():
        sums.merge(u)
    return UsageSnapshot(
        id=session_id,
        window_start=ms_to_datetime(now_ms - window_secs * 1000),
        window_end=ms_to_datetime(now_ms),
        by_model=models,
        totals=sums,
    )
