"""The command's tables: at 80 columns a terminal table leaves out whole columns, never cuts a
number; piped, the layout is plain aligned text with every column, never wrapped."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import pytest
from rich.console import Console

from redis_telemetry import ModelPerformanceSnapshot
from redis_telemetry.render import STATUS_COLUMNS, status_grid

NOW = datetime(2026, 1, 1, tzinfo=UTC)
WIDE_MODEL = "anthropic/claude-sonnet-4-5"


def snapshots() -> list[ModelPerformanceSnapshot]:
    busy = ModelPerformanceSnapshot.empty(WIDE_MODEL, 3600).model_copy(
        update={
            "successful_completions": 123456,
            "failed_completions": 7890,
            "throughput": 34.3,
            "avg_latency_ms": 18234.0,
            "success_rate": 0.94,
            "last_event_at": NOW - timedelta(seconds=6),
            "subscription_limit_reached": True,
            "subscription_limit_expires_at": NOW + timedelta(minutes=59, seconds=53),
            "latency_p95_ms": 151234.0,
            "latency_samples": 123456,
        }
    )
    return [busy, ModelPerformanceSnapshot.empty("zai/glm-5.1", 3600)]


def drawn(width: int) -> list[str]:
    console = Console(file=io.StringIO(), width=width, force_terminal=True, color_system=None)
    console.print(status_grid(snapshots(), "telemetry: last 1h00m", NOW).table(width))
    return console.file.getvalue().splitlines()  # type: ignore[attr-defined]


@pytest.mark.parametrize("width", [60, 80, 100, 200])
def test_a_terminal_table_fits_and_never_cuts_a_number(width: int) -> None:
    lines = drawn(width)
    assert max(map(len, lines)) <= width
    text = "\n".join(lines)
    for whole in ("123456", "94%", "59m53s"):  # the columns that always stay, in full
        assert whole in text
    assert "…" not in text


def test_a_narrow_terminal_leaves_out_the_least_important_columns_and_says_so() -> None:
    table, _, caption = "\n".join(drawn(80)).partition("too narrow for: ")
    assert "p95 ms" in table
    assert "151,234" in table
    assert "per min" not in table
    assert "last event" not in table
    assert caption.split() == ["avg", "ms,", "per", "min,", "last", "event"]
    wide = "\n".join(drawn(200))
    assert all(c.name in wide for c in STATUS_COLUMNS)
    assert "too narrow" not in wide


def test_the_plain_layout_has_every_column_aligned_on_one_line_each() -> None:
    lines = status_grid(snapshots(), "telemetry: last 1h00m", NOW).text().splitlines()
    assert lines[0] == "telemetry: last 1h00m"
    header, busy, empty = lines[1:]
    assert header.split("  ")[0].strip() == "model"
    for name in ("ok", "failed", "success", "avg ms", "p95 ms", "per min", "last event"):
        assert name in header
    assert busy.split() == [
        WIDE_MODEL,
        "123456",
        "7890",
        "94%",
        "18,234",
        "151,234",
        "2058.00",
        "6s",
        "ago",
        "59m53s",
    ]
    assert empty.split() == ["zai/glm-5.1", "0", "0", "-", "-", "-", "0.00", "-"]
    # right-aligned numbers end where their header ends
    assert busy.index("7890") + 4 == header.index("failed") + len("failed")
    assert not any(line != line.rstrip() for line in lines)
