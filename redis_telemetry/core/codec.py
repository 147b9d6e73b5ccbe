"""The msgpack member format of one stored event, and its write-time preparation.

A member is a msgpack array::

    [1, event_id, session_id, completed_at_us, latency_ms, success,
     total, input, output, reasoning, cache_read, cache_write, cost_usd, error]

The model is not repeated: the key names it. ``1`` is the format version.
"""

from __future__ import annotations

import math
import uuid
from datetime import datetime
from typing import NamedTuple

import msgpack

from ..errors import InvalidInputError
from ..models import CompletionEvent, TokenBreakdown, is_subscription_limit_error
from . import rules

FORMAT_VERSION = 1
_FIELDS = 14
#: The limit key's value is informational (the TTL is what counts); keep it short.
MAX_LIMIT_REASON = 200


class StoredEvent(NamedTuple):
    """One decoded member."""

    event_id: str
    session_id: str
    completed_at_us: int
    latency_ms: int
    success: bool
    total: int
    input: int
    output: int
    reasoning: int
    cache_read: int
    cache_write: int
    cost_usd: float
    error: str | None


class PreparedEvent(NamedTuple):
    """An event checked and encoded, ready for ``record.lua``."""

    model: str
    score_ms: int
    member: bytes
    limit_reason: str


class CorruptMember(ValueError):
    """A member that is not a valid stored event."""


def new_event_id() -> str:
    """A fresh unique event id (UUID4, hex)."""
    return uuid.uuid4().hex


def prepare(event: object, now_ms: int) -> PreparedEvent:
    """Re-check every invariant of ``event`` and encode it.

    Runs on every write, because ``model_construct``/``model_copy`` bypass pydantic.
    ``now_ms`` is the writer's clock, used only to refuse timestamps far in the future.
    """
    if not isinstance(event, CompletionEvent):
        raise InvalidInputError(f"expected a CompletionEvent, got {type(event).__name__}")
    model = rules.check_model_name(event.model)
    session_id = rules.check_session_id(event.session_id)
    if not isinstance(event.completed_at, datetime):
        raise InvalidInputError("completed_at must be a datetime")
    completed_us = rules.epoch_us(event.completed_at)
    score_ms = rules.ms_floor(completed_us)
    if score_ms > now_ms + rules.MAX_FUTURE_MS:
        raise InvalidInputError(
            f"completed_at {event.completed_at.isoformat()} is more than a day in the future"
        )
    latency = rules.check_u64("latency_ms", event.latency_ms)
    if not isinstance(event.success, bool):
        raise InvalidInputError("success must be a bool")
    tokens = event.tokens
    if not isinstance(tokens, TokenBreakdown):
        raise InvalidInputError("tokens must be a TokenBreakdown")
    counts = [
        rules.check_u64(f"tokens.{name}", getattr(tokens, name))
        for name in ("total", "input", "output", "reasoning", "cache_read", "cache_write")
    ]
    cost = rules.check_cost(event.cost_usd)
    error = rules.check_error(event.error)
    event_id = rules.check_event_id(event.event_id) or new_event_id()
    member = msgpack.packb(
        [FORMAT_VERSION, event_id, session_id, completed_us, latency, event.success,
         *counts, cost, error]
    )  # fmt: skip
    reason = ""
    if error is not None and is_subscription_limit_error(error):
        reason = error[:MAX_LIMIT_REASON]
    return PreparedEvent(model, score_ms, member, reason)


def _u64(value: object) -> int:
    if type(value) is not int or not 0 <= value <= rules.U64_MAX:
        raise CorruptMember(f"expected an unsigned integer, got {value!r}")
    return value


def decode(raw: bytes) -> StoredEvent:
    """Decode one member, or raise :class:`CorruptMember` saying why not."""
    try:
        data = msgpack.unpackb(raw, raw=False)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise CorruptMember(f"not msgpack ({type(exc).__name__})") from None
    if not isinstance(data, list) or len(data) != _FIELDS or data[0] != FORMAT_VERSION:
        raise CorruptMember("not a version-1 event array")
    _, event_id, session_id, completed_us, *rest = data
    latency, success, *counts = rest[:8]
    cost, error = rest[8], rest[9]
    if not isinstance(event_id, str) or not isinstance(session_id, str):
        raise CorruptMember("event_id and session_id must be strings")
    if type(completed_us) is not int:
        raise CorruptMember("completed_at must be an integer")
    if not isinstance(success, bool):
        raise CorruptMember("success must be a bool")
    if type(cost) not in (int, float) or not math.isfinite(cost) or cost < 0:
        raise CorruptMember(f"bad cost {cost!r}")
    if error is not None and not isinstance(error, str):
        raise CorruptMember("error must be a string or nil")
    total, inp, out, reasoning, cache_read, cache_write = (_u64(c) for c in counts)
    return StoredEvent(
        event_id, session_id, completed_us, _u64(latency), success,
        total, inp, out, reasoning, cache_read, cache_write, float(cost), error,
    )  # fmt: skip


def to_completion_event(model: str, stored: StoredEvent) -> CompletionEvent:
    """Rebuild the public event (with its id) from a decoded member."""
    return CompletionEvent(
        model=model,
        session_id=stored.session_id,
        completed_at=rules.from_epoch_us(stored.completed_at_us),
        latency_ms=stored.latency_ms,
        success=stored.success,
        tokens=TokenBreakdown(
            total=stored.total,
            input=stored.input,
            output=stored.output,
            reasoning=stored.reasoning,
            cache_read=stored.cache_read,
            cache_write=stored.cache_write,
        ),
        cost_usd=stored.cost_usd,
        error=stored.error,
        event_id=stored.event_id,
    )
