"""How long one call may wait on Redis: retries within a deadline, and a circuit breaker.

redis-py retries a connection's handshake inside every retry of a command, so against a server
that accepts connections and never answers, one call made 16 connections of 5 s each (81.6 s).
A client made by ``from_url`` therefore retries nothing itself; the store retries here:

- a call has ``timeout`` seconds, and each batch Redis answers renews them: a call that keeps
  getting replies (``reindex``, ``dump``) is never cut short, and one that gets none ends in time;
- one attempt waits at most ``attempt_secs`` (the client's socket timeouts: ``from_url`` caps
  them at half the deadline), and a retry starts only when it can end before the deadline;
- the breaker: once a call found Redis unreachable, every call fails at once for
  ``breaker_secs``; then one call probes (the others still fail at once), and its outcome closes
  the breaker or opens it again.

No I/O here: the shells send and sleep; this module decides, reading a clock.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Generator, Hashable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from redis.backoff import AbstractBackoff, ExponentialWithJitterBackoff, NoBackoff
from redis.exceptions import AuthenticationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..errors import TelemetryUnavailable

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class Pause:
    """Ask the shell to wait ``delay`` seconds before the next attempt."""

    delay: float


def transient(error: BaseException) -> bool:
    """An error a new connection may cure: refused, reset or timed out (a wrong password is
    not one)."""
    return isinstance(error, RedisConnectionError | RedisTimeoutError) and not isinstance(
        error, AuthenticationError
    )


class Breaker:
    """Fails calls at once while Redis is known to be unreachable (thread-safe).

    Closed, it lets every call through. A call that finds Redis unreachable opens it: for
    ``secs`` every call fails at once. Then the first call through is the probe, and the
    others fail at once until the probe says whether Redis answers. ``secs=0`` disables it.
    """

    def __init__(self, secs: float, clock: Clock = time.monotonic) -> None:
        self.secs = secs
        self.clock = clock
        self._lock = threading.Lock()
        #: when a call last found Redis unreachable; None while closed
        self._opened: float | None = None
        self._probing = False
        self._cause = ""

    def admit(self) -> bool:
        """Let a call through (True when it is the probe), or raise TelemetryUnavailable."""
        if self._opened is None:  # closed: the common case, decided without the lock
            return False
        with self._lock:
            if self._opened is None:
                return False
            wait = self._opened + self.secs - self.clock()
            if wait <= 0 and not self._probing:
                self._probing = True
                return True
            when = "a call is trying again now" if self._probing else f"next try in {wait:.1f}s"
            raise TelemetryUnavailable(
                f"Redis is unreachable: {self._cause} (failing at once for {self.secs:g}s "
                f"after a call found it unreachable; {when})"
            )

    def failed(self, cause: BaseException) -> None:
        """A call found Redis unreachable: open (again) for ``secs``."""
        if self.secs <= 0:
            return
        with self._lock:
            self._opened = self.clock()
            self._probing = False
            self._cause = str(cause.__cause__ or cause).removeprefix("Redis is unreachable: ")

    def answered(self) -> None:
        """Redis answered a call: close."""
        if self._opened is None:
            return
        with self._lock:
            self._opened = None
            self._probing = False

    def released(self, probe: bool) -> None:
        """A call ended without telling whether Redis answers (it failed before sending, or
        was cancelled): the next call may probe instead."""
        if probe:
            with self._lock:
                self._probing = False


@dataclass(frozen=True, slots=True)
class Policy:
    """A store's deadline and retry rules (see the module's docstring)."""

    #: seconds one call may go without a reply; ``math.inf``: no deadline
    timeout: float = math.inf
    #: the longest one attempt can wait (the client's socket timeouts)
    attempt_secs: float = 0.0
    #: retries of a batch after a transient error, within the deadline
    retries: int = 0
    #: the pause before each retry
    backoff: AbstractBackoff = field(default_factory=NoBackoff)


#: A store on a client it was given: no deadline, no retries, no breaker (the client's own).
UNGUARDED = Policy()


class Guard:
    """One store's policy and breaker; ``start()`` makes each call's :class:`Deadline`."""

    def __init__(
        self, policy: Policy = UNGUARDED, breaker_secs: float = 0.0, clock: Clock = time.monotonic
    ) -> None:
        self.policy = policy
        self.clock = clock
        self.breaker = Breaker(breaker_secs, clock)

    def start(self) -> Deadline:
        """The deadline of a call starting now; raises TelemetryUnavailable while the breaker
        is open. Use it as a context manager around the call: its outcome feeds the breaker."""
        return Deadline(self, self.breaker.admit())


class Deadline:
    """One call's deadline, renewed by each reply. As a context manager, it reports how the
    call ended to the breaker."""

    __slots__ = ("attempts", "ends", "guard", "probe", "replied", "started")

    def __init__(self, guard: Guard, probe: bool) -> None:
        self.guard = guard
        self.probe = probe
        self.started = guard.clock()
        self.ends = self.started + guard.policy.timeout
        #: True once Redis answered a batch of this call
        self.replied = False
        #: batches sent, retries included
        self.attempts = 0

    def __enter__(self) -> Deadline:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        breaker = self.guard.breaker
        if isinstance(error, TelemetryUnavailable):
            breaker.failed(error)
        elif self.replied:
            breaker.answered()
        else:
            breaker.released(self.probe)

    def answered(self) -> None:
        """Redis answered a batch: the call has ``timeout`` seconds again."""
        self.replied = True
        self.ends = self.guard.clock() + self.guard.policy.timeout

    def expired(self) -> bool:
        """True once the call has waited its whole deadline without a reply."""
        return self.guard.clock() >= self.ends

    def allows(self, pause: float) -> bool:
        """True when an attempt after ``pause`` seconds would end before the deadline."""
        return self.guard.clock() + pause + self.guard.policy.attempt_secs < self.ends

    def retry_pause(self, failures: int) -> float | None:
        """The pause before retrying after ``failures`` failed attempts, or None when the
        retries are used up or a retry could not end before the deadline."""
        policy = self.guard.policy
        if failures > policy.retries:
            return None
        pause = policy.backoff.compute(failures)
        return pause if self.allows(pause) else None

    def unavailable(self, error: object, what: str = "Redis is unreachable") -> Exception:
        """The error a call raises when it gives up: ``what``, the last error, and (with a
        deadline) how many attempts over how long."""
        timeout = self.guard.policy.timeout
        spent = ""
        if timeout != math.inf:
            took = self.guard.clock() - self.started
            spent = (
                f" ({self.attempts} attempt{'s' if self.attempts != 1 else ''} in {took:.1f}s; "
                f"deadline {timeout:g}s)"
            )
        return TelemetryUnavailable(f"{what}: {error}{spent}")


#: What a shell drives to send one batch: steps (a node, or None for the one server, and its
#: commands; or a Pause), answered with replies, an exception or None; returns the replies.
Sender = Generator[tuple[Hashable, Any] | Pause, list[Any] | BaseException | None, list[Any]]


def send(batch: Any, deadline: Deadline) -> Sender:
    """Send ``batch`` to one server (the step's node is None) and return its replies, retrying
    what a new connection may cure while the deadline allows.

    The shell answers each step with the replies, or with the exception sending raised; a
    :class:`Pause` with None. Every command the package sends may be sent twice without effect
    (event ids, GT scores, HSETNX), as redis-py's own retries would.
    """
    failures = 0
    while True:
        deadline.attempts += 1
        answer = yield (None, batch)
        if not isinstance(answer, BaseException):
            assert answer is not None
            return answer
        if not transient(answer):
            raise answer
        failures += 1
        pause = deadline.retry_pause(failures)
        if pause is None:
            raise deadline.unavailable(answer) from answer
        yield Pause(pause)


def guard_for(
    timeout: float,
    attempt_secs: float,
    retries: int,
    backoff_base: float,
    backoff_cap: float,
    breaker_secs: float,
) -> Guard:
    """The guard of a store made by ``from_url``."""
    backoff = ExponentialWithJitterBackoff(base=backoff_base, cap=backoff_cap)
    return Guard(Policy(timeout, attempt_secs, retries, backoff), breaker_secs)
