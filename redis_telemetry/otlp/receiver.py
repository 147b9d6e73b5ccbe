"""An OTLP/HTTP export request, from its bytes to the events to store and the bytes of the
answer (no I/O): what ``POST /v1/logs``, ``/v1/traces`` and ``/v1/metrics`` run.

- The request's ``Content-Type`` picks the encoding: ``application/x-protobuf`` or
  ``application/json``; the answer is in the same one. Anything else is 415.
- A record that is not one to store (another event, a span that is no model call) is
  dropped. A record that should be stored and cannot (no model, a count that is no number,
  an id that is not hex) is *rejected*: the answer is still a success, its partial success
  giving how many were rejected and why (the first few reasons), as the OTLP specification
  says; the other records are stored.
- Errors are answered with a ``google.rpc.Status`` in the request's encoding.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from ..core.bodies import BodyError, content_type
from ..models import CompletionEvent
from . import claude, genai, json_body, proto_body
from .records import Batch, Signal, Unmappable

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
Encoding = Literal["protobuf", "json"]
#: the reasons a partial success names, at most
MAX_REASONS = 3
#: google.rpc.Code of each HTTP status the receiver answers
_RPC_CODES = {400: 3, 401: 16, 403: 7, 404: 5, 413: 8, 415: 3, 422: 3, 500: 13, 503: 14}


def encoding(header: str | None) -> Encoding:
    """The encoding a ``Content-Type`` header names; 415 for any other."""
    media = content_type(header)
    if media == PROTOBUF:
        return "protobuf"
    if media == JSON:
        return "json"
    raise BodyError(415, f"Content-Type {media or 'none'!r} is not OTLP; send {PROTOBUF} or {JSON}")


def answer_encoding(header: str | None) -> Encoding:
    """The encoding of the answer to a request with this ``Content-Type``: protobuf for
    protobuf, else JSON (an error about the type itself is answered in JSON)."""
    return "protobuf" if content_type(header) == PROTOBUF else "json"


def media_type(kind: Encoding) -> str:
    return PROTOBUF if kind == "protobuf" else JSON


def decode(signal: Signal, body: bytes, kind: Encoding) -> Batch:
    """The records of an export request (400 when it does not decode)."""
    if kind == "protobuf":
        return proto_body.decode(signal, body)
    return json_body.decode(signal, body)


@dataclass
class Mapped:
    """The events of a request, and what could not be mapped."""

    events: list[CompletionEvent] = field(default_factory=list)
    rejected: int = 0
    reasons: list[str] = field(default_factory=list)
    dropped: int = 0

    def reject(self, what: str, why: str) -> None:
        self.rejected += 1
        if len(self.reasons) < MAX_REASONS:
            self.reasons.append(f"{what}: {why}")

    @property
    def message(self) -> str:
        """The partial success's message ('' when nothing was rejected)."""
        if not self.rejected:
            return ""
        more = self.rejected - len(self.reasons)
        tail = f"; and {more} more" if more > 0 else ""
        return f"{self.rejected} not stored: " + "; ".join(self.reasons) + tail


def map_batch(batch: Batch, now: datetime) -> Mapped:
    """Every record of ``batch`` as an event, dropped, or rejected (``now``: the time of a
    record that carries none)."""
    out = Mapped()
    for i, record in enumerate(batch.logs):
        try:
            found = claude.to_event(record, now)
        except Unmappable as exc:
            out.reject(f"log record {i}", str(exc))
            continue
        _keep(out, found)
    for i, span in enumerate(batch.spans):
        try:
            found = genai.to_event(span, now)
        except Unmappable as exc:
            out.reject(f"span {i}", str(exc))
            continue
        _keep(out, found)
    return out


def _keep(out: Mapped, found: CompletionEvent | None) -> None:
    if found is None:
        out.dropped += 1
    else:
        out.events.append(found)


def answer(signal: Signal, mapped: Mapped, kind: Encoding) -> bytes:
    """The export response: empty on full success, else the partial success."""
    if kind == "protobuf":
        return proto_body.response(signal, mapped.rejected, mapped.message)
    if not mapped.rejected or signal == "metrics":
        return b"{}"
    count = "rejectedLogRecords" if signal == "logs" else "rejectedSpans"
    partial = {count: str(mapped.rejected), "errorMessage": mapped.message}
    return json.dumps({"partialSuccess": partial}).encode()


def status(http_status: int, message: str, kind: Encoding) -> bytes:
    """A ``google.rpc.Status`` for an error answer, in ``kind`` (protobuf written by hand:
    ``opentelemetry-proto`` does not ship the message)."""
    code = _RPC_CODES.get(http_status, 2)  # 2: UNKNOWN
    if kind == "json":
        return json.dumps({"code": code, "message": message}).encode()
    text = message.encode()
    return b"\x08" + _varint(code) + b"\x12" + _varint(len(text)) + text


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)
