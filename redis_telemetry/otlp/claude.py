"""Claude Code's OTLP log events to completion events (no I/O).

Claude Code (``CLAUDE_CODE_ENABLE_TELEMETRY=1``, ``OTEL_LOGS_EXPORTER=otlp``) sends one log
record per event: its body is the event's name (``claude_code.api_request``), with the
attribute ``event.name`` (``api_request``). Modelled on Claude Code's monitoring
documentation (code.claude.com/docs/en/monitoring-usage) for 2.1.x:

- ``claude_code.api_request``, once per API call: ``model``, ``cost_usd`` (and
  ``cost_usd_micros``), ``duration_ms``, ``input_tokens``, ``output_tokens``,
  ``cache_read_tokens``, ``cache_creation_tokens``, ``request_id``, ``query_source``, with
  ``session.id`` and ``event.sequence``;
- ``claude_code.api_error``, once per call whose retries ran out: ``model``, ``error``,
  ``status_code`` (absent for a connection failure), ``duration_ms``, ``attempt``.

Numbers were strings before Claude Code 2.1.122, and are numbers since: both are read. Every
other event (prompts, tool results, decisions) is dropped, and of these two only the fields
above are read: no prompt, email, account or user id is stored.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

from ..ingest.events import UnparseableLine, line_time, stable_id
from ..models import CompletionEvent, TokenBreakdown
from .events import blocking_error, event, from_nanos
from .records import LogRecord, Unmappable, count, number, text

PREFIX = "claude_code."
#: the events that become completion events
MAPPED = frozenset({"api_request", "api_error"})
#: the ``service.name`` Claude Code gives its resource
SERVICE = "claude-code"
#: the prefix of the event ids this mapping writes
ID_PREFIX = "claude-otlp"


def event_name(record: LogRecord) -> str | None:
    """The Claude Code event a record is (``api_request``, ``user_prompt``, …), or None when
    it is not Claude Code's."""
    for name in (record.event_name, record.body, record.attributes.get("event.name")):
        if isinstance(name, str) and name.startswith(PREFIX):
            return name.removeprefix(PREFIX)
    name = record.attributes.get("event.name")
    if isinstance(name, str) and record.resource.get("service.name") == SERVICE:
        return name
    return None


def completed_at(record: LogRecord, now: datetime) -> datetime:
    """When the call ended: the record's time, else its ``event.timestamp``, else when it was
    observed, else ``now``."""
    at = from_nanos(record.time_unix_nano)
    if at is None and isinstance(stamp := record.attributes.get("event.timestamp"), str):
        try:
            at = line_time(stamp)
        except UnparseableLine:
            at = None
    return at or from_nanos(record.observed_time_unix_nano) or now


def event_id(record: LogRecord, name: str) -> str:
    """``request_id``; else the session and the event's sequence number in it; else a digest
    of the record (a redelivery sends the same record, so the same digest)."""
    attrs = record.attributes
    if request := text(attrs, "request_id"):
        return stable_id(ID_PREFIX, request)
    session, sequence = text(attrs, "session.id"), text(attrs, "event.sequence")
    if session and sequence:
        return stable_id(ID_PREFIX, session, sequence)
    # a digest, never the attributes themselves: they may hold what must not be stored
    fields = repr(sorted((k, repr(v)) for k, v in attrs.items()))
    digest = hashlib.sha256(fields.encode("utf-8", "replace")).hexdigest()[:32]
    return stable_id(ID_PREFIX, name, record.time_unix_nano, digest)


def to_event(record: LogRecord, now: datetime) -> CompletionEvent | None:
    """The completion event of one record; None when it is not one to store (another
    event, or not Claude Code's); :class:`Unmappable` when it should be and cannot."""
    name = event_name(record)
    if name not in MAPPED:
        return None
    attrs = record.attributes
    model = text(attrs, "model")
    if not model:
        raise Unmappable(f"claude_code.{name} without a model")
    at = completed_at(record, now)
    common = {
        "model": model,
        "session_id": text(attrs, "session.id"),
        "completed_at": at,
        "event_id": event_id(record, name),
    }
    if name == "api_error":
        status = text(attrs, "status_code")
        message = text(attrs, "error") or "unknown error"
        said = f"API Error: {status} {message}" if status else f"API Error: {message}"
        return event(
            **common,
            latency_ms=_latency(record),
            success=False,
            error=blocking_error(said, at, status == "429"),
        )
    tokens = TokenBreakdown(
        input=count(attrs, "input_tokens"),
        output=count(attrs, "output_tokens"),
        cache_read=count(attrs, "cache_read_tokens"),
        cache_write=count(attrs, "cache_creation_tokens"),
    )
    tokens.total = tokens.input + tokens.output + tokens.cache_read + tokens.cache_write
    return event(
        **common,
        latency_ms=_latency(record),
        success=True,
        tokens=tokens,
        cost_usd=_cost(record),
    )


def _latency(record: LogRecord) -> int | None:
    """``duration_ms``; None (untimed) without it."""
    if record.attributes.get("duration_ms") is None:
        return None
    return count(record.attributes, "duration_ms")


def _cost(record: LogRecord) -> float:
    """``cost_usd_micros`` when given (exact), else ``cost_usd``; 0 without either."""
    attrs = record.attributes
    if attrs.get("cost_usd_micros") is not None:
        return count(attrs, "cost_usd_micros") / 1_000_000
    value = attrs.get("cost_usd")
    if value is None:
        return 0.0
    found = number(value)
    if found is None or found < 0:
        raise Unmappable(f"cost_usd is not a cost: {str(value)[:40]!r}")
    return float(found)
