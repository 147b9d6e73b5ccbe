"""The dispatch table of formats, and parsing a whole stream without Redis."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime

from ..models import CompletionEvent
from .claude import ClaudeParser
from .events import Completion, Item, Limit, Parser, UnparseableLine, now_utc
from .jsonl import JsonlParser
from .opencode import OpencodeParser
from .pi import PiParser

#: The dispatch table: one parser class per format.
FORMATS: tuple[type[Parser], ...] = (ClaudeParser, OpencodeParser, PiParser, JsonlParser)
FORMAT_NAMES: tuple[str, ...] = tuple(p.name for p in FORMATS)


def make_parser(
    fmt: str,
    model: str | None = None,
    session: str | None = None,
    clock: Callable[[], datetime] = now_utc,
) -> Parser:
    """A parser for ``fmt``; opencode streams name no model, so it needs ``model``."""
    for cls in FORMATS:
        if cls.name == fmt:
            if cls.needs_model and not model:
                raise ValueError(
                    f"--format {fmt} needs --model: the {fmt} stream does not name its model"
                )
            return cls(model, session, clock)
    raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMAT_NAMES)}")


@dataclass
class Parsed:
    """What a stream holds: events, limits, and the lines that gave nothing."""

    events: list[CompletionEvent] = field(default_factory=list)
    limits: list[Limit] = field(default_factory=list)
    ignored: list[int] = field(default_factory=list)
    unparseable: list[tuple[int, str]] = field(default_factory=list)

    def add(self, items: Iterable[Item]) -> None:
        for item in items:
            if isinstance(item, Completion):
                self.events.append(item.event)
            else:
                self.limits.append(item)

    @property
    def unmeasured(self) -> list[CompletionEvent]:
        """The events whose latency the stream could not tell (``latency_ms`` None)."""
        return [e for e in self.events if e.latency_ms is None]


def parse_lines(
    fmt: str,
    lines: Iterable[str],
    model: str | None = None,
    session: str | None = None,
    clock: Callable[[], datetime] = now_utc,
) -> Parsed:
    """Parse a whole stream without touching Redis (line numbers count from 1)."""
    parser = make_parser(fmt, model, session, clock)
    parsed = Parsed()
    for lineno, line in enumerate(lines, 1):
        try:
            items = parser.feed(line)
        except UnparseableLine as exc:
            parsed.unparseable.append((lineno, str(exc)))
            continue
        if not items and line.strip():
            parsed.ignored.append(lineno)
        parsed.add(items)
    parsed.add(parser.finish())
    return parsed
