"""The Gemini CLI parser (pure: no Redis), on fixtures in Gemini CLI 0.56's shapes."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import pytest

from redis_telemetry import TokenBreakdown, is_subscription_limit_error
from redis_telemetry.core import limits
from redis_telemetry.ingest import Limit, parse_lines

from .helpers import INGEST_NOW, json_lines, parse_fixture

# -- gemini ---------------------------------------------------------------------------------------

STREAM = "gemini-0.56-stream-json.jsonl"
OBJECTS = "gemini-0.56-json.json"


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def test_gemini_stream_json_runs() -> None:
    p = parse_fixture("gemini", STREAM)
    assert p.unparseable == []
    ends = (8, 12, 15, 19, 22, 25)  # the result lines (22: cancelled, recorded nothing)
    assert p.ignored == [n for n in range(1, 26) if n not in ends or n == 22]
    routed, daily, minute, empty, turns = p.events
    # `-m auto`: init names an alias; the model with the most tokens did the work, not the
    # router's flash-lite beside it, and the tokens are its own
    assert (routed.model, routed.success, routed.error) == ("gemini-3.1-pro-preview", True, None)
    assert routed.session_id == "3f6a2b1c-8d4e-4a5f-9b6c-7d8e9f0a1b2c"
    assert routed.completed_at == at("2026-11-20T11:40:29.663+00:00")
    assert routed.latency_ms == 27448  # the run's duration_ms, tools included
    assert routed.tokens == TokenBreakdown(
        total=48770, input=12332, cache_read=32768, output=1650, reasoning=2020
    )
    assert routed.event_id == "gemini:3f6a2b1c-8d4e-4a5f-9b6c-7d8e9f0a1b2c:2026-11-20T11:40:29.663Z"
    # a quota error ends the run: a failure, its tokens counted, no latency (duration_ms: 0)
    assert (daily.model, daily.success, daily.latency_ms) == ("gemini-2.5-pro", False, None)
    assert daily.tokens.total == 8450
    assert daily.error is not None
    assert daily.error.startswith("[API Error: You have exhausted")
    assert (minute.model, minute.success) == ("gemini-2.5-flash", False)
    # an empty answer: the error event before the result says why; its duration is the run's
    assert empty.error == (
        "The model returned an empty response with no text or thoughts. This may be a "
        "transient API issue; please try again."
    )
    assert (empty.success, empty.latency_ms, empty.tokens.reasoning) == (False, 4653, 10)
    # the session's turn limit: gemini's own failure; the cancelled run is not recorded
    assert (turns.success, turns.error) == (
        False,
        "Reached max session turns for this session. Increase the number of turns by "
        "specifying maxSessionTurns in settings.json.",
    )
    assert p.limits == [
        # the daily quota states no end: the default TTL from the result's own time
        Limit("gemini-2.5-pro", None, daily.error[:200], daily.completed_at),
        # "Please retry in 45.2s", from the result's own time
        Limit(
            "gemini-2.5-flash",
            at("2026-11-20T11:51:12.095+00:00") + timedelta(seconds=45.2),
            (minute.error or "")[:200],
        ),
    ]


def test_gemini_json_objects_read_as_a_stream() -> None:
    p = parse_fixture("gemini", OBJECTS, model="gemini-2.5-pro")
    # gemini's "Loaded cached credentials." on stderr, between two objects
    assert p.unparseable == [(138, "not JSON: Expecting value")]
    assert p.ignored == []
    routed, quota, empty, own, again, last = p.events
    # the model with the main role, not the router (utility_router) beside it; its tokens,
    # its API time; a 429 gemini retried (totalErrors: 1) is no failure
    assert (routed.model, routed.success, routed.latency_ms) == (
        "gemini-3.1-pro-preview",
        True,
        18240,
    )
    assert routed.tokens == TokenBreakdown(
        total=60125, input=14215, cache_read=40960, output=2210, reasoning=2740
    )
    assert routed.completed_at == INGEST_NOW  # the object has no time: when ingest read it
    # a failure on stderr names no model: --model; 429 with its reset time
    assert (quota.model, quota.success, quota.tokens.total) == ("gemini-2.5-pro", False, 0)
    assert quota.session_id == "0a3c7d2e-5f4b-4c8d-9e6f-7a8b9c0d1e2f"
    assert quota.error is not None
    assert quota.error.endswith("GOOGLE_CLOUD_PROJECT environment variable.")
    # stats and an error in one object: a failure, of the model in its stats
    assert (empty.model, empty.success, empty.latency_ms) == ("gemini-2.5-flash", False, 2980)
    assert (own.success, own.error) == (False, "Exiting due to an error processing the @ command.")
    # the same object twice: two runs, two ids
    assert (again.session_id, again.error) == (own.session_id, own.error)
    assert again.event_id != own.event_id
    # the last object, at the end of the file without a newline
    assert (last.model, last.success, last.tokens.total) == ("gemini-2.5-pro", True, 22911)
    assert last.session_id == routed.session_id  # a resumed session: its own run
    assert len({e.event_id for e in p.events}) == 6
    assert p.limits == [
        Limit(
            "gemini-2.5-pro",
            INGEST_NOW + timedelta(hours=19, minutes=14, seconds=47),
            (quota.error or "")[:200],
        )
    ]


def test_gemini_json_the_main_role_wins_over_a_helper_with_more_tokens() -> None:
    """A helper (here the history compressor) may spend more tokens than the model that did
    the run's work; the main role says which one that is."""

    def metrics(role: str, total: int) -> dict[str, Any]:
        tokens = {"input": total, "prompt": total, "candidates": 0, "total": total}
        return {
            "api": {"totalLatencyMs": 100},
            "tokens": tokens,
            "roles": {role: {"tokens": tokens}},
        }

    models = {
        "gemini-3.1-flash-lite": metrics("utility_compressor", 90000),
        "gemini-3.1-pro-preview": metrics("main", 12000),
    }
    run = {"session_id": "s", "response": "ok", "stats": {"models": models}}
    (event,) = parse_lines("gemini", [json.dumps(run)]).events
    assert (event.model, event.tokens.total) == ("gemini-3.1-pro-preview", 12000)


def test_gemini_an_error_result_without_an_error_says_the_error_event_before_it() -> None:
    init = {"type": "init", "timestamp": "2026-11-20T11:00:00.000Z", "session_id": "s"}
    warning = {"type": "error", "timestamp": "2026-11-20T11:00:01.000Z", "severity": "warning"}
    error = {"type": "error", "timestamp": "2026-11-20T11:00:02.000Z", "severity": "error"}
    result = {"type": "result", "timestamp": "2026-11-20T11:00:03.000Z", "status": "error"}
    lines = json_lines(
        init | {"model": "gemini-2.5-pro"},
        warning | {"message": "Loop detected, stopping execution"},
        result,
        error | {"message": "Invalid stream: malformed tool call."},
        result | {"timestamp": "2026-11-20T11:00:04.000Z"},
        result | {"timestamp": "2026-11-20T11:00:05.000Z"},
    )
    p = parse_lines("gemini", lines)
    # a warning is no reason; an error event is the next result's, and only its
    assert [e.error for e in p.events] == [
        "result status error",
        "Invalid stream: malformed tool call.",
        "result status error",
    ]


def test_gemini_a_failure_object_needs_a_model() -> None:
    failure = {"session_id": "s", "error": {"type": "Error", "message": "boom", "code": 500}}
    p = parse_lines("gemini", [json.dumps(failure)])
    assert p.unparseable == [(1, "the object names no model; pass --model")]
    assert parse_lines("gemini", [json.dumps(failure)], model="m").events[0].model == "m"


def stream_run(model: str, result: dict[str, Any]) -> list[str]:
    init = {"type": "init", "timestamp": "2026-11-20T11:00:00.000Z", "session_id": "s"}
    base = {"type": "result", "timestamp": "2026-11-20T11:00:09.000Z"}
    return json_lines(init | {"model": model}, base | result)


def test_gemini_model_from_stats_else_init_else_the_option() -> None:
    failed = {"status": "error", "error": {"type": "FatalInputError", "message": "bad @path"}}
    assert parse_lines("gemini", stream_run("gemini-2.5-pro", failed)).events[0].model == (
        "gemini-2.5-pro"  # no stats: the init line's model
    )
    # init names an alias: --model, else the alias
    assert parse_lines("gemini", stream_run("auto", failed), model="m").events[0].model == "m"
    assert (
        parse_lines("gemini", stream_run("auto-gemini-3", failed), model="m").events[0].model == "m"
    )
    assert parse_lines("gemini", stream_run("auto-gemini-3", failed)).events[0].model == (
        "auto-gemini-3"
    )
    # stats name the model that answered, whatever --model says
    stats = {
        "models": {"gemini-2.5-flash": {"total_tokens": 9, "input_tokens": 5, "output_tokens": 4}}
    }
    ok = {"status": "success", "stats": stats}
    assert parse_lines("gemini", stream_run("pro", ok), model="m").events[0].model == (
        "gemini-2.5-flash"
    )
    # only errors, no tokens: the init model among the tied ones
    both = {"a-model": {}, "gemini-2.5-pro": {}}
    tied = {"status": "success", "stats": {"models": both}}
    assert parse_lines("gemini", stream_run("gemini-2.5-pro", tied)).events[0].model == (
        "gemini-2.5-pro"
    )


def test_gemini_only_the_providers_errors_block() -> None:
    """In stream-json the provider's API error is the plain object gemini throws (type
    ``unknown``); in json, an error whose code is an HTTP status. Anything else is gemini's own
    failure, stored so that no rule reads it as a limit."""
    text = "[API Error: rate limit exceeded for the MCP server github]"
    thrown = {"status": "error", "error": {"type": "Error", "message": text}}
    p = parse_lines("gemini", stream_run("gemini-2.5-pro", thrown))
    assert p.limits == []
    assert p.events[0].error == limits.NOT_AN_API_ERROR + text
    provider = {"status": "error", "error": {"type": "unknown", "message": text}}
    assert len(parse_lines("gemini", stream_run("gemini-2.5-pro", provider)).limits) == 1
    own = {
        "session_id": "s",
        "error": {"type": "Error", "message": "rate limit exceeded", "code": 1},
    }
    p = parse_lines("gemini", [json.dumps(own)], model="m")
    assert (p.limits, p.events[0].error) == ([], limits.NOT_AN_API_ERROR + "rate limit exceeded")


def test_gemini_a_429_without_words_of_a_limit_is_one() -> None:
    """Gemini appends a suffix to an API error only when its status is 429: with it, or a json
    ``code`` of 429, the error is a limit (the default TTL when it states no end), stored so
    that ``record()`` reads it as one."""
    message = (
        "[API Error: Resource has been exhausted (e.g. check quota).]\nPossible quota "
        "limitations in place or slow response times detected. Switching to the "
        "gemini-3.5-flash model for the rest of this session."
    )
    result = {"status": "error", "error": {"type": "unknown", "message": message}}
    p = parse_lines("gemini", stream_run("gemini-2.5-pro", result))
    (event,) = p.events
    assert event.error == message + " (HTTP 429)"
    assert is_subscription_limit_error(event.error)
    assert p.limits == [Limit("gemini-2.5-pro", None, message[:200], event.completed_at)]
    failure = {"session_id": "s", "error": {"type": "Error", "message": "exhausted", "code": 429}}
    p = parse_lines("gemini", [json.dumps(failure)], model="m", clock=lambda: INGEST_NOW)
    assert p.limits == [Limit("m", None, "exhausted", INGEST_NOW)]
    assert p.events[0].error == "exhausted (HTTP 429)"


def test_gemini_a_cancelled_run_records_nothing() -> None:
    cancelled = {"status": "error", "error": {"type": "FatalCancellationError", "message": "x"}}
    p = parse_lines("gemini", stream_run("gemini-2.5-pro", cancelled))
    assert (p.events, p.limits, p.ignored) == ([], [], [1, 2])
    obj = {
        "session_id": "s",
        "error": {"type": "FatalCancellationError", "message": "x", "code": 130},
    }
    assert parse_lines("gemini", [json.dumps(obj)], model="m").events == []


@pytest.mark.parametrize(
    ("result", "why"),
    [
        ({"status": "success"} | {"timestamp": None}, "a result without its timestamp"),
        (
            {
                "status": "success",
                "stats": {"models": {"m": {"total_tokens": 5, "input_tokens": 9}}},
            },
            "stats.models.m: a part is larger than its whole",
        ),
        ({"status": "success", "stats": {"models": []}}, "models is not a JSON object"),
    ],
)
def test_gemini_bad_results_name_the_problem(result: dict[str, Any], why: str) -> None:
    p = parse_lines("gemini", stream_run("gemini-2.5-pro", result))
    assert p.unparseable == [(2, why)]
