"""Where the logger's outcomes go: a bounded queue that a background worker drains in batches.

LiteLLM's hooks only queue (no Redis round trip on the caller's path). With a
``TelemetryStore`` the worker is a thread; with an ``AsyncTelemetryStore`` it is a task on the
event loop that recorded first (or on a private loop thread when the first call is sync). A
batch is one ``record_batch`` round trip, then one ``mark_subscription_limited`` per limit in it,
in that order, so a provider's ``Retry-After`` wins over the default TTL the recorded error text
may set. Delivery is at most once: a batch Redis refuses is dropped, counted, and logged once per
outage; when the queue is full the oldest outcome is dropped.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from dataclasses import dataclass

from ...aio import AsyncTelemetryStore
from ...store import TelemetryStore
from ._payload import Outcome

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RecorderStats:
    """Counters since the logger started."""

    submitted: int  # calls LiteLLM reported
    written: int  # events stored
    limits: int  # rate limits marked
    dropped: int  # calls lost: Redis unreachable, or the queue full
    pending: int  # queued or being written


class Recorder:
    """The queue, the counters and the outage log; subclasses run the worker."""

    def __init__(self, max_pending: int, batch_size: int) -> None:
        self.max_pending = max(1, max_pending)
        self.batch_size = max(1, batch_size)
        self._queue: deque[Outcome] = deque()
        self._cond = threading.Condition()
        self._in_flight = 0
        self._submitted = self._written = self._limits = self._dropped = 0
        self._down = False

    def submit(self, item: Outcome) -> None:
        """Queue one outcome (any thread); never blocks on Redis."""
        with self._cond:
            if len(self._queue) >= self.max_pending:
                self._queue.popleft()
                self._lose(1, "the queue is full")
            self._queue.append(item)
            self._submitted += 1
            self._cond.notify_all()
        self._wake()

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


def _split(batch: list[Outcome]) -> tuple[list[object], list[tuple[str, int | None]]]:
    events: list[object] = [o.event for o in batch]
    limits = [(o.event.model, o.ttl_secs) for o in batch if o.limited]
    return events, limits


class ThreadRecorder(Recorder):
    """Writes through a blocking ``TelemetryStore`` from a daemon thread."""

    def __init__(self, store: TelemetryStore, max_pending: int, batch_size: int) -> None:
        super().__init__(max_pending, batch_size)
        self.store = store
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
                events, limits = _split(batch)
                self.store.record_batch(events)  # type: ignore[arg-type]
                for model, ttl in limits:
                    self.store.mark_subscription_limited(model, ttl_secs=ttl)
            except Exception as exc:  # never let the worker die
                error = exc
            self._finish(batch, error)


class LoopRecorder(Recorder):
    """Writes through an ``AsyncTelemetryStore`` from a task on its home event loop. The task
    runs while there is work and ends when the queue is empty; the next call starts another."""

    def __init__(self, store: AsyncTelemetryStore, max_pending: int, batch_size: int) -> None:
        super().__init__(max_pending, batch_size)
        self.store = store
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
                events, limits = _split(batch)
                await self.store.record_batch(events)  # type: ignore[arg-type]
                for model, ttl in limits:
                    await self.store.mark_subscription_limited(model, ttl_secs=ttl)
            except Exception as exc:  # never let the worker die
                error = exc
            self._finish(batch, error)

    def flush(self, timeout: float | None = 5.0) -> bool:
        if self._loop is not None and _running_loop() is self._loop:
            raise RuntimeError("on the logger's event loop, use `await logger.aflush()`")
        return super().flush(timeout)

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
