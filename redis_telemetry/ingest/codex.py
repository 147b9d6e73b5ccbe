"""OpenAI Codex CLI: ``codex exec --json`` (Codex CLI 0.171.0).

Modelled on ``codex-rs/exec/src/exec_events.rs`` (``ThreadEvent``, ``Usage``), printed by
``codex-rs/exec/src/event_processor_with_jsonl_output.rs``, with the error texts of
``codex-rs/protocol/src/error.rs`` (``CodexErr``, ``UsageLimitReachedError``). One JSON object a
line: ``thread.started`` (``thread_id``), ``turn.started``, ``item.started`` /
``item.updated`` / ``item.completed`` (commands, patches, messages, to-do lists; an ``error``
item is a warning), ``turn.completed`` (``usage``), ``turn.failed`` (``error.message``) and a
top-level ``error`` (``message``). No line carries a time, a model or a cost.

One ``codex exec`` runs one turn: one completion per ``turn.completed`` (success) or
``turn.failed`` (failure), for ``--model`` (the stream names none); the session is the
``thread_id``, which ``codex exec resume`` prints again. A top-level ``error`` is no failure:
codex prints one for each retry it makes itself ("Reconnecting... 2/5 (stream disconnected
…)"), and one before the ``turn.failed`` that ends a run, with the same text.

``usage`` is the thread's running total (``ThreadTokenUsage.total``), so a resumed run's
``turn.completed`` restates the earlier runs' tokens: a turn counts the increase over the same
thread's previous total (every field at least as large); a thread seen for the first time, or
a total that went down, counts whole. The fields follow the OpenAI convention:
``cached_input_tokens`` and ``cache_write_input_tokens`` are parts of ``input_tokens``,
``reasoning_output_tokens`` part of ``output_tokens`` (a field an older release lacks counts 0).

Latency: followed live, from the arrival of ``turn.started`` to that of the turn's end (the
whole run, commands included, as Claude's ``duration_ms``); from a file it is unknown.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..core import limits
from . import events
from .events import Item, Parser, UnparseableLine

#: ``usage`` fields, in the order the thread totals are kept
USAGE_KEYS = (
    "input_tokens",
    "cached_input_tokens",
    "cache_write_input_tokens",
    "output_tokens",
    "reasoning_output_tokens",
)
#: How codex's own failures begin (``CodexErr``'s texts for its sandbox, its processes and
#: itself): not the provider's answer, so never a limit, whatever a command printed into them.
CODEX_OWN = (
    "sandbox error:",
    "Fatal error:",
    "spawn failed",
    "timeout waiting for child process",
    "codex-linux-sandbox was required",
    "unsupported operation:",
    "Missing environment variable:",
    "interrupted (Ctrl-C)",
    "turn aborted",
    "internal error; agent loop died",
)

Totals = tuple[int, ...]


def turn_tokens(previous: Totals | None, totals: Totals) -> Totals:
    """A turn's own share of the thread's running totals: the increase over the previous
    ones when every field grew or stayed; else (a new thread, or totals that went down) the
    totals whole."""
    if previous is not None and all(n >= p for n, p in zip(totals, previous, strict=True)):
        return tuple(n - p for n, p in zip(totals, previous, strict=True))
    return totals


class CodexParser(Parser):
    """Codex CLI's ``exec --json`` (see the module docstring)."""

    name = "codex"
    needs_model = True
    source = "`codex exec --json`"
    records = "turn.completed and turn.failed lines"
    #: the ``ThreadEvent`` types
    TYPES = frozenset(
        {"thread.started", "turn.started", "turn.completed", "turn.failed", "item.started"}
        | {"item.updated", "item.completed", "item.plan.delta", "request_user_input"}
    )

    @classmethod
    def looks_like(cls, data: dict[str, Any]) -> bool:
        kind = data.get("type")
        return kind in cls.TYPES or (kind == "error" and data.keys() == {"type", "message"})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._thread = ""
        #: arrival of the open turn's ``turn.started``, when followed live
        self._started: datetime | None = None
        #: thread -> its running totals at its last ``turn.completed``
        self._totals: dict[str, Totals] = {}
        #: (thread, totals, kind) -> turns that ended so, for ids of turns with the same totals
        self._ends: dict[tuple[str, Totals, str], int] = {}

    def parse(self, data: dict[str, Any]) -> list[Item]:
        kind = data.get("type")
        if kind == "thread.started":
            self._thread, self._started = events.text(data.get("thread_id")), None
            return []
        if kind == "turn.started":
            self._started = self.arrived if self.followed else None
            return []
        if kind == "turn.completed":
            return self._completed(events.obj(data.get("usage"), "usage"))
        if kind == "turn.failed":
            message = (
                events.text(events.obj(data.get("error"), "error").get("message")) or "turn failed"
            )
            return self._failed(message)
        return []  # items, and top-level errors: codex's own retries and warnings

    def _completed(self, usage: dict[str, Any]) -> list[Item]:
        totals = tuple(events.count(usage.get(k)) for k in USAGE_KEYS)
        thread = self._thread
        d_in, d_cached, d_write, d_out, d_reasoning = turn_tokens(self._totals.get(thread), totals)
        if d_cached + d_write > d_in or d_reasoning > d_out:
            raise UnparseableLine("usage: a part is larger than its whole")
        event = self._end(
            "ok",
            totals,
            success=True,
            tokens=events.breakdown(
                input=d_in - d_cached - d_write,
                cache_read=d_cached,
                cache_write=d_write,
                output=d_out - d_reasoning,
                reasoning=d_reasoning,
                total=d_in + d_out,
            ),
        )
        if any(totals):  # all zero: codex had no usage to report, the totals stand
            self._totals[thread] = totals
        return [event]

    def _failed(self, message: str) -> list[Item]:
        now = self.arrived
        model = self.pick_model(None)
        found = None if message.startswith(CODEX_OWN) else limits.from_text(message, now, self.zone)
        if found is None:
            error = limits.not_the_providers(message)
        else:  # in the words record() reads: it knows no zone but UTC
            error = limits.state_end(message, found.until, now)
        totals = self._totals.get(self._thread, (0,) * len(USAGE_KEYS))
        event = self._end("failed", totals, success=False, error=error)
        return [event] if found is None else [event, events.limit_of(model, found, message, now)]

    def _end(self, kind: str, totals: Totals, **fields: Any) -> Item:
        """The completion that ends the open turn. Its id is the thread, its running totals
        and how it ended: the same in a re-run, and apart from the other turns of the thread
        in whatever file each run was logged (a failed turn adds no tokens, so failures are
        counted at the thread's totals)."""
        key = (self._thread, totals, kind)
        nth = self._ends.get(key, 0) + 1
        event = self.completion(
            model=self.pick_model(None),
            session=self._thread,
            completed_at=self.arrived,
            latency_ms=events.live_latency(self._started, self.arrived) if self.followed else None,
            event_id=events.stable_id("codex", self._thread, *totals, f"{kind}{nth}"),
            **fields,
        )
        self._ends[key], self._started = nth, None
        return event
