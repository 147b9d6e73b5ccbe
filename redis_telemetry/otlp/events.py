"""What the OTLP mappings share: times, the 429 rule, and building a checked event."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from ..core import limits, rules
from ..core.backup import describe_validation
from ..models import CompletionEvent
from .records import Unmappable


def from_nanos(nanos: int) -> datetime | None:
    """Epoch nanoseconds as a UTC time; None for 0 (unset) or a time out of range."""
    if nanos <= 0:
        return None
    try:
        return datetime.fromtimestamp(nanos / 1e9, UTC)
    except (ValueError, OverflowError, OSError):
        return None


def blocking_error(text: str, completed_at: datetime, is_429: bool) -> str:
    """The error text to store for a failed call: a 429 states its end for ``record()`` to
    read (the reset its text names, else the short default cooldown, never the subscription
    TTL); any other failure is stored so that no limit rule reads it as one."""
    text = rules.clip_error(text)
    if is_429 or limits.is_limit_text(text):
        _, stated = limits.answer_429(text, None, completed_at, limits.COOLDOWN_429_SECS)
        return stated
    return text


def event(**fields: Any) -> CompletionEvent:
    """A checked event; :class:`Unmappable` naming the field when a value does not fit."""
    try:
        return CompletionEvent(**fields)
    except ValidationError as exc:
        raise Unmappable(describe_validation(exc)) from None
