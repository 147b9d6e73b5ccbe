"""Who may read and who may write through the HTTP API: bearer tokens (no I/O).

Two tokens: the read token reads (``POST /v1/select`` is a read), the write token writes and
reads. A scope without its token is open to anyone, except that a server with a read token and
no write token takes no writes at all. A presented token is compared with both tokens in
constant time (:func:`hmac.compare_digest`), whichever matches.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from enum import Enum

from ..errors import TelemetryError

#: The environment variables of the tokens (``serve``'s token file options win over them).
READ_TOKEN_ENV = "REDIS_TELEMETRY_READ_TOKEN"
WRITE_TOKEN_ENV = "REDIS_TELEMETRY_WRITE_TOKEN"


class Scope(Enum):
    """What a request does."""

    READ = "read"
    WRITE = "write"


class Denied(TelemetryError):
    """The request's token does not allow it: ``status`` 401 (no valid token) or 403 (a
    valid token that may not do this)."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


def _matches(presented: bytes, token: str | None) -> bool:
    return token is not None and hmac.compare_digest(presented, token.encode())


@dataclass(frozen=True, slots=True)
class Tokens:
    """The server's read and write tokens (None: not set)."""

    read: str | None = None
    write: str | None = None

    def __post_init__(self) -> None:
        for name in ("read", "write"):
            if getattr(self, name) == "":
                raise ValueError(f"an empty {name} token; leave it unset (None) instead")

    @property
    def open(self) -> bool:
        """True when anyone may read and write."""
        return self.read is None and self.write is None

    def warning(self) -> str | None:
        """One line saying what is open to anyone, or None when nothing is."""
        if self.open:
            return (
                "the HTTP API is open: anyone who can reach it may read and write "
                f"(set {READ_TOKEN_ENV} and {WRITE_TOKEN_ENV})"
            )
        if self.read is None:
            return "reads through the HTTP API need no token (no read token is set)"
        return None

    def check(self, authorization: str | None, scope: Scope) -> None:
        """Allow a request with this ``Authorization`` header, or raise :class:`Denied`."""
        if self.open or (scope is Scope.READ and self.read is None):
            return
        if scope is Scope.WRITE and self.write is None:
            raise Denied(403, "this server takes no writes: it has a read token and no write token")
        kind, _, credentials = (authorization or "").partition(" ")
        presented = credentials.strip().encode()
        if kind.lower() != "bearer" or not presented:
            raise Denied(401, "a bearer token is required: send 'Authorization: Bearer <token>'")
        is_write = _matches(presented, self.write)
        is_read = _matches(presented, self.read)  # both compared, whichever matches
        if is_write or (is_read and scope is Scope.READ):
            return
        if is_read:
            raise Denied(403, "the read token may not write; send the write token")
        raise Denied(401, "the bearer token is not valid")
