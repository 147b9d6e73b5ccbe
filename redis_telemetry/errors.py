"""The package's exceptions. Every failure the stores raise is a :class:`TelemetryError`.

``NoModelAvailable`` lives in ``core.routing``, beside the ``Ranking`` it carries: this module
imports nothing of the package, so every module can import it.
"""

from __future__ import annotations


class TelemetryError(Exception):
    """Base class of every error raised by redis-telemetry."""


class TelemetryUnavailable(TelemetryError):
    """Redis could not be reached (connection refused, timed out, or dropped)."""


class PermissionDenied(TelemetryError):
    """Redis refused a command to this user (an ACL): retrying will not help."""


class InvalidInputError(TelemetryError, ValueError):
    """An argument or event broke a rule of the stored data; nothing was written."""


class WindowMismatchError(TelemetryError):
    """The namespace's shared window differs from the window this store was built with."""

    def __init__(self, namespace: str, stored: int, requested: int) -> None:
        self.namespace = namespace
        self.stored = stored
        self.requested = requested
        super().__init__(
            f"namespace {namespace!r} uses window_secs={stored}, but this store was built "
            f"with window_secs={requested}; refusing to trim other replicas' data. Build the "
            f"store with window_secs={stored}, or change the namespace's window on purpose "
            f"with set_window()"
        )
