"""The local read tier: routing decisions from memory, refreshed off the caller's path.

``LocalTier(store)`` (blocking, the refresh in a thread) and ``AsyncLocalTier(astore)`` (the
refresh in a task) answer ``rank_models`` and ``select_model`` from the snapshots they last
read; the rules (how old data may get, the breaker, this store's own writes) are
``core.tier``'s, shared by both.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Unpack

from .aio import AsyncTelemetryStore
from .core.routing import Strategy, choose
from .core.tier import (
    DEFAULT_TIER,
    PERFORMANCE,
    Choice,
    Decision,
    RankOptions,
    Refreshed,
    Request,
    Requests,
    TierSettings,
    TierState,
    limits_op,
    performance_op,
    with_providers,
)
from .errors import TelemetryError, TelemetryUnavailable
from .store import TelemetryStore

__all__ = ["AsyncLocalTier", "Choice", "Decision", "LocalTier", "TierSettings"]


class _Tier:
    """What both tiers share: the state, the checked requests, the watch on own writes."""

    _flight: Any
    _store_type: type
    _wrong_store: str

    def __init__(
        self,
        store: Any,
        settings: TierSettings = DEFAULT_TIER,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store: Any = self._checked(store)
        self._flight = None
        self.state = TierState(settings, clock)
        self._requests = Requests()
        self.store._core.notes.watch(self._own_limit)

    def _checked(self, store: Any) -> Any:
        if not isinstance(store, self._store_type):
            raise TelemetryError(self._wrong_store)
        return store

    @property
    def settings(self) -> TierSettings:
        return self.state.settings

    def _own_limit(self, model: str, until_ms: int | None) -> None:
        self.state.own_limit(model, until_ms, self.state.clock())

    def close(self) -> None:
        """Stop watching the store's writes (the store stays open)."""
        self.store._core.notes.unwatch(self._own_limit)

    def _ask(self, request: Request) -> bool:
        """Note a decision's models and start the refresh that is due, if none is in flight;
        True when one of the models was never read (the caller waits: ``_first_read``)."""
        state = self.state
        cold = state.want(request.models)
        if self._flight is None and (kind := state.due(state.clock())) is not None:
            self._start(kind, state.clock())
        return cold

    def _first_read(self, models: list[str]) -> Iterator[float]:
        """Until ``models`` are read, start the reads they need and yield how long (seconds)
        to wait for the one in flight, up to ``first_read_secs`` in all; then raise
        ``TelemetryUnavailable`` if they are still not read (at once while the breaker
        holds: no refresh is then due)."""
        state = self.state
        end = time.monotonic() + state.settings.first_read_secs
        while state.unread(models):
            if self._flight is None:
                if (kind := state.due(state.clock())) is None:
                    break
                self._start(kind, state.clock())
            left = end - time.monotonic()
            if left <= 0:
                break
            yield left
        if state.unread(models):
            why = state.error if state.error is not None else "the first read did not end in time"
            raise TelemetryUnavailable(f"the local read tier has no data yet: {why}")

    def _start(self, kind: str, now: float) -> None:
        raise NotImplementedError

    def _refresh_op(self, kind: str, models: list[str]) -> Any:
        core = self.store._core
        if kind == PERFORMANCE:
            return with_providers(core, performance_op(core, models), models)
        return with_providers(core, limits_op(core, models), models)

    @staticmethod
    def _landed(kind: str, started: float, got: Any) -> Refreshed:
        read, providers = got
        if kind == PERFORMANCE:
            return Refreshed(kind, started, read, {}, providers)
        return Refreshed(kind, started, {}, read, providers)


class LocalTier(_Tier):
    """Decisions of a ``TelemetryStore`` from memory (see ``core.tier.TierSettings`` for how
    old the data may get). Thread-safe; one refresh is in flight at a time, in a thread of its
    own, and concurrent callers share it. Limits set or cleared and limit errors recorded
    through ``store`` show in the next decision at once."""

    _store_type = TelemetryStore
    _wrong_store = "LocalTier needs a TelemetryStore; use AsyncLocalTier"
    _flight: threading.Thread | None

    def __init__(
        self,
        store: TelemetryStore,
        settings: TierSettings = DEFAULT_TIER,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lock = threading.Lock()
        self._landing = threading.Condition(self._lock)
        super().__init__(store, settings, clock=clock)

    def _own_limit(self, model: str, until_ms: int | None) -> None:
        with self._lock:
            super()._own_limit(model, until_ms)

    def rank_models(
        self,
        candidates: Sequence[str],
        strategy: Strategy | str = Strategy.FASTEST,
        **options: Unpack[RankOptions],
    ) -> Decision:
        """``rank_models`` from memory, with the data's age; raises ``TelemetryUnavailable``
        when the data is past ``stale_after`` or a model was never read and cannot be."""
        request = self._requests.get(candidates, strategy, options)
        state = self.state
        with self._lock:
            if self._ask(request):
                for left in self._first_read(request.models):
                    self._landing.wait(left)
            now = state.clock()
            state.check_usable(now)
            return state.decision(request, now)

    def select_model(
        self,
        candidates: Sequence[str],
        strategy: Strategy | str = Strategy.FASTEST,
        *,
        exploration: float = 0.0,
        rng: random.Random | None = None,
        **options: Unpack[RankOptions],
    ) -> Choice:
        """``select_model`` from memory (see ``rank_models``), with the data's age."""
        d = self.rank_models(candidates, strategy, **options)
        return Choice(choose(d.ranking, exploration, rng), d.age_secs, d.stale)

    def settle(self, timeout: float | None = None) -> bool:
        """Wait for the refresh in flight, if any, to end; False when it is still running."""
        with self._lock:
            return self._landing.wait_for(lambda: self._flight is None, timeout=timeout)

    def _start(self, kind: str, now: float) -> None:
        """Start a refresh of ``kind`` in its own thread (the lock is held)."""
        kind, started, models = self.state.started(kind, now)
        self._flight = threading.Thread(
            target=self._refresh,
            args=(kind, started, models),
            name="redis-telemetry-tier",
            daemon=True,
        )
        self._flight.start()

    def _refresh(self, kind: str, started: float, models: list[str]) -> None:
        try:
            got = self.store._run(self._refresh_op(kind, models))
        except Exception as exc:  # the breaker holds, whatever the failure
            with self._lock:
                self.state.failed(exc, self.state.clock())
                self._flight = None
                self._landing.notify_all()
            return
        with self._lock:
            self.state.done(self._landed(kind, started, got))
            self._flight = None
            self._landing.notify_all()


class AsyncLocalTier(_Tier):
    """``LocalTier`` for an ``AsyncTelemetryStore``: the refresh runs in a task of the
    store's event loop; concurrent callers share it."""

    _store_type = AsyncTelemetryStore
    _wrong_store = "AsyncLocalTier needs an AsyncTelemetryStore; use LocalTier"
    _flight: asyncio.Task[None] | None

    async def rank_models(
        self,
        candidates: Sequence[str],
        strategy: Strategy | str = Strategy.FASTEST,
        **options: Unpack[RankOptions],
    ) -> Decision:
        """As ``LocalTier.rank_models``."""
        request = self._requests.get(candidates, strategy, options)
        state = self.state
        if self._ask(request):
            for left in self._first_read(request.models):
                assert self._flight is not None  # _first_read started one
                await asyncio.wait([asyncio.shield(self._flight)], timeout=left)
        now = state.clock()
        state.check_usable(now)
        return state.decision(request, now)

    async def select_model(
        self,
        candidates: Sequence[str],
        strategy: Strategy | str = Strategy.FASTEST,
        *,
        exploration: float = 0.0,
        rng: random.Random | None = None,
        **options: Unpack[RankOptions],
    ) -> Choice:
        """As ``LocalTier.select_model``."""
        d = await self.rank_models(candidates, strategy, **options)
        return Choice(choose(d.ranking, exploration, rng), d.age_secs, d.stale)

    async def settle(self) -> None:
        """Wait for the refresh in flight, if any, to end."""
        if self._flight is not None:
            await asyncio.wait([asyncio.shield(self._flight)])

    def _start(self, kind: str, now: float) -> None:
        kind, started, models = self.state.started(kind, now)
        self._flight = asyncio.get_running_loop().create_task(self._refresh(kind, started, models))

    async def _refresh(self, kind: str, started: float, models: list[str]) -> None:
        try:
            got = await self.store._run(self._refresh_op(kind, models))
        except Exception as exc:  # the breaker holds, whatever the failure
            self.state.failed(exc, self.state.clock())
        else:
            self.state.done(self._landed(kind, started, got))
        finally:
            self._flight = None
