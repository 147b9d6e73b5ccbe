"""Subscription-limit detection and reset times, in one place (no I/O).

``record()`` (through :func:`is_limit_text`), :func:`redis_telemetry.is_subscription_limit_error`
and every ingest parser use these rules. A limit is either *detected without an end* (the store
blocks the model for its default TTL) or *detected with an end* (``Limit.until``): the time a
provider says the limit resets.

Rules (docs/ingest.md states them for users):

- A text names a limit when it has one of the limit phrases below ("usage limit", "weekly
  limit", "hit your limit", "quota exceeded", "too many requests", ...). ``429`` alone is not
  enough: it counts only as an HTTP status token (not part of a longer number or an id) in a
  text that also says "too many requests" or "rate limit". Structured statuses
  (``api_error_status``, ``statusCode``) are read by :func:`from_status`.
- The end, when the text gives one: ``|<epoch seconds>`` (older Claude Code), "resets 4:50pm
  (Zone)" or "resets Nov 24, 5pm (Zone)" in that IANA zone (no zone: UTC; a bare time is its
  next occurrence after ``now``; a date without a year is the one nearest to ``now``),
  "retry after N seconds" / "Retry-After: N" / "try again in 2.5s" / "retry in 20ms" / Gemini's
  "Your quota will reset after 3h12m40s" (seconds, or the unit given: ms, s, min, h); Codex's
  "try again at 2:05 AM" (that time on the text's own date) or "try again at Nov 21st, 2026
  2:05 AM", a local clock without a zone, read in the zone the caller names (UTC by default;
  ingest names the zone of the machine that runs it). A reset time that cannot be read gives
  no end.
- Response headers: ``retry-after-ms`` (milliseconds) first, then ``Retry-After`` (seconds or an
  HTTP date), as opencode and the OpenAI SDKs read them (:func:`from_headers`).
- A 429 whose end came from elsewhere (a header, a cooldown) is stored with that end stated at
  the end of its text, `` (HTTP 429; retry after N seconds)``
  (:func:`answer_429`); an end read with what ``record()`` cannot know (the zone of Codex's
  local clock) is stated as `` (resets at 2026-11-21T02:05:00Z)`` (:func:`state_end`). The rules
  read such a statement before anything else in the text, so ``record()`` blocks the model
  until the same end.
- Only the provider's API errors block: a text that begins ``not an API error: `` (a tool's
  failure, the agent's own: :func:`not_the_providers`) never names a limit, whatever it says.
  ``API Error`` lines (:func:`is_api_error`) are how the agents print the provider's errors.
- Claude Code's ``rate_limit_event`` blocks only with ``status: "rejected"``, and not when
  ``overageStatus`` is ``allowed`` or ``allowed_warning`` (calls go on as paid overage);
  ``allowed`` and ``allowed_warning`` never block.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from email.utils import parsedate_to_datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..errors import InvalidInputError
from . import rules

_NOUNS = (
    r"(?:usage|session|weekly|monthly|daily|hourly|5-hour|five-hour|subscription|spending"
    r"|billing|capacity|plan|rate)"
)
_PHRASES = re.compile(
    r"\b" + _NOUNS + r"[ _-]limits?\b"  # "weekly limit"; "rate limiter" has no boundary
    r"|\bhit your (?:\w+ )?(?:limit|spend cap)\b"  # Codex: "You hit your spend cap set in ..."
    r"|\bquota (?:exceeded|exhausted)\b|\bexceeded your (?:current )?quota\b|\binsufficient_quota\b"
    r"|\bexhausted your (?:\w+ )?(?:quota|capacity)\b"  # Gemini's TerminalQuotaError texts
    r"|\bout of credits\b|\bChatGPT plan, upgrade to\b"  # Codex: no credits, plan without Codex
    r"|\btoo many requests\b|\brate_limit(?:_error|ed)?\b",
    re.IGNORECASE,
)
_STATUS_429 = re.compile(r"(?<![\w.])429(?!\w|\.\d)")
_RATE_WORDS = re.compile(r"too many requests|rate[ _-]?limit", re.IGNORECASE)

_EPOCH_SUFFIX = re.compile(r"limit reached\|(\d{9,13})\b", re.IGNORECASE)
_RESETS = re.compile(r"\bresets?\b", re.IGNORECASE)
_RESET_AT = re.compile(
    r"\bresets?(?:\s+at)?\s+"
    r"(?:(?P<mon>[A-Za-z]{3,9})\.?\s+(?P<day>\d{1,2})(?:st|nd|rd|th)?,?\s+(?:at\s+)?)?"
    r"(?P<h>\d{1,2})(?::(?P<m>\d{2}))?\s*(?P<ap>am|pm)\b"
    r"(?:\s*\((?P<tz>[^()]{1,64})\))?",
    re.IGNORECASE,
)
_RETRY_IN = re.compile(
    r"\b(?:retry|try again|reset)[ -]?(?:after|in):?\s*"
    r"(?:(?P<go>(?:\d{1,9}(?:\.\d{1,9})?(?:ms|h|m|s))+)\b"  # "6m0s", "2.5s", "20ms"
    r"|(?P<n>\d{1,9}(?:\.\d{1,9})?)(?:[ \t]*(?P<unit>[a-z]+)\b)?)",  # "30 seconds", "90"
    re.IGNORECASE,
)
#: Codex's "try again at 2:05 AM" (the same local date) or "… at Nov 21st, 2026 2:05 AM"
_TRY_AGAIN_AT = re.compile(
    r"\btry again at\s+"
    r"(?:(?P<mon>[A-Za-z]{3,9})\.?\s+(?P<day>\d{1,2})(?:st|nd|rd|th)?,?\s+(?P<year>\d{4}),?\s+)?"
    r"(?P<h>\d{1,2}):(?P<m>\d{2})\s*(?P<ap>am|pm)\b",
    re.IGNORECASE,
)
_GO_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)", re.IGNORECASE)
#: seconds per unit of "retry after N <unit>" (no unit: seconds)
_UNITS = {
    **dict.fromkeys(("", "s", "sec", "secs", "second", "seconds"), 1.0),
    **dict.fromkeys(("ms", "millisecond", "milliseconds"), 0.001),
    **dict.fromkeys(("m", "min", "mins", "minute", "minutes"), 60.0),
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), 3600.0),
}
#: How a 429 whose end came from elsewhere states it at the end of its text (see answer_429).
HTTP_429 = "HTTP 429"
_STATED = re.compile(
    r" \(HTTP 429(?:; (?!retry after )[^();]*)*(?:; retry after (?P<secs>\d{1,9}) seconds)?\)\Z"
)
#: How an end read with what ``record()`` cannot know is stated at the end of its text
#: (see state_end): an absolute UTC time, to the second.
_STATED_AT = re.compile(r" \(resets at (?P<at>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})Z\)\Z")
#: The start of an error text that is not the provider's API error (see not_the_providers).
NOT_AN_API_ERROR = "not an API error: "
_API_ERROR_LINE = re.compile(r"^\s*\[?API Error\b", re.IGNORECASE | re.MULTILINE)
_MONTHS = {
    m: i
    for i, m in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1
    )
}
#: Rate-limit statuses of Claude Code's ``rate_limit_event`` that block the model.
BLOCKING_STATUSES = frozenset({"rejected"})
#: ``overageStatus`` values under which a ``rejected`` plan limit still lets calls through.
OVERAGE_ALLOWED = frozenset({"allowed", "allowed_warning"})
#: How long a provider's 429 that says nothing of when to retry blocks the model, in seconds:
#: a short cooldown (LiteLLM's own is 5 s too), never the subscription TTL.
COOLDOWN_429_SECS = 5
#: An end further away than this is not believed (ten years, the store's longest TTL).
_MAX_AHEAD = timedelta(days=3650)


@dataclass(frozen=True)
class LimitEnd:
    """A detected limit: ``until`` is when it resets, None when the source gives no end."""

    until: datetime | None


def is_limit_text(text: str) -> bool:
    """True when an error text says the provider cut the model off (see the module rules)."""
    if text.startswith(NOT_AN_API_ERROR):
        return False
    if _PHRASES.search(text) or _STATED.search(text) or _STATED_AT.search(text):
        return True
    return bool(_STATUS_429.search(text)) and bool(_RATE_WORDS.search(text))


def blocks_at(text: str, said_at: datetime, now: datetime) -> bool:
    """True when an error text, written at ``said_at``, names a limit still in force at
    ``now`` (one whose reset time is already past blocks nothing): the rule ``record()``
    applies, with the event's ``completed_at`` as ``said_at``."""
    found = from_text(text, said_at)
    return found is not None and (found.until is None or found.until > now)


def from_text(text: str, now: datetime, zone: tzinfo | None = UTC) -> LimitEnd | None:
    """The limit an error text names, with its end when the text gives a readable one;
    None when the text names no limit. ``zone``: the zone of a local clock the text gives
    without one (Codex's "try again at 2:05 AM"); None is this machine's local zone."""
    if not is_limit_text(text):
        return None
    return LimitEnd(reset_from_text(text, now, zone))


def named_zone(name: str) -> ZoneInfo:
    """An IANA time zone by name ("Europe/Berlin", "UTC"): the zone of the clock times a stream
    prints without one (see :func:`from_text`)."""
    try:
        return ZoneInfo(name.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInputError(
            f"unknown time zone {name!r}; expected an IANA name such as Europe/Berlin or UTC"
        ) from None


def state_end(text: str, until: datetime | None, now: datetime) -> str:
    """The error text to store for a limit found to end at ``until``, written at ``now`` (the
    event's completion): the text itself when ``record()``, which reads it from ``now`` with no
    zone but UTC, finds the same end; else the text with its end stated at the end,
    `` (resets at 2026-11-21T02:05:00Z)`` (rounded up to the second), cut to make room."""
    if until is None or from_text(text, now) == LimitEnd(until):
        return text
    when = until.astimezone(UTC)
    if when.microsecond:
        when = when.replace(microsecond=0) + timedelta(seconds=1)
    statement = f" (resets at {when:%Y-%m-%dT%H:%M:%S}Z)"
    return rules.clip_error(text, rules.MAX_ERROR_LEN - len(statement)) + statement


def from_status(status: object, text: str, headers: Any, now: datetime) -> LimitEnd | None:
    """A limit from an HTTP status (429) and its retry headers, else from the text."""
    if is_429(status):
        return LimitEnd(from_headers(headers, now) or reset_from_text(text, now))
    return from_text(text, now)


def is_429(status: object) -> bool:
    """An HTTP status (a number, or digits) that is 429 Too Many Requests."""
    return _as_int(status) == 429


def answer_429(
    text: str, headers: Any, now: datetime, cooldown_secs: int | None = None
) -> tuple[LimitEnd, str]:
    """A provider's 429 answer, received at ``now``: when the limit ends, and the error text to
    store so that ``record()`` reads the same end.

    The end is what the provider said: the retry headers (:func:`from_headers`), else a reset
    the text names; without either, ``cooldown_secs`` from ``now``; without a cooldown, no end
    (the store's TTL). When the text does not already say that end, it is stated at the end of
    the text (`` (HTTP 429; retry after N seconds)``), which the rules read
    first; the text is cut to make room when it must be."""
    until = from_headers(headers, now) or reset_from_text(text, now)
    note = ""
    if until is None and cooldown_secs is not None:
        until = _after(now, float(cooldown_secs))
        note = "; no retry time given"
    if from_text(text, now) == LimitEnd(until):
        return LimitEnd(until), text  # the text says it already
    if until is not None:
        note += f"; retry after {seconds_until(until, now)} seconds"
    statement = f" ({HTTP_429}{note})"
    return LimitEnd(until), rules.clip_error(text, rules.MAX_ERROR_LEN - len(statement)) + statement


def from_rate_limit_info(info: Any) -> LimitEnd | None:
    """Claude Code's ``rate_limit_event.rate_limit_info``: a limit only when ``rejected``, and
    not when its ``overageStatus`` lets calls go on as paid overage."""
    if not isinstance(info, dict) or info.get("status") not in BLOCKING_STATUSES:
        return None
    if info.get("overageStatus") in OVERAGE_ALLOWED:
        return None
    return LimitEnd(epoch_seconds(info.get("resetsAt")))


def is_api_error(text: str) -> bool:
    """True when a text holds a line that is the provider's API error as the agents print it
    ("API Error: 429 ...", Claude Code's "API error: Overloaded", Gemini's "[API Error: ...]")."""
    return bool(_API_ERROR_LINE.search(text))


def not_the_providers(text: str) -> str:
    """The text of a failure that is not the provider's API error (a tool's, the agent's own),
    as stored: when it would read as a limit, it begins ``not an API error: ``, so that neither
    ingest nor ``record()`` blocks the model on it."""
    if not is_limit_text(text):
        return text
    return rules.clip_error(NOT_AN_API_ERROR + text)


def from_headers(headers: Any, now: datetime) -> datetime | None:
    """The end a response's headers give: ``retry-after-ms`` (milliseconds) first, then
    ``Retry-After`` (seconds or an HTTP date); None when neither is there or readable. Any
    mapping of names to values (a dict, httpx's headers); names in any case."""
    try:
        found = {str(k).lower(): v for k, v in headers.items()} if headers else {}
    except Exception:  # a foreign headers object: treat as absent
        return None
    ms = _number(found.get("retry-after-ms"))
    if ms is not None and ms >= 0:
        return _after(now, ms / 1000)
    return retry_after(found.get("retry-after"), now)


def _number(value: object) -> float | None:
    """A finite number from a header value (a number, or its text); None when it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    try:
        number = float(value) if isinstance(value, str | int | float) else math.nan
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def epoch_seconds(value: object) -> datetime | None:
    """Epoch seconds (or milliseconds, when the number is that large) as a UTC time."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    secs = value / 1000 if value > 1e11 else value
    try:
        return datetime.fromtimestamp(secs, UTC)
    except (ValueError, OverflowError, OSError):
        return None


def retry_after(value: object, now: datetime) -> datetime | None:
    """A ``Retry-After`` value (seconds, or an HTTP date) as the time it names."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return _after(now, float(value))
    text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
    text = text.strip()
    if re.fullmatch(r"\d{1,9}(?:\.\d+)?", text):
        return _after(now, float(text))
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    return _sane(when if when.tzinfo else when.replace(tzinfo=UTC), now)


def reset_from_text(text: str, now: datetime, zone: tzinfo | None = UTC) -> datetime | None:
    """The reset time a limit text names, or None (none given, or unreadable); ``zone`` as in
    :func:`from_text`."""
    try:
        return _reset_from_text(text, now, zone)
    except OverflowError:  # a time beyond what datetime can hold: unreadable
        return None


def _reset_from_text(text: str, now: datetime, zone: tzinfo | None) -> datetime | None:
    if m := _STATED.search(text):  # an end stated by answer_429: it wins
        return None if m.group("secs") is None else _after(now, float(m.group("secs")))
    if m := _STATED_AT.search(text):  # an end stated by state_end: it wins
        try:
            return _sane(datetime.fromisoformat(m.group("at")).replace(tzinfo=UTC), now)
        except ValueError:  # no such time: unreadable
            return None
    if m := _EPOCH_SUFFIX.search(text):
        return epoch_seconds(int(m.group(1)))
    if m := _RETRY_IN.search(text):
        return _retry_in(m, now)
    if m := _TRY_AGAIN_AT.search(text):
        return _local_clock(m, now, zone)
    if _RESETS.search(text) and (m := _RESET_AT.search(text)):
        return _clock_time(m, now)
    return None


def _retry_in(m: re.Match[str], now: datetime) -> datetime | None:
    """The end of "retry after N <unit>" or "try again in 6m0s"; None for a unit not known."""
    if m.group("go"):
        parts = _GO_PART.findall(m.group("go"))
        return _after(now, sum(float(n) * _UNITS[unit.lower()] for n, unit in parts))
    unit = _UNITS.get((m.group("unit") or "").lower())
    return None if unit is None else _after(now, float(m.group("n")) * unit)


def _local_clock(m: re.Match[str], now: datetime, zone: tzinfo | None) -> datetime | None:
    """Codex's "try again at 2:05 AM" (on the date ``now`` has in ``zone``: Codex prints the
    date whenever the reset falls on another) or "try again at Nov 21st, 2026 2:05 AM"; ``zone``
    None is this machine's local zone, the one Codex printed in when it ran here."""
    hour, minute = int(m.group("h")), int(m.group("m"))
    if not 1 <= hour <= 12 or minute > 59:
        return None
    hour = hour % 12 + (12 if m.group("ap").lower() == "pm" else 0)
    try:
        if m.group("mon"):
            month = _MONTHS.get(m.group("mon")[:3].lower())
            if month is None:
                return None
            day = date(int(m.group("year")), month, int(m.group("day")))
        else:
            day = now.astimezone(zone).date()
        wall = datetime.combine(day, time(hour, minute))
        # naive: Python reads it in this machine's zone, with its DST rules
        at = wall.astimezone(UTC) if zone is None else wall.replace(tzinfo=zone).astimezone(UTC)
    except (ValueError, OverflowError, OSError):  # no such date, or beyond what the OS reads
        return None
    return _sane(at, now)


def _clock_time(m: re.Match[str], now: datetime) -> datetime | None:
    hour, minute = int(m.group("h")), int(m.group("m") or 0)
    if not 1 <= hour <= 12 or minute > 59:
        return None
    hour = hour % 12 + (12 if m.group("ap").lower() == "pm" else 0)
    zone: Any = UTC
    if m.group("tz"):
        try:
            zone = ZoneInfo(m.group("tz").strip())
        except (ZoneInfoNotFoundError, ValueError):
            return None
    local_now = now.astimezone(zone)
    if m.group("mon"):
        month = _MONTHS.get(m.group("mon")[:3].lower())
        if month is None:
            return None
        candidates = []
        for year in (local_now.year - 1, local_now.year, local_now.year + 1):
            try:
                candidates.append(
                    datetime(year, month, int(m.group("day")), hour, minute, tzinfo=zone)
                )
            except ValueError:
                continue
        if not candidates:
            return None
        return min(candidates, key=lambda c: abs(c - now)).astimezone(UTC)
    at = local_now.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if at <= local_now:
        at = (local_now + timedelta(days=1)).replace(
            hour=hour, minute=minute, second=0, microsecond=0
        )
    # re-anchor in the zone, so a DST change between now and then keeps the wall-clock time
    return at.replace(tzinfo=None).replace(tzinfo=zone).astimezone(UTC)


def _after(now: datetime, secs: float) -> datetime | None:
    if not math.isfinite(secs) or secs < 0:
        return None
    try:
        return _sane(now + timedelta(seconds=min(secs, _MAX_AHEAD.total_seconds() + 1)), now)
    except OverflowError:
        return None


def _sane(when: datetime, now: datetime) -> datetime | None:
    return when.astimezone(UTC) if when - now <= _MAX_AHEAD else None


def _as_int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def seconds_until(until: datetime, now: datetime) -> int:
    """Whole seconds from ``now`` to ``until``, rounded up (0 when it is past)."""
    left = (until - now).total_seconds()
    return max(0, math.ceil(left))
