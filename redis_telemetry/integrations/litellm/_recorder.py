"""Where the logger's outcomes go: a bounded queue that a background worker drains in batches.

LiteLLM's hooks only queue (no Redis round trip on the caller's path). With a
``TelemetryStore`` the worker is a thread; with an ``AsyncTelemetryStore`` it is a task on the
event loop that recorded first (or on a private loop thread when the first call is sync). A
batch is one ``record_batch`` round trip: a rate-limited call blocks its deployment through its
own event (its error text states the end); then ``provider_feedback`` tells the providers
(a 429 backs its provider off, a success ends the backoff, an account's quota blocks it).
Delivery is at most once: a batch Redis refuses is dropped, counted, and logged once per
outage; when the queue is full the oldest outcome is dropped. At interpreter exit the queue
is flushed, for at most ``exit_timeout`` seconds.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import threading
import weakref
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ...aio import AsyncTelemetryStore
from ...store import TelemetryStore
from ._payload import Outcome

log = logging.getLogger(__name__)
S = TypeVar("S")


@dataclass(frozen=True)
class RecorderStats:
    """Counters since the logger started."""

    submitted: int  # calls LiteLLM reported
    written: int  # events stored
    limits: int  # rate limits marked
    dropped: int  # calls lost: Redis unreachable, or the queue full
    pending: int  # queued or being written


class Recorder(Generic[S]):
    """The queue, the counters and the outage log; subclasses run the worker on ``store``."""

    def __init__(
        self, store: S, max_pending: int, batch_size: int, exit_timeout: float | None = 5.0
    ) -> None:
        self.store = store
        self.max_pending = max(1, max_pending)
        self.batch_size = max(1, batch_size)
        self.exit_timeout = exit_timeout
        self._queue: deque[Outcome] = deque()
        self._cond = threading.Condition()
        self._in_flight = 0
        self._submitted = self._written = self._limits = self._dropped = 0
        self._down = False
        #: the interpreter is exiting: a call handed over now is written before submit returns
        self._exiting = False
        self._start()
        if exit_timeout is not None:
            _flush_at_exit(self)

    def _start(self) -> None:
        """Get the worker ready (a subclass's)."""

    def submit(self, item: Outcome) -> None:
        """Queue one outcome (any thread); never blocks on Redis, except at interpreter exit
        (LiteLLM's own exit hook may still hand calls over), for ``exit_timeout`` at most."""
        with self._cond:
            if len(self._queue) >= self.max_pending:
                self._queue.popleft()
                self._lose(1, "the queue is full")
            self._queue.append(item)
            self._submitted += 1
            self._cond.notify_all()
        self._wake()
        if self._exiting:
            self.flush(self.exit_timeout)

    def at_exit(self) -> None:
        """At interpreter exit: write what is pending, for ``exit_timeout`` seconds at most;
        say how many calls are lost when that is not enough."""
        self._exiting = True
        if self.can_flush_at_exit() and self.flush(self.exit_timeout):
            return
        if pending := self.stats().pending:
            log.warning(
                "redis-telemetry: %d LiteLLM calls were not recorded at exit (%s)",
                pending,
                self.why_not_at_exit(),
            )

    def can_flush_at_exit(self) -> bool:
        """Whether the worker can still run at interpreter exit."""
        return True

    def why_not_at_exit(self) -> str:
        return f"Redis did not take them within {self.exit_timeout:g}s"

    def _wake(self) -> None:
        """Tell the worker there is work."""

    def _lose(self, count: int, why: str) -> None:
        self._dropped += count
        if not self._down:
            self._down = True
            log.warning(
                "redis-telemetry cannot record LiteLLM calls (%s); dropping them until it can",
                why,
            )

    def _take(self) -> list[Outcome]:
        with self._cond:
            batch = [self._queue.popleft() for _ in range(min(self.batch_size, len(self._queue)))]
            self._in_flight = len(batch)
            return batch

    def _finish(self, batch: list[Outcome], error: BaseException | None) -> None:
        with self._cond:
            self._in_flight = 0
            if error is None:
                self._written += len(batch)
                self._limits += sum(1 for o in batch if o.limited)
                if self._down:
                    self._down = False
                    log.warning(
                        "redis-telemetry records LiteLLM calls again (%d dropped so far)",
                        self._dropped,
                    )
            else:
                self._lose(len(batch), f"{type(error).__name__}: {error}")
            self._cond.notify_all()

    def stats(self) -> RecorderStats:
        """The counters, consistent with each other."""
        with self._cond:
            return RecorderStats(
                submitted=self._submitted,
                written=self._written,
                limits=self._limits,
                dropped=self._dropped,
                pending=len(self._queue) + self._in_flight,
            )

    def flush(self, timeout: float | None = 5.0) -> bool:
        """Wait (from any thread but the worker's loop) until nothing is pending."""
        with self._cond:
            return self._cond.wait_for(lambda: not (self._queue or self._in_flight), timeout)

    async def aflush(self, timeout: float | None = 5.0) -> bool:
        """``flush`` for async code: waits without blocking the running loop."""
        return await asyncio.to_thread(self.flush, timeout)


def _flush_at_exit(recorder: Recorder[Any]) -> None:
    """Run ``recorder.at_exit()`` when the interpreter exits (after the threads that ran
    LiteLLM's sync hooks are joined); the recorder is not kept alive for it."""
    ref = weakref.ref(recorder)

    def run() -> None:
        if (alive := ref()) is not None:
            alive.at_exit()

    atexit.register(run)
    # unregistered once the recorder is gone; not at exit itself, when it must run
    weakref.finalize(recorder, atexit.unregister, run).atexit = False


class ThreadRecorder(Recorder[TelemetryStore]):
    """Writes through a blocking ``TelemetryStore`` from a daemon thread."""

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True, name="telemetry-litellm")
        self._thread.start()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue:
                    self._cond.wait()
            batch = self._take()
            error: BaseException | None = None
            try:
                events = [o.event for o in batch]
                self.store.record_batch(events)
                self.store.provider_feedback(events)  # 429 backoff, blocks, successes
            except Exception as exc:  # never let the worker die
                error = exc
            self._finish(batch, error)


class LoopRecorder(Recorder[AsyncTelemetryStore]):
    """Writes through an ``AsyncTelemetryStore`` from a task on its home event loop. The task
    runs while there is work and ends when the queue is empty; the next call starts another."""

    def _start(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._bind_lock = threading.Lock()
        self._task: asyncio.Task[None] | None = None

    def _home(self) -> asyncio.AbstractEventLoop:
        """The loop the worker runs on: the first running loop seen, or a private one."""
        with self._bind_lock:
            if self._loop is not None and not self._loop.is_closed():
                return self._loop
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = asyncio.new_event_loop()
                threading.Thread(
                    target=loop.run_forever, daemon=True, name="telemetry-litellm-loop"
                ).start()
            self._loop = loop
            self._task = None
            return loop

    def _wake(self) -> None:
        loop = self._home()
        if _running_loop() is loop:
            self._poke()
        else:
            loop.call_soon_threadsafe(self._poke)

    def _poke(self) -> asyncio.Task[None]:
        """On the home loop: the worker task, started when none is running."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())
        return self._task

    async def _run(self) -> None:
        while batch := self._take():
            error: BaseException | None = None
            try:
                events = [o.event for o in batch]
                await self.store.record_batch(events)
                await self.store.provider_feedback(events)  # 429 backoff, blocks, successes
            except Exception as exc:  # never let the worker die
                error = exc
            self._finish(batch, error)

    def flush(self, timeout: float | None = 5.0) -> bool:
        if self._loop is not None and _running_loop() is self._loop:
            raise RuntimeError("on the logger's event loop, use `await logger.aflush()`")
        return super().flush(timeout)

    def can_flush_at_exit(self) -> bool:
        """Only a private loop thread still runs at exit; an app's loop has ended by then."""
        loop = self._loop
        return loop is not None and loop.is_running() and _running_loop() is not loop

    def why_not_at_exit(self) -> str:
        if not self.can_flush_at_exit():
            return "the event loop ended first: `await logger.aflush()` before it does"
        return super().why_not_at_exit()

    async def aflush(self, timeout: float | None = 5.0) -> bool:
        if _running_loop() is not self._loop:
            return await super().aflush(timeout)
        try:
            async with asyncio.timeout(timeout):
                while self.stats().pending:
                    await asyncio.shield(self._poke())
        except TimeoutError:
            return False
        return True


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class Announced:
    """The calls LiteLLM announced (its pre-call hook) and did not report yet (its success or
    failure hook, which LiteLLM runs in the background after the call returns): what a flush
    waits for before the queue. Bounded: past ``limit`` the oldest is forgotten."""

    def __init__(self, limit: int) -> None:
        self.limit = max(1, limit)
        self._calls: OrderedDict[str, None] = OrderedDict()
        self._cond = threading.Condition()

    def started(self, call_id: object) -> None:
        if not isinstance(call_id, str):
            return
        with self._cond:
            self._calls[call_id] = None
            while len(self._calls) > self.limit:
                self._calls.popitem(last=False)

    def ended(self, call_id: object) -> None:
        if not isinstance(call_id, str):
            return
        with self._cond:
            if call_id in self._calls:
                del self._calls[call_id]
                self._cond.notify_all()

    def pending(self) -> int:
        with self._cond:
            return len(self._calls)

    def wait(self, timeout: float | None) -> bool:
        """Wait until every announced call is reported; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._calls, timeout)
