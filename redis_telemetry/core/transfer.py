"""Planning what moves data in and out of a namespace: ``import_summary``, ``dump`` and
``restore``. No I/O: the store's operations read and write what these plan."""

from __future__ import annotations

import hashlib
import math
from datetime import datetime, timedelta
from typing import Any

from ..models import CompletionEvent, TelemetrySummary, TokenBreakdown
from . import backup, rules, snapshot


def _event_id(*parts: object) -> str:
    return hashlib.sha1("|".join(map(str, parts)).encode()).hexdigest()[:32]


def _as_u64(value: float) -> int:
    """Rust's saturating ``f64 as u64``."""
    if math.isnan(value) or value <= 0:
        return 0
    if value >= rules.U64_MAX:
        return rules.U64_MAX
    return int(value)


def plan_import(
    summary: TelemetrySummary, now_ms: int, window_secs: int
) -> tuple[list[CompletionEvent], list[tuple[str, int]]]:
    """The reference's import: synthetic events and (model, limit ms left) to restore.

    Up to 10 successes spread back over the window at the snapshot's average latency, and up to
    3 failures at its last event, for snapshots whose last event is still in the window. Ids
    derive from the summary, so importing the same summary twice adds nothing.
    """
    now = snapshot.ms_to_datetime(now_ms)
    cutoff = now - timedelta(seconds=window_secs)
    events: list[CompletionEvent] = []
    limits: list[tuple[str, int]] = []
    stamp = summary.exported_at.isoformat()
    for perf in summary.model_performances:
        model = rules.check_model_name(perf.model)
        expires = perf.subscription_limit_expires_at
        if expires is not None and now < expires:
            limits.append((model, rules.ms_floor(rules.epoch_us(expires)) - now_ms))
        last = perf.last_event_at
        if last is None or last < cutoff:
            continue
        n_ok = min(perf.successful_completions, 10)
        for i in range(n_ok):
            spread = timedelta(seconds=(window_secs * i) // n_ok)
            events.append(
                CompletionEvent.model_construct(
                    model=model,
                    session_id="",
                    completed_at=last - spread,
                    latency_ms=_as_u64(perf.avg_latency_ms),
                    success=True,
                    tokens=TokenBreakdown(),
                    cost_usd=0.0,
                    error=None,
                    event_id=_event_id("import", stamp, model, "ok", i),
                )
            )
        for j in range(min(perf.failed_completions, 3)):
            events.append(
                CompletionEvent.model_construct(
                    model=model,
                    session_id="",
                    completed_at=last,
                    latency_ms=0,
                    success=False,
                    tokens=TokenBreakdown(),
                    cost_usd=0.0,
                    error="recovered failure",
                    event_id=_event_id("import", stamp, model, "failed", j),
                )
            )
    return events, limits


def restore_limits(dump: backup.Dump, now_ms: int) -> list[tuple[str, int | None, str]]:
    """A dump's limits still running at the server's ``now_ms``, as (model, until_ms, reason):
    the end the dump names, in epoch ms (None: the key had no expiry)."""
    out: list[tuple[str, int | None, str]] = []
    for lim in dump.limits:
        until = None if lim.expires_at is None else rules.ms_floor(rules.epoch_us(lim.expires_at))
        if until is None or until > now_ms:
            out.append((lim.model, until, lim.reason[:200]))
    return out


def dump_limit(model: str, pttl: int, now_ms: int, reason: Any) -> backup.DumpLimit:
    """One active limit as a dump line, from its PTTL and its stored reason."""
    _, expires = snapshot.limit_state(pttl, now_ms)
    text = reason.decode("utf-8", "replace") if isinstance(reason, bytes) else ""
    return backup.DumpLimit(model=model, expires_at=expires, reason=text)


def dump_header(namespace: str, window_secs: int, now_ms: int) -> backup.DumpHeader:
    """A dump's first line."""
    at: datetime = snapshot.ms_to_datetime(now_ms)
    return backup.DumpHeader(namespace=namespace, window_secs=window_secs, dumped_at=at)
