"""Hypothesis throws odd lines at every parser: nothing crashes, every bad line is counted
with its number, and an unparseable line leaves no trace."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from redis_telemetry.core import limits, rules
from redis_telemetry.ingest import FORMAT_NAMES, Limit, parse_lines

FUZZ = settings(max_examples=300, deadline=None)
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**66), 2**66),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.sampled_from(
        [
            0,
            1,
            429,
            1795176000000,
            1795230000,
            "429",
            "rejected",
            "allowed",
            "error",
            "stop",
            "toolUse",
            "aborted",
            "length",
            "tool-calls",
            "content-filter",
            "assistant",
            "MessageAbortedError",
            "APIError",
            "claude-opus-4-6[1m]",
            "<synthetic>",
            "init",
            "error_max_turns",
            "s",
            "m",
            "unknown",
            "success",
            "auto",
            "FatalCancellationError",
            "2026-11-20T11:40:29.663Z",
            "You've hit your usage limit. Try again at 2:05 AM.",
        ]
    ),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)
KEYS = [
    "subtype",
    "is_error",
    "duration_ms",
    "total_cost_usd",
    "cost_usd",
    "usage",
    "modelUsage",
    "session_id",
    "model",
    "uuid",
    "errors",
    "result",
    "api_error_status",
    "rate_limit_info",
    "parent_tool_use_id",
    "message",
    "timestamp",
    "sessionID",
    "part",
    "error",
    "id",
    "sessionId",
    "turnIndex",
    "latencyBreakdown",
    "attempt",
    "success",
    "latency_ms",
    "completed_at",
    "tokens",
    "event_id",
    "session_id",
    "thread_id",
    "status",
    "severity",
    "response",
]
TYPES = [
    "system",
    "assistant",
    "result",
    "rate_limit_event",
    "user",
    "session",
    "agent_start",
    "turn_start",
    "message_start",
    "message_end",
    "turn_end",
    "agent_end",
    "auto_retry_start",
    "auto_retry_end",
    "step_start",
    "step_finish",
    "error",
    "text",
    "tool_use",
    "other",
    "thread.started",
    "turn.started",
    "turn.completed",
    "turn.failed",
    "item.completed",
    "init",
    "tool_result",
]
message = st.fixed_dictionaries(
    {"role": st.sampled_from(["assistant", "user", "toolResult"])},
    optional=dict.fromkeys(["provider", "model", "usage", "stopReason", "errorMessage"], values)
    | {"timestamp": st.integers(1795176000000, 1795176100000)},
)
part = st.fixed_dictionaries(
    {},
    optional={
        "id": st.sampled_from(["prt_1", "prt_2"]),
        "messageID": st.sampled_from(["a", "b"]),
        "reason": scalars,
        "cost": scalars,
        "tokens": values,
        "model": values,
    },
)
counts = st.one_of(scalars, st.integers(0, 10**6))
#: codex's usage, gemini's per-model stats (stream-json and json)
CODEX_USAGE = ["input_tokens", "cached_input_tokens", "output_tokens", "reasoning_output_tokens"]
GEMINI_TOKENS = ["total_tokens", "input", "cached", "prompt", "candidates", "thoughts", "total"]
usage = st.dictionaries(st.sampled_from(CODEX_USAGE + GEMINI_TOKENS), counts, max_size=5)
model_stats = st.fixed_dictionaries(
    {},
    optional={
        "tokens": usage,
        "api": st.fixed_dictionaries({"totalLatencyMs": counts}),
        "roles": st.dictionaries(
            st.sampled_from(["main", "utility_router"]),
            st.fixed_dictionaries({"tokens": usage}),
            max_size=2,
        ),
    },
)
stats = st.fixed_dictionaries(
    {},
    optional={
        "models": st.dictionaries(st.sampled_from(["m1", "m2"]), st.one_of(usage, model_stats)),
        "duration_ms": counts,
    },
)
shaped = st.fixed_dictionaries(
    {"type": st.sampled_from(TYPES)},
    optional=dict.fromkeys(KEYS, values)
    | {"message": message, "part": part, "usage": usage, "stats": stats},
)
#: gemini --output-format json: one object a run, no type
run_object = st.fixed_dictionaries(
    {"session_id": st.sampled_from(["s1", "s2"])},
    optional={"stats": stats, "error": values, "response": values},
)
lines = st.lists(
    st.one_of(
        shaped.map(json.dumps),
        run_object.map(json.dumps),
        st.text(max_size=40),
        values.map(json.dumps),
    ),
    max_size=12,
)


def run(fmt: str, stream: list[str]) -> Any:
    needs_model = fmt in ("opencode", "codex")  # and gemini's failure objects name none
    return parse_lines(fmt, stream, model="fuzz/model" if needs_model else None, clock=lambda: NOW)


@FUZZ
@given(fmt=st.sampled_from(FORMAT_NAMES), stream=lines)
def test_every_line_is_accounted_for(fmt: str, stream: list[str]) -> None:
    p = run(fmt, stream)  # never raises
    bad = [n for n, _ in p.unparseable]
    assert all(why for _, why in p.unparseable)  # each names its problem
    assert not set(bad) & set(p.ignored)
    assert set(bad) | set(p.ignored) <= set(range(1, len(stream) + 1))
    for e in p.events:
        assert e.latency_ms is None or e.latency_ms >= 0
        assert math.isfinite(e.cost_usd)
        assert e.event_id  # every event has an id from its line
    for lim in p.limits:
        assert isinstance(lim, Limit)
        assert lim.model
    assert all(u.latency_ms is None for u in p.unmeasured)


@FUZZ
@given(fmt=st.sampled_from(FORMAT_NAMES), stream=lines)
def test_an_unparseable_line_leaves_no_trace(fmt: str, stream: list[str]) -> None:
    p = run(fmt, stream)
    bad = {n for n, _ in p.unparseable}
    kept = [line for n, line in enumerate(stream, 1) if n not in bad]
    q = run(fmt, kept)
    assert q.unparseable == []
    assert q.events == p.events
    assert q.limits == p.limits
    assert q.unmeasured == p.unmeasured


@FUZZ
@given(fmt=st.sampled_from(FORMAT_NAMES), stream=lines)
def test_the_same_stream_gives_the_same_ids(fmt: str, stream: list[str]) -> None:
    assert [e.event_id for e in run(fmt, stream).events] == [
        e.event_id for e in run(fmt, stream).events
    ]


limit_texts = st.one_of(
    st.text(max_size=200),
    st.builds(
        "{} resets {}{} {} ({}) retry after {} seconds|{}".format,
        st.sampled_from(["usage limit", "429 Too Many Requests", "Weekly limit reached"]),
        st.sampled_from(["", "Nov 24, ", "Feb 30, ", "Smarch 3, "]),
        st.integers(0, 13),
        st.sampled_from(["am", "pm", ":61pm", ":30am"]),
        st.sampled_from(["UTC", "America/Anchorage", "Nowhere/Else", "", "../etc"]),
        st.integers(-5, 10**12),
        st.integers(0, 10**14),
    ),
    st.builds(  # Codex's reset clock
        "You've hit your usage limit. Try again at {}{}{}:{:02d} {}.".format,
        st.sampled_from(["", "Nov ", "Feb ", "Smarch "]),
        st.sampled_from(["", "21st, 2026 ", "30th, 2027 ", "1st, 0001 ", "31st, 9999 "]),
        st.integers(0, 13),
        st.integers(0, 61),
        st.sampled_from(["AM", "PM", "pm"]),
    ),
    st.builds(  # Gemini's reset duration
        "You have exhausted your capacity. Your quota will reset after {}.".format,
        st.sampled_from(["3h12m40s", "0s", "10m", "999999999h", "1.5s"]),
    ),
)


@FUZZ
@given(limit_texts, st.datetimes(timezones=st.just(UTC)))
@example("usage limit resets 3pm (America/Anchorage)", datetime(9999, 12, 31, 23, tzinfo=UTC))
@example("usage limit resets Dec 31, 11pm (Asia/Tokyo)", datetime(9999, 12, 31, tzinfo=UTC))
@example("usage limit resets Jan 1, 1am (Asia/Tokyo)", datetime(1, 1, 1, tzinfo=UTC))
@example("usage limit; retry after 999999999 seconds", datetime(9999, 12, 31, tzinfo=UTC))
@example("Fri, 31 Dec 9999 23:59:59 GMT", datetime(1, 1, 1, tzinfo=UTC))
@example("rate limit; try again in 999999999h", datetime(9999, 12, 31, tzinfo=UTC))
@example("999999999", datetime(9999, 12, 31, tzinfo=UTC))
@example("Fri, 20 Nov 2026 11:00:00 GMT", datetime(2026, 11, 20, 12, tzinfo=UTC))
@example("usage limit. Try again at Dec 31st, 9999 11:59 PM.", datetime(9999, 12, 31, tzinfo=UTC))
@example("usage limit. Try again at Jan 1st, 0001 12:05 AM.", datetime(1, 1, 1, tzinfo=UTC))
@example("usage limit. Try again at 11:59 PM.", datetime(9999, 12, 31, 23, tzinfo=UTC))
@example("usage limit (resets at 9999-12-31T23:59:59Z)", datetime(1, 1, 1, tzinfo=UTC))
def test_limit_rules_never_crash(text: str, now: datetime) -> None:
    found = limits.from_text(text, now)
    assert found is None or found.until is None or found.until.tzinfo is not None
    for zone in (None, limits.named_zone("Pacific/Kiritimati")):  # this machine's, UTC+14
        local = limits.from_text(text, now, zone)
        assert local is None or local.until is None or local.until.tzinfo is not None
    if found is not None:
        said = limits.state_end(text, found.until, now)
        assert limits.from_text(said, now) is not None
    assert limits.blocks_at(text, now, now) in (True, False)
    limits.retry_after(text, now)
    limits.from_status(429, text, {"retry-after": text}, now)
    for headers in ({"retry-after-ms": text}, {"retry-after": text}, None):
        for cooldown in (None, 5):
            found_429, stated = limits.answer_429(text, headers, now, cooldown)
            assert len(stated) <= rules.MAX_ERROR_LEN or stated == text
            if found_429.until is not None and len(text) < rules.MAX_ERROR_LEN - 64:
                # record() reads the end the answer gives, to the second (a past one: now)
                said = limits.from_text(stated, now)
                assert said is not None
                assert said.until is not None
                gap = max(said.until, now) - max(found_429.until, now)
                assert abs(gap.total_seconds()) < 1
