"""The asyncio store: the same core operations, sent over ``redis.asyncio``."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Hashable, Iterable, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Self, TypeVar

import redis.asyncio
import redis.asyncio.cluster
from redis.asyncio.retry import Retry
from redis.exceptions import RedisClusterException, RedisError, ResponseError

from ._shell import StoreShell
from .core import cluster
from .core import deadline as deadlines
from .core.backup import Dump
from .core.commands import Batch, Cmd, Finished, Op, SingleCommand, call, queue, single
from .core.deadline import Deadline, Pause
from .core.providers import ErrorSignatures, ProviderBudget, ProviderStatus
from .core.replies import recovering, translate
from .core.routing import Ranking, StalePolicy, Strategy, Weights
from .errors import TelemetryUnavailable, WindowMismatchError
from .models import (
    CompletionEvent,
    ModelPerformanceSnapshot,
    RecordResult,
    TelemetrySummary,
    UsageSnapshot,
)

T = TypeVar("T")


class AsyncTelemetryStore(StoreShell):
    """Shared, live model telemetry in Redis (asyncio API; same methods, awaited).

    The constructor is plain (not awaited); ``client`` is a ``redis.asyncio.Redis`` or a
    ``redis.asyncio.cluster.RedisCluster``. A store is an async context manager:
    ``async with AsyncTelemetryStore.from_url(url) as store:`` closes its connections on leaving
    the block, as :meth:`aclose` does.
    """

    _client_types = (redis.asyncio.Redis, redis.asyncio.cluster.RedisCluster)
    _redis_cls = redis.asyncio.Redis
    _cluster_cls = redis.asyncio.cluster.RedisCluster
    _retry_cls = Retry
    _wrong_client = "AsyncTelemetryStore needs a redis.asyncio client"

    def _node_client(self, name: Hashable) -> redis.asyncio.Redis:
        """A plain client for one cluster node (its pipelines may carry EVALSHA)."""
        clients: dict[Hashable, redis.asyncio.Redis] = self.__dict__.setdefault("_nodes", {})
        if name not in clients:
            node = self.client.get_node(node_name=name)
            pool = redis.asyncio.ConnectionPool(
                connection_class=node.connection_class, **node.connection_kwargs
            )
            clients[name] = redis.asyncio.Redis.from_pool(pool)  # closing it closes the pool
        return clients[name]

    def with_window(self, window_secs: int) -> Self:
        """The same store with another window (see ``TelemetryStore.with_window``). The two
        share the client and, on a cluster, the per-node clients: ``aclose()`` either one."""
        twin = super().with_window(window_secs)
        twin.__dict__["_nodes"] = self.__dict__.setdefault("_nodes", {})
        return twin

    async def _send_node(self, node: Hashable, batch: Batch) -> list[Any]:
        """One attempt: ``batch`` to the server (``node`` None) or to one cluster node."""
        shas = self._shas()
        if node is None:
            if (command := single(batch)) is not None:
                try:
                    return [await call(self.client, command, shas)]
                except ResponseError as exc:  # a reply, as a pipeline would return it
                    return [exc]
            pipe = self.client.pipeline(transaction=False)
        else:
            pipe = self._node_client(node).pipeline(transaction=False)
        queue(pipe, batch, shas)
        return list(await pipe.execute(raise_on_error=False))

    async def _execute(self, batch: Batch, deadline: Deadline) -> list[Any]:
        try:
            if self.is_cluster:
                await self._load_slots()
                driver: deadlines.Sender = cluster.send(
                    batch, self._locate, self._every_node, deadline
                )
            else:
                driver = deadlines.send(batch, deadline)
            step = next(driver)
            while True:
                answer: Any = None
                if isinstance(step, Pause):
                    await asyncio.sleep(step.delay)
                    if isinstance(step, cluster.Refresh):
                        with contextlib.suppress(RedisError):  # the next attempt says why
                            await self.client.nodes_manager.initialize()
                else:
                    try:
                        answer = await self._send_node(*step)
                    except RedisError as exc:
                        answer = exc
                step = driver.send(answer)
        except StopIteration as stop:
            deadline.answered()
            return stop.value  # type: ignore[no-any-return]
        except RedisError as exc:
            raise translate(exc) from exc

    async def _load_slots(self) -> None:
        """An asyncio cluster client reads its slot map lazily: on the first call."""
        try:
            await self.client.initialize()
        except RedisClusterException as exc:  # no node answered
            raise TelemetryUnavailable(f"Redis is unreachable: {exc}") from exc

    async def _run(self, op: Op[T] | SingleCommand[T]) -> T:
        with self._guard.start() as deadline:
            if self._memory is not None and self._memory.pending:
                await self._check_memory(deadline)
            try:
                return await self._drive(op, deadline)
            except WindowMismatchError:
                self._core.window.refused()  # the next write confirms the window first
                raise

    async def _check_memory(self, deadline: Deadline) -> None:
        """Read the eviction policy (see ``TelemetryStore._check_memory``)."""
        assert self._memory is not None
        args, kwargs = self._memory_probe()
        try:
            if self.is_cluster:
                await self._load_slots()
                reply = await self.client.config_get(*args, **kwargs)
            else:
                reply = (await self._execute([Cmd("config_get", args)], deadline))[0]
        except (RedisError, RedisClusterException) as exc:
            reply = exc
        self._memory.check(reply)

    async def _drive(self, op: Op[T] | SingleCommand[T], deadline: Deadline) -> T:
        if isinstance(op, SingleCommand):
            reply = None if self.is_cluster else (await self._execute([op.command], deadline))[0]
            settled = op.settle(reply)
            if isinstance(settled, Finished):
                done: T = settled.value
                return done
            op = settled
        driven = recovering(op)
        try:
            batch = next(driven)
            while True:
                batch = driven.send(await self._execute(batch, deadline))
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]

    async def record(self, event: CompletionEvent) -> RecordResult:
        """Store one event (one round trip)."""
        return await self._run(self._core.record(event))

    async def record_batch(self, events: Iterable[CompletionEvent]) -> RecordResult:
        """Store many events in one round trip; if one is invalid, none is written."""
        return await self._run(self._core.record_batch(events))

    async def reindex(self) -> int:
        """Do now the upkeep that writes otherwise spread over their calls, for every listed
        model: rebuild totals written by an older release, remove aged members and those over
        the cap. Each script call does a bounded step; returns how many calls it took."""
        return await self._run(self._core.reindex())

    async def model_performance(
        self, model: str, percentiles: bool = False
    ) -> ModelPerformanceSnapshot:
        """One model's snapshot over the window, exact at the server's current time.

        Every snapshot carries p50/p95/p99 latency from the running totals' sketch (within
        0.78%); ``percentiles=True`` makes them exact, read from the window's events (the
        cost then grows with the window); by default the snapshot costs the same at any size.
        """
        return await self._run(self._core.model_performance(model, percentiles))

    async def all_model_performances(
        self, percentiles: bool = False
    ) -> list[ModelPerformanceSnapshot]:
        """Snapshots of every known model, sorted by model (``percentiles`` as above)."""
        return await self._run(self._core.all_model_performances(percentiles))

    async def session_usage(self, session_id: str) -> UsageSnapshot:
        """One session's tokens and cost per model within the window."""
        return await self._run(self._core.session_usage(session_id))

    async def known_models(self) -> list[str]:
        """Models with events in the window or an active limit, sorted."""
        return await self._run(self._core.known_models())

    async def export_summary(self) -> TelemetrySummary:
        """The reference's summary of every model."""
        return await self._run(self._core.export_summary())

    async def import_summary(self, summary: TelemetrySummary) -> RecordResult:
        """Restore limits and synthesise events from a summary (idempotent per summary)."""
        return await self._run(self._core.import_summary(summary))

    async def mark_subscription_limited(
        self,
        model: str,
        ttl_secs: int | None = None,
        *,
        until: datetime | None = None,
        reason: str = "manual",
    ) -> None:
        """Block a model for ``ttl_secs`` (default: ``subscription_limit_ttl_secs``), or
        ``until`` a timezone-aware time, by the server's clock: a past time blocks nothing,
        and a longer block already in place is kept. ``reason`` is kept with the block."""
        await self._run(
            self._core.mark_subscription_limited(model, ttl_secs, until=until, reason=reason)
        )

    async def clear_subscription_limit(self, model: str) -> bool:
        """Lift a model's block; True when there was one."""
        return await self._run(self._core.clear_subscription_limit(model))

    async def events(self, model: str, last: int | None = None) -> list[CompletionEvent]:
        """One model's raw events in the window, newest first, with their ids."""
        return await self._run(self._core.events(model, last))

    async def dump(self) -> Dump:
        """Every raw event in the window and every active limit (see ``core.backup``)."""
        return await self._run(self._core.dump())

    async def restore(self, dump: Dump) -> RecordResult:
        """Write back a dump; idempotent, since events keep their ids."""
        return await self._run(self._core.restore(dump))

    async def stored_window(self) -> int | None:
        """The namespace's window as stored in Redis (None when no store has written yet)."""
        return await self._run(self._core.stored_window())

    async def rank_models(
        self,
        candidates: Sequence[str],
        strategy: Strategy | str = Strategy.FASTEST,
        *,
        weights: Weights | None = None,
        max_staleness_secs: int | None = None,
        stale_policy: StalePolicy = "exclude",
    ) -> Ranking:
        """Rank candidate models from live snapshots (one round trip); see ``core.routing``."""
        return await self._run(
            self._core.rank_models(
                candidates,
                strategy,
                weights=weights,
                max_staleness_secs=max_staleness_secs,
                stale_policy=stale_policy,
            )
        )

    async def select_model(
        self,
        candidates: Sequence[str],
        strategy: Strategy | str = Strategy.FASTEST,
        *,
        weights: Weights | None = None,
        max_staleness_secs: int | None = None,
        stale_policy: StalePolicy = "exclude",
        exploration: float = 0.0,
        rng: random.Random | None = None,
    ) -> str:
        """The model to use now; raises ``NoModelAvailable`` (with reasons) when none is.

        With probability ``exploration``, a candidate without data is chosen instead, so
        unknown models still get traffic. A subscription-limited model is never returned.
        """
        return await self._run(
            self._core.select_model(
                candidates,
                strategy,
                exploration=exploration,
                rng=rng,
                weights=weights,
                max_staleness_secs=max_staleness_secs,
                stale_policy=stale_policy,
            )
        )

    # -- providers (see core.providers) -------------------------------------------------

    async def provider_of(self, model: str) -> str:
        """The provider of ``model``: the part before ``/`` (bare Claude names are
        ``claude-code``), then the namespace's aliases."""
        return await self._run(self._core.provider_of(model))

    async def providers(self) -> list[ProviderStatus]:
        """Every provider the namespace knows: spend, caps, verdict, block and backoff."""
        return await self._run(self._core.providers())

    async def provider_status(self, provider: str) -> ProviderStatus:
        """One provider's spend, caps, verdict, block and backoff."""
        return await self._run(self._core.provider_status(provider))

    async def budget(self, provider: str) -> ProviderBudget:
        """The provider's spend this UTC hour and day, its caps and its verdict."""
        return await self._run(self._core.budget(provider))

    async def set_budget(
        self, provider: str, *, hour_usd: float | None = None, day_usd: float | None = None
    ) -> None:
        """Set the provider's caps in USD for the UTC hour and day (None: uncapped)."""
        return await self._run(self._core.set_budget(provider, hour_usd=hour_usd, day_usd=day_usd))

    async def exhaust(self, provider: str) -> None:
        """Force the provider exhausted until its windows roll, capped or not."""
        return await self._run(self._core.exhaust(provider))

    async def block_provider(
        self, provider: str, reason: str = "manual", until: datetime | None = None
    ) -> datetime | None:
        """Block every model of the provider until ``until``, else the reset time ``reason``
        names, else for 900 s; returns when the block ends."""
        return await self._run(self._core.block_provider(provider, reason, until))

    async def unblock_provider(self, provider: str) -> None:
        """End the provider's block and backoff."""
        return await self._run(self._core.unblock_provider(provider))

    async def provider_blocked_until(self, provider: str) -> datetime | None:
        """When the provider's block or 429 backoff ends (None: not blocked)."""
        return await self._run(self._core.provider_blocked_until(provider))

    async def provider_throttled(self, provider: str) -> datetime:
        """A 429 without a reset hint: escalate the provider's shared backoff; returns its
        end."""
        return await self._run(self._core.provider_throttled(provider))

    async def provider_succeeded(self, provider: str) -> None:
        """A success: end the provider's backoff and reset its level."""
        return await self._run(self._core.provider_succeeded(provider))

    async def provider_failed(
        self, provider: str, text: str, signatures: ErrorSignatures | None = None
    ) -> str:
        """Feed a provider's failure text: its own ``signatures`` first (throttle: exhaust;
        flake: nothing), then a block, a backoff, or nothing (the kind returned)."""
        return await self._run(self._core.provider_failed(provider, text, signatures))

    async def provider_feedback(self, events: Iterable[CompletionEvent]) -> int:
        """Feed the providers from stored events: a success ends a backoff, a 429 escalates
        it, a quota text that names the account blocks the provider; returns writes sent."""
        return await self._run(self._core.provider_feedback(events))

    async def block_provider_of(
        self, model: str, reason: str, until: datetime | None = None
    ) -> datetime | None:
        """A subscription limit on ``model`` that names the account blocks its provider;
        returns when that block ends (None: not blocked by this call)."""
        return await self._run(self._core.block_provider_of(model, reason, until))

    async def set_alias(self, provider: str, into: str | None) -> None:
        """Fold ``provider`` into ``into`` for every replica (None: remove the alias)."""
        return await self._run(self._core.set_alias(provider, into))

    async def aliases(self) -> dict[str, str]:
        """The namespace's alias table."""
        return await self._run(self._core.aliases())

    async def set_window(self, window_secs: int) -> None:
        """Change the namespace's shared window on purpose (other stores then refuse)."""
        await self._run(self._core.set_window(window_secs))

    async def aclose(self) -> None:
        """Close the client's connections: the store's own from ``from_url``, or the client it
        was given (and shares with its ``with_window`` twins), and on a cluster the per-node
        clients it opened."""
        for node_client in self.__dict__.get("_nodes", {}).values():
            await node_client.aclose()
        await self.client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()
