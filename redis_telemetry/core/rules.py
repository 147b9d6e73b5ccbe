"""The invariants of stored data, in one place.

The pydantic models run these checks when they are built, and the write path runs them again
on every event just before encoding: ``model_construct`` and ``model_copy(update=...)`` skip
pydantic's validation, so the models alone cannot guarantee what reaches Redis.
"""

from __future__ import annotations

import math
import unicodedata
from datetime import UTC, datetime, timedelta

from ..errors import InvalidInputError

U64_MAX = 2**64 - 1
MAX_MODEL_LEN = 256
MAX_SESSION_LEN = 1024
MAX_ERROR_LEN = 16384
MAX_EVENT_ID_LEN = 128
#: Events may be stamped a little ahead of the writer's clock, not more (clock skew).
MAX_FUTURE_MS = 24 * 3600 * 1000
#: Stored latencies and token counts stay below this, so running totals stay exact.
MAX_STORED_COUNT = 10**12
#: A stored cost stays below this (USD per completion), for the same reason.
MAX_STORED_COST = 1e6

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)


def _utf8(field: str, value: object, max_len: int) -> str:
    if not isinstance(value, str):
        raise InvalidInputError(f"{field} must be a string, got {type(value).__name__}")
    if len(value) > max_len:
        raise InvalidInputError(f"{field} is {len(value)} characters long; the limit is {max_len}")
    if value.isascii():  # the common case: ASCII always encodes
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInputError(f"{field} is not valid UTF-8 text: {exc.reason}") from None
    return value


def _no_controls(field: str, value: str) -> str:
    if value.isascii() and value.isprintable():  # the common case: no control character
        return value
    for ch in value:
        if unicodedata.category(ch) == "Cc":
            raise InvalidInputError(f"{field} {value!r} contains the control character {ch!r}")
    return value


def check_model_name(value: object) -> str:
    """A model name: 1..256 characters, no braces (the hash tag) and no control characters."""
    name = _utf8("model", value, MAX_MODEL_LEN)
    if not name:
        raise InvalidInputError("model must not be empty")
    if "{" in name or "}" in name:
        raise InvalidInputError(
            f"model {name!r} contains '{{' or '}}', which Redis Cluster reads as a hash tag"
        )
    return _no_controls("model", name)


def check_session_id(value: object) -> str:
    """A session id: any UTF-8 text up to 1024 characters (empty is allowed)."""
    return _utf8("session_id", value, MAX_SESSION_LEN)


def check_error(value: object) -> str | None:
    """An error message: None or UTF-8 text up to 16384 characters."""
    return None if value is None else _utf8("error", value, MAX_ERROR_LEN)


def check_reason(value: object) -> str:
    """Why a model is blocked, kept with the block: UTF-8 text up to 16384 characters."""
    return _utf8("reason", value, MAX_ERROR_LEN)


def clip_error(text: str, room: int = MAX_ERROR_LEN) -> str:
    """An error text cut to ``room`` characters (the store's limit by default), ending in "…"
    when cut: an over-long error (a proxy's HTML error page) is kept shortened, not refused."""
    if len(text) <= room:
        return text
    return text[: max(0, room - 1)] + "…"


def check_event_id(value: object) -> str | None:
    """An event id: None (one is assigned at write time) or 1..128 characters of text."""
    if value is None:
        return None
    event_id = _utf8("event_id", value, MAX_EVENT_ID_LEN)
    if not event_id:
        raise InvalidInputError("event_id must not be empty")
    return _no_controls("event_id", event_id)


def check_u64(field: str, value: object) -> int:
    """An unsigned 64-bit count, as the reference's ``u64``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInputError(f"{field} must be an integer, got {type(value).__name__}")
    if value < 0:
        raise InvalidInputError(f"{field} must not be negative, got {value}")
    if value > U64_MAX:
        raise InvalidInputError(f"{field} must fit in 64 bits, got {value}")
    return value


def check_cost(value: object) -> float:
    """A cost in USD: a finite, non-negative number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInputError(f"cost_usd must be a number, got {type(value).__name__}")
    cost = float(value)
    if not math.isfinite(cost):
        raise InvalidInputError(f"cost_usd must be finite, got {cost}")
    if cost < 0:
        raise InvalidInputError(f"cost_usd must not be negative, got {cost}")
    return cost


def check_stored_count(field: str, value: object) -> int:
    """A latency or token count the store accepts: 0..10^12 (31 years of ms, or a trillion)."""
    count = check_u64(field, value)
    if count > MAX_STORED_COUNT:
        raise InvalidInputError(f"{field} is {count}; the store accepts at most 10^12")
    return count


def check_stored_cost(value: object) -> float:
    """A cost the store accepts: 0..1,000,000 USD per completion."""
    cost = check_cost(value)
    if cost > MAX_STORED_COST:
        raise InvalidInputError(f"cost_usd is {cost}; the store accepts at most 1,000,000 USD")
    return cost


#: The longest duration a setting accepts, in seconds.
TEN_YEARS_SECS = 10 * 365 * 24 * 3600


def _in_range(field: str, value: object, at_least: str, most: int, at_most: str) -> int:
    """An integer from 1 to ``most``; the messages name the unit (``at_least``, ``at_most``)."""
    n = check_u64(field, value)
    if n == 0:
        raise InvalidInputError(f"{field} must be at least {at_least}")
    if n > most:
        raise InvalidInputError(f"{field} must be at most {at_most}, got {n}")
    return n


def check_positive_secs(field: str, value: object) -> int:
    """A duration in whole seconds: at least 1, at most ten years."""
    return _in_range(field, value, "1 second", TEN_YEARS_SECS, "ten years")


def check_positive_ms(field: str, value: object) -> int:
    """A duration in whole milliseconds: at least 1, at most ten years."""
    return _in_range(field, value, "1 millisecond", TEN_YEARS_SECS * 1000, "ten years")


def check_positive_count(field: str, value: object) -> int:
    """A count of things (events, replicas): at least 1, at most ``MAX_STORED_COUNT``."""
    return _in_range(field, value, "1, got 0", MAX_STORED_COUNT, "10^12")


def check_aware(field: str, value: object) -> datetime:
    """A point in time with its time zone (a naive one would be read in an unknown zone)."""
    if not isinstance(value, datetime):
        raise InvalidInputError(f"{field} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidInputError(f"{field} must be timezone-aware, got {value.isoformat()}")
    return value


def to_utc(value: datetime) -> datetime:
    """Normalise a timestamp to UTC. A naive datetime is taken to be UTC already."""
    if not isinstance(value, datetime):
        raise InvalidInputError(f"timestamp must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def epoch_us(value: object) -> int:
    """Microseconds since the Unix epoch, exact (no float rounding)."""
    if type(value) is datetime and value.tzinfo is UTC:  # the common case, as validated
        return (value - _EPOCH) // _ONE_US
    if not isinstance(value, datetime):
        raise InvalidInputError(f"completed_at must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return (value - _EPOCH) // _ONE_US


def from_epoch_us(us: int) -> datetime:
    """The UTC datetime ``us`` microseconds after the Unix epoch."""
    return _EPOCH + timedelta(microseconds=us)


def ms_floor(us: int) -> int:
    """Epoch microseconds to the millisecond score used in the sorted sets."""
    return us // 1000
