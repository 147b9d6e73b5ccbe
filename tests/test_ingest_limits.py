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


@pytest.mark.parametrize(
    ("headers", "until"),
    [
        ({"Retry-After-Ms": "1500", "retry-after": "600"}, NOW + timedelta(seconds=1.5)),
        ({"retry-after-ms": 2500}, NOW + timedelta(seconds=2.5)),
        ({"retry-after-ms": b"250"}, NOW + timedelta(seconds=0.25)),
        ({"retry-after-ms": "soon", "retry-after": "600"}, NOW + timedelta(seconds=600)),
        ({"retry-after-ms": "-5", "Retry-After": "60"}, NOW + timedelta(seconds=60)),
        ({"retry-after-ms": True}, None),
        ({"retry-after-ms": "nan"}, None),
        (
            {"RETRY-AFTER": "Fri, 20 Nov 2026 12:30:00 GMT"},
            datetime(2026, 11, 20, 12, 30, tzinfo=UTC),
        ),
        ({"content-type": "application/json"}, None),
        (None, None),
        ("not a mapping", None),
    ],
)
def test_retry_headers_ms_first(headers: object, until: datetime | None) -> None:
    assert limits.from_headers(headers, NOW) == until


def test_retry_headers_of_an_http_client_and_a_foreign_object() -> None:
    import httpx

    assert limits.from_headers(httpx.Headers({"Retry-After-Ms": "800"}), NOW) == NOW + timedelta(
        milliseconds=800
    )

    class Broken:
        def items(self) -> object:
            raise RuntimeError("no")

        def __bool__(self) -> bool:
            return True

    assert limits.from_headers(Broken(), NOW) is None


def test_a_rejected_plan_limit_with_paid_overage_is_no_limit() -> None:
    info = {"status": "rejected", "resetsAt": 1795230000, "rateLimitType": "five_hour"}
    assert limits.from_rate_limit_info(info) is not None
    for overage in ("allowed", "allowed_warning"):
        assert limits.from_rate_limit_info({**info, "overageStatus": overage}) is None
    assert limits.from_rate_limit_info({**info, "overageStatus": "rejected"}) is not None


@pytest.mark.parametrize(
    ("text", "until"),
    [
        ("Rate limit reached for gpt-4o. Please try again in 6m0s.", NOW + timedelta(minutes=6)),
        ("Rate limit reached. Please try again in 20ms.", NOW + timedelta(milliseconds=20)),
        ("quota exceeded. Please retry in 2483.5s.", NOW + timedelta(seconds=2483.5)),
        ("rate limit exceeded, retry after 3 hours", NOW + timedelta(hours=3)),
        ("rate limit exceeded, retry after 2 minutes", NOW + timedelta(minutes=2)),
        ("rate limit exceeded, retry after 30 to 60 seconds", None),  # not one number
        ("rate limit exceeded; Retry-After: 90\nserver: x", NOW + timedelta(seconds=90)),
    ],
)
def test_retry_in_a_unit(text: str, until: datetime | None) -> None:
    assert limits.from_text(text, NOW) == limits.LimitEnd(until)


@pytest.mark.parametrize(
    ("text", "headers", "cooldown", "until", "stored"),
    [
        # the provider's header wins, stated at the end of the text for record()
        (
            "Rate limit reached, retry after 120 seconds",
            {"Retry-After": "30"},
            5,
            NOW + timedelta(seconds=30),
            "Rate limit reached, retry after 120 seconds (HTTP 429; retry after 30 seconds)",
        ),
        # the text's own end, which the text already says: kept as it is
        (
            "Rate limit reached, retry after 120 seconds",
            {},
            5,
            NOW + timedelta(seconds=120),
            "Rate limit reached, retry after 120 seconds",
        ),
        # a reset the text names, in a text that reads as no limit without the status
        (
            "Error code: 429 - resets 3pm",
            None,
            5,
            datetime(2026, 11, 20, 15, 0, tzinfo=UTC),
            "Error code: 429 - resets 3pm (HTTP 429; retry after 10800 seconds)",
        ),
        # nothing said: the cooldown
        (
            "litellm.RateLimitError: slow down",
            None,
            5,
            NOW + timedelta(seconds=5),
            "litellm.RateLimitError: slow down"
            " (HTTP 429; no retry time given; retry after 5 seconds)",
        ),
        # nothing said, no cooldown: no end (the store's TTL), in a text record() reads as a limit
        ("Error code: 429", None, None, None, "Error code: 429 (HTTP 429)"),
        ("Too Many Requests", None, None, None, "Too Many Requests"),
    ],
)
def test_a_429_answer_states_its_end_for_record(
    text: str,
    headers: object,
    cooldown: int | None,
    until: datetime | None,
    stored: str,
) -> None:
    found, stated = limits.answer_429(text, headers, NOW, cooldown)
    assert found == limits.LimitEnd(until)
    assert stated == stored
    assert limits.from_text(stated, NOW) == found  # record() reads the same end


def test_a_429_answer_over_the_store_limit_is_cut_keeping_its_end() -> None:
    from redis_telemetry.core import rules

    page = "<html>" + "x" * 20_000 + "</html>"  # a proxy's error page
    found, stated = limits.answer_429(page, {"retry-after-ms": "2500"}, NOW)
    assert len(stated) == rules.MAX_ERROR_LEN
    assert stated.endswith("… (HTTP 429; retry after 3 seconds)")
    assert found == limits.LimitEnd(NOW + timedelta(seconds=2.5))
    assert limits.from_text(stated, NOW) == limits.LimitEnd(NOW + timedelta(seconds=3))


def test_clip_error_keeps_what_fits() -> None:
    from redis_telemetry.core import rules

    assert rules.clip_error("short") == "short"
    assert rules.clip_error("x" * 20_000) == "x" * (rules.MAX_ERROR_LEN - 1) + "…"
    assert rules.clip_error("abcdef", 4) == "abc…"


@pytest.mark.parametrize(
    ("text", "api"),
    [
        ('API Error: 429 {"type":"error"}', True),
        ("API error: Overloaded", True),
        ("[API Error: You exceeded your current quota]", True),
        ("Tool execution failed\nAPI Error: Rate limit reached", True),
        ("Tool execution failed: gh: API rate limit exceeded for user ID 123", False),
        ("the API errored", False),
    ],
)
def test_api_error_lines(text: str, api: bool) -> None:
    assert limits.is_api_error(text) is api


def test_a_text_that_is_not_the_providers_never_blocks() -> None:
    import fakeredis

    from redis_telemetry import TelemetryStore

    from .helpers import event

    tool = "Tool execution failed: gh: API rate limit exceeded for user ID 123"
    assert limits.is_limit_text(tool)
    marked = limits.not_the_providers(tool)
    assert marked == "not an API error: " + tool
    assert not limits.is_limit_text(marked)
    assert not is_subscription_limit_error(marked)
    assert limits.not_the_providers("Reached maximum number of turns (8)") == (
        "Reached maximum number of turns (8)"  # no limit words: left as it is
    )
    store = TelemetryStore(fakeredis.FakeRedis())
    store.record(event("m", False, error=marked))
    perf = store.model_performance("m")
    assert perf.failed_completions == 1
    assert not perf.subscription_limit_reached


# -- Codex CLI and Gemini CLI texts ----------------------------------------------------------------

#: codex-rs/protocol/src/error.rs (UsageLimitReachedError, CodexErr), Codex CLI 0.171.0
CODEX_PLUS = (
    "You've hit your usage limit. Upgrade to Pro (https://chatgpt.com/explore/pro), visit "
    "https://chatgpt.com/codex/settings/usage to purchase more credits or try again at {}."
)
#: packages/core/src/utils/googleQuotaErrors.ts (TerminalQuotaError), Gemini CLI 0.56
GEMINI_API_KEY = (
    "You exceeded your current quota, please check your plan and billing details. \n* Quota "
    "exceeded for metric: generativelanguage.googleapis.com/generate_content_paid_tier_requests,"
    " limit: 1000, model: gemini-2.5-flash\nPlease retry in 2483.518804071s.\n"
    "Suggested retry after 2483s."
)


@pytest.mark.parametrize(
    "text",
    [
        CODEX_PLUS.format("2:05 AM"),
        "You've hit your usage limit. To get more access now, send a request to your admin or "
        "try again later.",
        "You've hit your usage limit for GPT-5.3-Codex-Spark. Switch to another model now, or try "
        "again at 4:10 PM.",
        "Quota exceeded. Check your plan and billing details.",
        "To use Codex with your ChatGPT plan, upgrade to Plus: https://chatgpt.com/explore/plus.",
        "Your workspace is out of credits. Ask your workspace owner to refill in order to "
        "continue.",
        "You hit your spend cap set in your workspace. Increase your spend cap to continue.",
        "You have exhausted your capacity on this model. Your quota will reset after 3h12m40s.",
        "You have exhausted your daily quota on this model.",
        GEMINI_API_KEY,
    ],
)
def test_codex_and_gemini_limit_texts(text: str) -> None:
    assert limits.is_limit_text(text)


@pytest.mark.parametrize(
    "text",
    [
        # codex's own retries, and the error it ends with after them, name no limit
        "Reconnecting... 2/5 (stream disconnected before completion: error sending request for "
        "url (https://chatgpt.com/backend-api/codex/responses))",
        "exceeded retry limit, last status: 500 Internal Server Error, request id: req_1",
        "Codex ran out of room in the model's context window. Start a new thread or clear "
        "earlier history before retrying.",
        "Selected model is at capacity. Please try a different model.",
    ],
)
def test_codex_texts_that_are_no_limits(text: str) -> None:
    assert not limits.is_limit_text(text)


@pytest.mark.parametrize(
    ("text", "until"),
    [
        # Gemini: a duration from the error ("10m", "0s" and "19h14m47s" in its own tests)
        (
            "You have exhausted your capacity on this model. Your quota will reset after 3h12m40s.",
            NOW + timedelta(hours=3, minutes=12, seconds=40),
        ),
        (
            "You have exhausted your capacity on this model. Your quota will reset after 10m.",
            NOW + timedelta(minutes=10),
        ),
        (GEMINI_API_KEY, NOW + timedelta(seconds=2483.518804071)),  # the first one it gives
        ("You have exhausted your daily quota on this model.", None),
        # Codex: a date and a clock, or a clock on the same date, read in UTC by default
        (CODEX_PLUS.format("Nov 21st, 2026 2:05 AM"), datetime(2026, 11, 21, 2, 5, tzinfo=UTC)),
        (CODEX_PLUS.format("Dec 1st, 2026 12:30 PM"), datetime(2026, 12, 1, 12, 30, tzinfo=UTC)),
        (CODEX_PLUS.format("2:05 PM"), datetime(2026, 11, 20, 14, 5, tzinfo=UTC)),
        # a clock already past on that date is past (codex would have printed a date), not
        # tomorrow's: an old log blocks nothing
        (CODEX_PLUS.format("9:15 AM"), datetime(2026, 11, 20, 9, 15, tzinfo=UTC)),
        (CODEX_PLUS.format("12:00 AM"), datetime(2026, 11, 20, 0, 0, tzinfo=UTC)),
        ("You've hit your usage limit. Try again later.", None),
        (CODEX_PLUS.format("13:05 PM"), None),  # unreadable: the default TTL
        (CODEX_PLUS.format("Feb 30th, 2027 1:00 AM"), None),
    ],
)
def test_codex_and_gemini_reset_times(text: str, until: datetime | None) -> None:
    assert limits.from_text(text, NOW) == limits.LimitEnd(until)


def test_a_codex_clock_is_read_in_the_zone_named() -> None:
    berlin = limits.named_zone("Europe/Berlin")  # UTC+1 in November
    text = CODEX_PLUS.format("2:05 AM")
    # at NOW (13:00 in Berlin) the date there is Nov 20: 2:05 AM Berlin is 01:05 UTC
    assert limits.from_text(text, NOW, berlin) == limits.LimitEnd(
        datetime(2026, 11, 20, 1, 5, tzinfo=UTC)
    )
    late = datetime(2026, 11, 20, 23, 30, tzinfo=UTC)  # already Nov 21 in Berlin
    assert limits.from_text(text, late, berlin) == limits.LimitEnd(
        datetime(2026, 11, 21, 1, 5, tzinfo=UTC)
    )
    dated = CODEX_PLUS.format("Mar 29th, 2027 2:05 AM")  # after Berlin's switch to UTC+2
    assert limits.from_text(dated, NOW, berlin) == limits.LimitEnd(
        datetime(2027, 3, 29, 0, 5, tzinfo=UTC)
    )


def test_a_codex_clock_is_read_in_this_machines_zone_when_none_is_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import time

    monkeypatch.setenv("TZ", "America/New_York")  # UTC-5 in November
    time.tzset()
    try:
        found = limits.from_text(CODEX_PLUS.format("Nov 21st, 2026 2:05 AM"), NOW, None)
        same_day = limits.from_text(CODEX_PLUS.format("11:40 PM"), NOW, None)
    finally:
        monkeypatch.undo()
        time.tzset()
    assert found == limits.LimitEnd(datetime(2026, 11, 21, 7, 5, tzinfo=UTC))
    # NOW is 07:00 on Nov 20 in New York: 11:40 PM that day is 04:40 UTC on Nov 21
    assert same_day == limits.LimitEnd(datetime(2026, 11, 21, 4, 40, tzinfo=UTC))


def test_an_unknown_zone_is_a_clear_error() -> None:
    from redis_telemetry.errors import InvalidInputError

    for name in ("Mars/Olympus_Mons", "", "../etc/passwd"):
        with pytest.raises(InvalidInputError, match="unknown time zone"):
            limits.named_zone(name)
    assert limits.named_zone(" UTC ").key == "UTC"


@pytest.mark.parametrize(
    ("text", "until", "stored"),
    [
        # read in another zone than record()'s UTC: the end is stated, to the second
        (
            CODEX_PLUS.format("2:05 AM"),
            datetime(2026, 11, 20, 1, 5, tzinfo=UTC),
            CODEX_PLUS.format("2:05 AM") + " (resets at 2026-11-20T01:05:00Z)",
        ),
        (
            "usage limit",
            datetime(2026, 11, 20, 12, 41, 23, 518804, tzinfo=UTC),
            "usage limit (resets at 2026-11-20T12:41:24Z)",  # rounded up
        ),
        # what record() reads already: kept as it is
        (
            CODEX_PLUS.format("Nov 21st, 2026 2:05 AM"),
            datetime(2026, 11, 21, 2, 5, tzinfo=UTC),
            CODEX_PLUS.format("Nov 21st, 2026 2:05 AM"),
        ),
        ("You've hit your usage limit. Try again later.", None, None),
    ],
)
def test_an_end_record_cannot_read_is_stated_for_it(
    text: str, until: datetime | None, stored: str | None
) -> None:
    said = limits.state_end(text, until, NOW)
    assert said == (stored or text)
    found = limits.from_text(said, NOW)  # what record() reads
    assert found is not None
    assert found.until is None if until is None else abs(found.until - until) < timedelta(seconds=1)


def test_a_stated_end_survives_a_text_over_the_store_limit() -> None:
    from redis_telemetry.core import rules

    until = datetime(2026, 11, 21, 2, 5, tzinfo=UTC)
    said = limits.state_end("usage limit " + "x" * 20_000, until, NOW)
    assert len(said) == rules.MAX_ERROR_LEN
    assert said.endswith("… (resets at 2026-11-21T02:05:00Z)")
    assert limits.from_text(said, NOW) == limits.LimitEnd(until)
    # a statement naming no real time is unreadable: no end
    assert limits.from_text("usage limit (resets at 2026-13-40T99:00:00Z)", NOW) == (
        limits.LimitEnd(None)
    )
