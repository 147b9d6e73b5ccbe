"""The Codex CLI parser (pure: no Redis), on fixtures in Codex CLI 0.171.0's shapes."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from redis_telemetry import TokenBreakdown, is_subscription_limit_error
from redis_telemetry.core import limits
from redis_telemetry.ingest import Completion, Limit, make_parser, parse_lines

from .helpers import FIXTURES, INGEST_NOW, json_lines, parse_fixture

# -- codex ----------------------------------------------------------------------------------------

CODEX = "codex-0.171-exec-json.jsonl"
T1 = "0199c0de-5a1e-7c31-9d42-6e8f0a1b2c3d"


def test_codex_runs() -> None:
    p = parse_fixture("codex", CODEX, model="gpt-5.1-codex", zone="UTC")
    assert p.unparseable == []
    # everything but the turns' ends: items (an error item is a warning), thread and turn
    # starts, and the top-level errors, codex's own retries among them
    assert p.ignored == [n for n in range(1, 31) if n not in (8, 14, 18, 23, 26, 30)]
    first, resumed, limited, retried, later, older = p.events
    assert {e.model for e in p.events} == {"gpt-5.1-codex"}
    assert {e.latency_ms for e in p.events} == {None}  # from a file: not measured
    assert {e.completed_at for e in p.events} == {INGEST_NOW}  # no line carries a time
    assert {e.cost_usd for e in p.events} == {0.0}
    # a new thread counts whole; cache and reasoning are parts of input and output
    assert (first.session_id, first.success, first.error) == (T1, True, None)
    assert first.tokens == TokenBreakdown(
        total=31200, input=5424, cache_read=24576, output=560, reasoning=640
    )
    # the resumed thread restates its total: only the increase counts
    assert (resumed.session_id, resumed.success) == (T1, True)
    assert resumed.tokens == TokenBreakdown(
        total=22800, input=5616, cache_read=16384, output=416, reasoning=384
    )
    assert first.tokens.total + resumed.tokens.total == 52000 + 2000  # the thread's total
    # the Reconnecting lines before it are no failure: two runs, two successes
    assert [e.success for e in p.events] == [True, True, False, False, False, True]
    assert limited.error == (
        "You've hit your usage limit. To get more access now, send a request to your admin or "
        "try again at 3:45 PM."
    )
    assert retried.error is not None
    assert retried.error.startswith("exceeded retry limit")
    assert later.error == "You've hit your usage limit. Try again later."
    # an older release's usage, without cache writes and reasoning: they count 0
    assert older.tokens == TokenBreakdown(total=4090, input=2976, cache_read=1024, output=90)
    assert p.limits == [
        # 3:45 PM on the day it was read, in the zone named
        Limit("gpt-5.1-codex", datetime(2026, 11, 20, 15, 45, tzinfo=UTC), limited.error[:200]),
        # no reset time: the default TTL, from when it was read
        Limit("gpt-5.1-codex", None, later.error, INGEST_NOW),
    ]
    # the server errors codex gave up on are no limit
    assert not is_subscription_limit_error(retried.error)
    assert first.event_id == f"codex:{T1}:30000:24576:0:1200:640:ok1"
    assert resumed.event_id == f"codex:{T1}:52000:40960:0:2000:1024:ok1"


def test_codex_needs_a_model() -> None:
    with pytest.raises(ValueError, match="--format codex needs --model"):
        make_parser("codex")


def test_codex_a_resumed_run_counts_the_same_turn_in_a_file_of_its_own() -> None:
    """A run's event id is its thread and the thread's running totals: the resumed run, read in
    a log of its own, is the event it is in the log of both runs, so ingesting either log
    again, or both, counts it once."""
    lines = (FIXTURES / CODEX).read_text().splitlines()
    both = parse_lines("codex", lines[:14], model="m", clock=lambda: INGEST_NOW)
    alone = parse_lines("codex", lines[8:14], model="m", clock=lambda: INGEST_NOW)
    assert [e.event_id for e in alone.events] == [both.events[1].event_id]
    assert alone.events[0].tokens.total == 54000  # alone it cannot tell the increase


def test_codex_totals_that_went_down_count_whole_and_empty_usage_counts_nothing() -> None:
    def completed(i: int, c: int = 0, o: int = 0, r: int = 0) -> dict[str, Any]:
        usage = {"input_tokens": i, "cached_input_tokens": c, "output_tokens": o}
        return {"type": "turn.completed", "usage": usage | {"reasoning_output_tokens": r}}

    started = {"type": "thread.started", "thread_id": "t"}
    p = parse_lines(
        "codex",
        json_lines(
            started,
            completed(100, 40, 10, 5),
            completed(0),  # codex had no usage to report: nothing, and the total stands
            completed(150, 60, 20, 5),
            completed(120, 60, 30, 5),  # input went down: another running total, counted whole
        ),
        model="m",
    )
    assert [e.tokens.total for e in p.events] == [110, 0, 60, 150]
    assert p.events[2].tokens == TokenBreakdown(total=60, input=30, cache_read=20, output=10)
    assert len({e.event_id for e in p.events}) == 4


def test_codex_a_usage_whose_part_exceeds_its_whole_is_unparseable() -> None:
    usage = {"input_tokens": 10, "cached_input_tokens": 20, "output_tokens": 5}
    p = parse_lines("codex", json_lines({"type": "turn.completed", "usage": usage}), model="m")
    assert p.unparseable == [(1, "usage: a part is larger than its whole")]
    assert p.events == []


def test_codex_followed_live_measures_the_whole_run() -> None:
    parser = make_parser("codex", model="m")
    start = INGEST_NOW
    items = []
    lines = (FIXTURES / CODEX).read_text().splitlines()[:8]
    for n, line in enumerate(lines):
        # turn.started (line 2) arrives at 1 s, each line after it 1.25 s later: the turn's
        # end (line 8) at 8.5 s
        items += parser.feed(line, start + timedelta(seconds=1 + 1.25 * max(0, n - 1)))
    (event,) = [i.event for i in items if isinstance(i, Completion)]
    assert event.latency_ms == 7500
    assert event.completed_at == start + timedelta(seconds=8.5)
    # lines that arrive together (a log piped through cat) tell no latency
    parser = make_parser("codex", model="m")
    got = [i for n, line in enumerate(lines) for i in parser.feed(line, start)]
    assert [i.event.latency_ms for i in got if isinstance(i, Completion)] == [None]


def test_codex_clock_is_read_in_the_zone_named_and_stated_for_record() -> None:
    limit = "You've hit your usage limit. Try again at 2:05 AM."
    lines = json_lines(
        {"type": "thread.started", "thread_id": "t"},
        {"type": "turn.started"},
        {"type": "turn.failed", "error": {"message": limit}},
    )
    # 12:00 UTC is 21:00 in Tokyo: 2:05 AM that day, long past, blocks nothing
    tokyo = parse_lines("codex", lines, model="m", clock=lambda: INGEST_NOW, zone="Asia/Tokyo")
    until = datetime(2026, 11, 19, 17, 5, tzinfo=UTC)
    assert tokyo.limits == [Limit("m", until, limit)]
    # record() knows no zone but UTC: the stored text states the end
    (event,) = tokyo.events
    assert event.error == limit + " (resets at 2026-11-19T17:05:00Z)"
    assert limits.from_text(event.error, event.completed_at) == limits.LimitEnd(until)
    # in UTC the text says it already
    utc = parse_lines("codex", lines, model="m", clock=lambda: INGEST_NOW, zone="UTC")
    assert utc.events[0].error == limit
    assert utc.limits == [Limit("m", datetime(2026, 11, 20, 2, 5, tzinfo=UTC), limit)]


def test_codex_clock_is_read_in_this_machines_zone_by_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lines = json_lines(
        {"type": "turn.failed", "error": {"message": "usage limit. Try again at 11:30 PM."}}
    )
    monkeypatch.setenv("TZ", "America/Los_Angeles")  # UTC-8 in November: 04:00 at INGEST_NOW
    time.tzset()
    try:
        p = parse_lines("codex", lines, model="m", clock=lambda: INGEST_NOW)
    finally:
        monkeypatch.undo()
        time.tzset()
    assert p.limits[0].until == datetime(2026, 11, 21, 7, 30, tzinfo=UTC)


def test_codex_own_failures_never_block() -> None:
    """A failure codex itself caused (its sandbox, a process) is no answer of the provider,
    whatever the command printed into it."""
    own = "sandbox error: command was killed by a signal; stderr: API rate limit exceeded"
    p = parse_lines(
        "codex", json_lines({"type": "turn.failed", "error": {"message": own}}), model="m"
    )
    assert p.limits == []
    assert p.events[0].error == limits.NOT_AN_API_ERROR + own
    assert not is_subscription_limit_error(p.events[0].error)
