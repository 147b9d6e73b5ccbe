"""Rich tables for the command line (presentation only)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from rich.table import Table

from .models import CompletionEvent, ModelPerformanceSnapshot, UsageSnapshot


def _now() -> datetime:
    return datetime.now(UTC)


def duration(seconds: float) -> str:
    """A short human duration: 42s, 3m05s, 2h10m, 3d4h."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600}h"


def limited_cell(snap: ModelPerformanceSnapshot, now: datetime) -> str:
    """'limited 41m12s', 'limited' (no expiry) or ''."""
    if not snap.subscription_limit_reached:
        return ""
    if snap.subscription_limit_expires_at is None:
        return "[red]limited[/red]"
    left = (snap.subscription_limit_expires_at - now).total_seconds()
    return f"[red]limited {duration(left)}[/red]" if left > 0 else ""


def status_table(
    snaps: Sequence[ModelPerformanceSnapshot], title: str, now: datetime | None = None
) -> Table:
    """One row per model: counts, success rate, latency (average and p95), throughput, age,
    limit."""
    now = now or _now()
    table = Table(title=title, title_justify="left")
    for name, justify in (
        ("model", "left"),
        ("ok", "right"),
        ("failed", "right"),
        ("success", "right"),
        ("avg latency", "right"),
        ("p95", "right"),
        ("per min", "right"),
        ("last event", "right"),
        ("limited", "left"),
    ):
        table.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for s in snaps:
        total = s.successful_completions + s.failed_completions
        table.add_row(
            s.model,
            str(s.successful_completions),
            str(s.failed_completions),
            f"{s.success_rate:.0%}" if total else "-",
            f"{s.avg_latency_ms:,.0f} ms" if s.measured_latencies() else "-",
            f"{s.latency_p95_ms:,.0f} ms" if s.latency_p95_ms is not None else "-",
            f"{s.throughput * 60:.2f}",
            f"{duration((now - s.last_event_at).total_seconds())} ago" if s.last_event_at else "-",
            limited_cell(s, now),
        )
    return table


def usage_table(usage: UsageSnapshot) -> Table:
    """Tokens and cost per model for one session, with a totals row."""
    table = Table(title=f"session {usage.id}", title_justify="left")
    for name in ("model", "input", "output", "total tokens", "cost (USD)", "messages"):
        table.add_column(name, justify="left" if name == "model" else "right")
    rows = [*usage.by_model.items(), ("total", usage.totals)]
    for i, (model, u) in enumerate(rows):
        table.add_row(
            f"[bold]{model}[/bold]" if i == len(rows) - 1 else model,
            f"{u.input_tokens:,}",
            f"{u.output_tokens:,}",
            f"{u.total_tokens:,}",
            f"{u.cost_usd:.4f}",
            str(u.message_count),
        )
    return table


def events_table(model: str, events: Sequence[CompletionEvent]) -> Table:
    """Decoded raw events, newest first."""
    table = Table(title=f"{model}: newest first", title_justify="left")
    for name in ("completed at", "ok", "latency", "tokens", "cost", "session", "error", "id"):
        table.add_column(name)
    for e in events:
        table.add_row(
            e.completed_at.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3],
            "yes" if e.success else "[red]no[/red]",
            "-" if e.latency_ms is None else f"{e.latency_ms:,} ms",
            f"{e.tokens.total:,}",
            f"{e.cost_usd:.4f}",
            e.session_id,
            e.error or "",
            (e.event_id or "")[:12],
        )
    return table
