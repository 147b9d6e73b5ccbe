"""Claude Code: ``claude -p --output-format stream-json --verbose`` (2.1.x; older shapes too).

``--output-format json`` is read too: its one result object, or with ``--verbose`` the run's
messages as one JSON array.

Modelled on Claude Code's stream-json messages: ``system``/``init`` (``model``, ``session_id``),
``assistant`` (``message.model``; ``<synthetic>`` marks Claude Code's own notices),
``rate_limit_event`` (``rate_limit_info.status``, ``resetsAt`` in epoch seconds) and
``result`` (``subtype``, ``is_error``, ``duration_ms``, ``total_cost_usd`` or the older
``cost_usd``, ``usage``, ``modelUsage``, ``errors``, ``api_error_status``, ``uuid``).

Checked against the Claude Agent SDK's message types (claude-agent-sdk-python 0.2.143, which
bundles Claude Code 2.1.240: ``ResultMessage``, ``RateLimitInfo``, ``ConversationResetMessage``)
and the TypeScript SDK's changelog.

One completion per ``result``, credited to the run's main model. ``result`` lines carry no
time; since Claude Code 2.1.211 ``assistant`` lines carry ``timestamp`` (ISO-8601, as ``user``
lines and transcript entries do). ``completed_at``, and the time relative reset times ("resets
3pm") count from, is the result's own ``timestamp`` if it has one, else the latest
``timestamp`` of the session's lines before it, else the ingest clock's.

A result with ``terminal_reason`` ``aborted_streaming`` or ``aborted_tools`` is the user
interrupting the run: not the model's failure, nothing is recorded (as for pi's ``aborted``).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from ..core import limits
from .events import (
    Item,
    Limit,
    Parser,
    UnparseableLine,
    breakdown,
    cost,
    count,
    limit_of,
    line_time,
    obj,
    stable_id,
    text,
)

SYNTHETIC = "<synthetic>"
#: ``terminal_reason`` values of a run the user interrupted
INTERRUPTED = frozenset({"aborted_streaming", "aborted_tools"})
_DISPLAY_SUFFIX = re.compile(r"\[[^\]]*\]$")
_USAGE_KEYS = (
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
)
_MODEL_USAGE_KEYS = (
    "inputTokens",
    "outputTokens",
    "cacheReadInputTokens",
    "cacheCreationInputTokens",
)


def api_model(name: object) -> str | None:
    """A model name as the API knows it: no display suffix such as ``[1m]``; never
    ``<synthetic>``."""
    if not isinstance(name, str):
        return None
    name = _DISPLAY_SUFFIX.sub("", name.strip())
    return name if name and name != SYNTHETIC else None


def main_model_of(result: dict[str, Any]) -> str | None:
    """Without an init line: the ``modelUsage`` entry that did the run's work, i.e. the one
    whose tokens are the result's ``usage``; else the one that cost the most."""
    entries = {
        m: u
        for k, u in obj(result.get("modelUsage"), "modelUsage").items()
        if (m := api_model(k)) and isinstance(u, dict)
    }
    if not entries:
        return None
    usage = obj(result.get("usage"), "usage")
    wanted = tuple(count(usage.get(k)) for k in _USAGE_KEYS)
    for model, u in entries.items():
        if any(wanted) and tuple(count(u.get(k)) for k in _MODEL_USAGE_KEYS) == wanted:
            return model
    return max(
        entries,
        key=lambda m: (cost(entries[m].get("costUSD")), count(entries[m].get("outputTokens"))),
    )


class ClaudeParser(Parser):
    """Claude Code's stream-json (see the module docstring)."""

    name = "claude"
    #: ``--output-format json --verbose`` prints the whole run as one JSON array
    reads_arrays = True
    source = "`claude -p --output-format stream-json --verbose`"
    records = "a run's result line"
    #: the message types of stream-json, each with a ``session_id``
    TYPES = frozenset(
        {"system", "assistant", "user", "result", "rate_limit_event", "stream_event"}
        | {"conversation_reset"}
    )

    @classmethod
    def looks_like(cls, data: dict[str, Any]) -> bool:
        return data.get("type") in cls.TYPES and isinstance(data.get("session_id"), str)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._init_model: dict[str, str] = {}
        self._assistant_model: dict[str, str] = {}
        #: session -> (cost, token counts) of its previous result
        self._cumulative: dict[str, tuple[float, tuple[int, ...]]] = {}
        self._results: dict[str, int] = {}
        #: session -> rate-limit ends waiting for the run's model; sessions with one applied
        self._pending_limits: dict[str, list[Limit]] = {}
        self._structured_limit: set[str] = set()
        #: session -> the latest ``timestamp`` its lines carried
        self._said_at: dict[str, datetime] = {}

    def parse(self, data: dict[str, Any]) -> list[Item]:
        session = text(data.get("session_id"))
        said = line_time(data.get("timestamp"))  # raises before any state changes
        items = self._parse(session, data, said)
        if said is not None and data.get("type") != "conversation_reset":
            self._said_at[session] = max(said, self._said_at.get(session, said))
        return items

    def _parse(self, session: str, data: dict[str, Any], said: datetime | None) -> list[Item]:
        kind = data.get("type")
        if kind == "conversation_reset":  # /clear: later lines come under a new session id
            self._cumulative.pop(session, None)
            return []
        if kind == "system" and data.get("subtype") == "init":
            if model := api_model(data.get("model")):
                self._init_model[session] = model
            return []
        if kind == "assistant":
            message = obj(data.get("message"), "message")
            if data.get("parent_tool_use_id") is None and (m := api_model(message.get("model"))):
                self._assistant_model[session] = m
            return []
        if kind == "rate_limit_event":
            return self._rate_limit(session, data)
        if kind == "result":
            return self._result(session, data, said or self._said_at.get(session))
        return []

    def _known_model(self, session: str) -> str | None:
        return self.model or self._init_model.get(session) or self._assistant_model.get(session)

    def _rate_limit(self, session: str, data: dict[str, Any]) -> list[Item]:
        found = limits.from_rate_limit_info(data.get("rate_limit_info"))
        if found is None:
            return []  # allowed, allowed_warning, or rejected with paid overage: never a block
        info = obj(data.get("rate_limit_info"), "rate_limit_info")
        reason = f"rate_limit_event: {text(info.get('rateLimitType')) or 'rejected'}"
        self._structured_limit.add(session)  # nothing below can fail
        model = self._known_model(session)
        if model is None:
            self._pending_limits.setdefault(session, []).append(Limit("", found.until, reason))
            return []
        return [Limit(model, found.until, reason)]

    def _result(self, session: str, data: dict[str, Any], said: datetime | None) -> list[Item]:
        model = self.pick_model(self._known_model(session) or main_model_of(data))
        duration = data["duration_ms"]
        usage = obj(data.get("usage"), "usage")
        counts = tuple(count(usage.get(k)) for k in _USAGE_KEYS)
        total_cost = cost(data.get("total_cost_usd", data.get("cost_usd")))
        run_cost, run_counts = self._increment(self._cumulative.get(session), total_cost, counts)
        subtype = text(data.get("subtype"))
        failed = data.get("is_error") is True or subtype.startswith("error")
        error = self._error_text(data, subtype) if failed else None
        provider = self._providers(data, error) if error is not None else ""
        if error is not None and not limits.is_limit_text(provider):
            error = limits.not_the_providers(error)  # a tool's failure blocks nothing
        position = self._results.get(session, 0) + 1
        uuid = text(data.get("uuid"))
        event_id = f"claude:{uuid}" if uuid else stable_id("claude", session, f"result{position}")
        now = said or self.arrived
        items: list[Item] = []
        interrupted = text(data.get("terminal_reason")) in INTERRUPTED  # the user stopped it
        if not interrupted:
            items.append(
                self.completion(
                    model=model,
                    session=session,
                    completed_at=now,
                    latency_ms=count(duration),
                    success=not failed,
                    tokens=breakdown(
                        input=run_counts[0],
                        output=run_counts[1],
                        cache_read=run_counts[2],
                        cache_write=run_counts[3],
                    ),
                    cost_usd=round(run_cost, 12),
                    error=error,
                    event_id=event_id,
                )
            )
        # nothing below can fail: the line is read
        items += [Limit(model, p.until, p.reason) for p in self._pending_limits.pop(session, [])]
        if provider and not interrupted:
            items += self._failure_limit(session, model, provider, data, now)
        self._results[session] = position
        self._cumulative[session] = (total_cost, counts)
        return items

    def _failure_limit(
        self, session: str, model: str, error: str, data: dict[str, Any], now: datetime
    ) -> list[Item]:
        status = data.get("api_error_status")
        found = limits.from_status(status, error, None, now)
        if found is None:
            return []
        if session in self._structured_limit:
            return []  # the run's rate_limit_event already said when it ends
        return [limit_of(model, found, error, now)]

    @staticmethod
    def _providers(data: dict[str, Any], error: str) -> str:
        """What of a failed run's error is the provider's API error ('' when none is): all of
        it when the run names an ``api_error_status``; else the ``result`` text (Claude Code's
        message for the API's answer: "API Error: 429 …", "You've hit your limit · resets
        3pm") and the ``errors[]`` entries that are "API Error" lines. The other entries are
        failures of the run itself (a tool's, a hook's, an abort): never a limit."""
        if data.get("api_error_status") is not None:
            return error
        errors = data.get("errors")
        entries = [str(e) for e in errors if e] if isinstance(errors, list) else []
        parts = [text(data.get("result")), *(e for e in entries if limits.is_api_error(e))]
        return "\n".join(p for p in parts if p)

    @staticmethod
    def _error_text(data: dict[str, Any], subtype: str) -> str:
        errors = data.get("errors")
        if isinstance(errors, list) and (parts := [str(e) for e in errors if e]):
            return "; ".join(parts)
        return text(data.get("result")) or subtype or "error"

    @staticmethod
    def _increment(
        previous: tuple[float, tuple[int, ...]] | None, total_cost: float, counts: tuple[int, ...]
    ) -> tuple[float, tuple[int, ...]]:
        """This result's own share. Under multi-turn stream-json input one process restates its
        running totals (cost, tokens) in each result, so a result whose totals all grew
        since the session's previous one counts only the growth; any total that went down
        means a new process, whose result counts whole."""
        if previous is None:
            return total_cost, counts
        before_cost, before = previous
        if total_cost < before_cost or any(n < b for n, b in zip(counts, before, strict=True)):
            return total_cost, counts  # totals went down: not the same process's running sum
        return max(0.0, total_cost - before_cost), tuple(
            n - b for n, b in zip(counts, before, strict=True)
        )


class ClaudeLimitsParser(ClaudeParser):
    """Claude Code's stream-json for a session whose API calls reach the store through OTLP
    (``redis_telemetry.otlp``): its limits only. OTLP gives one event per API call, stdout
    one per run, and the two cannot be told apart by id; so each call is counted once, by
    OTLP, and stdout adds what OTLP does not carry: the ``rate_limit_event`` resets and the
    reset times of a failed run's limit text."""

    name = "claude-limits"
    source = (
        "`claude -p --output-format stream-json --verbose`, its limits only "
        "(the calls come through OTLP)"
    )
    records = "a limit (the runs themselves are left to OTLP)"

    @classmethod
    def looks_like(cls, data: dict[str, Any]) -> bool:
        return False  # the same lines as claude's: a guess names claude

    def parse(self, data: dict[str, Any]) -> list[Item]:
        items = super().parse(data)
        kept: list[Item] = [i for i in items if isinstance(i, Limit)]
        self.elsewhere += len(items) - len(kept)
        return kept


__all__ = ["ClaudeLimitsParser", "ClaudeParser", "UnparseableLine", "api_model", "main_model_of"]
