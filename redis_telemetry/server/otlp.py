"""The OTLP/HTTP routes of ``redis-telemetry serve``: ``POST /v1/logs``, ``/v1/traces`` and
``/v1/metrics``, so ``OTEL_EXPORTER_OTLP_ENDPOINT=http://host:port`` works as it is.

A thin shell over ``otlp.receiver``: each request is checked against the write token, read
(decompressed and held to the body limit by the app's middleware), decoded, mapped, and its
events written with one ``record_batch``; the providers are then fed from the events newly
stored (``feedback``). Errors are answered as the OTLP specification says: a
``google.rpc.Status`` in the request's encoding, with ``Retry-After`` on a 503 (the exporters
retry 429, 502, 503 and 504 only). A redelivered request stores nothing twice, and so feeds
nothing twice: every event carries an id derived from its record.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response

from ..core.statuses import failure
from ..core.tokens import Scope, Tokens
from ..otlp import receiver
from ..otlp.records import Signal
from .feedback import Stores, record_and_feed

log = logging.getLogger(__name__)


_DOC = {
    "logs": "Claude Code's log events (`claude_code.api_request`, `claude_code.api_error`) "
    "become completion events; every other log record is dropped.",
    "traces": "GenAI inference spans (`gen_ai.operation.name` `chat`, `text_completion`, "
    "`generate_content`, or a CLIENT span with a model) become completion events; every "
    "other span is dropped.",
    "metrics": "Accepted and dropped, so that exporters which send every signal do not fail.",
}


def _body_doc() -> dict[str, Any]:
    binary = {"schema": {"type": "string", "format": "binary"}}
    return {
        "required": True,
        "content": {receiver.PROTOBUF: binary, receiver.JSON: {"schema": {}}},
    }


def add_otlp_routes(app: FastAPI, stores: Stores, tokens: Tokens, doc_guard: Any) -> None:
    """Mount the three OTLP routes on ``app`` (``doc_guard``: the dependency that puts the
    bearer scheme in the OpenAPI document; the token is checked here, to answer in OTLP's
    form)."""

    def route(signal: Signal) -> None:
        async def export(request: Request) -> Response:
            header = request.headers.get("content-type")
            kind = receiver.answer_encoding(header)
            media_type = receiver.media_type(kind)
            try:
                tokens.check(request.headers.get("authorization"), Scope.WRITE)
                receiver.encoding(header)  # 415 for a type that is not OTLP's
                body = await request.body()
                mapped = receiver.Mapped()
                if signal != "metrics":  # metrics: read (and held to the limit), then dropped
                    mapped = receiver.map_batch(
                        receiver.decode(signal, body, kind), datetime.now(UTC)
                    )
                if mapped.events:
                    await record_and_feed(stores, mapped.events)
                if mapped.rejected:
                    log.info("OTLP %s: %s", signal, mapped.message)
                return Response(receiver.answer(signal, mapped, kind), media_type=media_type)
            except Exception as exc:
                answer = failure(exc)
                if answer.status == 500:
                    log.error("OTLP %s request failed", signal, exc_info=exc)
                body = receiver.status(answer.status, answer.message, kind)
                return Response(body, answer.status, answer.headers, media_type=media_type)

        export.__doc__ = _DOC[signal]
        app.add_api_route(
            f"/v1/{signal}",
            export,
            methods=["POST"],
            name=f"otlp_{signal}",
            summary=f"OTLP/HTTP {signal} export",
            dependencies=[doc_guard],
            response_class=Response,
            responses={
                200: {"description": "Stored; a partial success names what was not."},
                **{
                    s: {"description": "A google.rpc.Status in the request's encoding."}
                    for s in (400, 401, 403, 413, 415, 503)
                },
            },
            openapi_extra={"requestBody": _body_doc()},
        )

    signals: tuple[Signal, ...] = ("logs", "traces", "metrics")
    for signal in signals:
        route(signal)
