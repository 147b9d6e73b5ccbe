"""Tables for the command line (presentation only).

Each table is built once as plain cells (:class:`Grid`), then drawn one of two ways: a rich
table for a terminal, which leaves out its least important columns when the screen is too
narrow for all of them (never cutting a number), or plain aligned text when the output is not
a terminal (piped, redirected), with every column and no line ever cut or wrapped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from rich.table import Table
from rich.text import Text

from .core.providers import ProviderStatus
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


@dataclass(frozen=True)
class Column:
    """A column: its header, whether it is right-aligned (numbers), and how soon it goes on a
    narrow screen (0: never; the highest goes first)."""

    name: str
    right: bool = True
    drop: int = 0


@dataclass
class Grid:
    """A table as plain text cells; ``red`` names the columns whose non-empty cells are
    alarms (shown in red on a terminal); ``fold`` the one column whose long cells wrap on a
    terminal (the first if None); ``bold_last`` makes the last row a totals row."""

    title: str
    columns: Sequence[Column]
    rows: list[list[str]]
    red: frozenset[str] = frozenset()
    fold: str | None = None
    bold_last: bool = False

    def widths(self) -> list[int]:
        return [
            max([len(c.name), *(len(row[i]) for row in self.rows)])
            for i, c in enumerate(self.columns)
        ]

    def fitting(self, width: int) -> list[int]:
        """The columns (by index) shown in ``width`` cells: all, or without the ones that go
        first on a narrow screen, until the rest fit (a rich table takes 3 cells a column
        beside its content, and 1 for its left edge)."""
        widths = self.widths()
        kept = list(range(len(self.columns)))
        ordered = sorted((c.drop, -i) for i, c in enumerate(self.columns) if c.drop)
        for _, minus_i in reversed(ordered):
            if sum(widths[i] + 3 for i in kept) + 1 <= width:
                break
            kept.remove(-minus_i)
        return kept

    def table(self, width: int) -> Table:
        """A rich table no wider than ``width`` where the columns allow; a caption names the
        columns left out."""
        kept = self.fitting(width)
        hidden = [c.name for i, c in enumerate(self.columns) if i not in kept]
        caption = f"too narrow for: {', '.join(hidden)}" if hidden else None
        table = Table(title=self.title, title_justify="left", caption=caption)
        fold = self.fold or self.columns[0].name
        for i in kept:
            c = self.columns[i]
            table.add_column(
                c.name,
                justify="right" if c.right else "left",
                no_wrap=c.name != fold,  # numbers are never cut; a long name or text folds
                overflow="fold" if c.name == fold else "ellipsis",
            )
        for n, row in enumerate(self.rows):
            bold = self.bold_last and n == len(self.rows) - 1
            table.add_row(*(self._cell(self.columns[i].name, row[i], bold) for i in kept))
        return table

    def _cell(self, column: str, text: str, bold: bool) -> Text:
        style = "red" if column in self.red and text else ("bold" if bold else "")
        return Text(text, style=style)

    def text(self) -> str:
        """Plain aligned text: the title, then a header and a line per row, every column,
        two spaces apart, no trailing blanks."""
        widths = self.widths()

        def line(cells: Sequence[str]) -> str:
            padded = (
                cell.rjust(w) if c.right else cell.ljust(w)
                for c, cell, w in zip(self.columns, cells, widths, strict=True)
            )
            return "  ".join(padded).rstrip()

        return "\n".join([self.title, line([c.name for c in self.columns]), *map(line, self.rows)])


STATUS_COLUMNS = (
    Column("model", right=False),
    Column("ok"),
    Column("failed", drop=1),
    Column("success"),
    Column("avg ms", drop=3),
    Column("p95 ms", drop=2),
    Column("per min", drop=5),
    Column("last event", drop=4),
    Column("limited", right=False),
)


def limited_cell(snap: ModelPerformanceSnapshot, now: datetime) -> str:
    """The time a limit has left ('41m12s'), 'yes' for one without expiry, or ''."""
    if not snap.subscription_limit_reached:
        return ""
    if snap.subscription_limit_expires_at is None:
        return "yes"
    left = (snap.subscription_limit_expires_at - now).total_seconds()
    return duration(left) if left > 0 else ""


def status_grid(
    snaps: Sequence[ModelPerformanceSnapshot], title: str, now: datetime | None = None
) -> Grid:
    """One row per model: counts, success rate, latency (average and p95, ms), throughput,
    age, and the time a limit has left."""
    now = now or _now()
    rows = []
    for s in snaps:
        total = s.successful_completions + s.failed_completions
        rows.append(
            [
                s.model,
                str(s.successful_completions),
                str(s.failed_completions),
                f"{s.success_rate:.0%}" if total else "-",
                f"{s.avg_latency_ms:,.0f}" if s.measured_latencies() else "-",
                f"{s.latency_p95_ms:,.0f}" if s.latency_p95_ms is not None else "-",
                f"{s.throughput * 60:.2f}",
                f"{duration((now - s.last_event_at).total_seconds())} ago"
                if s.last_event_at
                else "-",
                limited_cell(s, now),
            ]
        )
    return Grid(title, STATUS_COLUMNS, rows, red=frozenset({"limited"}))


def status_table(
    snaps: Sequence[ModelPerformanceSnapshot],
    title: str,
    now: datetime | None = None,
    width: int = 200,
) -> Table:
    """The status grid as a rich table for a screen ``width`` cells wide."""
    return status_grid(snaps, title, now).table(width)


def usage_grid(usage: UsageSnapshot) -> Grid:
    """Tokens and cost per model for one session, with a totals row."""
    columns = [Column("model", right=False)] + [
        Column(name) for name in ("input", "output", "total tokens", "cost (USD)", "messages")
    ]
    rows = [
        [
            model,
            f"{u.input_tokens:,}",
            f"{u.output_tokens:,}",
            f"{u.total_tokens:,}",
            f"{u.cost_usd:.4f}",
            str(u.message_count),
        ]
        for model, u in [*usage.by_model.items(), ("total", usage.totals)]
    ]
    return Grid(f"session {usage.id}", columns, rows, bold_last=True)


EVENT_COLUMNS = (
    Column("completed at", right=False),
    Column("ok", right=False),
    Column("latency"),
    Column("tokens", drop=3),
    Column("cost", drop=2),
    Column("session", right=False, drop=4),
    Column("error", right=False),
    Column("id", right=False, drop=5),
)


def events_grid(model: str, events: Sequence[CompletionEvent]) -> Grid:
    """Decoded raw events, newest first."""
    rows = [
        [
            e.completed_at.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3],
            "yes" if e.success else "no",
            "-" if e.latency_ms is None else f"{e.latency_ms:,} ms",
            f"{e.tokens.total:,}",
            f"{e.cost_usd:.4f}",
            e.session_id,
            e.error or "",
            (e.event_id or "")[:12],
        ]
        for e in events
    ]
    return Grid(
        f"{model}: newest first", EVENT_COLUMNS, rows, red=frozenset({"error"}), fold="error"
    )


PROVIDER_COLUMNS = (
    Column("provider", right=False),
    Column("hour spend / cap"),
    Column("day spend / cap"),
    Column("verdict", right=False),
    Column("blocked", right=False),
    Column("backoff", drop=2),
    Column("models", right=False, drop=1),
)


def _spend(spend: float, cap: float | None) -> str:
    return f"${spend:.4f} / " + ("-" if cap is None else f"${cap:.4f}")


def providers_grid(found: Sequence[ProviderStatus], now: datetime | None = None) -> Grid:
    """One row per provider: spend against caps, verdict, block and backoff."""
    now = now or _now()
    rows = []
    for p in found:
        b = p.budget
        blocked = ""
        if p.blocked_until is not None:
            left = duration(max(0.0, (p.blocked_until - now).total_seconds()))
            blocked = f"{left} ({p.block_reason})"
        rows.append(
            [
                p.provider,
                _spend(b.hour_spend_usd, b.hour_cap_usd),
                _spend(b.day_spend_usd, b.day_cap_usd),
                b.verdict + (" (forced)" if b.forced else ""),
                blocked,
                f"level {p.backoff_level}" if p.backoff_level else "",
                ", ".join(p.models),
            ]
        )
    return Grid("providers", PROVIDER_COLUMNS, rows, red=frozenset({"blocked"}), fold="models")
