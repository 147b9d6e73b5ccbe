"""Agent CLI output parsers (pure: no Redis)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from redis_telemetry import CompletionEvent, TokenBreakdown, is_subscription_limit_error
from redis_telemetry.ingest import UnparseableLine, make_parser

FIXTURES = Path(__file__).parent / "fixtures"
FIXED = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def parse(fmt: str, name: str, **kw: str) -> tuple[list[CompletionEvent], list[int], list[int]]:
    """(events, ignored line numbers, unparseable line numbers)."""
    parser = make_parser(fmt, kw.get("model"), kw.get("session"))
    parser.clock = lambda: FIXED
    events: list[CompletionEvent] = []
    ignored: list[int] = []
    bad: list[int] = []
    for n, line in enumerate((FIXTURES / name).read_text().splitlines(), 1):
        try:
            got = parser.feed(line)
        except UnparseableLine:
            bad.append(n)
            continue
        events += got
        if not got:
            ignored.append(n)
    return events, ignored, bad


def test_claude_stream_json() -> None:
    events, ignored, bad = parse("claude", "claude-stream.jsonl")
    assert (ignored, bad) == ([1, 2, 5], [4, 7])
    ok, limited, old = events
    assert ok.model == "claude-fixture-model"
    assert ok.session_id == "c-ses-1"
    assert ok.latency_ms == 4200
    assert ok.success
    assert ok.error is None
    assert ok.cost_usd == pytest.approx(0.0521)
    assert ok.tokens == TokenBreakdown(
        total=1600, input=30, output=70, reasoning=0, cache_read=1000, cache_write=500
    )
    assert ok.completed_at == FIXED  # result lines carry no timestamp: ingest time
    assert not limited.success
    assert limited.error == "Claude AI usage limit reached|1795900000"
    assert is_subscription_limit_error(limited.error)
    assert limited.model == "claude-fixture-model"  # from that run's init line
    assert old.model == "claude-other-model"  # no init line: the modelUsage key
    assert old.cost_usd == pytest.approx(0.002)  # older releases' cost_usd
    assert old.tokens.total == 11


def test_opencode_run_json() -> None:
    events, ignored, bad = parse("opencode", "opencode-run.jsonl", model="oc/model")
    assert (ignored, bad) == ([1, 2, 4, 5, 7], [9])
    first, second, error = events
    assert {e.model for e in events} == {"oc/model"}
    assert {e.session_id for e in events} == {"ses_fixtureA"}
    assert first.success  # reason "tool-calls" is a normal step
    assert first.latency_ms == 1500
    assert first.completed_at == datetime.fromtimestamp(1795900001.5, UTC)
    assert first.tokens.total == 1020  # no tokens.total: the sum of the parts
    assert first.cost_usd == pytest.approx(0.002)
    assert second.latency_ms == 2250
    assert second.tokens == TokenBreakdown(
        total=3300, input=1200, output=40, reasoning=10, cache_read=2000, cache_write=50
    )
    assert not error.success
    assert error.latency_ms == 800
    assert error.error == "Provider returned error: monthly limit reached for this plan"
    assert is_subscription_limit_error(error.error)


def test_opencode_needs_a_model() -> None:
    with pytest.raises(ValueError, match="--format opencode needs --model"):
        make_parser("opencode")


def test_pi_json() -> None:
    events, ignored, bad = parse("pi", "pi.jsonl")
    assert (ignored, bad) == ([1, 2], [5, 6])
    ok, failed = events
    assert ok.model == "fixture-provider/pi-model-1"
    assert ok.session_id == "pi-fixture"
    assert ok.latency_ms == 2100
    assert ok.success
    assert ok.cost_usd == pytest.approx(0.004)
    assert ok.tokens == TokenBreakdown(total=625, input=500, output=25, cache_read=100)
    assert not failed.success  # stopReason other than "stop"
    assert failed.error == "429 Too Many Requests"


def test_jsonl_and_overrides() -> None:
    events, ignored, bad = parse("jsonl", "rust-completion-events.jsonl", session="forced")
    assert (ignored, bad) == ([], [])
    assert [e.model for e in events] == [
        "acme-plan/coder-7", "vendor/big-model-2", "vendor/fast-model",
    ]  # fmt: skip
    assert {e.session_id for e in events} == {"forced"}
    events, _, _ = parse("claude", "claude-stream.jsonl", model="m/override")
    assert {e.model for e in events} == {"m/override"}


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{", "not JSON"),
        ('"text"', "not a JSON object"),
        ('{"model": "", "latency_ms": 1, "success": true}', "model"),
        ('{"model": "m", "latency_ms": -1, "success": true}', "latency_ms"),
    ],
)
def test_jsonl_bad_lines_name_the_problem(line: str, message: str) -> None:
    with pytest.raises(UnparseableLine, match=message):
        make_parser("jsonl").feed(line)


@pytest.mark.parametrize("ts", ["253402300800000.0", "1e300", "-1e300", "NaN", "Infinity"])
def test_timestamps_out_of_range_are_unparseable(ts: str) -> None:
    parser = make_parser("opencode", model="m")
    with pytest.raises(UnparseableLine, match=r"timestamp|malformed"):
        parser.feed(f'{{"type": "step_start", "timestamp": {ts}, "sessionID": "s"}}')


def test_blank_lines_are_ignored() -> None:
    assert make_parser("pi").feed("   \n") == []
