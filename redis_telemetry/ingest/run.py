"""Record what a parser reads: batching, the closing report, retrying through Redis outages.

Lines become items (see :mod:`.events`); events are written in batches of at most ``BATCH``
events or ``MAX_DELAY`` seconds, whichever comes first, then the batch's limits are applied.
While Redis is unreachable the batch is held and retried with backoff; the reader goes on
filling its bounded queue (``QUEUE_LINES``) and then waits, so memory stays bounded. After
``retry_for`` seconds without Redis, :class:`IngestAborted` names the line to resume from.

What a batch asks of the store is written once, as steps (:class:`Call` generators) that name
the store methods they need; :func:`drive` runs them on a :class:`TelemetryStore`,
:func:`adrive` on an :class:`~redis_telemetry.aio.AsyncTelemetryStore`, so
:func:`run_ingest` and :func:`arun_ingest` share every decision and differ only in awaiting.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Generator,
    Iterable,
    Iterator,
    Mapping,
)
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Generic, TypeVar, cast

from ..errors import InvalidInputError, TelemetryUnavailable
from ..store import TelemetryStore
from .events import Completion, Item, Limit, Parser, Read, now_utc
from .formats import make_parser, nothing_found_hint

BATCH = 500
MAX_DELAY = 0.25
QUEUE_LINES = 10_000
DEFAULT_RETRY_FOR = 60.0
BACKOFF_FIRST, BACKOFF_MAX = 0.05, 2.0
T = TypeVar("T")

if TYPE_CHECKING:
    from ..aio import AsyncTelemetryStore


@dataclass(frozen=True)
class Call:
    """One store method a step needs, by name: a driver calls it (or awaits it) and sends the
    answer back, or throws its exception in."""

    method: str
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)


#: steps that ask the store for what they need and return ``T``
Steps = Generator[Call, Any, T]


class _Stepper(Generic[T]):
    """Advances steps: sends each answer (or throws each error) in, until they return."""

    def __init__(self, steps: Steps[T]) -> None:
        self.steps = steps
        self.answer: Any = None
        self.error: Exception | None = None
        self.result: T | None = None

    def next(self) -> Call | None:
        """The next call the steps need; None once they returned (``result``)."""
        error, self.error = self.error, None
        try:
            call = self.steps.send(self.answer) if error is None else self.steps.throw(error)
        except StopIteration as stop:
            self.result = stop.value
            return None
        self.answer = None
        return call


def drive(steps: Steps[T], store: TelemetryStore) -> T:
    """Run ``steps`` on a sync store."""
    step = _Stepper(steps)
    while (call := step.next()) is not None:
        try:
            step.answer = getattr(store, call.method)(*call.args, **call.kwargs)
        except Exception as exc:
            step.error = exc
    return cast(T, step.result)


async def adrive(steps: Steps[T], store: AsyncTelemetryStore) -> T:
    """Run ``steps`` on an asyncio store."""
    step = _Stepper(steps)
    while (call := step.next()) is not None:
        try:
            step.answer = await getattr(store, call.method)(*call.args, **call.kwargs)
        except Exception as exc:
            step.error = exc
    return cast(T, step.result)


#: How many bad lines the report names one by one.
SHOWN_BAD_LINES = 10
#: How many lines that gave nothing are kept to tell what the input looks like.
SAMPLE_LINES = 50


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """``n`` with its noun in agreement: "1 event", "2 events"."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


class IngestReport:
    """What an ingest did, for the closing report: :meth:`lines` (one fact a line), and the
    command's :attr:`exit_code` and :attr:`hint` when the input held nothing to record."""

    def __init__(self, fmt: str = "") -> None:
        self.format = fmt
        self.recorded = self.duplicates = self.outside = self.ignored = 0
        self.unmeasured = self.limits = 0
        #: completions the format leaves to another source (``claude-limits``: OTLP's)
        self.elsewhere = 0
        self.unparseable: list[tuple[int, str]] = []
        #: limits the input named (applied or not: one already past blocks nothing)
        self.limits_found = 0
        #: the first lines that gave nothing (ignored or unparseable), to tell what they are
        self.samples: list[str] = []

    def lines(self) -> list[str]:
        """The closing report, one fact a line (none of them wrapped, so each is one line)."""
        out = [f"{counted(self.recorded, 'event')} recorded"]
        if self.elsewhere:
            out.append(f"{counted(self.elsewhere, 'run')} left to OTLP (--format {self.format})")
        if self.duplicates:
            out.append(f"{counted(self.duplicates, 'event')} already present")
        if self.outside:
            out.append(f"{counted(self.outside, 'event')} outside the window")
        if self.unmeasured:
            out.append(f"{counted(self.unmeasured, 'call')} without a measured latency")
        if self.limits:
            out.append(f"{counted(self.limits, 'limit')} applied")
        if self.ignored:
            out.append(f"{counted(self.ignored, 'line')} ignored")
        if self.unparseable:
            out.append(f"{counted(len(self.unparseable), 'line')} unparseable")
            out += [f"line {n}: {why}" for n, why in self.unparseable[:SHOWN_BAD_LINES]]
            if (more := len(self.unparseable) - SHOWN_BAD_LINES) > 0:
                out.append(f"and {counted(more, 'more unparseable line')}")
        return out

    def line(self) -> str:
        """:meth:`lines` as one text, a fact a line."""
        return "\n".join(self.lines())

    @property
    def nothing_recorded(self) -> bool:
        """The input held nothing this format records (no event, stored or not, and no limit)
        while some of its lines were ignored or unparseable: most likely the wrong format, or
        not an agent's output at all."""
        found = self.recorded + self.duplicates + self.outside + self.limits_found
        return found + self.elsewhere == 0 and bool(self.ignored or self.unparseable)

    @property
    def exit_code(self) -> int:
        """The command's exit code: 1 when :attr:`nothing_recorded`, else 0."""
        return 1 if self.nothing_recorded else 0

    @property
    def hint(self) -> str | None:
        """When :attr:`nothing_recorded`, one line on what the lines look like (another format,
        say, with the option to pass); else None."""
        return nothing_found_hint(self.format, self.samples) if self.nothing_recorded else None


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


class Outage:
    """The retry policy while Redis is unreachable: backoff, the time limit, the notices."""

    def __init__(
        self, retry_for: float, notify: Callable[[str], None], monotonic: Callable[[], float]
    ) -> None:
        self.retry_for, self.notify, self.monotonic = retry_for, notify, monotonic
        self.began: float | None = None
        self.delay = BACKOFF_FIRST

    def failed(self, exc: TelemetryUnavailable) -> float:
        """How long to wait before the next attempt; raises :class:`RetryExhausted` when
        ``retry_for`` is spent. One notice when an outage begins."""
        cause = str(exc.__cause__ or exc).split("\n")[0]
        now = self.monotonic()
        if self.began is None:
            self.began = now
            self.notify(
                f"Redis is unreachable ({cause}); holding the lines read so far and "
                f"retrying for up to {self.retry_for:g}s"
            )
        if now - self.began >= self.retry_for:
            raise RetryExhausted(cause, self.retry_for) from exc
        wait = min(self.delay, max(0.0, self.began + self.retry_for - now))
        self.delay = min(self.delay * 2, BACKOFF_MAX)
        return wait

    def over(self) -> None:
        """An attempt worked: one notice if an outage ends."""
        if self.began is not None:
            self.notify("Redis is reachable again; the held lines are being stored")


def with_retry(
    fn: Callable[[], T],
    retry_for: float,
    notify: Callable[[str], None],
    sleep: Callable[[float], None] = time.sleep,
    monotonic: Callable[[], float] = time.monotonic,
) -> T:
    """``fn()``, called again with backoff while Redis is unreachable, for up to
    ``retry_for`` seconds; one notice when an outage begins, one when it ends."""
    outage = Outage(retry_for, notify, monotonic)
    while True:
        try:
            result = fn()
        except TelemetryUnavailable as exc:
            sleep(outage.failed(exc))
            continue
        outage.over()
        return result


async def awith_retry(
    fn: Callable[[], Awaitable[T]],
    retry_for: float,
    notify: Callable[[str], None],
    monotonic: Callable[[], float] = time.monotonic,
) -> T:
    """:func:`with_retry` for a coroutine function: the same policy, sleeping with asyncio."""
    outage = Outage(retry_for, notify, monotonic)
    while True:
        try:
            result = await fn()
        except TelemetryUnavailable as exc:
            await asyncio.sleep(outage.failed(exc))
            continue
        outage.over()
        return result


def apply_limit(
    store: TelemetryStore, limit: Limit, now: datetime, kept: datetime | None = None
) -> bool:
    """Block ``limit.model`` until ``limit.until`` (None: the store's default TTL from
    ``limit.since``, else from now). A reset time already past blocks nothing, and a block that
    ends at ``kept`` or later (one in place before) is not shortened; the store never shortens
    one either."""
    return drive(limit_steps(limit, now, kept, store.subscription_limit_ttl_secs), store)


def limit_steps(limit: Limit, now: datetime, kept: datetime | None, ttl_secs: int) -> Steps[bool]:
    """The one place ingest blocks a model (see :func:`apply_limit`)."""
    until = limit.until or (limit.since or now) + timedelta(seconds=ttl_secs)
    if until <= now or (kept is not None and kept >= until):
        return False
    yield Call("mark_subscription_limited", (limit.model,), {"until": until})
    # a limit that names the account blocks the whole provider (core.providers.account_wide)
    yield Call("block_provider_of", (limit.model, limit.reason or "limit"), {"until": limit.until})
    return True


#: a line with its number and, when read from a live stream, the time it arrived
Line = tuple[int, str, datetime | None]


class InputUnreadable(InvalidInputError):
    """Reading the input failed (an I/O error): the lines before it were read."""


@dataclass(frozen=True)
class _End:
    """The reader's last word: the input ended, or reading it failed with ``error``."""

    lines: int
    error: BaseException | None = None


def decoded(stream: IO[str] | IO[bytes]) -> Iterator[str]:
    """The lines of a text or a binary stream, read as bytes and decoded as UTF-8 with
    replacement (U+FFFD), so that no byte sequence stops the reading: a line with invalid
    UTF-8 is a line like any other (one that names no event is reported, not fatal). A text
    stream over bytes (``sys.stdin``, a file opened in text mode) is read through its bytes."""
    source: Any = getattr(stream, "buffer", None) or stream
    for raw in source:
        yield raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw


def read_lines(stream: IO[str] | IO[bytes], stamped: bool = True) -> Iterator[Line | None]:
    """Lines with their numbers and arrival times (``stamped``: a stream followed live; a file
    read at once gets none, as no time between its lines is a call's); ``None`` whenever
    nothing came for a while. A reader thread fills a bounded queue, so a stalled writer stalls
    the reading. The reader always says when it stops, so this always ends: at the end of the
    input, or with :class:`InputUnreadable` when reading failed."""
    lines: queue.Queue[Line | _End] = queue.Queue(maxsize=QUEUE_LINES)

    def pump() -> None:
        n = 0
        try:
            for n, line in enumerate(decoded(stream), 1):  # n: the lines read
                lines.put((n, line, now_utc() if stamped else None))
        except BaseException as exc:  # the end marker must go out, whatever happened
            lines.put(_End(n, exc))
        else:
            lines.put(_End(n))

    threading.Thread(target=pump, daemon=True, name="ingest-reader").start()
    while True:
        try:
            item = lines.get(timeout=MAX_DELAY)
        except queue.Empty:
            yield None
            continue
        if isinstance(item, _End):
            if item.error is not None:
                raise InputUnreadable(
                    f"cannot read the input after line {item.lines}: {item.error}"
                ) from item.error
            return
        yield item


class _Run:
    """One ingest: the pending batch, what writing it asks of the store, the report. I/O-free:
    :meth:`flush` and :meth:`aflush` run its steps on a sync or an asyncio store."""

    def __init__(
        self,
        parser: Parser,
        ttl_secs: int,
        retry_for: float,
        notify: Callable[[str], None],
        clock: Callable[[], datetime],
        monotonic: Callable[[], float],
    ) -> None:
        self.parser, self.ttl_secs, self.retry_for = parser, ttl_secs, retry_for
        self.notify, self.clock, self.monotonic = notify, clock, monotonic
        self.since = monotonic()
        self.report = IngestReport(parser.name)
        self.events: list[tuple[int, Completion]] = []
        self.limits: list[tuple[int, Limit]] = []
        self.events_written = False
        self.kept: dict[str, datetime | None] = {}
        self.last_line = 0

    def take(self, lineno: int, line: str, arrived: datetime | None) -> None:
        """Parse one line into the batch; a bad line is reported, never fatal."""
        self.last_line = lineno
        self._tally(self.parser.read(lineno, line, arrived))

    def _tally(self, reads: list[Read]) -> None:
        self.report.elsewhere = self.parser.elsewhere
        for r in reads:
            if r.error is not None:
                self.report.unparseable.append((r.lineno, r.error))
                self._sample(r.text)
            elif not r.items and r.text.strip():
                self.report.ignored += 1
                self._sample(r.text)
            self.add(r.lineno, r.items)

    def _sample(self, line: str) -> None:
        if len(self.report.samples) < SAMPLE_LINES:
            self.report.samples.append(line[:4096])

    def end(self) -> None:
        """The input ended: take what the parser still holds."""
        self._tally(self.parser.read_end())
        self.add(self.last_line, self.parser.finish())

    def due(self) -> bool:
        """The batch is full, or waited ``MAX_DELAY``: time to write it."""
        return len(self.events) >= BATCH or self.monotonic() - self.since >= MAX_DELAY

    def add(self, lineno: int, items: list[Item]) -> None:
        for item in items:
            if isinstance(item, Completion):
                self.events.append((lineno, item))
                if item.event.latency_ms is None:
                    self.report.unmeasured += 1
            else:
                self.limits.append((lineno, item))
                self.report.limits_found += 1

    def flush(self, store: TelemetryStore, sleep: Callable[[float], None] = time.sleep) -> None:
        """Write the pending batch, retrying while Redis is unreachable."""
        if self.events or self.limits:
            write = lambda: drive(self._write(), store)  # noqa: E731
            try:
                with_retry(write, self.retry_for, self.notify, sleep, self.monotonic)
            except RetryExhausted as exc:
                raise self._aborted(exc) from exc
        self._written()

    async def aflush(self, store: AsyncTelemetryStore) -> None:
        """:meth:`flush` on an asyncio store."""
        if self.events or self.limits:
            write = lambda: adrive(self._write(), store)  # noqa: E731
            try:
                await awith_retry(write, self.retry_for, self.notify, self.monotonic)
            except RetryExhausted as exc:
                raise self._aborted(exc) from exc
        self._written()

    def _aborted(self, exc: RetryExhausted) -> IngestAborted:
        first = min(n for n, _ in [*self.events, *self.limits])
        return IngestAborted(self.report, first, self.last_line - first + 1, exc.cause)

    def _written(self) -> None:
        self.events.clear()
        self.events_written = False
        self.since = self.monotonic()

    def _write(self) -> Steps[None]:
        if not self.events_written:
            # the blocks in place before this batch (its own events may add one more)
            self.kept = {}
            for m in {lim.model for _, lim in self.limits}:
                perf = yield Call("model_performance", (m,))
                self.kept[m] = perf.subscription_limit_expires_at
            # a re-run's events carry the ids of the first run: the store counts them as
            # duplicates, whatever their clock-stamped times, without reading the window
            yield from write_batch(self.events, self.report)
            self.events_written = True
        now = self.clock()
        while self.limits:
            limit = self.limits[0][1]
            if (yield from limit_steps(limit, now, self.kept.get(limit.model), self.ttl_secs)):
                self.report.limits += 1
            self.limits.pop(0)


def write_batch(pending: list[tuple[int, Completion]], report: IngestReport) -> Steps[None]:
    """One round trip; if the store refuses an event, write the rest one by one. The
    providers hear only of the events this write newly stored: a re-run over the same lines
    (their ids already stored) must not end a backoff that began after them."""
    if not pending:
        return
    events = [c.event for _, c in pending]
    try:
        result = yield Call("record_batch", (events,))
        results, new = [result], [events[i] for i in result.stored_positions]
    except InvalidInputError:
        results, new = [], []
        for lineno, c in pending:
            try:
                one = yield Call("record", (c.event,))
            except InvalidInputError as exc:
                report.unparseable.append((lineno, str(exc)))
                continue
            results.append(one)
            if one.stored:
                new.append(c.event)
    # successes end their providers' backoff (limits block with the Limit items)
    if any(e.success for e in new):
        yield Call("provider_feedback", ([e for e in new if e.success],))
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
    run = _Run(parser, store.subscription_limit_ttl_secs, retry_for, notify, clock, monotonic)
    try:
        for item in items:
            if item is not None:
                on_line(item[1])
                run.take(*item)
            if run.due():
                run.flush(store, sleep)
    except InputUnreadable:
        run.flush(store, sleep)  # what was read before the failure is stored
        raise
    run.end()
    run.flush(store, sleep)
    return run.report


async def arun_ingest(
    store: AsyncTelemetryStore,
    parser: Parser,
    lines: AsyncIterable[str] | Iterable[str],
    *,
    retry_for: float = DEFAULT_RETRY_FOR,
    notify: Callable[[str], None] = lambda text: None,
    clock: Callable[[], datetime] = now_utc,
    monotonic: Callable[[], float] = time.monotonic,
) -> IngestReport:
    """:func:`run_ingest` on an asyncio store, for lines from an async or a plain iterable
    (numbered from 1; each stamped by the parser's clock as it is read)."""
    run = _Run(parser, store.subscription_limit_ttl_secs, retry_for, notify, clock, monotonic)
    async for lineno, line in _numbered(lines):
        run.take(lineno, line, None)
        if run.due():
            await run.aflush(store)
    run.end()
    await run.aflush(store)
    return run.report


async def _numbered(lines: AsyncIterable[str] | Iterable[str]) -> AsyncIterator[tuple[int, str]]:
    if isinstance(lines, AsyncIterable):
        lineno = 0
        async for line in lines:
            lineno += 1
            yield lineno, line
    else:
        for lineno, line in enumerate(lines, 1):
            yield lineno, line


def ingest_lines(
    store: TelemetryStore,
    fmt: str,
    lines: Iterable[str],
    *,
    model: str | None = None,
    session: str | None = None,
    retry_for: float = DEFAULT_RETRY_FOR,
    zone: str | None = None,
) -> IngestReport:
    """Record a stream of ``fmt`` lines (a list, a file, a generator) into ``store``; ``zone``
    as in :func:`~redis_telemetry.ingest.make_parser`."""
    parser = make_parser(fmt, model, session, zone=zone)
    numbered = ((n, line, None) for n, line in enumerate(lines, 1))
    return run_ingest(store, parser, numbered, retry_for=retry_for)


async def aingest_lines(
    store: AsyncTelemetryStore,
    fmt: str,
    lines: AsyncIterable[str] | Iterable[str],
    *,
    model: str | None = None,
    session: str | None = None,
    retry_for: float = DEFAULT_RETRY_FOR,
    zone: str | None = None,
) -> IngestReport:
    """:func:`ingest_lines` on an asyncio store; ``lines`` may be an async iterable (an
    agent's stdout read with asyncio, say)."""
    parser = make_parser(fmt, model, session, zone=zone)
    return await arun_ingest(store, parser, lines, retry_for=retry_for)


def ingest_file(
    store: TelemetryStore,
    fmt: str,
    path: str | Path,
    *,
    model: str | None = None,
    session: str | None = None,
    retry_for: float = DEFAULT_RETRY_FOR,
    zone: str | None = None,
) -> IngestReport:
    """Record a log file of ``fmt`` lines into ``store`` (read as bytes: see :func:`decoded`)."""
    with Path(path).open("rb") as stream:
        return ingest_lines(
            store,
            fmt,
            decoded(stream),
            model=model,
            session=session,
            retry_for=retry_for,
            zone=zone,
        )
