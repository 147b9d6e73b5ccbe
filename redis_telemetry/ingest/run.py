"""Record what a parser reads: batching, the closing report, retrying through Redis outages.

Lines become items (see :mod:`.events`); events are written in batches of at most ``BATCH``
events or ``MAX_DELAY`` seconds, whichever comes first, then the batch's limits are applied.
While Redis is unreachable the batch is held and retried with backoff; the reader goes on
filling its bounded queue (``QUEUE_LINES``) and then waits, so memory stays bounded. After
``retry_for`` seconds without Redis, :class:`IngestAborted` names the line to resume from.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, TypeVar

from ..errors import InvalidInputError, TelemetryUnavailable
from ..store import TelemetryStore
from .events import Completion, Item, Limit, Parser, Unmeasured, UnparseableLine, now_utc
from .formats import make_parser

BATCH = 500
MAX_DELAY = 0.25
QUEUE_LINES = 10_000
DEFAULT_RETRY_FOR = 60.0
BACKOFF_FIRST, BACKOFF_MAX = 0.05, 2.0
T = TypeVar("T")


class IngestReport:
    """What an ingest did, for the closing report."""

    def __init__(self) -> None:
        self.recorded = self.duplicates = self.outside = self.ignored = 0
        self.unmeasured = self.limits = 0
        self.unparseable: list[tuple[int, str]] = []

    def line(self) -> str:
        text = (
            f"recorded {self.recorded} events ({self.duplicates} already present, "
            f"{self.outside} outside the window); ignored {self.ignored} lines; "
            f"unparseable {len(self.unparseable)} lines"
        )
        if self.unparseable:
            shown = ", ".join(f"{n} ({why})" for n, why in self.unparseable[:10])
            more = len(self.unparseable) - 10
            text += f": {shown}" + (f" and {more} more" if more > 0 else "")
        if self.unmeasured:
            text += f"; {self.unmeasured} calls of unknown latency not recorded"
        if self.limits:
            text += f"; {self.limits} limits applied"
        return text


class IngestAborted(TelemetryUnavailable):
    """Redis stayed unreachable for ``retry_for`` seconds: lines from ``resume_line`` on
    (``not_stored`` of them) were read but not stored."""

    def __init__(self, report: IngestReport, resume_line: int, not_stored: int, cause: str):
        super().__init__(
            f"Redis stayed unreachable ({cause}); {not_stored} lines were not stored; "
            f"resume from line {resume_line} (or re-run the whole input: stored events are "
            "not counted twice)"
        )
        self.report = report
        self.resume_line = resume_line
        self.not_stored = not_stored


class RetryExhausted(TelemetryUnavailable):
    """Redis stayed unreachable for the whole retry time."""

    def __init__(self, cause: str, retry_for: float) -> None:
        super().__init__(f"Redis stayed unreachable for {retry_for:g}s ({cause})")
        self.cause = cause


def with_retry(
    fn: Callable[[], T],
    retry_for: float,
    notify: Callable[[str], None],
    sleep: Callable[[float], None] = time.sleep,
    monotonic: Callable[[], float] = time.monotonic,
) -> T:
    """``fn()``, called again with backoff while Redis is unreachable, for up to
    ``retry_for`` seconds; one notice when an outage begins, one when it ends."""
    outage: float | None = None
    delay = BACKOFF_FIRST
    while True:
        try:
            result = fn()
        except TelemetryUnavailable as exc:
            cause = str(exc.__cause__ or exc).split("\n")[0]
            now = monotonic()
            if outage is None:
                outage = now
                notify(
                    f"Redis is unreachable ({cause}); holding the lines read so far and "
                    f"retrying for up to {retry_for:g}s"
                )
            if now - outage >= retry_for:
                raise RetryExhausted(cause, retry_for) from exc
            sleep(min(delay, max(0.0, outage + retry_for - now)))
            delay = min(delay * 2, BACKOFF_MAX)
            continue
        if outage is not None:
            notify("Redis is reachable again; the held lines are being stored")
        return result


def apply_limit(
    store: TelemetryStore, limit: Limit, now: datetime, kept: datetime | None = None
) -> bool:
    """Block ``limit.model`` until ``limit.until`` (None: the store's default TTL from now).
    A reset time already past blocks nothing, and a block that ends at ``kept`` or later (one
    in place before) is not shortened; the store never shortens one either. The one place
    ingest blocks a model."""
    until = limit.until or now + timedelta(seconds=store.subscription_limit_ttl_secs)
    if until <= now or (kept is not None and kept >= until):
        return False
    store.mark_subscription_limited(limit.model, until=until)
    return True


#: a line with its number and, when read from a live stream, the time it arrived
Line = tuple[int, str, datetime | None]


def read_lines(stream: IO[str]) -> Iterator[Line | None]:
    """Lines with their numbers and arrival times; ``None`` whenever nothing came for a while.
    A reader thread fills a bounded queue, so a stalled writer stalls the reading."""
    lines: queue.Queue[Line | None] = queue.Queue(maxsize=QUEUE_LINES)

    def pump() -> None:
        for n, line in enumerate(stream, 1):
            lines.put((n, line, now_utc()))
        lines.put(None)

    threading.Thread(target=pump, daemon=True, name="ingest-reader").start()
    while True:
        try:
            item = lines.get(timeout=MAX_DELAY)
        except queue.Empty:
            yield None
            continue
        if item is None:
            return
        yield item


class _Run:
    """One ingest: the pending batch, its retries and the report."""

    def __init__(
        self,
        store: TelemetryStore,
        retry_for: float,
        notify: Callable[[str], None],
        clock: Callable[[], datetime],
        sleep: Callable[[float], None],
        monotonic: Callable[[], float],
    ) -> None:
        self.store, self.retry_for, self.notify = store, retry_for, notify
        self.clock, self.sleep, self.monotonic = clock, sleep, monotonic
        self.report = IngestReport()
        self.events: list[tuple[int, Completion]] = []
        self.limits: list[tuple[int, Limit]] = []
        self.events_written = False
        self.kept: dict[str, datetime | None] = {}
        self.last_line = 0
        #: model -> event ids stored, for events stamped with the ingest clock (their stored
        #: form differs between runs, so only the id tells a re-run apart)
        self.known: dict[str, set[str]] = {}

    def add(self, lineno: int, items: list[Item]) -> None:
        for item in items:
            if isinstance(item, Completion):
                self.events.append((lineno, item))
            elif isinstance(item, Limit):
                self.limits.append((lineno, item))
            elif isinstance(item, Unmeasured):
                self.report.unmeasured += 1

    def flush(self) -> None:
        """Write the pending batch, retrying while Redis is unreachable."""
        if not self.events and not self.limits:
            return
        try:
            with_retry(self._write, self.retry_for, self.notify, self.sleep, self.monotonic)
        except RetryExhausted as exc:
            first = min(n for n, _ in [*self.events, *self.limits])
            raise IngestAborted(self.report, first, self.last_line - first + 1, exc.cause) from exc
        self.events.clear()
        self.events_written = False

    def _write(self) -> None:
        if not self.events_written:
            models = {lim.model for _, lim in self.limits}
            # the blocks in place before this batch (its own events may add one more)
            self.kept = {
                m: self.store.model_performance(m).subscription_limit_expires_at for m in models
            }
            fresh = self._unseen()
            write_batch(self.store, fresh, self.report)
            for _, c in fresh:
                if c.clock_time and c.event.event_id and c.event.model in self.known:
                    self.known[c.event.model].add(c.event.event_id)
            self.events_written = True
        now = self.clock()
        while self.limits:
            limit = self.limits[0][1]
            if apply_limit(self.store, limit, now, self.kept.get(limit.model)):
                self.report.limits += 1
            self.limits.pop(0)

    def _unseen(self) -> list[tuple[int, Completion]]:
        """The batch less the clock-stamped events a previous run already stored."""
        fresh: list[tuple[int, Completion]] = []
        seen: set[tuple[str, str]] = set()
        for lineno, c in self.events:
            e = c.event
            if c.clock_time and e.event_id:
                if e.model not in self.known:
                    self.known[e.model] = {
                        x.event_id for x in self.store.events(e.model) if x.event_id
                    }
                if e.event_id in self.known[e.model] or (e.model, e.event_id) in seen:
                    self.report.duplicates += 1
                    continue
                seen.add((e.model, e.event_id))
            fresh.append((lineno, c))
        return fresh


def write_batch(
    store: TelemetryStore, pending: list[tuple[int, Completion]], report: IngestReport
) -> None:
    """One round trip; if the store refuses an event, write the rest one by one."""
    if not pending:
        return
    try:
        results = [store.record_batch([c.event for _, c in pending])]
    except InvalidInputError:
        results = []
        for lineno, c in pending:
            try:
                results.append(store.record(c.event))
            except InvalidInputError as exc:
                report.unparseable.append((lineno, str(exc)))
    for r in results:
        report.recorded += r.stored
        report.duplicates += r.duplicates
        report.outside += r.outside_window


def run_ingest(
    store: TelemetryStore,
    parser: Parser,
    items: Iterable[Line | None],
    *,
    retry_for: float = DEFAULT_RETRY_FOR,
    on_line: Callable[[str], None] = lambda line: None,
    notify: Callable[[str], None] = lambda text: None,
    clock: Callable[[], datetime] = now_utc,
    sleep: Callable[[float], None] = time.sleep,
    monotonic: Callable[[], float] = time.monotonic,
) -> IngestReport:
    """Parse numbered lines (``None``: a pause in a live stream) and record what they hold.
    A bad line never stops the run; an outage longer than ``retry_for`` seconds raises
    :class:`IngestAborted`."""
    run = _Run(store, retry_for, notify, clock, sleep, monotonic)
    since = monotonic()
    for item in items:
        if item is not None:
            lineno, line, arrived = item
            run.last_line = lineno
            on_line(line)
            try:
                got = parser.feed(line, arrived)
            except UnparseableLine as exc:
                run.report.unparseable.append((lineno, str(exc)))
            else:
                if not got and line.strip():
                    run.report.ignored += 1
                run.add(lineno, got)
        if len(run.events) >= BATCH or monotonic() - since >= MAX_DELAY:
            run.flush()
            since = monotonic()
    run.add(run.last_line, parser.finish())
    run.flush()
    return run.report


def ingest_lines(
    store: TelemetryStore,
    fmt: str,
    lines: Iterable[str],
    *,
    model: str | None = None,
    session: str | None = None,
    retry_for: float = DEFAULT_RETRY_FOR,
) -> IngestReport:
    """Record a stream of ``fmt`` lines (a list, a file, a generator) into ``store``."""
    parser = make_parser(fmt, model, session)
    numbered = ((n, line, None) for n, line in enumerate(lines, 1))
    return run_ingest(store, parser, numbered, retry_for=retry_for)


def ingest_file(
    store: TelemetryStore,
    fmt: str,
    path: str | Path,
    *,
    model: str | None = None,
    session: str | None = None,
    retry_for: float = DEFAULT_RETRY_FOR,
) -> IngestReport:
    """Record a log file of ``fmt`` lines into ``store``."""
    with Path(path).open(encoding="utf-8", errors="replace") as stream:
        return ingest_lines(store, fmt, stream, model=model, session=session, retry_for=retry_for)
