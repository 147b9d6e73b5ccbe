"""Request bodies of the HTTP API, as bytes in and events or models out (no I/O).

A body arrives in chunks, maybe gzip-compressed; :class:`Decoder` inflates them and counts the
bytes against a limit (after decompression, so a small gzip body cannot unpack into gigabytes).
:func:`parse_events` reads one event, a JSON array of events, or JSON Lines, and checks every
event before any is handed on: one invalid event and the request writes nothing. Types are
strict, as the reference's serde reads them (``"success": "yes"`` is refused).

Every refusal is a :class:`BodyError` carrying the HTTP status that says why: 400 (not JSON,
a broken gzip stream), 413 (too large), 415 (an encoding the API does not take), 422 (JSON,
but not a valid event, naming the event's index from 0 and the field).
"""

from __future__ import annotations

import zlib
from typing import TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic_core import ErrorDetails

from ..errors import InvalidInputError
from ..models import CompletionEvent

#: The largest body the API reads, by default: 16 MiB, counted after decompression.
DEFAULT_BODY_LIMIT = 16 * 1024 * 1024
#: Content types read as JSON Lines (one event a line); any other body is read as JSON.
JSON_LINES_TYPES = frozenset({"application/x-ndjson", "application/jsonl"})
_GZIP = frozenset({"gzip", "x-gzip"})
_IDENTITY = frozenset({"", "identity"})
_EVENTS: TypeAdapter[list[CompletionEvent]] = TypeAdapter(list[CompletionEvent])
M = TypeVar("M", bound=BaseModel)


class BodyError(InvalidInputError):
    """A request body the API refuses; ``status`` is the HTTP status that says why."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


def too_large(limit: int) -> BodyError:
    """The 413 of a body past ``limit`` bytes."""
    return BodyError(
        413, f"the body is larger than the limit of {limit} bytes (after decompression)"
    )


class Decoder:
    """Inflates a body's chunks (``Content-Encoding: gzip``, or none) and enforces ``limit``
    on the bytes received and on the bytes they inflate to."""

    def __init__(self, encoding: str | None, limit: int = DEFAULT_BODY_LIMIT) -> None:
        name = (encoding or "").strip().lower()
        if name not in _GZIP | _IDENTITY:
            raise BodyError(
                415, f"Content-Encoding {name!r} is not supported; send gzip or no encoding"
            )
        self.limit = limit
        self.gzip = name in _GZIP
        self._inflate = zlib.decompressobj(zlib.MAX_WBITS | 16) if self.gzip else None
        self.received = 0
        self.size = 0

    def check_declared(self, length: str | None) -> None:
        """Refuse at once a body whose ``Content-Length`` is already past the limit."""
        if length is not None and length.strip().isdigit() and int(length) > self.limit:
            raise too_large(self.limit)

    def feed(self, chunk: bytes) -> bytes:
        """The decoded bytes of the next chunk."""
        self.received += len(chunk)
        if self.received > self.limit:
            raise too_large(self.limit)
        out = self._gunzip(chunk) if self._inflate is not None else chunk
        self.size += len(out)
        return out

    def _gunzip(self, data: bytes) -> bytes:
        out = bytearray()
        while data:
            assert self._inflate is not None
            room = self.limit - self.size - len(out) + 1  # one more byte says "too large"
            try:
                out += self._inflate.decompress(data, room)
            except zlib.error as exc:
                raise BodyError(400, f"the body is not valid gzip: {exc}") from None
            if self.size + len(out) > self.limit:
                raise too_large(self.limit)
            if self._inflate.eof:  # a gzip member ended; another may follow (RFC 1952)
                data = self._inflate.unused_data
                if data:
                    self._inflate = zlib.decompressobj(zlib.MAX_WBITS | 16)
            else:
                data = self._inflate.unconsumed_tail
        return bytes(out)

    def finish(self) -> None:
        """The body ended: refuse a gzip stream cut short."""
        if self._inflate is not None and not self._inflate.eof:
            raise BodyError(400, "the gzip body ends before its gzip stream does")


def _where(error: ErrorDetails) -> str:
    """A pydantic error as 'field.path: message'."""
    path = ".".join(str(p) for p in error["loc"])
    msg = str(error["msg"]).removeprefix("Value error, ")
    return f"{path}: {msg}" if path else msg


def _refusal(exc: ValidationError, prefix: str = "") -> BodyError:
    """400 for a body (or a line, named by ``prefix``) that is not JSON, else 422 naming the
    field."""
    first = exc.errors()[0]
    if first["type"] == "json_invalid":
        return BodyError(400, f"{prefix or 'the body is '}not JSON: {first['ctx']['error']}")
    return BodyError(422, prefix + _where(first))


def _check_json_start(body: bytes, what: str) -> bytes:
    text = body.lstrip()
    if not text:
        raise BodyError(400, f"the body is empty; send {what}")
    return text


def parse_model(model: type[M], body: bytes) -> M:
    """One JSON object as ``model``, validated as JSON (strict types)."""
    _check_json_start(body, "a JSON object")
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise _refusal(exc) from None


def content_type(header: str | None) -> str:
    """The media type of a ``Content-Type`` header, without its parameters, lower case."""
    return (header or "").split(";")[0].strip().lower()


def parse_events(
    body: bytes, media_type: str = "application/json"
) -> tuple[list[CompletionEvent], bool]:
    """The events of a ``POST /v1/events`` body, every one checked, and whether the body was
    one event (not an array or JSON Lines). An invalid event is named by its index, from 0."""
    what = "one JSON event, a JSON array of events, or JSON Lines"
    if media_type in JSON_LINES_TYPES:
        return _json_lines(body), False
    text = _check_json_start(body, what)
    if text[:1] == b"[":
        try:
            return _EVENTS.validate_json(text), False
        except ValidationError as exc:
            first = exc.errors()[0]
            if first["type"] == "json_invalid" or not first["loc"]:
                raise _refusal(exc) from None
            index, *field = first["loc"]
            raise BodyError(
                422, f"event {index}: " + _where({**first, "loc": tuple(field)})
            ) from None
    if text[:1] != b"{":
        raise BodyError(400, f"the body is not a JSON object or array; send {what}")
    return [parse_model(CompletionEvent, text)], True


def _json_lines(body: bytes) -> list[CompletionEvent]:
    events: list[CompletionEvent] = []
    for number, line in enumerate(body.splitlines(), 1):
        if not line.strip():
            continue
        try:
            events.append(CompletionEvent.model_validate_json(line))
        except ValidationError as exc:
            raise _refusal(exc, f"event {len(events)} (line {number}): ") from None
    if not events:
        raise BodyError(400, "the body holds no event; send one JSON event a line")
    return events
