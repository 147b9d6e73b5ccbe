"""An OTLP/HTTP receiver's logic: export requests to completion events (no I/O).

``redis-telemetry serve`` answers ``POST /v1/logs``, ``/v1/traces`` and ``/v1/metrics`` with
it (``server.otlp``), so any OpenTelemetry-instrumented agent or app feeds the store:

- :mod:`.json_body` and :mod:`.proto_body` decode a request (JSON by the OTLP JSON rules;
  protobuf with ``opentelemetry-proto``, the ``otlp`` extra) into :mod:`.records`;
- :mod:`.claude` maps Claude Code's log events, :mod:`.genai` the GenAI client spans;
- :mod:`.receiver` ties them together and writes the answers.

docs/otlp.md has the mapping tables.
"""

from __future__ import annotations

from .receiver import Mapped, answer, decode, map_batch
from .records import Batch, LogRecord, Span

__all__ = ["Batch", "LogRecord", "Mapped", "Span", "answer", "decode", "map_batch"]
