"""Gemini CLI: ``gemini -p … --output-format stream-json`` or ``--output-format json``.

Modelled on Gemini CLI 0.56 (unchanged in 0.61): ``packages/core/src/output/types.ts``
(``JsonOutput``, the stream events), ``stream-json-formatter.ts`` (``convertToStreamStats``),
``packages/core/src/telemetry/uiTelemetry.ts`` (``SessionMetrics``, ``ModelMetrics``, roles),
``packages/cli/src/nonInteractiveCli.ts`` and ``utils/errors.ts`` (what is printed when),
``packages/core/src/utils/errorParsing.ts`` (``[API Error: …]`` and its 429 suffixes) and
``googleQuotaErrors.ts`` / ``retry.ts`` (quota errors). Both shapes are read, told apart by
their fields; neither has a cost.

- **stream-json**: one object a line, each with ``type`` and ``timestamp`` (ISO-8601):
  ``init`` (``session_id``, ``model``, possibly an alias such as ``auto``), ``message``,
  ``tool_use``, ``tool_result`` (a tool's failure: not the model's), ``error`` (a warning, or
  the reason of an error result without one), ``result`` (``status``, ``error``, ``stats``).
  One completion per ``result``, at its ``timestamp``.
- **json**: one pretty-printed object a run, ``{session_id, response, stats, warnings}`` on
  stdout, or on stderr ``{session_id, error: {type, message, code}}``; a log captured with
  ``2>&1`` holds them concatenated (``}{``), read as a stream of objects. One completion per
  object, at the time ingest read it; a failure names no model: ``--model``.

The model is the one that did the run's work: in ``stats.models``, the one with the ``main``
role (json), else the one with the most tokens (a router's ``flash-lite`` call sits beside
it); else ``init.model`` unless it is an alias; else ``--model``.

Gemini retries a quota error it deems retryable itself (``RetryableQuotaError``): a run that
then succeeds shows it only in ``api.totalErrors``, and blocks nothing. A run that ends in a
quota error (``TerminalQuotaError``, or retries that ran out) is a limit, until the reset its
text states ("Your quota will reset after 3h12m40s.", "Please retry in 2483.5s"), counted from
the line's own time, else for the default TTL ("You have exhausted your daily quota").
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any

from ..core import limits
from ..models import TokenBreakdown
from . import events
from .events import Item, Parser, UnparseableLine

#: ``init.model`` values that name no model (``packages/core/src/config/models.ts``)
ALIASES = frozenset({"auto", "pro", "flash", "flash-lite"})
#: what ``parseAndFormatApiError`` appends to an API error with status 429, by login type
SUFFIXES_429 = (
    "Possible quota limitations in place or slow response times detected.",
    "Please wait and try again later. To increase your limits, request a quota increase",
)
#: the error type of a run the user cancelled: not the model's failure
CANCELLED = "FatalCancellationError"
#: the stream-json ``error.type`` of the provider's API error (a plain object, not an Error)
API_ERROR_TYPE = "unknown"


def is_alias(model: str) -> bool:
    return model in ALIASES or model.startswith("auto-")


def _most(entries: dict[str, int], prefer: str | None) -> str | None:
    """The key with the highest count; on a tie, ``prefer`` if it is one of them, else the
    first."""
    if not entries:
        return None
    best = max(entries.values())
    tied = [m for m, n in entries.items() if n == best]
    return prefer if prefer in tied else tied[0]


def _http_status(code: object) -> int | None:
    """A json failure's ``code`` when it is an HTTP error status (the provider's answer; gemini's
    own errors carry their exit code, 1 or 41 to 130, there)."""
    if isinstance(code, str) and code.strip().isdigit():
        code = int(code)
    if isinstance(code, int) and not isinstance(code, bool) and 400 <= code <= 599:
        return code
    return None


def _models(stats: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        m: events.obj(s, f"stats.models[{m!r}]")
        for m, s in events.obj(stats.get("models"), "models").items()
    }


def _roles(metrics: dict[str, Any]) -> dict[str, Any]:
    return events.obj(metrics.get("roles"), "roles")


def _total(metrics: Any) -> int:
    """``tokens.total`` of a model's (or a role's) metrics."""
    return events.count(
        events.obj(events.obj(metrics, "metrics").get("tokens"), "tokens").get("total")
    )


def _stream_tokens(model: str, entry: dict[str, Any]) -> TokenBreakdown:
    """stream-json's tokens of a model: ``input_tokens`` is the prompt, cached part included
    (``input`` the rest); thoughts are not printed apart: what the total holds beyond the
    prompt and the answer."""
    prompt, output, total, cached = (
        events.count(entry.get(k))
        for k in ("input_tokens", "output_tokens", "total_tokens", "cached")
    )
    if cached > prompt or prompt + output > total:
        raise UnparseableLine(f"stats.models.{model}: a part is larger than its whole")
    return events.breakdown(
        input=events.count(entry["input"]) if "input" in entry else prompt - cached,
        cache_read=cached,
        output=output,
        reasoning=total - prompt - output,
        total=total,
    )


def _json_tokens(tokens: dict[str, Any]) -> TokenBreakdown:
    """json's tokens of a model: ``input`` (the prompt less its cached part) and ``tool`` (tool
    use prompts) are input, ``candidates`` output, ``thoughts`` reasoning."""
    return events.breakdown(
        input=events.count(tokens.get("input")) + events.count(tokens.get("tool")),
        cache_read=events.count(tokens.get("cached")),
        output=events.count(tokens.get("candidates")),
        reasoning=events.count(tokens.get("thoughts")),
        total=events.count(tokens["total"]) if "total" in tokens else None,
    )


class GeminiParser(Parser):
    """Gemini CLI's ``stream-json`` and ``json`` output (see the module docstring)."""

    name = "gemini"
    reads_objects = True
    source = "`gemini --output-format stream-json` or `--output-format json`"
    records = "a run's result line or its JSON object"
    #: the stream-json event types (``JsonStreamEventType``)
    TYPES = frozenset({"init", "message", "tool_use", "tool_result", "error", "result"})

    @classmethod
    def looks_like(cls, data: dict[str, Any]) -> bool:
        if "type" in data:
            return data["type"] in cls.TYPES and isinstance(data.get("timestamp"), str)
        return isinstance(data.get("session_id"), str) and (
            isinstance(data.get("stats"), dict)
            or isinstance(data.get("error"), dict)
            or isinstance(data.get("response"), str)
        )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._session = ""
        self._init_model: str | None = None
        #: the last ``error`` event with severity error: the reason of a result without one
        self._said = ""
        #: (session, digest) -> json objects seen, for ids of identical objects
        self._seen: Counter[tuple[str, str]] = Counter()

    def parse(self, data: dict[str, Any]) -> list[Item]:
        if "type" not in data:
            return self._run_object(data)
        kind = data.get("type")
        if kind == "init":
            self._session = events.text(data.get("session_id"))
            model = events.text(data.get("model"))
            self._init_model, self._said = (model or None), ""
            return []
        if kind == "error" and data.get("severity") == "error":
            self._said = events.text(data.get("message"))
            return []
        if kind == "result":
            return self._result(data)
        return []

    def _pick(self, found: str | None) -> str:
        """The run's model: what ``stats`` names, else ``init.model`` unless an alias, else
        ``--model``, else the alias."""
        init = self._init_model
        chosen = found or (init if init and not is_alias(init) else None) or self.model or init
        if not chosen:
            raise UnparseableLine("the run names no model; pass --model")
        return chosen

    # -- stream-json ------------------------------------------------------------------------

    def _result(self, data: dict[str, Any]) -> list[Item]:
        at = events.line_time(data.get("timestamp"))
        if at is None:
            raise UnparseableLine("a result without its timestamp")
        said, self._said = self._said, ""
        error = events.obj(data.get("error"), "error")
        kind = events.text(error.get("type"))
        failed = data.get("status") != "success"
        if failed and kind == CANCELLED:
            return []  # the user stopped it: not the model's failure
        stats = events.obj(data.get("stats"), "stats")
        models = _models(stats)
        totals = {m: events.count(s.get("total_tokens")) for m, s in models.items()}
        model = self._pick(_most(totals, self._init_model))
        tokens = _stream_tokens(model, models.get(model, {}))
        items: list[Item] = []
        message = None
        if failed:
            message = (
                events.text(error.get("message")) or said or f"result status {data.get('status')}"
            )
            items, message = self._failure(model, message, kind == API_ERROR_TYPE, None, at)
        event = self.completion(
            model=model,
            session=self._session,
            completed_at=at,
            # the run's wall time, tools included; an error result prints 0: no latency
            latency_ms=events.count(stats.get("duration_ms")) or None,
            success=not failed,
            error=message,
            tokens=tokens,
            event_id=events.stable_id("gemini", self._session, events.text(data.get("timestamp"))),
        )
        return [event, *items]

    # -- json ---------------------------------------------------------------------------------

    def _run_object(self, data: dict[str, Any]) -> list[Item]:
        if "stats" not in data and "error" not in data:
            return []  # not a run's object
        session = events.text(data.get("session_id"))
        error = events.obj(data.get("error"), "error") if data.get("error") is not None else None
        if error is not None and events.text(error.get("type")) == CANCELLED:
            return []  # the user stopped it: not the model's failure
        models = _models(events.obj(data.get("stats"), "stats"))
        main = {m: _total(_roles(s).get("main")) for m, s in models.items() if "main" in _roles(s)}
        every = {m: _total(s) for m, s in models.items()}
        model = _most(main, None) or _most(every, None) or self.model
        if not model:
            raise UnparseableLine("the object names no model; pass --model")
        entry = models.get(model, {})
        now = self.arrived
        items: list[Item] = []
        message = None
        if error is not None:
            message = events.text(error.get("message")) or events.text(error.get("type")) or "error"
            status = _http_status(error.get("code"))
            items, message = self._failure(model, message, status is not None, status, now)
        key = (session, self.line_digest)
        self._seen[key] += 1
        event = self.completion(
            model=model,
            session=session,
            completed_at=now,
            # the model's API time in the run: the one duration printed
            latency_ms=events.count(events.obj(entry.get("api"), "api").get("totalLatencyMs"))
            or None,
            success=error is None,
            error=message,
            tokens=_json_tokens(events.obj(entry.get("tokens"), "tokens")),
            event_id=events.stable_id("gemini", session, self.line_digest, self._seen[key]),
        )
        return [event, *items]

    # -- both ---------------------------------------------------------------------------------

    def _failure(
        self, model: str, message: str, providers: bool, status: int | None, now: datetime
    ) -> tuple[list[Item], str]:
        """The limit a failed run's error names, and its text as stored. Only the provider's
        API error can be a limit; a 429 (its status, or the suffix gemini appends to one) whose
        text states no end is stored with `` (HTTP 429)`` so that ``record()`` reads it too."""
        if not providers:
            return [], limits.not_the_providers(message)
        if status == 429 or any(s in message for s in SUFFIXES_429):
            found, message_429 = limits.answer_429(message, None, now)
            return [events.limit_of(model, found, message, now)], message_429
        found_text = limits.from_text(message, now)
        if found_text is None:
            return [], message
        return [events.limit_of(model, found_text, message, now)], message
