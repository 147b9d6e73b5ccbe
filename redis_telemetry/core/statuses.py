"""The HTTP status of each failure the stores raise, and its one-line message (no I/O).

A client acts on the status: 4xx, change the request (nothing was written), or send a token
that allows it (401, 403); 409, no candidate
model is usable now; 503, Redis did not answer within the store's deadline, retry after
``Retry-After`` seconds (a write sent again with its ``event_id`` is stored once); 500, the
server's Redis user may not run a command, or Redis answered an error.
"""

from __future__ import annotations

from typing import NamedTuple

from ..errors import InvalidInputError, TelemetryError, TelemetryUnavailable, WindowMismatchError
from .bodies import BodyError
from .routing import NoModelAvailable
from .tokens import Denied

#: Seconds a client should wait before retrying after a 503.
RETRY_AFTER_SECS = 1


class Failure(NamedTuple):
    """What the API answers for an exception: a status, one line, and extra headers."""

    status: int
    message: str
    headers: dict[str, str]


def one_line(text: str) -> str:
    """``text`` on one line: a client logs it as it is."""
    return " ".join(text.split())


def failure(exc: Exception) -> Failure:
    """The answer to ``exc``, raised while serving a request."""
    message = one_line(str(exc)) or type(exc).__name__
    if isinstance(exc, BodyError | Denied):
        challenge = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else {}
        return Failure(exc.status, message, challenge)
    if isinstance(exc, NoModelAvailable):
        return Failure(409, message, {})
    if isinstance(exc, TelemetryUnavailable | WindowMismatchError):
        # a window changed twice under one request: the next try follows it
        return Failure(503, message, {"Retry-After": str(RETRY_AFTER_SECS)})
    if isinstance(exc, InvalidInputError):
        return Failure(422, message, {})
    if isinstance(exc, TelemetryError):  # a permission Redis refused, an error reply
        return Failure(500, message, {})
    return Failure(500, f"internal error ({type(exc).__name__}); the server logged it", {})
