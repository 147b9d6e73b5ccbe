"""opencode: ``opencode run --format json``.

Modelled on opencode 1.18 (``packages/opencode/src/cli/cmd/run.ts`` and the part and error
schemas of ``session/message-v2.ts``; ``SessionRetry.delay`` for the retry headers). ``run
--format json`` prints ``{"type", "timestamp" (epoch ms, when the line was printed),
"sessionID", ...}`` lines: ``step_start``, ``step_finish`` (``StepFinishPart``: ``reason``,
``cost``, ``tokens`` with ``total`` (optional), ``input``, ``output``, ``reasoning``,
``cache.read``/``cache.write``), ``text``, ``reasoning`` (with ``--thinking``), ``tool_use``
(a tool that completed or failed) with the ``part``; ``error`` with the session's error
(``{"name", "data": {"message", "statusCode", "isRetryable", "responseHeaders", ...}}``);
and ``done`` when the session goes idle. Only the run's own session is printed (a subagent's
calls are not). opencode retries retryable API errors itself without printing them, so an
``error`` line is final.

One completion per ``step_finish`` (one model call) and per ``error`` that is the model's
(``MessageAbortedError`` is the user stopping it: nothing is counted). Latency runs from the
start of the call's own step. The stream names no model, so ``--model`` is needed, except that
a step naming its model (``part.model``, as forks emit) wins.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from ..core import limits
from .events import (
    Item,
    Parser,
    breakdown,
    cost,
    count,
    limit_of,
    ms_timestamp,
    obj,
    stable_id,
    text,
)

#: ``part.reason`` values that make a step a failure (the AI SDK's finish reasons)
FAILED_REASONS = frozenset({"error", "content-filter"})
#: ``error.name`` values that are not the model's failure
NOT_THE_MODELS = frozenset({"MessageAbortedError"})


def is_providers(name: str, message: str, details: dict[str, Any]) -> bool:
    """An ``error`` that is the provider's API error: an ``APIError`` (opencode's name for what
    the provider answered, its stream errors included; the one error with a ``statusCode``,
    which counts without the name too), or an ``UnknownError`` holding the
    provider's own JSON error (``{"type": "error", "error": {...}}``, which opencode's retry rule
    reads too). Other errors (a missing API key, a context overflow, anything a tool or a plugin
    threw) are not, and never block the model."""
    if name == "APIError" or details.get("statusCode") is not None:
        return True
    if name != "UnknownError":
        return False
    try:
        body = json.loads(message)
    except (ValueError, RecursionError):
        return False
    return isinstance(body, dict) and body.get("type") == "error"


def step_model(part: dict[str, Any]) -> str | None:
    """``part.model`` as a name: a string, or ``{providerID, modelID}``."""
    model = part.get("model")
    if isinstance(model, str) and model:
        return model
    if isinstance(model, dict):
        provider, name = text(model.get("providerID")), text(model.get("modelID"))
        return f"{provider}/{name}" if provider and name else name or None
    return None


class OpencodeParser(Parser):
    """opencode's ``run --format json`` (see the module docstring)."""

    name = "opencode"
    needs_model = True
    source = "`opencode run --format json`"
    records = "step_finish and error lines"
    #: the line types ``run --format json`` prints, each with a ``sessionID``
    TYPES = frozenset(
        {"step_start", "step_finish", "text", "reasoning", "tool_use", "error", "done"}
    )

    @classmethod
    def looks_like(cls, data: dict[str, Any]) -> bool:
        return data.get("type") in cls.TYPES and isinstance(data.get("sessionID"), str)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: session -> {messageID: start} of the steps begun and not finished yet
        self._open: dict[str, dict[str, datetime]] = {}

    def _model(self, part: dict[str, Any]) -> str:
        return step_model(part) or self.pick_model(None)

    def parse(self, data: dict[str, Any]) -> list[Item]:
        kind = data.get("type")
        session = text(data.get("sessionID"))
        if kind == "step_start":
            part = obj(data.get("part"), "part")
            at = ms_timestamp(data["timestamp"])
            self._open.setdefault(session, {})[text(part.get("messageID"))] = at
            return []
        if kind == "step_finish":
            return self._step_finish(session, data)
        if kind == "error":
            return self._error(session, data)
        return []

    def _step_finish(self, session: str, data: dict[str, Any]) -> list[Item]:
        part = obj(data.get("part"), "part")
        at = ms_timestamp(data["timestamp"])
        raw = obj(part.get("tokens"), "part.tokens")
        cache = obj(raw.get("cache"), "part.tokens.cache")
        tokens = breakdown(
            input=count(raw.get("input")),
            output=count(raw.get("output")),
            reasoning=count(raw.get("reasoning")),
            cache_read=count(cache.get("read")),
            cache_write=count(cache.get("write")),
            total=count(raw["total"]) if "total" in raw else None,
        )
        model = self._model(part)
        reason = text(part.get("reason"))
        failed = reason in FAILED_REASONS
        steps = self._open.get(session, {})
        step = text(part.get("messageID"))
        start = steps.get(step)
        part_id = text(part.get("id"))
        done: list[Item] = [
            self.completion(
                model=model,
                session=session,
                completed_at=at,
                latency_ms=None  # without its step_start: not measured
                if start is None
                else max(0, round((at - start).total_seconds() * 1000)),
                success=not failed,
                tokens=tokens,
                cost_usd=cost(part.get("cost")),
                error=f"finish reason: {reason}" if failed else None,
                event_id=stable_id("opencode", part_id or self.line_digest),
            )
        ]
        steps.pop(step, None)
        return done

    def _error(self, session: str, data: dict[str, Any]) -> list[Item]:
        err = obj(data.get("error"), "error")
        name = text(err.get("name"))
        at = ms_timestamp(data["timestamp"])
        steps = self._open.get(session, {})
        if name in NOT_THE_MODELS:
            if steps:  # the stopped step is over
                del steps[max(steps, key=steps.__getitem__)]
            return []
        details = obj(err.get("data"), "error.data")
        message = text(details.get("message")) or name or "error"
        model = self._model(details)
        items: list[Item] = []
        if not is_providers(name, message, details):
            message = limits.not_the_providers(message)  # a tool's or opencode's own failure
        elif limits.is_429(details.get("statusCode")):
            found, stated = limits.answer_429(message, details.get("responseHeaders"), at)
            items.append(limit_of(model, found, message, at))
            message = stated  # the end the headers gave, in words the store's own rule reads
        elif (said := limits.from_text(message, at)) is not None:
            items.append(limit_of(model, said, message, at))
        # the step it ended, the newest open one; outside any step its latency is not measured
        step = max(steps, key=steps.__getitem__) if steps else None
        event = self.completion(
            model=model,
            session=session,
            completed_at=at,
            latency_ms=None
            if step is None
            else max(0, round((at - steps[step]).total_seconds() * 1000)),
            success=False,
            error=message,
            event_id=stable_id(
                "opencode", session, self.line_digest if step is None else step, "error"
            ),
        )
        if step is not None:
            del steps[step]
        return [event, *items]
