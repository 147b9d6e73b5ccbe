"""This store's own limit writes, told to whoever watches them (the local read tier), so that
a decision made right after a write sees it without waiting for a read of Redis."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .codec import PreparedEvent

#: Called with (model, end of the block in epoch ms; 0: the block was lifted; None: events
#: of the model were recorded, no block).
Watcher = Callable[[str, int | None], None]


class Notes:
    """The watchers of one store's limit writes (a ``StoreCore`` holds one)."""

    def __init__(self) -> None:
        self._watchers: list[Watcher] = []

    def watch(self, watcher: Watcher) -> None:
        """Have ``watcher`` told of this store's limit writes."""
        self._watchers.append(watcher)

    def unwatch(self, watcher: Watcher) -> None:
        """Stop telling ``watcher``."""
        if watcher in self._watchers:
            self._watchers.remove(watcher)

    def limited(self, model: str, until_ms: int | None) -> None:
        """The store blocked ``model`` until ``until_ms`` (0: lifted its block)."""
        for watcher in self._watchers:
            watcher(model, until_ms)

    def recorded(self, prepared: Sequence[PreparedEvent], limit_ms: int) -> None:
        """The store records ``prepared``: its limit errors block their models (until the end
        they name, else ``limit_ms`` from their completion, as ``record.lua`` blocks them);
        the other events' models are told once each."""
        if not self._watchers:
            return
        told: set[str] = set()
        for p in prepared:
            if p.limit_reason:
                self.limited(p.model, p.limit_until_ms or p.score_ms + limit_ms)
            elif p.model not in told:
                told.add(p.model)
                self.limited(p.model, None)
