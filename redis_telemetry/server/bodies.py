"""An ASGI middleware: request bodies decompressed and held to the body limit as they arrive.

The routes read a body with ``await request.body()``, after the token check; the chunks pass
through ``core.bodies.Decoder`` on the way, so a body past the limit (counted after
decompression) stops the read with a 413 at the first byte too many, not after it was held
in memory.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..core.bodies import DEFAULT_BODY_LIMIT, Decoder

#: headers that no longer describe the body once it is decoded
_STALE = (b"content-encoding", b"content-length")


class DecodedBodies:
    """Wraps an ASGI app so that its requests' bodies arrive decoded and limited."""

    def __init__(self, app: ASGIApp, limit: int = DEFAULT_BODY_LIMIT) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        encoding, length = headers.get("content-encoding"), headers.get("content-length")
        decoder: Decoder | None = None

        async def decoded() -> Message:
            nonlocal decoder
            if decoder is None:  # the first read: refuse at once what cannot pass
                decoder = Decoder(encoding, self.limit)
                decoder.check_declared(length)
            message = await receive()
            if message["type"] == "http.request":
                body = decoder.feed(message.get("body", b""))
                if not message.get("more_body", False):
                    decoder.finish()
                message = {**message, "body": body}
            return message

        if encoding is not None:
            kept = [(k, v) for k, v in scope["headers"] if k.lower() not in _STALE]
            scope = {**scope, "headers": kept}
        await self.app(scope, decoded, send)
