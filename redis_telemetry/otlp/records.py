"""What an OTLP export holds that the mappings read, decoded the same from JSON and protobuf.

Both decoders (``otlp.json``, ``otlp.proto``) turn a request into :class:`LogRecord` and
:class:`Span` values: ids as lower-case hex, times as integer nanoseconds since the epoch,
enums as integers, and attributes as plain Python values (``str``, ``bool``, ``int``,
``float``, ``bytes``, or a list of them). A nested key-value list is kept as ``None``: no
mapping reads one, and nothing of it is stored.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ..core.bodies import BodyError
from ..errors import InvalidInputError

#: The three signals of OTLP/HTTP, by the last part of their path.
Signal = Literal["logs", "traces", "metrics"]
#: ``Span.kind`` of a call to a remote service (``SPAN_KIND_CLIENT``).
SPAN_KIND_CLIENT = 3
#: ``Span.status.code`` of a failed operation (``STATUS_CODE_ERROR``).
STATUS_CODE_ERROR = 2
#: enum names a JSON body may give instead of the integer (the OTLP JSON rules say integers)
ENUM_NAMES: Mapping[str, int] = {
    "SPAN_KIND_UNSPECIFIED": 0,
    "SPAN_KIND_INTERNAL": 1,
    "SPAN_KIND_SERVER": 2,
    "SPAN_KIND_CLIENT": 3,
    "SPAN_KIND_PRODUCER": 4,
    "SPAN_KIND_CONSUMER": 5,
    "STATUS_CODE_UNSET": 0,
    "STATUS_CODE_OK": 1,
    "STATUS_CODE_ERROR": 2,
}

Attributes = dict[str, Any]
#: the id of a span whose JSON id is not hex of the right size: the span is rejected
BAD_ID = "?"


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One log record and its resource's attributes (an event: its name in ``event_name``,
    the ``event.name`` attribute, or the body)."""

    time_unix_nano: int = 0
    observed_time_unix_nano: int = 0
    body: Any = None
    attributes: Attributes = field(default_factory=dict)
    resource: Attributes = field(default_factory=dict)
    event_name: str = ""


@dataclass(frozen=True, slots=True)
class Span:
    """One span and its resource's attributes."""

    trace_id: str
    span_id: str
    name: str = ""
    kind: int = 0
    start_time_unix_nano: int = 0
    end_time_unix_nano: int = 0
    attributes: Attributes = field(default_factory=dict)
    resource: Attributes = field(default_factory=dict)
    status_code: int = 0
    status_message: str = ""


@dataclass(frozen=True, slots=True)
class Batch:
    """The records of one export request (logs, spans, or neither for metrics)."""

    logs: list[LogRecord] = field(default_factory=list)
    spans: list[Span] = field(default_factory=list)


def not_otlp(signal: Signal, why: str) -> BodyError:
    """The 400 of a body that does not decode as the signal's export request."""
    return BodyError(400, f"not an OTLP {signal} export request: {why}")


# -- reading attribute values, whatever type the emitter wrote -------------------------------


def number(value: object) -> float | int | None:
    """A finite number from an attribute: a number, or its decimal text (Claude Code before
    2.1.122 wrote every number as a string); None when absent or not a number."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            pass
        try:
            parsed = float(text)
        except ValueError:
            return None
        return parsed if math.isfinite(parsed) else None
    return None


#: the span attributes the GenAI mapping reads: only these are decoded (a span's prompts and
#: messages, often the bulk of it, are skipped unread)
SPAN_KEYS_PREFIX = "gen_ai."
SPAN_KEYS = frozenset({"error.type", "http.response.status_code", "http.status_code"})


def span_key(key: str) -> bool:
    """True for a span attribute the mapping reads."""
    return key.startswith(SPAN_KEYS_PREFIX) or key in SPAN_KEYS


class Unmappable(InvalidInputError):
    """A record that should have become an event and cannot: counted as rejected."""


def count(attributes: Mapping[str, Any], *names: str) -> int:
    """A non-negative whole count from the first of ``names`` present (0 when none is);
    :class:`Unmappable` when it is present and not such a number."""
    for name in names:
        value = attributes.get(name)
        if value is None:
            continue
        found = number(value)
        if found is None or found < 0 or found >= 2**63:
            raise Unmappable(f"{name} is not a non-negative number: {str(value)[:40]!r}")
        return round(found)
    return 0


def text(attributes: Mapping[str, Any], *names: str) -> str:
    """The first of ``names`` that is a non-empty string ('' when none is); a number is
    taken as its text (a status code, an id)."""
    for name in names:
        value = attributes.get(name)
        if isinstance(value, str) and value.strip():
            return value.strip()
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
    return ""
