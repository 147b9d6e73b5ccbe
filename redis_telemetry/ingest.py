"""Parsers that turn agent CLI output into completion events (no I/O).

Each parser is fed one line at a time and returns the events that line completes. A line it
does not care about returns ``[]`` and counts as *ignored*; a line it cannot read raises
:class:`UnparseableLine`. Formats:

- ``claude``: ``claude -p --output-format stream-json``. One event per ``result`` line.
- ``opencode``: ``opencode run --format json``. One event per ``step_finish``, one failed event
  per ``error``; the stream names no model, so ``--model`` is required.
- ``pi``: ``pi -p --mode json``. One event per ``turn_end``.
- ``jsonl``: one ``CompletionEvent`` per line in the reference's serde JSON.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from .core.backup import describe_validation
from .models import CompletionEvent, TokenBreakdown

FORMATS = ("claude", "opencode", "pi", "jsonl")


class UnparseableLine(ValueError):
    """A line that is not valid JSON, or lacks what its format needs."""


def _now() -> datetime:
    return datetime.now(UTC)


def _u(value: Any) -> int:
    """A token count or duration: a non-negative integer (missing counts as 0)."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise UnparseableLine(f"expected a non-negative number, got {value!r}")
    return int(value)


def _cost(value: Any) -> float:
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UnparseableLine(f"expected a cost, got {value!r}")
    return float(value)


def _ms_timestamp(value: Any) -> datetime:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UnparseableLine(f"expected an epoch-ms timestamp, got {value!r}")
    try:
        return datetime.fromtimestamp(value / 1000, UTC)
    except (ValueError, OverflowError, OSError):
        raise UnparseableLine(f"timestamp {value!r} is out of range") from None


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
        total=total, input=input, output=output, reasoning=reasoning,
        cache_read=cache_read, cache_write=cache_write,
    )  # fmt: skip


class Parser:
    """Base: JSON decoding, ``--model``/``--session`` overrides, event construction."""

    needs_model = False

    def __init__(self, model: str | None = None, session: str | None = None,
                 clock: Callable[[], datetime] = _now) -> None:  # fmt: skip
        self.model = model
        self.session = session
        self.clock = clock

    def feed(self, line: str) -> list[CompletionEvent]:
        """The events this line completes (``[]``: ignored)."""
        text = line.strip()
        if not text:
            return []
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UnparseableLine(f"not JSON: {exc.msg}") from None
        if not isinstance(data, dict):
            raise UnparseableLine("not a JSON object")
        try:
            return self.parse(data)
        except UnparseableLine:
            raise
        except (KeyError, TypeError, AttributeError, ValueError, OverflowError) as exc:
            raise UnparseableLine(f"missing or malformed field: {exc}") from None

    def parse(self, data: dict[str, Any]) -> list[CompletionEvent]:
        raise NotImplementedError

    def event(self, *, model: str | None, session: str, **fields: Any) -> CompletionEvent:
        """Build an event; ``--model``/``--session`` win over what the stream says."""
        chosen = self.model or model
        if not chosen:
            raise UnparseableLine("the stream names no model; pass --model")
        try:
            return CompletionEvent(model=chosen, session_id=self.session or session, **fields)
        except ValidationError as exc:
            raise UnparseableLine(describe_validation(exc)) from None


class ClaudeParser(Parser):
    """``claude -p --output-format stream-json``: the model comes from the run's init line."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._init_model: dict[str, str] = {}

    def parse(self, data: dict[str, Any]) -> list[CompletionEvent]:
        kind = data.get("type")
        session = str(data.get("session_id", ""))
        if kind == "system" and data.get("subtype") == "init" and data.get("model"):
            self._init_model[session] = str(data["model"])
            return []
        if kind != "result":
            return []
        usage = data.get("usage") or {}
        tokens = breakdown(
            input=_u(usage.get("input_tokens")),
            output=_u(usage.get("output_tokens")),
            cache_read=_u(usage.get("cache_read_input_tokens")),
            cache_write=_u(usage.get("cache_creation_input_tokens")),
        )
        model = self._init_model.get(session) or next(iter(data.get("modelUsage") or {}), None)
        failed = bool(data.get("is_error"))
        cost = data.get("total_cost_usd", data.get("cost_usd"))
        return [
            self.event(
                model=model,
                session=session,
                completed_at=self.clock(),
                latency_ms=_u(data["duration_ms"]),
                success=not failed,
                tokens=tokens,
                cost_usd=_cost(cost),
                error=str(data.get("result") or data.get("subtype") or "error") if failed else None,
            )
        ]


class OpencodeParser(Parser):
    """``opencode run --format json``: latency runs from the matching ``step_start``."""

    needs_model = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._started: dict[tuple[str, str], datetime] = {}
        self._last_start: dict[str, datetime] = {}

    def _latency(self, session: str, message: str | None, end: datetime) -> int:
        start = self._started.pop((session, message or ""), None) or self._last_start.get(session)
        return max(0, round((end - start).total_seconds() * 1000)) if start else 0

    def parse(self, data: dict[str, Any]) -> list[CompletionEvent]:
        kind = data.get("type")
        session = str(data.get("sessionID", ""))
        if kind == "step_start":
            ts = _ms_timestamp(data["timestamp"])
            self._started[(session, str(data.get("part", {}).get("messageID", "")))] = ts
            self._last_start[session] = ts
            return []
        if kind == "step_finish":
            part = data["part"]
            ts = _ms_timestamp(data["timestamp"])
            raw = part.get("tokens") or {}
            cache = raw.get("cache") or {}
            tokens = breakdown(
                input=_u(raw.get("input")),
                output=_u(raw.get("output")),
                reasoning=_u(raw.get("reasoning")),
                cache_read=_u(cache.get("read")),
                cache_write=_u(cache.get("write")),
                total=_u(raw["total"]) if "total" in raw else None,
            )
            return [
                self.event(
                    model=None,
                    session=session,
                    completed_at=ts,
                    latency_ms=self._latency(session, part.get("messageID"), ts),
                    success=True,
                    tokens=tokens,
                    cost_usd=_cost(part.get("cost")),
                )
            ]
        if kind == "error":
            ts = _ms_timestamp(data["timestamp"])
            err = data.get("error") or {}
            message = (err.get("data") or {}).get("message") or err.get("name") or "error"
            latency = self._latency(session, None, ts)
            self._last_start.pop(session, None)
            return [
                self.event(
                    model=None, session=session, completed_at=ts, latency_ms=latency,
                    success=False, error=str(message),
                )
            ]  # fmt: skip
        return []


class PiParser(Parser):
    """``pi -p --mode json``: the model is ``provider/model``; ``stopReason`` must be ``stop``."""

    def parse(self, data: dict[str, Any]) -> list[CompletionEvent]:
        if data.get("type") != "turn_end":
            return []
        message = data["message"]
        usage = message.get("usage") or {}
        tokens = breakdown(
            input=_u(usage.get("input")),
            output=_u(usage.get("output")),
            cache_read=_u(usage.get("cacheRead")),
            cache_write=_u(usage.get("cacheWrite")),
            total=_u(usage["totalTokens"]) if "totalTokens" in usage else None,
        )
        provider, name = message.get("provider"), message.get("model")
        model = f"{provider}/{name}" if provider and name else name
        stop = message.get("stopReason")
        failed = stop != "stop"
        error = message.get("errorMessage") or f"stopReason: {stop}"
        return [
            self.event(
                model=model,
                session=str(data.get("sessionId", "")),
                completed_at=self.clock(),
                latency_ms=_u((data.get("latencyBreakdown") or {}).get("totalMs")),
                success=not failed,
                tokens=tokens,
                cost_usd=_cost((usage.get("cost") or {}).get("total")),
                error=str(error) if failed else None,
            )
        ]


class JsonlParser(Parser):
    """One ``CompletionEvent`` per line, in serde JSON."""

    def parse(self, data: dict[str, Any]) -> list[CompletionEvent]:
        if self.model:
            data["model"] = self.model
        if self.session is not None:
            data["session_id"] = self.session
        try:
            return [CompletionEvent.model_validate(data)]
        except ValidationError as exc:
            raise UnparseableLine(describe_validation(exc)) from None


_PARSERS: dict[str, type[Parser]] = {
    "claude": ClaudeParser,
    "opencode": OpencodeParser,
    "pi": PiParser,
    "jsonl": JsonlParser,
}


def make_parser(fmt: str, model: str | None = None, session: str | None = None) -> Parser:
    """A parser for ``fmt``; opencode streams name no model, so it needs ``model``."""
    cls = _PARSERS[fmt]
    if cls.needs_model and not model:
        raise ValueError(f"--format {fmt} needs --model: the {fmt} stream does not name its model")
    return cls(model, session)
