"""What every ingest parser shares: its outputs, JSON decoding, field readers, stable ids.

A parser is fed one text at a time (a line; for a format that prints concatenated JSON
objects, one whole object, as :class:`ObjectStream` cuts them from the lines) and returns the
*items* that text completes:

- :class:`Completion`: one completion event (its ``completed_at`` is the ingest clock's when
  the stream carries no time for it);
- :class:`Limit`: a subscription limit the stream reports, with its end when known.

A completion whose latency the stream cannot tell has ``latency_ms=None``: it counts for the
success rate, tokens and cost, and not for latency (a made-up one would skew the averages).

A line it does not care about returns ``[]`` (counted as *ignored*); a line it cannot read
raises :class:`UnparseableLine` and leaves the parser as it was.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any, ClassVar

from pydantic import ValidationError

from ..core import limits, rules
from ..core.backup import describe_validation
from ..errors import TelemetryError
from ..models import CompletionEvent, TokenBreakdown


class UnparseableLine(TelemetryError, ValueError):
    """A line that is not valid JSON, or lacks what its format needs."""


@dataclass(frozen=True)
class Completion:
    """One completion event."""

    event: CompletionEvent


@dataclass(frozen=True)
class Limit:
    """A subscription limit on ``model``: blocked until ``until``; without one, for the
    store's default TTL counted from ``since`` (when the error was written; None: from when
    ingest applies it), so an old log's limit blocks nothing from now."""

    model: str
    until: datetime | None
    reason: str
    since: datetime | None = None


Item = Completion | Limit


@dataclass(frozen=True)
class Read:
    """What one text of the input gave (numbered by its first line): its items, or ``error``,
    why it is unparseable (then no items)."""

    lineno: int
    text: str
    items: list[Item]
    error: str | None = None


def now_utc() -> datetime:
    return datetime.now(UTC)


def live_latency(start: datetime | None, end: datetime) -> int | None:
    """A call's latency from the arrival of the line that began it (``start``) to that of the
    line that ended it, when the stream is followed live; None without a start, or when the
    lines arrived together (under 1 ms apart: a file, or a log piped through ``cat``)."""
    if start is None:
        return None
    ms = round((end - start).total_seconds() * 1000)
    return ms if ms >= 1 else None


def count(value: Any) -> int:
    """A token count or duration: a non-negative integer (missing counts as 0)."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 2**63:
        raise UnparseableLine(f"expected a non-negative number, got {value!r}")
    return int(value)


def cost(value: Any) -> float:
    """A cost in USD (missing counts as 0)."""
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UnparseableLine(f"expected a cost, got {value!r}")
    return float(value)


def ms_timestamp(value: Any) -> datetime:
    """An epoch-milliseconds timestamp as a UTC time."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UnparseableLine(f"expected an epoch-ms timestamp, got {value!r}")
    try:
        return datetime.fromtimestamp(value / 1000, UTC)
    except (ValueError, OverflowError, OSError):
        raise UnparseableLine(f"timestamp {value!r} is out of range") from None


def line_time(value: Any) -> datetime | None:
    """A line's own ``timestamp``: ISO-8601 (``Z`` or an offset; none: UTC) or epoch ms;
    None when the line has none."""
    if value is None:
        return None
    if not isinstance(value, str):
        return ms_timestamp(value)
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        raise UnparseableLine(f"expected an ISO-8601 timestamp, got {value[:40]!r}") from None
    return when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)


def obj(value: Any, name: str) -> dict[str, Any]:
    """A JSON object field (missing counts as empty)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UnparseableLine(f"{name} is not a JSON object")
    return value


def text(value: Any) -> str:
    """A string field ('' when missing or not a string)."""
    return value if isinstance(value, str) else ""


def breakdown(
    *,
    input: int = 0,
    output: int = 0,
    reasoning: int = 0,
    cache_read: int = 0,
    cache_write: int = 0,
    total: int | None = None,
) -> TokenBreakdown:
    """Token counts; without a reported ``total``, the sum of the parts (the tools that report
    none count every token kind once)."""
    if total is None:
        total = input + output + reasoning + cache_read + cache_write
    return TokenBreakdown(
        total=total,
        input=input,
        output=output,
        reasoning=reasoning,
        cache_read=cache_read,
        cache_write=cache_write,
    )


def stable_id(fmt: str, *parts: object) -> str:
    """An event id derived from a line's identity: readable when it fits, else a digest."""
    readable = ":".join([fmt, *map(str, parts)])
    if len(readable) <= rules.MAX_EVENT_ID_LEN and readable.isprintable():
        return readable
    return f"{fmt}:sha256:{hashlib.sha256(readable.encode('utf-8', 'replace')).hexdigest()}"


#: The longest JSON object an object stream holds while it waits for its end (characters):
#: past it, the object is taken as cut off and its lines read again one by one.
MAX_OBJECT_CHARS = 16 * 1024 * 1024
_SIGNIFICANT = re.compile(r'[{}"\\]')
_IN_STRING = re.compile(r'["\\]')


@dataclass
class Fragments:
    """Text cut from the input, as (line number, part of that line) pairs: one JSON object
    (``closed``: its last brace was read), or a line outside any object."""

    parts: list[tuple[int, str]]
    closed: bool = True

    @property
    def lineno(self) -> int:
        return self.parts[0][0]

    @property
    def text(self) -> str:
        return "".join(part for _, part in self.parts)


class ObjectStream:
    """Cuts concatenated JSON objects out of lines, as a log holds them when a tool prints one
    pretty-printed object per run (``JSON.stringify(…, null, 2)``) and stdout and stderr are
    captured together: an object spans many lines, and the next may begin on the line the last
    one ended (``}{``).

    An object begins with ``{`` at the start of a line, or right after the object before it on
    the same line; it ends where its braces balance (braces inside strings do not count; a
    string never spans lines in JSON). Text outside an object is handed out a line at a time;
    text after an object on its last line, other than another object, belongs to it (so it is
    not JSON). A line that begins with ``{`` while an object is open (no pretty-printed line
    does) means that object was cut off: it is handed out unclosed, as it is at the end of the
    input or past ``max_chars``.

    :meth:`push` hands out *groups*: the texts that begin on one line, once every one of them is
    complete (mostly one text a group)."""

    def __init__(self, max_chars: int = MAX_OBJECT_CHARS) -> None:
        self.max_chars = max_chars
        self._open: Fragments | None = None
        self._size = 0
        self._depth = 0
        #: complete texts waiting for the open object that began on their line
        self._done: list[Fragments] = []

    def push(self, lineno: int, line: str) -> list[list[Fragments]]:
        """The groups this line completes."""
        if self._open is not None and line.startswith("{"):
            self._cut()
        pos, after_object = 0, False
        while pos < len(line):
            if self._open is None:
                start = len(line) - len(line[pos:].lstrip())
                if start == len(line):
                    break
                if line[start] != "{" or (start > 0 and not after_object):
                    self._outside(lineno, line[pos:], after_object)
                    break
                self._open, self._size, self._depth = Fragments([], closed=False), 0, 0
                pos = start
            end = self._scan(line, pos)
            self._append(lineno, line[pos : len(line) if end is None else end])
            if end is None:
                break
            assert self._open is not None
            self._open.closed = True
            self._done.append(self._open)
            self._open, pos, after_object = None, end, True
        if self._open is not None and self._size > self.max_chars:
            self._cut()
        return self._groups()

    def end(self) -> list[list[Fragments]]:
        """At the end of the input: what is left, an object left open included."""
        if self._open is not None:
            self._cut()
        return self._groups()

    @classmethod
    def split(cls, parts: list[tuple[int, str]]) -> list[list[Fragments]]:
        """The groups of some fragments read afresh (the rest of an object that was no JSON)."""
        stream = cls()
        groups = [g for lineno, part in parts for g in stream.push(lineno, part)]
        return groups + stream.end()

    def _outside(self, lineno: int, text: str, after_object: bool) -> None:
        if not text.strip():
            return
        if after_object:
            self._done[-1].parts.append((lineno, text))  # trailing text: part of the object
        else:
            self._done.append(Fragments([(lineno, text)]))

    def _append(self, lineno: int, part: str) -> None:
        assert self._open is not None
        parts = self._open.parts
        if parts and parts[-1][0] == lineno:
            parts[-1] = (lineno, parts[-1][1] + part)
        else:
            parts.append((lineno, part))
        self._size += len(part)

    def _scan(self, line: str, pos: int) -> int | None:
        """Where in ``line`` the open object ends (the index after its last brace), from
        ``pos``; None when it goes on past the line."""
        in_string = False
        while True:
            m = (_IN_STRING if in_string else _SIGNIFICANT).search(line, pos)
            if m is None:
                return None
            pos, char = m.end(), m.group()
            if char == "\\":
                pos += 1  # the escaped character, whatever it is
            elif char == '"':
                in_string = not in_string
            elif char == "{":
                self._depth += 1
            else:
                self._depth -= 1
                if self._depth == 0:
                    return pos

    def _cut(self) -> None:
        assert self._open is not None
        self._done.append(self._open)
        self._open = None

    def _groups(self) -> list[list[Fragments]]:
        waiting = self._open.lineno if self._open is not None else None
        ready = [f for f in self._done if f.lineno != waiting]
        self._done = [f for f in self._done if f.lineno == waiting]
        groups: list[list[Fragments]] = []
        for f in ready:
            if groups and groups[-1][0].lineno == f.lineno:
                groups[-1].append(f)
            else:
                groups.append([f])
        return groups


class Parser:
    """Base: JSON decoding, ``--model``/``--session`` overrides, event and limit building."""

    #: the ``--format`` name
    name: ClassVar[str] = ""
    #: the stream names no model, so ``--model`` is required
    needs_model: ClassVar[bool] = False
    #: a line may hold a JSON array of messages, read in order
    reads_arrays: ClassVar[bool] = False
    #: the input is concatenated JSON objects, each over one line or many (see ObjectStream)
    reads_objects: ClassVar[bool] = False
    #: what the format is, as a user would produce it (for hints)
    source: ClassVar[str] = ""
    #: which lines hold what it records (for the hint when no line did)
    records: ClassVar[str] = ""

    def __init__(
        self,
        model: str | None = None,
        session: str | None = None,
        clock: Callable[[], datetime] = now_utc,
        zone: tzinfo | None = None,
    ) -> None:
        self.model = model
        self.session = session
        self.clock = clock
        #: the zone of clock times the stream prints without one (None: this machine's)
        self.zone = zone
        #: the lines are stamped as they arrive (followed live), not read at parse time
        self.followed = False
        self._objects = ObjectStream() if self.reads_objects else None
        #: items completed by an earlier line but handed out later (see ``feed``)
        self._ready: list[Item] = []
        #: the digest of the line being parsed (the last resort for an event id)
        self.line_digest = ""
        #: completions read and left out, counted by another source (``claude-limits``)
        self.elsewhere = 0
        #: when the line being parsed was read
        self.arrived = clock()

    @classmethod
    def looks_like(cls, data: dict[str, Any]) -> bool:
        """A decoded line in this format's shape, whatever it holds (to tell which format an
        input that gave nothing is in)."""
        return False

    def read(self, lineno: int, line: str, arrived: datetime | None = None) -> list[Read]:
        """One line of the input, with what the texts it completes gave: the line itself; for
        an object stream, the whole JSON objects that end on it (none while one is open). An
        unparseable text leaves no trace (see :meth:`feed`); an object that turns out to be no
        JSON (cut off, or garbled) is blamed on its first line, and its other lines are read
        again, as if that line were not there."""
        if self._objects is None:
            return [self._read(lineno, line, [line], arrived)]
        return self._read_groups(self._objects.push(lineno, line), arrived)

    def read_end(self) -> list[Read]:
        """At the end of the input: what an object stream still holds (an object cut off)."""
        if self._objects is None:
            return []
        return self._read_groups(self._objects.end(), None)

    def _read_groups(self, groups: list[list[Fragments]], arrived: datetime | None) -> list[Read]:
        out: list[Read] = []
        pending = deque(groups)
        while pending:
            group = pending.popleft()
            broken = next((f for f in group if len(f.parts) > 1 and not _is_object(f)), None)
            if broken is None:
                out.append(
                    self._read(
                        group[0].lineno,
                        "".join(f.text for f in group),
                        [f.text for f in group],
                        arrived,
                    )
                )
                continue
            why = "an object cut off before its end" if not broken.closed else "a broken object"
            out.append(Read(group[0].lineno, broken.parts[0][1], [], f"not JSON: {why}"))
            pending.extendleft(reversed(ObjectStream.split(broken.parts[1:])))
        return out

    def _read(self, lineno: int, text: str, texts: list[str], arrived: datetime | None) -> Read:
        try:
            items = self.feed_texts(texts, arrived)
        except UnparseableLine as exc:
            return Read(lineno, text, [], str(exc))
        return Read(lineno, text, items)

    def feed(self, line: str, arrived: datetime | None = None) -> list[Item]:
        """The items this line completes (``[]``: ignored), with any an earlier line left.
        ``arrived``: when the line was read (default: now), for streams followed live. For an
        object stream, ``line`` is one whole JSON object (:meth:`read` takes raw lines)."""
        return self.feed_texts([line], arrived)

    def feed_texts(self, texts: list[str], arrived: datetime | None = None) -> list[Item]:
        """:meth:`feed` for the texts that begin on one line, read as one: if one is
        unparseable, none of them counts."""
        self.arrived = arrived or self.clock()
        self.followed = arrived is not None
        bodies = [t.strip() for t in texts if t.strip()]
        if not bodies:
            return self._take([])
        messages = [m for body in bodies for m in self._decode(body)]
        body = "\n".join(bodies)
        self.line_digest = hashlib.sha256(body.encode("utf-8", "replace")).hexdigest()[:32]
        out: list[Item] = []
        # an array is a whole run (and the objects of a line one read): if one of its messages
        # fails, none of them counted
        saved = copy.deepcopy(self.__dict__) if len(messages) > 1 else None
        for message in messages:
            try:
                settled = self.before(message)
                try:
                    out += settled + self.parse(message)
                except BaseException:
                    self.undo_before()
                    raise
            except (
                UnparseableLine,
                KeyError,
                TypeError,
                AttributeError,
                ValueError,
                OverflowError,
            ) as exc:
                if saved is not None:
                    self.__dict__ = saved
                if isinstance(exc, UnparseableLine):
                    raise
                raise UnparseableLine(f"missing or malformed field: {exc}") from None
        return self._take(out)

    def _decode(self, body: str) -> list[dict[str, Any]]:
        try:
            data = json.loads(body)
        except json.JSONDecodeError as exc:
            raise UnparseableLine(f"not JSON: {exc.msg}") from None
        except RecursionError:
            raise UnparseableLine("not JSON: nested too deeply") from None
        messages = data if isinstance(data, list) and self.reads_arrays else [data]
        if not messages or not all(isinstance(m, dict) for m in messages):
            raise UnparseableLine("not a JSON object")
        return messages

    def finish(self) -> list[Item]:
        """At the end of the stream: what the parser still holds."""
        return self._take(self.at_end())

    def _take(self, items: list[Item]) -> list[Item]:
        out, self._ready = self._ready + items, []
        return out

    def before(self, data: dict[str, Any]) -> list[Item]:
        """Items an earlier line left pending that this line settles (default: none)."""
        return []

    def undo_before(self) -> None:
        """Put back what ``before`` settled: the line turned out unparseable, and an
        unparseable line leaves no trace."""

    def at_end(self) -> list[Item]:
        return []

    def parse(self, data: dict[str, Any]) -> list[Item]:
        """The items of one decoded line; raises before changing any state if it cannot."""
        raise NotImplementedError

    def pick_model(self, model: str | None) -> str:
        """``--model`` wins over what the stream says (a parser may decide otherwise)."""
        chosen = self.model or model
        if not chosen:
            raise UnparseableLine("the stream names no model; pass --model")
        return chosen

    def completion(self, *, model: str, session: str, **fields: Any) -> Completion:
        """An event (``--session`` wins over the stream's); an error text longer than the store
        takes (a proxy's HTML error page) is cut to fit, not refused."""
        if isinstance(fields.get("error"), str):
            fields["error"] = rules.clip_error(fields["error"])
        try:
            event = CompletionEvent(model=model, session_id=self.session or session, **fields)
        except ValidationError as exc:
            raise UnparseableLine(describe_validation(exc)) from None
        return Completion(event)

    def failure_limit(self, model: str, error: str, now: datetime) -> list[Item]:
        """The limit a failure's error text, written at ``now``, names, if any."""
        found = limits.from_text(error, now)
        return [] if found is None else [limit_of(model, found, error, now)]


def limit_of(model: str, found: limits.LimitEnd, reason: str, said_at: datetime) -> Limit:
    """The limit ``found`` in an error written at ``said_at``: without an end, the default TTL
    runs from then (so an old log's limit blocks nothing from now)."""
    return Limit(model, found.until, reason[:200], said_at if found.until is None else None)


def _is_object(fragments: Fragments) -> bool:
    """True when the fragments make one JSON value (else the object was cut off or garbled)."""
    if not fragments.closed:
        return False
    try:
        json.loads(fragments.text)
    except (ValueError, RecursionError):
        return False
    return True
