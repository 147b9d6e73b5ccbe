"""The synchronous store: a thin shell that sends the core's batches over redis-py."""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Hashable, Iterable, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Self, TypeVar

import redis
import redis.cluster
from redis.exceptions import RedisClusterException, RedisError, ResponseError
from redis.retry import Retry

from ._shell import StoreShell
from .core import cluster
from .core import deadline as deadlines
from .core.backup import Dump
from .core.commands import Batch, Cmd, Finished, Op, SingleCommand, call, queue, single
from .core.deadline import Deadline, Pause
from .core.providers import ErrorSignatures, ProviderBudget, ProviderStatus
from .core.replies import recovering, translate
from .core.routing import Ranking, StalePolicy, Strategy, Weights
from .errors import WindowMismatchError
from .models import (
    CompletionEvent,
    ModelPerformanceSnapshot,
    RecordResult,
    TelemetrySummary,
    UsageSnapshot,
)

T = TypeVar("T")


class TelemetryStore(StoreShell):
    """Shared, live model telemetry in Redis (blocking API).

    ``client`` is a ``redis.Redis``, a ``redis.cluster.RedisCluster`` or a fakeredis client,
    built with ``decode_responses=False``; it is used as it is. All stores of one
    ``namespace`` must share one ``window_secs``.
    """

    _client_types = (redis.Redis, redis.cluster.RedisCluster)
    _redis_cls = redis.Redis
    _cluster_cls = redis.cluster.RedisCluster
    _retry_cls = Retry
    _wrong_client = "TelemetryStore needs a blocking redis-py client; use AsyncTelemetryStore"

    def _send_node(self, node: Hashable, batch: Batch) -> list[Any]:
        """One attempt: ``batch`` to the server (``node`` None) or to one cluster node."""
        shas = self._shas()
        if node is None:
            if (command := single(batch)) is not None:
                try:
                    return [call(self.client, command, shas)]
                except ResponseError as exc:  # a reply, as a pipeline would return it
                    return [exc]
            pipe = self.client.pipeline(transaction=False)
        else:
            cluster_node = self.client.get_node(node_name=node)
            pipe = self.client.get_redis_connection(cluster_node).pipeline(transaction=False)
        queue(pipe, batch, shas)
        return list(pipe.execute(raise_on_error=False))

    def _execute(self, batch: Batch, deadline: Deadline) -> list[Any]:
        if self.is_cluster:
            driver: deadlines.Sender = cluster.send(batch, self._locate, self._every_node, deadline)
        else:
            driver = deadlines.send(batch, deadline)
        try:
            step = next(driver)
            while True:
                answer: Any = None
                if isinstance(step, Pause):
                    time.sleep(step.delay)
                    if isinstance(step, cluster.Refresh):
                        with contextlib.suppress(RedisError):  # the next attempt says why
                            self.client.nodes_manager.initialize()
                else:
                    try:
                        answer = self._send_node(*step)
                    except RedisError as exc:
                        answer = exc
                step = driver.send(answer)
        except StopIteration as stop:
            deadline.answered()
            return stop.value  # type: ignore[no-any-return]
        except RedisError as exc:
            raise translate(exc) from exc

    def _run(self, op: Op[T] | SingleCommand[T]) -> T:
        with self._guard.start() as deadline:
            if self._memory is not None and self._memory.pending:
                self._check_memory(deadline)
            try:
                return self._drive(op, deadline)
            except WindowMismatchError:
                self._core.window.refused()  # the next write confirms the window first
                raise

    def _check_memory(self, deadline: Deadline) -> None:
        """Read the eviction policy; on a single server an unreachable one fails the call (the
        operation would too), within its deadline."""
        assert self._memory is not None
        args, kwargs = self._memory_probe()
        try:
            if self.is_cluster:
                reply = self.client.config_get(*args, **kwargs)
            else:
                reply = self._execute([Cmd("config_get", args)], deadline)[0]
        except (RedisError, RedisClusterException) as exc:
            reply = exc
        self._memory.check(reply)

    def _drive(self, op: Op[T] | SingleCommand[T], deadline: Deadline) -> T:
        if isinstance(op, SingleCommand):
            reply = None if self.is_cluster else self._execute([op.command], deadline)[0]
            settled = op.settle(reply)
            if isinstance(settled, Finished):
                done: T = settled.value
                return done
            op = settled
        driven = recovering(op)
        try:
            batch = next(driven)
            while True:
                batch = driven.send(self._execute(batch, deadline))
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]

    def record(self, event: CompletionEvent) -> RecordResult:
        """Store one event (one round trip)."""
        return self._run(self._core.record(event))

    def record_batch(self, events: Iterable[CompletionEvent]) -> RecordResult:
        """Store many events in one round trip; if one is invalid, none is written."""
        return self._run(self._core.record_batch(events))

    def reindex(self) -> int:
        """Do now the upkeep that writes otherwise spread over their calls, for every listed
        model: rebuild totals written by an older release, remove aged members and those over
        the cap. Each script call does a bounded step; returns how many calls it took."""
        return self._run(self._core.reindex())

    def model_performance(self, model: str, percentiles: bool = False) -> ModelPerformanceSnapshot:
        """One model's snapshot over the window, exact at the server's current time.

        Every snapshot carries p50/p95/p99 latency from the running totals' sketch (within
        0.78%); ``percentiles=True`` makes them exact, read from the window's events (the
        cost then grows with the window); by default the snapshot costs the same at any size.
        """
        return self._run(self._core.model_performance(model, percentiles))

    def all_model_performances(self, percentiles: bool = False) -> list[ModelPerformanceSnapshot]:
        """Snapshots of every known model, sorted by model (``percentiles`` as above)."""
        return self._run(self._core.all_model_performances(percentiles))

    def session_usage(self, session_id: str) -> UsageSnapshot:
        """One session's tokens and cost per model within the window."""
        return self._run(self._core.session_usage(session_id))

    def known_models(self) -> list[str]:
        """Models with events in the window or an active limit, sorted."""
        return self._run(self._core.known_models())

    def export_summary(self) -> TelemetrySummary:
        """The reference's summary of every model."""
        return self._run(self._core.export_summary())

    def import_summary(self, summary: TelemetrySummary) -> RecordResult:
        """Restore limits and synthesise events from a summary (idempotent per summary)."""
        return self._run(self._core.import_summary(summary))

    def mark_subscription_limited(
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
        self._run(self._core.mark_subscription_limited(model, ttl_secs, until=until, reason=reason))

    def clear_subscription_limit(self, model: str) -> bool:
        """Lift a model's block; True when there was one."""
        return self._run(self._core.clear_subscription_limit(model))

    def events(self, model: str, last: int | None = None) -> list[CompletionEvent]:
        """One model's raw events in the window, newest first, with their ids."""
        return self._run(self._core.events(model, last))

    def dump(self) -> Dump:
        """Every raw event in the window and every active limit (see ``core.backup``)."""
        return self._run(self._core.dump())

    def restore(self, dump: Dump) -> RecordResult:
        """Write back a dump; idempotent, since events keep their ids."""
        return self._run(self._core.restore(dump))

    def stored_window(self) -> int | None:
        """The namespace's window as stored in Redis (None when no store has written yet)."""
        return self._run(self._core.stored_window())

    def rank_models(
        self,
        candidates: Sequence[str],
        strategy: Strategy | str = Strategy.FASTEST,
        *,
        weights: Weights | None = None,
        max_staleness_secs: int | None = None,
        stale_policy: StalePolicy = "exclude",
    ) -> Ranking:
        """Rank candidate models from live snapshots (one round trip); see ``core.routing``."""
        return self._run(
            self._core.rank_models(
                candidates,
                strategy,
                weights=weights,
                max_staleness_secs=max_staleness_secs,
                stale_policy=stale_policy,
            )
        )

    def select_model(
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
        return self._run(
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

    def provider_of(self, model: str) -> str:
        """The provider of ``model``: the part before ``/`` (bare Claude names are
        ``claude-code``), then the namespace's aliases."""
        return self._run(self._core.provider_of(model))

    def providers(self) -> list[ProviderStatus]:
        """Every provider the namespace knows: spend, caps, verdict, block and backoff."""
        return self._run(self._core.providers())

    def provider_status(self, provider: str) -> ProviderStatus:
        """One provider's spend, caps, verdict, block and backoff."""
        return self._run(self._core.provider_status(provider))

    def budget(self, provider: str) -> ProviderBudget:
        """The provider's spend this UTC hour and day, its caps and its verdict."""
        return self._run(self._core.budget(provider))

    def set_budget(
        self, provider: str, *, hour_usd: float | None = None, day_usd: float | None = None
    ) -> None:
        """Set the provider's caps in USD for the UTC hour and day (None: uncapped)."""
        return self._run(self._core.set_budget(provider, hour_usd=hour_usd, day_usd=day_usd))

    def exhaust(self, provider: str) -> None:
        """Force the provider exhausted until its windows roll, capped or not."""
        return self._run(self._core.exhaust(provider))

    def block_provider(
        self, provider: str, reason: str = "manual", until: datetime | None = None
    ) -> datetime | None:
        """Block every model of the provider until ``until``, else the reset time ``reason``
        names, else for 900 s; returns when the block ends."""
        return self._run(self._core.block_provider(provider, reason, until))

    def unblock_provider(self, provider: str) -> None:
        """End the provider's block and backoff."""
        return self._run(self._core.unblock_provider(provider))

    def provider_blocked_until(self, provider: str) -> datetime | None:
        """When the provider's block or 429 backoff ends (None: not blocked)."""
        return self._run(self._core.provider_blocked_until(provider))

    def provider_throttled(self, provider: str) -> datetime:
        """A 429 without a reset hint: escalate the provider's shared backoff; returns its
        end."""
        return self._run(self._core.provider_throttled(provider))

    def provider_succeeded(self, provider: str) -> None:
        """A success: end the provider's backoff and reset its level."""
        return self._run(self._core.provider_succeeded(provider))

    def provider_failed(
        self, provider: str, text: str, signatures: ErrorSignatures | None = None
    ) -> str:
        """Feed a provider's failure text: its own ``signatures`` first (throttle: exhaust;
        flake: nothing), then a block, a backoff, or nothing (the kind returned)."""
        return self._run(self._core.provider_failed(provider, text, signatures))

    def provider_feedback(self, events: Iterable[CompletionEvent]) -> int:
        """Feed the providers from stored events: a success ends a backoff, a 429 escalates
        it, a quota text that names the account blocks the provider; returns writes sent."""
        return self._run(self._core.provider_feedback(events))

    def block_provider_of(
        self, model: str, reason: str, until: datetime | None = None
    ) -> datetime | None:
        """A subscription limit on ``model`` that names the account blocks its provider;
        returns when that block ends (None: not blocked by this call)."""
        return self._run(self._core.block_provider_of(model, reason, until))

    def set_alias(self, provider: str, into: str | None) -> None:
        """Fold ``provider`` into ``into`` for every replica (None: remove the alias)."""
        return self._run(self._core.set_alias(provider, into))

    def aliases(self) -> dict[str, str]:
        """The namespace's alias table."""
        return self._run(self._core.aliases())

    def set_window(self, window_secs: int) -> None:
        """Change the namespace's shared window on purpose (other stores then refuse)."""
        self._run(self._core.set_window(window_secs))

    def close(self) -> None:
        """Close the client's connections: the store's own from ``from_url``, or the client it
        was given (and shares with its :meth:`with_window` twins). redis-py opens a new
        connection if the store is used again."""
        self.client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
