"""``jsonl``: one ``CompletionEvent`` per line, in the reference's serde JSON.

A line without ``event_id`` gets one derived from the line's text, so the same line ingested
twice counts once. A line without ``completed_at`` is stamped with the ingest clock. An
``error`` longer than the store takes is cut to fit.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from ..core import rules
from ..core.backup import describe_validation
from ..models import CompletionEvent
from .events import Completion, Item, Parser, UnparseableLine


class JsonlParser(Parser):
    """One ``CompletionEvent`` per line, in serde JSON."""

    name = "jsonl"
    source = "one CompletionEvent per line"
    records = "every line that is a CompletionEvent"

    @classmethod
    def looks_like(cls, data: dict[str, Any]) -> bool:
        return {"model", "success"} <= data.keys() and bool({"latency_ms", "tokens"} & data.keys())

    def parse(self, data: dict[str, Any]) -> list[Item]:
        if self.model:
            data["model"] = self.model
        if self.session is not None:
            data["session_id"] = self.session
        if "completed_at" not in data:
            data["completed_at"] = self.clock()
        if isinstance(data.get("error"), str):
            data["error"] = rules.clip_error(data["error"])  # cut to fit, not refused
        if data.get("event_id") is None:
            data["event_id"] = f"jsonl:{self.line_digest}"
        try:
            event = CompletionEvent.model_validate(data)
        except ValidationError as exc:
            raise UnparseableLine(describe_validation(exc)) from None
        items: list[Item] = [Completion(event)]
        if not event.success and event.error:
            items += self.failure_limit(event.model, event.error, event.completed_at)
        return items
