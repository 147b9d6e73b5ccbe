"""pi: ``pi --mode json`` (pi-mono's coding agent, session format version 3).

Modelled on pi-mono's ``AgentSessionEvent`` (packages/coding-agent/docs/json.md) and
``AssistantMessage`` / ``Usage`` / ``StopReason`` (packages/ai/src/types.ts): the first line is
the session header ``{"type": "session", "version": 3, "id", ...}``; each assistant message
arrives as ``message_start`` then ``message_end`` (and again inside ``turn_end``), with
``provider``, ``model``, ``usage`` (``input``, ``output``, ``cacheRead``, ``cacheWrite``,
``totalTokens``, ``cost.total``), ``stopReason`` (stop | length | toolUse | error | aborted),
``errorMessage`` and ``timestamp`` (epoch ms, when the call began). pi retries some errors
itself: ``auto_retry_start`` follows the failed message, ``auto_retry_end`` says how it went.

The seed's shape (``turn_end`` with ``sessionId`` and ``latencyBreakdown.totalMs``, no
``message_end``) is still read.

Latency: pi prints no end time. Following live (the ``message_start`` arrives within
``LIVE_SLACK`` of the call's own start time), it is the time from the arrival of
``message_start`` to that of ``message_end``. Otherwise (a file read later, or lines that
arrive together, under 1 ms apart) it is unknown: the call is recorded with ``latency_ms``
None (it counts for success, tokens and cost, not latency). A failed call is held until the
next event says whether pi
retried it: a retried failure is recorded without its limit.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from .events import (
    Completion,
    Item,
    Parser,
    UnparseableLine,
    breakdown,
    cost,
    count,
    live_latency,
    ms_timestamp,
    obj,
    stable_id,
    text,
)

SUCCESS = frozenset({"stop", "length", "toolUse"})
#: a message_start that arrives this soon after the call began is being followed live
LIVE_SLACK = timedelta(seconds=5)


class PiParser(Parser):
    """pi's ``--mode json`` (see the module docstring)."""

    name = "pi"
    source = "`pi --mode json`"
    records = "assistant message_end lines"
    #: the event types of ``--mode json`` (``AgentSessionEvent``), which carry no session id
    TYPES = frozenset(
        {"agent_start", "agent_end", "turn_start", "turn_end", "message_start"}
        | {"message_update", "message_end", "tool_execution_start", "tool_execution_update"}
        | {"tool_execution_end", "auto_retry_start", "auto_retry_end"}
        | {"auto_compaction_start", "auto_compaction_end"}
    )

    @classmethod
    def looks_like(cls, data: dict[str, Any]) -> bool:
        kind = data.get("type")
        return (kind == "session" and "version" in data) or (
            kind in cls.TYPES and "session_id" not in data and "sessionID" not in data
        )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._session = ""
        self._counted: set[str] = set()
        #: message id -> arrival of its message_start, for calls followed live
        self._live_start: dict[str, datetime] = {}
        #: failed calls waiting to learn whether pi retries them: (key, item, limits)
        self._held: list[tuple[str, Item, list[Item]]] = []
        self._unsettled: list[tuple[str, Item, list[Item]]] = []

    def parse(self, data: dict[str, Any]) -> list[Item]:
        kind = data.get("type")
        if kind == "session":
            self._session = text(data.get("id")) or text(data.get("sessionId"))
            return []
        previous = self._session
        if isinstance(data.get("sessionId"), str):  # the seed's shape names it on each event
            self._session = data["sessionId"]
        try:
            return self._parse(kind, data)
        except BaseException:
            self._session = previous
            raise

    def _parse(self, kind: object, data: dict[str, Any]) -> list[Item]:
        if kind not in ("message_start", "message_end", "turn_end"):
            return []
        message = obj(data.get("message"), "message")
        if message.get("role") != "assistant":
            return []
        key = self._message_key(message, data)
        if kind == "message_start":
            if self._is_live(message):
                self._live_start[key] = self.arrived
            return []
        if key in self._counted:
            return []  # turn_end repeats the message_end already counted
        items = self._completion(key, message, data)
        self._counted.add(key)
        self._live_start.pop(key, None)
        return items

    def before(self, data: dict[str, Any]) -> list[Item]:
        """Settle held failures: pi retried them (``auto_retry_start``), or they were final."""
        kind = data.get("type")
        self._unsettled = list(self._held)
        if not self._held or kind in ("agent_end", "message_update"):
            return []
        if kind == "turn_end":
            message = data.get("message")
            if isinstance(message, dict) and self._message_key(message, data) == self._held[-1][0]:
                return []  # the failed message again, as turn_end repeats it
        if kind != "auto_retry_start":
            return self.at_end()
        retried: list[Item] = []
        for _, item, _limits in self._held:
            if isinstance(item, Completion):  # the call failed, but it is no limit
                note = f"transient error; pi retried the call (attempt {data.get('attempt')})"
                item = Completion(item.event.model_copy(update={"error": note}))
            retried.append(item)
        self._held.clear()
        return retried

    def undo_before(self) -> None:
        self._held = self._unsettled

    def at_end(self) -> list[Item]:
        """Failures nothing retried are final: recorded, with the limit their text names."""
        items: list[Item] = []
        for _, item, limits in self._held:
            items += [item, *limits]
        self._held.clear()
        return items

    def _message_key(self, message: dict[str, Any], data: dict[str, Any]) -> str:
        if "timestamp" in message:
            return str(count(message["timestamp"]))
        if "turnIndex" in data:
            return f"turn{count(data['turnIndex'])}"
        return self.line_digest

    def _is_live(self, message: dict[str, Any]) -> bool:
        if "timestamp" not in message:
            return False
        began = ms_timestamp(message["timestamp"])
        return abs(self.arrived - began) <= LIVE_SLACK

    def _completion(self, key: str, message: dict[str, Any], data: dict[str, Any]) -> list[Item]:
        provider, name = text(message.get("provider")), text(message.get("model"))
        model = self.pick_model(f"{provider}/{name}" if provider and name else name or None)
        stop = text(message.get("stopReason"))
        if stop == "aborted":
            return []  # the user stopped it: not the model's failure
        if stop not in SUCCESS and stop != "error":
            raise UnparseableLine(f"unknown stopReason {stop!r}")
        usage = obj(message.get("usage"), "message.usage")
        tokens = breakdown(
            input=count(usage.get("input")),
            output=count(usage.get("output")),
            cache_read=count(usage.get("cacheRead")),
            cache_write=count(usage.get("cacheWrite")),
            total=count(usage["totalTokens"]) if "totalTokens" in usage else None,
        )
        call_cost = cost(obj(usage.get("cost"), "usage.cost").get("total"))
        error = text(message.get("errorMessage")) or f"stopReason: {stop}"
        item: Item = self.completion(
            model=model,
            session=self._session,
            completed_at=self.arrived,
            latency_ms=self._latency(key, data),
            success=stop in SUCCESS,
            tokens=tokens,
            cost_usd=call_cost,
            error=None if stop in SUCCESS else error,
            event_id=stable_id("pi", self._session, key),
        )
        if stop in SUCCESS:
            return [item]
        began = ms_timestamp(message["timestamp"]) if "timestamp" in message else self.arrived
        self._held.append((key, item, self.failure_limit(model, error, began)))
        return []

    def _latency(self, key: str, data: dict[str, Any]) -> int | None:
        start = self._live_start.get(key)
        if start is not None:
            return live_latency(start, self.arrived)  # None: lines read at once, a file
        seed = obj(data.get("latencyBreakdown"), "latencyBreakdown")
        return count(seed["totalMs"]) if "totalMs" in seed else None
