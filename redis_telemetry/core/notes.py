"""This store's own limit writes, told to whoever watches them (the local read tier), so that
a decision made right after a write sees it without waiting for a read of Redis."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from .codec import PreparedEvent

#: Called with (model, end of the block in epoch ms; 0: the block was lifted; None: events
#: of the model were recorded, no block).
Watcher = Callable[[str, int | None], None]


def watch(core: Any, watcher: Watcher) -> None:
    """Have ``watcher`` told of ``core``'s (a ``StoreCore``'s) limit writes."""
    core.__dict__.setdefault("limit_watchers", []).append(watcher)


def unwatch(core: Any, watcher: Watcher) -> None:
    """Stop telling ``watcher``."""
    watchers: list[Watcher] = core.__dict__.get("limit_watchers", [])
    if watcher in watchers:
        watchers.remove(watcher)


def limited(core: Any, model: str, until_ms: int | None) -> None:
    """``core`` blocked ``model`` until ``until_ms`` (0: lifted its block)."""
    for watcher in core.__dict__.get("limit_watchers", ()):
        watcher(model, until_ms)


def recorded(core: Any, prepared: Sequence[PreparedEvent], limit_ms: int) -> None:
    """``core`` records ``prepared``: its limit errors block their models (until the end they
    name, else ``limit_ms`` from their completion, as ``record.lua`` blocks them); the other
    events' models are told once each."""
    if core.__dict__.get("limit_watchers"):
        told: set[str] = set()
        for p in prepared:
            if p.limit_reason:
                limited(core, p.model, p.limit_until_ms or p.score_ms + limit_ms)
            elif p.model not in told:
                told.add(p.model)
                for watcher in core.__dict__["limit_watchers"]:
                    watcher(p.model, None)
