"""A fire-and-forget writer: ``submit`` never blocks on Redis.

Events wait in a bounded in-memory queue that a background thread flushes in batches. While
Redis is unreachable the queue holds them and the thread retries with backoff; when Redis
returns, they are written. The trade-off: an event submitted is not yet stored. If the process
dies, the queue dies with it; and when the queue is full, the OLDEST events are dropped (counted
in ``stats().dropped`` and logged) so that the newest picture survives. Use ``record`` when the
caller must know the event is stored.

Each event gets its id when it is submitted, so a batch whose reply was lost and that is sent
again is never counted twice.

Only errors that can heal are retried: Redis unreachable, busy or loading. A batch that Redis
refuses for good (the namespace's window differs from the store's, or the user lacks a
permission), or that meets an error no one foresaw (any other exception: logged with its
traceback), is not retried: its events are counted in ``stats().rejected``, logged, and handed
to the ``on_error`` callback, and the writer goes on with the next batch.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .core.codec import PreparedEvent
from .errors import InvalidInputError, PermissionDenied, TelemetryError, WindowMismatchError
from .models import CompletionEvent
from .store import TelemetryStore

log = logging.getLogger(__name__)

#: Errors a retry cannot heal: the batch is rejected instead of retried.
PERMANENT: tuple[type[TelemetryError], ...] = (
    WindowMismatchError,
    PermissionDenied,
    InvalidInputError,
)


@dataclass(frozen=True)
class BufferStats:
    """Counters since the writer started."""

    submitted: int
    written: int
    duplicates: int
    outside_window: int
    dropped: int
    pending: int
    failed_flushes: int
    #: events Redis refused for good (see ``PERMANENT``), never retried
    rejected: int = 0


class BufferedWriter:
    """Buffers events in memory and writes them from a background thread.

    ``max_events`` bounds the queue (default 10,000 events, a few MB); ``batch_size`` events
    go per round trip; a partial batch waits at most ``flush_interval`` seconds. Failed flushes
    are retried after ``backoff`` seconds, doubling up to ``max_backoff``, unless the error
    cannot heal: then ``on_error(error, events)`` is called (from the writer's thread) with the
    number of events rejected.
    """

    def __init__(
        self,
        store: TelemetryStore,
        max_events: int = 10_000,
        batch_size: int = 500,
        flush_interval: float = 0.2,
        backoff: float = 0.1,
        max_backoff: float = 5.0,
        on_error: Callable[[TelemetryError, int], None] | None = None,
    ) -> None:
        if max_events < 1 or batch_size < 1:
            raise InvalidInputError("max_events and batch_size must be at least 1")
        self.store = store
        self.max_events = max_events
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.on_error = on_error
        self._queue: deque[PreparedEvent] = deque()
        self._cond = threading.Condition()
        self._in_flight = 0
        self._closed = False
        #: True once the writer's thread has ended (close(), or an error it could not survive)
        self._stopped = False
        self._stop = threading.Event()
        self._submitted = self._written = self._duplicates = self._outside = 0
        self._dropped = self._failed = self._rejected = 0
        self._thread = threading.Thread(target=self._loop, daemon=True, name="telemetry-flush")
        self._thread.start()

    def submit(self, event: CompletionEvent) -> None:
        """Queue one event. Invalid events raise here; Redis is never waited for."""
        self.submit_many([event])

    def submit_many(self, events: Iterable[CompletionEvent]) -> None:
        """Queue several events; if one is invalid, none is queued."""
        prepared = self.store._core.prepare(events, indexed=True)
        with self._cond:
            if self._closed:
                raise TelemetryError("the BufferedWriter is closed")
            for p in prepared:
                if len(self._queue) >= self.max_events:
                    self._queue.popleft()
                    self._dropped += 1
                    if self._dropped == 1 or self._dropped % 1000 == 0:
                        log.warning(
                            "buffer full (%d events): dropped the oldest; %d dropped so far",
                            self.max_events,
                            self._dropped,
                        )
                self._queue.append(p)
            self._submitted += len(prepared)
            self._cond.notify()

    def stats(self) -> BufferStats:
        """The counters, consistent with each other."""
        with self._cond:
            return BufferStats(
                submitted=self._submitted,
                written=self._written,
                duplicates=self._duplicates,
                outside_window=self._outside,
                dropped=self._dropped,
                pending=len(self._queue) + self._in_flight,
                failed_flushes=self._failed,
                rejected=self._rejected,
            )

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything submitted so far is written; False on timeout, or at once if
        the writer's thread has stopped with events left."""
        with self._cond:
            self._cond.notify_all()
            self._cond.wait_for(
                lambda: not (self._queue or self._in_flight) or self._stopped, timeout
            )
            return not (self._queue or self._in_flight)

    def close(self, timeout: float = 5.0) -> bool:
        """Flush for up to ``timeout`` seconds, then stop the thread; True if nothing is left."""
        done = self.flush(timeout)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._stop.set()
        self._thread.join(timeout=max(1.0, timeout))
        return done

    def _take(self) -> list[PreparedEvent]:
        """The next batch (waiting for a full one up to flush_interval), or [] when closed."""
        with self._cond:
            start = time.monotonic()
            while not self._closed:
                waited = time.monotonic() - start
                if len(self._queue) >= self.batch_size or (
                    self._queue and waited >= self.flush_interval
                ):
                    break
                self._cond.wait(self.flush_interval - waited if self._queue else None)
            if self._closed:
                return []
            batch = [self._queue.popleft() for _ in range(min(self.batch_size, len(self._queue)))]
            self._in_flight = len(batch)
            return batch

    def _loop(self) -> None:
        try:
            delay = self.backoff
            while batch := self._take():
                delay = self._flush(batch, delay)
        finally:  # whatever ends the thread, flush() stops waiting for it
            with self._cond:
                self._stopped = True
                self._cond.notify_all()

    def _flush(self, batch: list[PreparedEvent], delay: float) -> float:
        """Write one batch; returns the backoff before the next attempt."""
        try:
            result = self.store._run(self.store._core.record_prepared(batch))
        except PERMANENT as exc:
            self._reject(batch, exc)
            return delay
        except TelemetryError as exc:
            with self._cond:
                self._failed += 1
                self._queue.extendleft(reversed(batch))  # back in front, order kept
                while len(self._queue) > self.max_events:
                    self._queue.popleft()
                    self._dropped += 1
                self._in_flight = 0
            if self._failed == 1 or self._failed % 100 == 0:
                log.warning("telemetry flush failed (%s); retrying in %.1fs", exc, delay)
            self._stop.wait(delay)  # close() cuts the wait short
            return min(self.max_backoff, delay * 2)
        except Exception as exc:  # a bug, or what no one foresaw: not known to heal
            self._reject(batch, exc)
            return delay
        with self._cond:
            self._written += result.stored
            self._duplicates += result.duplicates
            self._outside += result.outside_window
            self._in_flight = 0
            self._cond.notify_all()
        return self.backoff

    def _reject(self, batch: list[PreparedEvent], exc: Exception) -> None:
        """Report, log and count a batch Redis refused for good, or that met an unexpected
        error (logged with its traceback); never retried. The callback and the log line come
        before ``flush()`` can return for this batch."""
        error = exc if isinstance(exc, TelemetryError) else TelemetryError(f"unexpected {exc!r}")
        if error is not exc:
            error.__cause__ = exc
        if self.on_error is not None:
            try:
                self.on_error(error, len(batch))
            except Exception:
                log.exception("the BufferedWriter's on_error callback failed")
        # only this thread changes _rejected: reading it unlocked is safe
        log.log(
            logging.ERROR if self._rejected == 0 else logging.DEBUG,
            "telemetry flush refused, not retried: %s",
            error,
            exc_info=exc if error is not exc else None,
        )
        with self._cond:
            self._rejected += len(batch)
            self._in_flight = 0
            self._cond.notify_all()
