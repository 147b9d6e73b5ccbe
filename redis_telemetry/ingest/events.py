"""What every ingest parser shares: its outputs, JSON decoding, field readers, stable ids.

A parser is fed one line at a time and returns the *items* that line completes:

- :class:`Completion`: one completion event (``clock_time``: its ``completed_at`` is the
  ingest clock's, because the stream carries no time for it);
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
    """One completion event; ``clock_time``: ``completed_at`` came from the ingest clock."""

    event: CompletionEvent
    clock_time: bool = False


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


class Parser:
    """Base: JSON decoding, ``--model``/``--session`` overrides, event and limit building."""

    #: the ``--format`` name
    name: ClassVar[str] = ""
    #: the stream names no model, so ``--model`` is required
    needs_model: ClassVar[bool] = False
    #: a line may hold a JSON array of messages, read in order
    reads_arrays: ClassVar[bool] = False
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
        #: items completed by an earlier line but handed out later (see ``feed``)
        self._ready: list[Item] = []
        #: the digest of the line being parsed (the last resort for an event id)
        self.line_digest = ""
        #: when the line being parsed was read
        self.arrived = clock()

    @classmethod
    def looks_like(cls, data: dict[str, Any]) -> bool:
        """A decoded line in this format's shape, whatever it holds (to tell which format an
        input that gave nothing is in)."""
        return False

    def feed(self, line: str, arrived: datetime | None = None) -> list[Item]:
        """The items this line completes (``[]``: ignored), with any an earlier line left.
        ``arrived``: when the line was read (default: now), for streams followed live."""
        self.arrived = arrived or self.clock()
        self.followed = arrived is not None
        body = line.strip()
        if not body:
            return self._take([])
        try:
            data = json.loads(body)
        except json.JSONDecodeError as exc:
            raise UnparseableLine(f"not JSON: {exc.msg}") from None
        except RecursionError:
            raise UnparseableLine("not JSON: nested too deeply") from None
        messages = data if isinstance(data, list) and self.reads_arrays else [data]
        if not messages or not all(isinstance(m, dict) for m in messages):
            raise UnparseableLine("not a JSON object")
        self.line_digest = hashlib.sha256(body.encode("utf-8", "replace")).hexdigest()[:32]
        out: list[Item] = []
        # an array is a whole run: if one of its messages fails, none of them counted
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

    def completion(
        self, *, model: str, session: str, clock_time: bool = False, **fields: Any
    ) -> Completion:
        """An event (``--session`` wins over the stream's); an error text longer than the store
        takes (a proxy's HTML error page) is cut to fit, not refused."""
        if isinstance(fields.get("error"), str):
            fields["error"] = rules.clip_error(fields["error"])
        try:
            event = CompletionEvent(model=model, session_id=self.session or session, **fields)
        except ValidationError as exc:
            raise UnparseableLine(describe_validation(exc)) from None
        return Completion(event, clock_time)

    def failure_limit(self, model: str, error: str, now: datetime) -> list[Item]:
        """The limit a failure's error text, written at ``now``, names, if any."""
        found = limits.from_text(error, now)
        return [] if found is None else [limit_of(model, found, error, now)]


def limit_of(model: str, found: limits.LimitEnd, reason: str, said_at: datetime) -> Limit:
    """The limit ``found`` in an error written at ``said_at``: without an end, the default TTL
    runs from then (so an old log's limit blocks nothing from now)."""
    return Limit(model, found.until, reason[:200], said_at if found.until is None else None)
