"""The command vocabulary the core speaks and the shells send.

An operation yields a *batch* (a list of commands) and receives the batch's replies, in
order; :class:`SingleCommand` is the one exception, an operation that is one command in its
common case. ``call`` and ``queue`` turn commands into redis-py calls; they are the only place
that knows how.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, NamedTuple, TypeVar

from redis.exceptions import NoScriptError

from ..errors import TelemetryError

T = TypeVar("T")
A = TypeVar("A")
B = TypeVar("B")


@dataclass(frozen=True, slots=True)
class Cmd:
    """A redis-py client method and its arguments. An error reply to a ``tolerant`` command
    (a key of the wrong type, written by hand) reaches the operation instead of raising."""

    method: str
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    tolerant: bool = False
    #: for a command without a key (TIME, SCRIPT LOAD): the key whose cluster node runs it
    route: str | None = None


class Eval(NamedTuple):
    """A call of one of the package's Lua scripts, by name (sent as EVALSHA)."""

    script: str
    keys: tuple[str, ...]
    args: tuple[Any, ...]
    tolerant: bool = False


Command = Cmd | Eval
Batch = list[Command]
#: An operation: yields batches, receives each batch's replies, returns its result.
Op = Generator[Batch, list[Any], T]


class SingleCommand(NamedTuple, Generic[T]):
    """An operation that is one command in its common case, sent without the batch machinery:
    the shell sends ``command`` alone and hands its reply to ``finish``. On a cluster client,
    or after a NOSCRIPT reply (the script did not run), the shell runs ``fallback()`` as an
    ordinary operation instead. When ``then(reply)`` gives an operation (the reply asks for
    more, such as listing a model again), the shell runs it and returns its result."""

    command: Eval
    finish: Callable[[Any], T]
    fallback: Callable[[], Op[T]]
    then: Callable[[Any], Op[T] | None] = lambda reply: None

    def settle(self, reply: Any) -> Finished[T] | Op[T]:
        """What ``reply`` (None: the command was not sent, as on a cluster) leaves to do: the
        result, or the operation the shell runs instead."""
        if reply is None or isinstance(reply, NoScriptError):
            return self.fallback()
        more = self.then(reply)
        return Finished(self.finish(reply)) if more is None else more


class Finished(NamedTuple, Generic[T]):
    """A :class:`SingleCommand`'s result, with nothing more to send."""

    value: T


def key_of(c: Command) -> str:
    """The key a command is about (its route, for one without a key): on a cluster, the key
    whose node runs it."""
    if isinstance(c, Eval):
        return c.keys[0]
    if c.route is not None:
        return c.route
    return str(c.args[0])


def call(target: Any, c: Command, shas: Mapping[str, str]) -> Any:
    """Send (or, on a pipeline, queue) one command with redis-py."""
    if isinstance(c, Eval):
        return target.evalsha(shas[c.script], len(c.keys), *c.keys, *c.args)
    return getattr(target, c.method)(*c.args, **c.kwargs)


def queue(pipe: Any, batch: Batch, shas: Mapping[str, str]) -> None:
    """Put ``batch`` on a redis-py pipeline (sync or async: queueing is the same)."""
    for c in batch:
        call(pipe, c, shas)


def single(batch: Batch) -> Command | None:
    """The one command of a batch that needs no pipeline (a pipeline costs more)."""
    return batch[0] if len(batch) == 1 else None


def together(first: Op[A], second: Op[B]) -> Op[tuple[A, B]]:
    """Run two operations side by side: each round sends both one's batches as one batch, so
    two operations of one round trip each cost one round trip together.

    An error reply thrown into the pair goes to ``first``; ``second``'s commands of that round
    are sent again with the next batch, so ``second`` must be reads that an error of
    ``first``'s cannot concern (its own commands ``tolerant``, as a read of the providers'
    hashes is)."""
    done: dict[int, Any] = {}
    pending: list[Batch | None] = [None, None]
    ops: tuple[Op[Any], Op[Any]] = (first, second)
    thrown: BaseException | None = None

    def step(i: int, reply: list[Any] | None) -> None:
        nonlocal thrown
        try:
            if thrown is not None and i == 0:
                exc, thrown = thrown, None
                pending[i] = ops[i].throw(exc)
            elif reply is None:
                pending[i] = next(ops[i])
            else:
                pending[i] = ops[i].send(reply)
        except StopIteration as stop:
            done[i], pending[i] = stop.value, None

    step(0, None)
    step(1, None)
    while len(done) < 2:
        a, b = pending[0] or [], pending[1] or []
        try:
            replies = yield a + b
        except TelemetryError as exc:
            if 0 in done:
                raise
            thrown = exc
            step(0, None)
            continue
        if 0 not in done:
            step(0, replies[: len(a)])
        if 1 not in done:
            step(1, replies[len(a) :])
    return done[0], done[1]
