"""Agent CLI output parsers (pure: no Redis), on fixtures in each tool's current shapes."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from redis_telemetry import CompletionEvent, TokenBreakdown, is_subscription_limit_error
from redis_telemetry.core import rules
from redis_telemetry.ingest import (
    FORMAT_NAMES,
    Completion,
    Limit,
    Parsed,
    UnparseableLine,
    make_parser,
    parse_lines,
)

FIXTURES = Path(__file__).parent / "fixtures"
#: the fixtures' runs happen around 2026-11-20 12:00 UTC
FIXED = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
LATER = datetime(2026, 11, 27, tzinfo=UTC)


def parse(fmt: str, name: str, clock: datetime = FIXED, **kw: str) -> Parsed:
    lines = (FIXTURES / name).read_text().splitlines()
    return parse_lines(fmt, lines, kw.get("model"), kw.get("session"), lambda: clock)


# -- Claude Code 2.1 ------------------------------------------------------------------------------


def test_claude_21_runs() -> None:
    p = parse("claude", "claude-2.1-stream-json.jsonl")
    assert p.ignored == [1, 2, 4, 5, 7, 10, 12, 15]  # init, assistant, allowed_warning, user
    assert p.unparseable == [
        (16, "not JSON: Expecting value"),
        (17, "missing or malformed field: 'duration_ms'"),
    ]
    ok, limited, max_turns, api_429, turn1, turn2 = p.events
    # A: one completion for the main model, named as the API names it (no "[1m]")
    assert ok.model == "claude-sonnet-4-5-20250929"
    assert ok.success
    assert ok.error is None
    assert ok.latency_ms == 12000
    assert ok.cost_usd == pytest.approx(0.0321)  # the run's cost, the helper's share included
    assert ok.tokens == TokenBreakdown(
        total=12320, input=20, output=300, cache_read=10000, cache_write=2000
    )
    assert ok.completed_at == FIXED  # result lines carry no time: the ingest clock
    assert ok.event_id == "claude:c0ffee00-0000-4000-8000-000000000003"
    # the helper model (haiku) gets no completion of its own; <synthetic> is never a model
    assert "claude-haiku-4-5-20251001" not in {e.model for e in p.events[:3]}
    assert "<synthetic>" not in {e.model for e in p.events}
    # B: a failure, with the limit's end from the rate_limit_event
    assert limited.model == "claude-opus-4-6"
    assert not limited.success
    assert limited.error == "You've hit your limit · resets 11pm (America/Anchorage)"
    # C: no init line: the modelUsage entry that did the work, not the first key
    assert max_turns.model == "claude-sonnet-4-5-20250929"
    assert not max_turns.success  # error_max_turns although is_error is false
    assert max_turns.error == "Reached maximum number of turns (8)"  # from errors[]
    assert (max_turns.latency_ms, max_turns.tokens.total) == (40100, 16322)
    # D: api_error_status 429
    assert (api_429.model, api_429.success) == ("claude-haiku-4-5-20251001", False)
    # E: cumulative results of one process count their increments
    assert (turn1.cost_usd, turn1.tokens.total) == (0.01, 1610)
    assert turn2.cost_usd == pytest.approx(0.015)
    assert turn2.tokens == TokenBreakdown(
        total=1865, input=5, output=160, cache_read=1500, cache_write=200
    )
    assert p.limits == [
        Limit(
            "claude-opus-4-6",
            datetime(2026, 11, 21, 3, 0, tzinfo=UTC),
            "rate_limit_event: seven_day",
        ),
        # no end: the default TTL from when the error was written (the ingest clock here)
        Limit("claude-haiku-4-5-20251001", None, "API Error: Rate limit reached", FIXED),
    ]


def test_claude_limit_text_gives_the_end_without_a_rate_limit_event() -> None:
    result = {
        "type": "result",
        "subtype": "success",
        "is_error": True,
        "duration_ms": 5,
        "session_id": "s",
        "result": "You've hit your session limit · resets 12:50am (America/Los_Angeles)",
        "modelUsage": {},
        "uuid": "u1",
    }
    init = {"type": "system", "subtype": "init", "session_id": "s", "model": "claude-opus-4-6"}
    p = parse_lines("claude", [json.dumps(init), json.dumps(result)], clock=lambda: FIXED)
    # 12:50am in Los Angeles (UTC-8 in November) next comes at 08:50 UTC
    assert p.limits == [
        Limit(
            "claude-opus-4-6",
            datetime(2026, 11, 20, 8, 50, tzinfo=UTC) + timedelta(days=1),
            result["result"][:200],
        )
    ]


def test_claude_rate_limit_event_before_the_model_is_known_waits_for_the_result() -> None:
    event = {
        "type": "rate_limit_event",
        "session_id": "s",
        "uuid": "r",
        "rate_limit_info": {
            "status": "rejected",
            "resetsAt": 1795230000,
            "rateLimitType": "five_hour",
        },
    }
    result = {
        "type": "result",
        "subtype": "success",
        "is_error": True,
        "duration_ms": 5,
        "session_id": "s",
        "result": "5-hour limit reached ∙ resets 3pm",
        "uuid": "u",
        "modelUsage": {"claude-sonnet-4-5": {"outputTokens": 1, "costUSD": 0.1}},
    }
    p = parse_lines("claude", [json.dumps(event), json.dumps(result)], clock=lambda: FIXED)
    assert p.ignored == [1]
    assert p.limits == [
        Limit(
            "claude-sonnet-4-5",
            datetime(2026, 11, 21, 3, 0, tzinfo=UTC),
            "rate_limit_event: five_hour",
        )
    ]


def test_claude_output_format_json_verbose_is_one_array() -> None:
    lines = (FIXTURES / "claude-2.1-stream-json.jsonl").read_text().splitlines()[:3]
    one_line = "[" + ",".join(lines) + "]"
    p = parse_lines("claude", [one_line], clock=lambda: FIXED)
    assert [(e.model, e.latency_ms) for e in p.events] == [("claude-sonnet-4-5-20250929", 12000)]
    assert parse_lines("jsonl", [one_line]).unparseable == [(1, "not a JSON object")]
    assert parse_lines("claude", ["[]", "[1]"]).unparseable == [
        (1, "not a JSON object"),
        (2, "not a JSON object"),
    ]


def test_claude_older_release() -> None:
    p = parse("claude", "claude-stream.jsonl")
    assert p.ignored == [1, 2, 5]
    assert [n for n, _ in p.unparseable] == [4, 7]
    ok, limited, old = p.events
    assert ok.model == "claude-fixture-model"
    assert ok.session_id == "c-ses-1"
    assert ok.tokens == TokenBreakdown(
        total=1600, input=30, output=70, reasoning=0, cache_read=1000, cache_write=500
    )
    assert ok.cost_usd == pytest.approx(0.0521)
    assert limited.error == "Claude AI usage limit reached|2051222400"
    assert old.model == "claude-other-model"  # no init line: the modelUsage entry
    assert old.cost_usd == pytest.approx(0.002)  # older releases' cost_usd
    assert old.event_id == "claude:c-ses-4:result1"  # no uuid: session and result position
    assert p.limits == [
        Limit("claude-fixture-model", datetime.fromtimestamp(2051222400, UTC), limited.error)
    ]


def test_claude_results_of_separate_processes_count_whole() -> None:
    def result(cost: float, out: int, uuid: str) -> str:
        return json.dumps(
            {
                "type": "result",
                "subtype": "success",
                "is_error": False,
                "duration_ms": 10,
                "session_id": "s",
                "total_cost_usd": cost,
                "usage": {"output_tokens": out},
                "uuid": uuid,
                "modelUsage": {"m": {"outputTokens": out}},
            }
        )

    p = parse_lines("claude", [result(0.5, 50, "a"), result(0.2, 20, "b")])
    assert [(e.cost_usd, e.tokens.output) for e in p.events] == [(0.5, 50), (0.2, 20)]


def test_claude_2_1_240_times_come_from_the_lines() -> None:
    # ingested a week later: "resets 3pm" still counts from the time the notice was written
    for clock in (FIXED, LATER):
        p = parse("claude", "claude-2.1.240-stream-json.jsonl", clock=clock)
        limited, done = p.events
        assert limited.completed_at == datetime(2026, 11, 20, 13, 5, tzinfo=UTC)
        assert (limited.model, limited.success) == ("claude-opus-4-7", False)
        assert done.completed_at == datetime(2026, 11, 20, 13, 30, 9, 500000, tzinfo=UTC)
        assert p.limits == [
            Limit("claude-opus-4-7", datetime(2026, 11, 20, 15, 0, tzinfo=UTC), limited.error or "")
        ]
        # api_retry is Claude Code retrying by itself; the interrupted run (line 9) and the
        # five-hour rejection with overage allowed (line 11) record and block nothing
        assert p.ignored == [1, 2, 3, 4, 5, 7, 8, 9, 10, 11, 12, 14]
        assert p.unparseable == []
    parser = make_parser("claude", clock=lambda: LATER)
    lines = (FIXTURES / "claude-2.1.240-stream-json.jsonl").read_text().splitlines()
    items = [item for line in lines for item in parser.feed(line)]
    completions = [i.event for i in items if isinstance(i, Completion)]
    assert len(completions) == 2
    assert LATER not in [e.completed_at for e in completions]  # each carries its own time


def test_claude_a_result_of_its_own_time_and_lines_without_one() -> None:
    init = {"type": "system", "subtype": "init", "session_id": "s", "model": "m"}
    result = {
        "type": "result",
        "subtype": "success",
        "is_error": True,
        "duration_ms": 5,
        "session_id": "s",
        "result": "Claude AI usage limit reached · retry after 60 seconds",
        "uuid": "u",
        "timestamp": "2026-11-19T10:00:00+01:00",
    }
    p = parse_lines("claude", [json.dumps(init), json.dumps(result)], clock=lambda: LATER)
    assert p.events[0].completed_at == datetime(2026, 11, 19, 9, 0, tzinfo=UTC)
    assert p.limits[0].until == datetime(2026, 11, 19, 9, 1, tzinfo=UTC)
    del result["timestamp"]  # no time anywhere: the ingest clock, as before
    p = parse_lines("claude", [json.dumps(init), json.dumps(result)], clock=lambda: LATER)
    assert p.events[0].completed_at == LATER
    assert p.limits[0].until == LATER + timedelta(seconds=60)


def test_claude_an_unreadable_timestamp_leaves_no_trace() -> None:
    parser = make_parser("claude", clock=lambda: FIXED)
    bad = {"type": "assistant", "session_id": "s", "timestamp": "yesterday", "message": {}}
    with pytest.raises(UnparseableLine, match="ISO-8601"):
        parser.feed(json.dumps(bad))
    result = {"type": "result", "subtype": "success", "is_error": False, "duration_ms": 5}
    result |= {"session_id": "s", "modelUsage": {"m": {}}}
    (done,) = parser.feed(json.dumps(result))
    assert isinstance(done, Completion)
    assert done.event.completed_at == FIXED


def test_claude_model_override_and_missing_model() -> None:
    p = parse("claude", "claude-2.1-stream-json.jsonl", model="m/override")
    assert {e.model for e in p.events} == {"m/override"}
    assert {lim.model for lim in p.limits} == {"m/override"}
    bare = {"type": "result", "subtype": "success", "is_error": False, "duration_ms": 1}
    with pytest.raises(UnparseableLine, match="names no model; pass --model"):
        make_parser("claude").feed(json.dumps(bare))


# -- pi -------------------------------------------------------------------------------------------


class LiveFeed:
    """Feeds lines as if they arrived live: line ``n`` arrives at ``start + arrivals[n]``."""

    def __init__(self, fmt: str, start: datetime) -> None:
        self.start = start
        self.parser = make_parser(fmt, clock=lambda: start)
        self.items: list[Completion | Limit] = []

    def feed(self, lines: list[str], arrivals: Callable[[int, dict[str, object]], float]) -> None:
        for n, line in enumerate(lines, 1):
            at = self.start + timedelta(seconds=arrivals(n, json.loads(line)))
            self.items += self.parser.feed(line, at)
        self.items += self.parser.finish()


def pi_lines(name: str = "pi-0.58-mode-json.jsonl") -> list[str]:
    return (FIXTURES / name).read_text().splitlines()


def arrival_of_pi(n: int, data: dict[str, object]) -> float:
    """Live: a message_start arrives when its call began, message_end 2.5 s later."""
    message = data.get("message")
    began = message.get("timestamp") if isinstance(message, dict) else None
    if isinstance(began, int) and data["type"] == "message_start":
        return (began - 1795176000000) / 1000
    if isinstance(began, int):
        return (began - 1795176000000) / 1000 + 2.5
    return n / 1000


def test_pi_followed_live() -> None:
    live = LiveFeed("pi", FIXED)
    live.feed(pi_lines(), arrival_of_pi)
    events = [i.event for i in live.items if isinstance(i, Completion)]
    tool_use, retried, stop = events
    assert {e.session_id for e in events} == {"7d1e2f30-4a5b-4c6d-8e9f-0a1b2c3d4e5f"}  # header
    assert tool_use.model == "anthropic/claude-sonnet-4-5"
    assert tool_use.success  # toolUse is a normal turn
    assert tool_use.latency_ms == 2500  # message_start to message_end, not the tool's run
    assert tool_use.tokens == TokenBreakdown(total=4280, input=3000, output=80, cache_write=1200)
    assert tool_use.cost_usd == pytest.approx(0.0123)
    assert tool_use.event_id == "pi:7d1e2f30-4a5b-4c6d-8e9f-0a1b2c3d4e5f:1795176000010"
    # the 429 that pi retried: a failed call, but no subscription limit
    assert not retried.success
    assert retried.error == "transient error; pi retried the call (attempt 1)"
    assert stop.success
    assert stop.tokens.total == 7450
    # each message once (message_end and turn_end); the aborted one not at all
    assert not [i for i in live.items if isinstance(i, Limit)]
    assert all(e.latency_ms is not None for e in events)


def test_pi_from_a_file_is_recorded_without_latency() -> None:
    """Success, tokens and cost count; the latency, which a file cannot tell, does not."""
    p = parse("pi", "pi-0.58-mode-json.jsonl", clock=LATER)
    assert [e.model for e in p.events] == ["anthropic/claude-sonnet-4-5"] * 3
    assert [e.success for e in p.events] == [True, False, True]
    assert [e.latency_ms for e in p.events] == [None] * 3
    assert p.unmeasured == p.events
    assert p.events[0].tokens.total == 4280
    assert p.limits == []


def test_pi_lines_read_at_once_are_not_live() -> None:
    """A fresh file read right away: the calls look live, but arrive together."""
    live = LiveFeed("pi", FIXED)
    live.feed(pi_lines(), lambda n, data: 0.0)
    assert [type(i) for i in live.items] == [Completion] * 3
    assert [i.event.latency_ms for i in live.items if isinstance(i, Completion)] == [None] * 3


def test_pi_final_errors_are_limits() -> None:
    live = LiveFeed("pi", FIXED)
    live.feed(pi_lines("pi-0.58-mode-json-errors.jsonl"), arrival_of_pi)
    events = [i.event for i in live.items if isinstance(i, Completion)]
    assert [e.success for e in events] == [False, False, False]
    assert events[0].error == "transient error; pi retried the call (attempt 1)"
    assert events[1].error is not None
    assert events[1].error.startswith("429 rate_limit_error")
    began = datetime(2026, 11, 20, 12, 0, 2, 300000, tzinfo=UTC)
    assert [i for i in live.items if isinstance(i, Limit)] == [
        Limit("openai/gpt-5.1-codex", began + timedelta(seconds=30), events[1].error),
        # no end: the default TTL from the call's own time
        Limit(
            "openai/gpt-5.1-codex",
            None,
            events[2].error or "",
            datetime(2026, 11, 20, 12, 1, tzinfo=UTC),
        ),
    ]


def test_pi_limits_apply_from_a_file_too() -> None:
    p = parse("pi", "pi-0.58-mode-json-errors.jsonl", clock=LATER)
    assert [lim.until for lim in p.limits] == [
        datetime(2026, 11, 20, 12, 0, 32, 300000, tzinfo=UTC),
        None,
    ]
    assert len(p.unmeasured) == 3


def test_pi_a_tools_failure_never_blocks() -> None:
    # gh hit GitHub's rate limit inside a bash tool; pi reports it as the tool's result
    p = parse("pi", "pi-0.58-tool-errors.jsonl")
    assert [(e.success, e.error) for e in p.events] == [(True, None), (True, None)]
    assert (p.limits, p.unparseable) == ([], [])


def test_pi_seed_shape_is_still_read() -> None:
    p = parse("pi", "pi.jsonl", session="forced")
    assert p.ignored == [1, 2, 4]
    assert [n for n, _ in p.unparseable] == [5, 6]
    ok, failed = p.events
    assert ok.model == "fixture-provider/pi-model-1"
    assert ok.session_id == "forced"
    assert ok.latency_ms == 2100  # latencyBreakdown.totalMs
    assert ok.tokens == TokenBreakdown(total=625, input=500, output=25, cache_read=100)
    assert (failed.success, failed.error) == (False, "429 Too Many Requests")
    assert p.limits == [Limit("fixture-provider/pi-model-1", None, "429 Too Many Requests", FIXED)]


def test_pi_unknown_stop_reason_is_unparseable() -> None:
    message = {
        "role": "assistant",
        "provider": "p",
        "model": "m",
        "stopReason": "sleepy",
        "usage": {},
        "timestamp": 1,
    }
    with pytest.raises(UnparseableLine, match="unknown stopReason 'sleepy'"):
        make_parser("pi").feed(json.dumps({"type": "message_end", "message": message}))


def assert_not_the_providers(event: CompletionEvent, text: str) -> None:
    """``event`` failed with ``text``, stored so that the store's own rule blocks nothing."""
    assert (event.success, event.error) == (False, f"not an API error: {text}")
    assert not is_subscription_limit_error(event.error or "")


def test_claude_a_tools_failure_never_blocks() -> None:
    p = parse("claude", "claude-2.1.240-tool-errors.jsonl", clock=LATER)
    tool, api, ok = p.events
    # a tool (gh) hit GitHub's rate limit and the run failed during execution: a failure, and
    # no limit, neither here nor in the store (the text says it is not the provider's error)
    assert (tool.success, tool.model) == (False, "claude-sonnet-4-6")
    assert_not_the_providers(
        tool, "Tool execution failed: gh: API rate limit exceeded for user ID 123"
    )
    # an "API Error" entry of errors[] is the provider's: it blocks, with the end it names
    # (counted from the run's last timestamp), whatever the tool entries before it say
    assert not api.success
    assert p.limits == [
        Limit(
            "claude-sonnet-4-6",
            datetime(2026, 11, 20, 14, 11, 31, tzinfo=UTC),
            "API Error: Rate limit reached · retry after 90 seconds",
        )
    ]
    # a tool's 429 in a run that went on: a success, nothing blocked
    assert ok.success
    assert p.unparseable == []


# -- opencode -------------------------------------------------------------------------------------


def test_opencode_run_json() -> None:
    p = parse("opencode", "opencode-run.jsonl", model="oc/model")
    assert p.ignored == [1, 2, 4, 5, 7]
    assert [n for n, _ in p.unparseable] == [9]
    first, second, error = p.events
    assert {e.model for e in p.events} == {"oc/model"}
    assert first.success  # reason "tool-calls" is a normal step
    assert first.latency_ms == 1500
    assert first.completed_at == datetime.fromtimestamp(1795900001.5, UTC)
    assert first.tokens.total == 1020  # no tokens.total: the sum of the parts
    assert first.event_id == "opencode:prt_a3"
    assert second.tokens == TokenBreakdown(
        total=3300, input=1200, output=40, reasoning=10, cache_read=2000, cache_write=50
    )
    assert (error.success, error.latency_ms) == (False, 800)
    # a monthly limit: no end, so the default TTL from the error's own time
    assert p.limits == [Limit("oc/model", None, error.error or "", error.completed_at)]


def test_opencode_errors() -> None:
    p = parse("opencode", "opencode-run-json-errors.jsonl", model="openai/gpt-5.1-codex")
    length, error, filtered, too_many, fork, outside, auth = p.events
    assert (length.success, length.latency_ms, length.tokens.total) == (True, 6100, 12608)
    assert (error.success, error.latency_ms, error.error) == (False, 1800, "finish reason: error")
    assert (filtered.success, filtered.error) == (False, "finish reason: content-filter")
    assert (too_many.success, too_many.latency_ms) == (False, 350)  # from its own step only
    # the header's end, in words record() reads too
    assert too_many.error == "Too Many Requests (HTTP 429; retry after 1790 seconds)"
    assert fork.model == "openrouter/qwen3-coder"  # part.model wins over --model
    assert auth.latency_ms == 400  # the aborted step before it ended with the abort
    assert p.ignored == [1, 3, 5, 7, 9, 10, 11, 14]  # step_start lines, MessageAbortedError
    assert p.limits == [
        Limit(
            "openai/gpt-5.1-codex", datetime(2026, 11, 20, 12, 30, tzinfo=UTC), "Too Many Requests"
        ),  # Retry-After as an HTTP date
        Limit(
            "openai/gpt-5.1-codex",
            datetime(2026, 11, 20, 12, 2, 15, tzinfo=UTC),
            "Too Many Requests",
        ),  # Retry-After: 120 seconds after the error
    ]
    assert p.unmeasured == [outside]  # an error outside any step: recorded without latency
    assert (outside.model, outside.session_id) == ("openai/gpt-5.1-codex", "ses_fx9Q2wE4rT6y")
    assert (outside.success, outside.latency_ms) == (False, None)


def test_opencode_1_18_run_json() -> None:
    p = parse("opencode", "opencode-1.18-run-json.jsonl", model="anthropic/claude-sonnet-4-6")
    tools, stop, limited, overflow = p.events
    assert (tools.success, tools.latency_ms, tools.tokens.total) == (True, 2200, 15250)
    assert (stop.success, stop.latency_ms, stop.event_id) == (True, 4000, "opencode:prt_o07")
    assert (limited.success, limited.latency_ms) == (False, 400)
    assert limited.error == "Rate limit exceeded, retry later (HTTP 429; retry after 45 seconds)"
    assert (overflow.success, overflow.latency_ms) == (False, 600)
    assert overflow.error == "prompt is too long: 214293 tokens > 200000 maximum"
    # retry-after-ms (which opencode itself honours) gives the end; the overflow is no limit
    assert p.limits == [
        Limit(
            "anthropic/claude-sonnet-4-6",
            datetime(2026, 11, 20, 12, 10, 52, 400000, tzinfo=UTC),
            "Rate limit exceeded, retry later",
        )
    ]
    # step_start, reasoning, tool_use (a failed tool is not a failed call), text, done
    assert p.ignored == [1, 2, 3, 5, 6, 8, 10, 12]
    assert (p.unparseable, p.unmeasured) == ([], [])


def test_opencode_only_the_providers_errors_block() -> None:
    p = parse("opencode", "opencode-1.18-not-the-providers.jsonl", model="oc/m")
    plugin, provider = p.events
    # a plugin's error (UnknownError with the thrown text) that names GitHub's rate limit
    assert (plugin.success, plugin.latency_ms) == (False, 1000)
    assert_not_the_providers(
        plugin, "Error: github plugin: API rate limit exceeded for user ID 123"
    )
    # the provider's own JSON error, which opencode passes on as UnknownError: it blocks
    assert not provider.success
    assert p.limits == [
        Limit(
            "oc/m",
            datetime.fromtimestamp(1795180002.6 + 30, UTC),
            provider.error or "",
        )
    ]
    assert p.ignored == [1, 2, 4]  # step_start lines; the failed tool is not a failed call


@pytest.mark.parametrize(
    ("headers", "until"),
    [
        ({"Retry-After-Ms": "1500", "retry-after": "600"}, FIXED + timedelta(seconds=1.5)),
        ({"retry-after-ms": "soon", "retry-after": "600"}, FIXED + timedelta(seconds=600)),
        ({"retry-after-ms": True}, None),
        ({"retry-after-ms": -5}, None),
    ],
)
def test_opencode_retry_after_ms_comes_first(headers: dict[str, object], until: object) -> None:
    ms = int(FIXED.timestamp() * 1000)
    start = {"type": "step_start", "timestamp": ms, "sessionID": "s", "part": {"messageID": "m"}}
    data = {"message": "Too Many Requests", "statusCode": 429, "responseHeaders": headers}
    error = {"type": "error", "timestamp": ms, "sessionID": "s", "error": {"data": data}}
    p = parse_lines("opencode", [json.dumps(start), json.dumps(error)], model="x/y")
    assert [lim.until for lim in p.limits] == [until]


def test_opencode_needs_a_model() -> None:
    with pytest.raises(ValueError, match="--format opencode needs --model"):
        make_parser("opencode")


@pytest.mark.parametrize("ts", ["253402300800000.0", "1e300", "-1e300", "NaN", "Infinity"])
def test_timestamps_out_of_range_are_unparseable(ts: str) -> None:
    parser = make_parser("opencode", model="m")
    with pytest.raises(UnparseableLine, match=r"timestamp|malformed"):
        parser.feed(f'{{"type": "step_start", "timestamp": {ts}, "sessionID": "s"}}')


# -- jsonl and the shared rules -------------------------------------------------------------------


def test_jsonl_and_overrides() -> None:
    p = parse("jsonl", "rust-completion-events.jsonl", session="forced")
    assert (p.ignored, p.unparseable) == ([], [])
    assert [e.model for e in p.events] == [
        "acme-plan/coder-7",
        "vendor/big-model-2",
        "vendor/fast-model",
    ]
    assert {e.session_id for e in p.events} == {"forced"}
    assert all(e.event_id and e.event_id.startswith("jsonl:") for e in p.events)
    big = p.events[1]
    # no end: the default TTL from the event's completion, long past: it blocks nothing now
    assert p.limits == [
        Limit("vendor/big-model-2", None, "weekly session limit reached", big.completed_at)
    ]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{", "not JSON"),
        ('"text"', "not a JSON object"),
        ('{"model": "", "latency_ms": 1, "success": true}', "model"),
        ('{"model": "m", "latency_ms": -1, "success": true}', "latency_ms"),
        ("[" * 100_000, "not JSON"),
    ],
)
def test_jsonl_bad_lines_name_the_problem(line: str, message: str) -> None:
    with pytest.raises(UnparseableLine, match=message):
        make_parser("jsonl").feed(line)


# claude-limits gives no events (its limits: tests/test_otlp.py)
@pytest.mark.parametrize("fmt", [f for f in FORMAT_NAMES if f != "claude-limits"])
def test_the_same_log_gives_the_same_ids(fmt: str) -> None:
    name = {
        "claude": "claude-2.1-stream-json.jsonl",
        "opencode": "opencode-run-json-errors.jsonl",
        "pi": "pi.jsonl",
        "codex": "codex-0.171-exec-json.jsonl",
        "gemini": "gemini-0.56-json.json",
        "jsonl": "rust-completion-events.jsonl",
    }[fmt]
    model = "m" if fmt in ("opencode", "codex", "gemini") else ""
    first = parse(fmt, name, model=model)
    again = parse(fmt, name, clock=FIXED + timedelta(hours=1), model=model)
    ids = [e.event_id for e in first.events]
    assert ids
    assert None not in ids
    assert len(set(ids)) == len(ids)
    assert [e.event_id for e in again.events] == ids


def test_blank_lines_are_ignored() -> None:
    assert make_parser("pi").feed("   \n") == []


def test_unknown_format() -> None:
    with pytest.raises(ValueError, match="unknown format 'xml'"):
        make_parser("xml")


def test_a_bad_message_in_an_array_undoes_the_whole_line() -> None:
    init = {"type": "system", "subtype": "init", "session_id": "s", "model": "from-init"}
    bad = {"type": "result", "session_id": "s"}  # no duration_ms
    result = {
        "type": "result",
        "subtype": "success",
        "is_error": False,
        "duration_ms": 3,
        "session_id": "s",
        "uuid": "u",
        "modelUsage": {"from-usage": {}},
    }
    p = parse_lines("claude", [json.dumps([init, bad]), json.dumps(result)])
    assert [n for n, _ in p.unparseable] == [1]
    assert [e.model for e in p.events] == ["from-usage"]  # the init of line 1 left no trace


PAGE = "<html><body>" + "Too Many Requests. " * 2000 + "</body></html>"  # a proxy's error page


def test_an_over_long_error_is_cut_never_dropped() -> None:
    ms = int(FIXED.timestamp() * 1000)
    claude = {
        "type": "result",
        "subtype": "success",
        "is_error": True,
        "api_error_status": 429,
        "duration_ms": 900,
        "session_id": "s",
        "uuid": "u1",
        "result": PAGE,
        "modelUsage": {"claude-x": {"outputTokens": 1}},
    }
    opencode = [
        {"type": "step_start", "timestamp": ms, "sessionID": "s", "part": {"messageID": "m"}},
        {
            "type": "error",
            "timestamp": ms + 500,
            "sessionID": "s",
            "error": {
                "name": "APIError",
                "data": {
                    "message": PAGE,
                    "statusCode": 429,
                    "responseHeaders": {"retry-after": "60"},
                },
            },
        },
    ]
    jsonl = {
        "model": "m",
        "session_id": "s",
        "completed_at": FIXED.isoformat(),
        "latency_ms": 5,
        "success": False,
        "tokens": {"total": 0},
        "cost_usd": 0.0,
        "error": PAGE,
    }
    streams = {
        "claude": [json.dumps(claude)],
        "opencode": [json.dumps(line) for line in opencode],
        "jsonl": [json.dumps(jsonl)],
    }
    for fmt, lines in streams.items():
        p = parse_lines(fmt, lines, "m" if fmt == "opencode" else None, None, lambda: FIXED)
        assert p.unparseable == [], fmt
        (event,) = p.events
        assert event.error is not None
        assert len(event.error) == rules.MAX_ERROR_LEN, fmt
        assert event.error.startswith("<html><body>Too Many Requests."), fmt
        assert len(p.limits) == 1, fmt  # and its 429 still blocks
    # the end the header gave survives the cut, for record() to read
    assert event.error is not None
    opencode_error = parse_lines("opencode", streams["opencode"], "m", None, lambda: FIXED)
    assert opencode_error.events[0].error is not None
    assert opencode_error.events[0].error.endswith("… (HTTP 429; retry after 60 seconds)")


def test_an_over_long_pi_error_is_cut_never_dropped() -> None:
    lines = pi_lines("pi-0.58-mode-json-errors.jsonl")
    long = [
        line.replace("You exceeded your current quota", f"You exceeded your current quota {PAGE}")
        for line in lines
    ]
    assert long != lines
    p = parse_lines("pi", long, clock=lambda: FIXED)
    assert p.unparseable == []
    assert len(p.events) == len(parse_lines("pi", lines, clock=lambda: FIXED).events)
    assert max(len(e.error or "") for e in p.events) == rules.MAX_ERROR_LEN
