"""The dispatch table of formats, and parsing a whole stream without Redis."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..core import limits
from ..models import CompletionEvent
from .claude import ClaudeLimitsParser, ClaudeParser
from .codex import CodexParser
from .events import Completion, Item, Limit, Parser, Read, now_utc
from .gemini import GeminiParser
from .jsonl import JsonlParser
from .opencode import OpencodeParser
from .pi import PiParser

#: The dispatch table: one parser class per format.
FORMATS: tuple[type[Parser], ...] = (
    ClaudeParser,
    OpencodeParser,
    PiParser,
    CodexParser,
    GeminiParser,
    JsonlParser,
    ClaudeLimitsParser,
)
FORMAT_NAMES: tuple[str, ...] = tuple(p.name for p in FORMATS)


def parser_class(fmt: str) -> type[Parser]:
    """The parser class of ``fmt``."""
    for cls in FORMATS:
        if cls.name == fmt:
            return cls
    raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMAT_NAMES)}")


def _messages(line: str) -> list[dict[str, Any]] | None:
    """A line's JSON objects (a JSON array's too); None when it is not JSON."""
    try:
        data = json.loads(line)
    except (ValueError, RecursionError):
        return None
    items = data if isinstance(data, list) else [data]
    return [m for m in items if isinstance(m, dict)]


def guess_format(lines: Iterable[str]) -> str | None:
    """The format most of these lines are in, by their shape; None when no line is any's."""
    votes: Counter[str] = Counter()
    for line in lines:
        for message in _messages(line) or []:
            votes.update(cls.name for cls in FORMATS if cls.looks_like(message))
    if not votes:
        return None
    best = max(votes.values())
    return next(name for name in FORMAT_NAMES if votes[name] == best)


def nothing_found_hint(fmt: str, samples: list[str]) -> str:
    """One line for an input in which ``--format fmt`` found nothing to record: which format
    its lines look like, or that they are not JSON."""
    cls = parser_class(fmt)
    if all(_messages(line) is None for line in samples):
        if not cls.reads_objects and any(line.strip() == "{" for line in samples):
            other = next(c for c in FORMATS if c.reads_objects)
            return (
                "these lines look like JSON objects printed over many lines; "
                f"--format {other.name} reads them ({other.source}); try --format {other.name}"
            )
        return f"no line is JSON; --format {fmt} reads {cls.source}"
    guess = guess_format(samples)
    if guess == fmt:
        return f"these lines are {fmt} output, but none is {cls.records}"
    if guess is None:
        return f"these JSON lines are not {cls.source}, nor another format's"
    other = parser_class(guess)
    option = f"--format {guess}" + (" --model MODEL" if other.needs_model else "")
    return f"these lines look like {guess} output ({other.source}); try {option}"


def make_parser(
    fmt: str,
    model: str | None = None,
    session: str | None = None,
    clock: Callable[[], datetime] = now_utc,
    zone: str | None = None,
) -> Parser:
    """A parser for ``fmt``; opencode and codex streams name no model, so they need ``model``.
    ``zone``: the IANA zone of clock times the stream prints without one (Codex's reset time;
    default: this machine's local zone)."""
    cls = parser_class(fmt)
    if cls.needs_model and not model:
        raise ValueError(f"--format {fmt} needs --model: the {fmt} stream does not name its model")
    return cls(model, session, clock, None if zone is None else limits.named_zone(zone))


@dataclass
class Parsed:
    """What a stream holds: events, limits, and the lines that gave nothing."""

    events: list[CompletionEvent] = field(default_factory=list)
    limits: list[Limit] = field(default_factory=list)
    ignored: list[int] = field(default_factory=list)
    unparseable: list[tuple[int, str]] = field(default_factory=list)

    def tally(self, reads: Iterable[Read]) -> None:
        """Count what some texts of the input gave."""
        for r in reads:
            if r.error is not None:
                self.unparseable.append((r.lineno, r.error))
            elif not r.items and r.text.strip():
                self.ignored.append(r.lineno)
            self.add(r.items)

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
    zone: str | None = None,
) -> Parsed:
    """Parse a whole stream without touching Redis (line numbers count from 1; an object that
    spans lines counts under its first)."""
    parser = make_parser(fmt, model, session, clock, zone)
    parsed = Parsed()
    for lineno, line in enumerate(lines, 1):
        parsed.tally(parser.read(lineno, line))
    parsed.tally(parser.read_end())
    parsed.add(parser.finish())
    return parsed
