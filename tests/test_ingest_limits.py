"""The limit rules of ``core.limits``: which texts are limits, and when they end."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from redis_telemetry import is_subscription_limit_error
from redis_telemetry.core import limits

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)  # 04:00 in Los Angeles, 03:00 in Anchorage


@pytest.mark.parametrize(
    "text",
    [
        "You've hit your limit · resets 11pm (America/Anchorage)",
        "You've hit your session limit · resets 12:50am (America/Los_Angeles)",
        "Weekly limit reached · resets 10am (Asia/Seoul) · /upgrade to Max",
        "5-hour limit reached ∙ resets 3pm",
        "API Error: Rate limit reached",
        "Claude AI usage limit reached|1795900000",
        "weekly session limit reached",
        "Provider returned error: monthly limit reached for this plan",
        "429 Too Many Requests",
        "HTTP 429: rate limit exceeded",
        'API Error: 429 {"type":"error","error":{"type":"rate_limit_error"}}',
        "You exceeded your current quota, please check your plan and billing details.",
        "quota exceeded for this project",
        "spending limit reached",
    ],
)
def test_limit_texts(text: str) -> None:
    assert limits.is_limit_text(text)
    assert is_subscription_limit_error(text)  # the public predicate uses the same rules


@pytest.mark.parametrize(
    "text",
    [
        "Request timed out after 14290 ms",
        "request id req_011CV4291abc failed",
        "prompt is too long: 214293 tokens > 200000 maximum",
        "at line 429 of build.log",
        "error 429",  # a bare number, no word of a limit
        "v1.429 is not supported",
        'API Error: 529 {"type":"error","error":{"type":"overloaded_error"}}',
        "Reached maximum number of turns (8)",
        "the rate limiter was restarted",
    ],
)
def test_not_limit_texts(text: str) -> None:
    assert not limits.is_limit_text(text)
    assert not is_subscription_limit_error(text)


@pytest.mark.parametrize(
    ("text", "until"),
    [
        # a zone: that zone's next such time (Anchorage is UTC-9 in November)
        (
            "You've hit your limit · resets 11pm (America/Anchorage)",
            datetime(2026, 11, 21, 8, 0, tzinfo=UTC),
        ),
        (
            "You've hit your session limit · resets 12:50am (America/Los_Angeles)",
            datetime(2026, 11, 21, 8, 50, tzinfo=UTC),
        ),
        (
            "Weekly limit reached · resets 10am (Asia/Seoul) · /upgrade",
            datetime(2026, 11, 21, 1, 0, tzinfo=UTC),
        ),
        # no zone: UTC, the next such time
        ("5-hour limit reached ∙ resets 3pm", datetime(2026, 11, 20, 15, 0, tzinfo=UTC)),
        ("5-hour limit reached ∙ resets 11am", datetime(2026, 11, 21, 11, 0, tzinfo=UTC)),
        ("usage limit reached · resets 4:50pm", datetime(2026, 11, 20, 16, 50, tzinfo=UTC)),
        # a date: the one nearest to now, even when it is past
        (
            "Weekly limit reached · resets Nov 24, 5pm (UTC)",
            datetime(2026, 11, 24, 17, 0, tzinfo=UTC),
        ),
        (
            "Weekly limit reached · resets Nov 18, 5pm (UTC)",
            datetime(2026, 11, 18, 17, 0, tzinfo=UTC),
        ),
        ("Weekly limit reached · resets Jan 2, 9am (UTC)", datetime(2027, 1, 2, 9, 0, tzinfo=UTC)),
        ("Claude AI usage limit reached|1795900000", datetime.fromtimestamp(1795900000, UTC)),
        ("429 Too Many Requests: please retry after 30 seconds", NOW + timedelta(seconds=30)),
        ("rate limit exceeded; Retry-After: 90", NOW + timedelta(seconds=90)),
        # unreadable or absent: no end (the store's default TTL)
        ("You've hit your limit · resets 25pm (America/Anchorage)", None),
        ("You've hit your limit · resets 11pm (Mars/Olympus_Mons)", None),
        ("You've hit your limit · resets soon", None),
        ("monthly limit reached", None),
    ],
)
def test_reset_times(text: str, until: datetime | None) -> None:
    assert limits.from_text(text, NOW) == limits.LimitEnd(until)


def test_next_such_time_keeps_the_wall_clock_across_dst() -> None:
    # 2026-03-08: Los Angeles moves from UTC-8 to UTC-7 at 2am
    before = datetime(2026, 3, 8, 9, 0, tzinfo=UTC)  # 1am PST
    found = limits.from_text("usage limit · resets 5pm (America/Los_Angeles)", before)
    assert found == limits.LimitEnd(datetime(2026, 3, 9, 0, 0, tzinfo=UTC))  # 5pm PDT


@pytest.mark.parametrize(
    ("value", "until"),
    [
        ("600", NOW + timedelta(seconds=600)),
        (120, NOW + timedelta(seconds=120)),
        ("Fri, 20 Nov 2026 12:30:00 GMT", datetime(2026, 11, 20, 12, 30, tzinfo=UTC)),
        ("tomorrow", None),
        (None, None),
        (True, None),
        ("-5", None),
        ("99999999999", None),  # beyond ten years: not believed
    ],
)
def test_retry_after(value: object, until: datetime | None) -> None:
    assert limits.retry_after(value, NOW) == until


def test_status_429_is_a_limit_with_or_without_words() -> None:
    headers = {"Retry-After": "600"}
    assert limits.from_status(429, "", headers, NOW) == limits.LimitEnd(
        NOW + timedelta(seconds=600)
    )
    assert limits.from_status("429", "Too Many Requests", None, NOW) == limits.LimitEnd(None)
    assert limits.from_status(500, "Internal error 429", None, NOW) is None
    assert limits.from_status(402, "monthly limit reached", None, NOW) == limits.LimitEnd(None)


@pytest.mark.parametrize(
    ("info", "until"),
    [
        (
            {"status": "rejected", "resetsAt": 1795230000},
            limits.LimitEnd(datetime(2026, 11, 21, 3, 0, tzinfo=UTC)),
        ),
        (
            {"status": "rejected", "resetsAt": 1795230000000},
            limits.LimitEnd(datetime(2026, 11, 21, 3, 0, tzinfo=UTC)),
        ),  # milliseconds
        ({"status": "rejected"}, limits.LimitEnd(None)),
        ({"status": "allowed", "resetsAt": 1795230000}, None),
        ({"status": "allowed_warning", "resetsAt": 1795230000}, None),
        ("rejected", None),
    ],
)
def test_rate_limit_event(info: object, until: limits.LimitEnd | None) -> None:
    assert limits.from_rate_limit_info(info) == until


def test_seconds_until_rounds_up() -> None:
    assert limits.seconds_until(NOW + timedelta(milliseconds=1), NOW) == 1
    assert limits.seconds_until(NOW + timedelta(seconds=5), NOW) == 5
    assert limits.seconds_until(NOW - timedelta(seconds=5), NOW) == 0


def test_record_blocks_only_while_the_named_reset_is_ahead() -> None:
    import fakeredis

    from redis_telemetry import TelemetryStore

    from .helpers import event

    store = TelemetryStore(fakeredis.FakeRedis())
    store.record(event("past", False, error="Claude AI usage limit reached|1700000000"))
    perf = store.model_performance("past")
    assert perf.failed_completions == 1
    assert not perf.subscription_limit_reached  # it reset in 2023
    store.record(event("ahead", False, error="5-hour limit reached ∙ resets 3pm"))
    assert store.model_performance("ahead").subscription_limit_reached
    store.record(event("plain", False, error="usage limit reached"))
    assert store.model_performance("plain").subscription_limit_reached
