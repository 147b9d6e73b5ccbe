"""Reading Redis's replies: errors as the package's exceptions, tolerated bad data, and
recovery from a flushed script cache (NOSCRIPT)."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any, TypeVar

from redis.exceptions import (
    AuthenticationError,
    NoPermissionError,
    NoScriptError,
    OutOfMemoryError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..errors import (
    InvalidInputError,
    PermissionDenied,
    TelemetryError,
    TelemetryUnavailable,
    WindowMismatchError,
)
from .commands import Cmd, Command, Eval, Op
from .scripts import SCRIPTS

log = logging.getLogger(__name__)
T = TypeVar("T")

#: record.lua's refusal of a write whose window differs from the one set_window() stamped
_WINDOW_MISMATCH = re.compile(
    r"record\.lua: window mismatch: (.*?):\{.* window_ms=(\d+), not (\d+)"
)

#: How often a batch is retried after NOSCRIPT (the script cache was flushed) before giving up.
NOSCRIPT_RETRIES = 3


def time_ms(reply: Sequence[Any]) -> int:
    """A TIME reply in epoch milliseconds."""
    return int(reply[0]) * 1000 + int(reply[1]) // 1000


def translate(exc: BaseException) -> TelemetryError:
    """A redis-py error as the package's exception, naming what went wrong."""
    if isinstance(exc, TelemetryError):
        return exc
    if isinstance(exc, RedisConnectionError | RedisTimeoutError) and not isinstance(
        exc, AuthenticationError
    ):
        return TelemetryUnavailable(f"Redis is unreachable: {exc}")
    if mismatch := _WINDOW_MISMATCH.search(str(exc)):
        namespace, stored, mine = mismatch.groups()
        return WindowMismatchError(namespace, int(stored) // 1000, int(mine) // 1000)
    if isinstance(exc, OutOfMemoryError) or str(exc).startswith("OOM "):
        return TelemetryError(
            "Redis is out of memory (maxmemory reached, policy noeviction) and refused the "
            "write; each model's events are stored whole or not at all, and sending the same "
            f"events again stores each once: {exc}"
        )
    if "record.lua: totals overflow" in str(exc):
        return InvalidInputError(
            f"refused: the model's running totals would overflow (nothing written): {exc}"
        )
    denied = ("NOPERM", "no permissions", "can't run this command")
    if isinstance(exc, NoPermissionError) or any(d in str(exc) for d in denied):
        return PermissionDenied(f"Redis refused the command (permission denied): {exc}")
    return TelemetryError(f"Redis error: {type(exc).__name__}: {exc}")


def raise_errors(results: Sequence[Any], batch: Sequence[Command] = ()) -> None:
    """Raise the first error reply of a batch as a :class:`TelemetryError` (replies to
    tolerant commands excepted)."""
    for i, r in enumerate(results):
        if isinstance(r, BaseException):
            c = batch[i] if i < len(batch) else None
            if c is not None and c.tolerant and is_bad_data(r):
                continue
            raise translate(r) from r


def is_bad_data(error: BaseException) -> bool:
    """An error caused by a key of the wrong type (written by hand), not by the connection,
    a permission or a missing script."""
    return "WRONGTYPE" in str(error)


def usable(reply: Any, default: Any, what: str) -> Any:
    """A tolerant command's reply, or ``default`` (logged) when Redis answered an error."""
    if isinstance(reply, BaseException):
        log.warning("skipped unreadable %s: %s", what, reply)
        return default
    return reply


def recovering(op: Op[T]) -> Op[T]:
    """Wrap ``op`` so that a flushed script cache (NOSCRIPT) is reloaded and retried.

    Only the failed EVALSHAs are re-sent. That is safe: a script that got NOSCRIPT did not
    run, and a re-sent event keeps its id, so it can never be counted twice. Any other error
    reply is raised inside ``op`` (as a :class:`TelemetryError`), which may handle it.
    """
    try:
        batch = next(op)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    while True:
        results = list((yield batch))
        for _ in range(NOSCRIPT_RETRIES):
            missing = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
            if not missing:
                break
            # one SCRIPT LOAD per missing script; on a cluster it goes to every node
            loads = {c.script: c.keys[0] for i in missing if isinstance(c := batch[i], Eval)}
            raise_errors(
                (yield [Cmd("script_load", (SCRIPTS[n],), route=k) for n, k in loads.items()])
            )
            retried = yield [batch[i] for i in missing]
            for i, r in zip(missing, retried, strict=True):
                results[i] = r
        try:
            try:
                raise_errors(results, batch)
            except TelemetryError as exc:
                batch = op.throw(exc)
            else:
                batch = op.send(results)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
