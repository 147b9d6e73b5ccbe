"""Snapshot arithmetic over decoded events: no I/O, shared by every front end."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import datetime

from ..models import ModelPerformanceSnapshot, ModelUsage, UsageSnapshot
from . import codec, rules

log = logging.getLogger("redis_telemetry")

#: (member bytes, score) pairs as ZRANGEBYSCORE ... WITHSCORES returns them.
Members = Sequence[tuple[bytes, float]]


def ms_to_datetime(ms: int) -> datetime:
    """Epoch milliseconds to a UTC datetime."""
    return rules.from_epoch_us(ms * 1000)


def decode_window(key: str, members: Members, cutoff_ms: int) -> list[codec.StoredEvent]:
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
) -> ModelPerformanceSnapshot:
    """The reference's snapshot, over events already limited to the window."""
    ok = failed = 0
    latency_sum = 0
    newest: int | None = None
    for e in events:
        if e.success:
            ok += 1
            latency_sum += e.latency_ms
        else:
            failed += 1
        if newest is None or e.completed_at_us > newest:
            newest = e.completed_at_us
    total = ok + failed
    limited, expires = limit_state(limit_pttl, now_ms)
    return ModelPerformanceSnapshot(
        model=model,
        successful_completions=ok,
        failed_completions=failed,
        window_secs=window_secs,
        throughput=ok / window_secs,
        avg_latency_ms=latency_sum / ok if ok else 0.0,
        success_rate=ok / total if total else 0.0,
        last_event_at=None if newest is None else rules.from_epoch_us(newest),
        subscription_limit_reached=limited,
        subscription_limit_expires_at=expires,
    )


def usage(
    session_id: str,
    events_by_model: dict[str, list[codec.StoredEvent]],
    window_secs: int,
    now_ms: int,
) -> UsageSnapshot:
    """One session's tokens and cost per model within the window, plus totals."""
    by_model: dict[str, ModelUsage] = {}
    for model, events in events_by_model.items():
        for e in events:
            if e.session_id != session_id:
                continue
            u = by_model.setdefault(model, ModelUsage())
            u.input_tokens += e.input
            u.output_tokens += e.output
            u.total_tokens += e.total
            u.cost_usd += e.cost_usd
            u.message_count += 1
    totals = ModelUsage()
    for u in by_model.values():
        totals.merge(u)
    return UsageSnapshot(
        id=session_id,
        window_start=ms_to_datetime(now_ms - window_secs * 1000),
        window_end=ms_to_datetime(now_ms),
        by_model=dict(sorted(by_model.items())),
        totals=totals,
    )
