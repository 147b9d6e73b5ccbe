"""``SharedStateRouting``: a LiteLLM Router strategy that picks deployments from the store.

Each decision ranks the model group's deployments (keyed by deployment id, as
``TelemetryLogger`` records them) from the local read tier's memory (``tier``, on by default:
refreshed off the request's path, see ``redis_telemetry.tier``), or with one ``rank_models``
round trip when ``tier=None``; then the package's own ``choose``: a
deployment any replica saw rate-limited is skipped until its reset; while some deployment has
no data, traffic is spread evenly over all of them (``warm_up``), and afterwards a deployment
without data gets ``exploration`` of it; stale data follows ``stale_policy``. When Redis cannot
be read (with the tier: once its data is past ``stale_after``), the pick is a random
deployment not known to be limited, with a warning, never an exception.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from litellm.exceptions import BadRequestError, RateLimitError
from litellm.router import Router
from litellm.types.router import CustomRoutingStrategyBase

from ...aio import AsyncTelemetryStore
from ...core.routing import NoModelAvailable, Ranking, StalePolicy, Strategy, Weights, choose
from ...core.tier import DEFAULT_TIER, Decision, TierSettings
from ...errors import InvalidInputError, TelemetryError
from ...store import TelemetryStore
from ...tier import AsyncLocalTier, LocalTier
from ._payload import clean_key

log = logging.getLogger(__name__)

Deployment = Mapping[str, Any]


def deployment_key(deployment: Deployment) -> str:
    """The store's model name of a Router deployment: its id (``model_info.id``), the key
    ``TelemetryLogger`` records it under by default."""
    info = deployment.get("model_info")
    found = info.get("id") if isinstance(info, Mapping) else None
    if found is None:
        params = deployment.get("litellm_params")
        found = params.get("model") if isinstance(params, Mapping) else None
    return clean_key(str(found)) if found else "litellm/unknown"


class SharedStateRouting(CustomRoutingStrategyBase):
    """Routes a LiteLLM ``Router`` on the shared store.

    ``router.register_plugin(SharedStateRouting(router, store))`` (older spelling:
    ``router.set_custom_routing_strategy``). ``strategy`` is one of the store's strategies
    (``fastest``, ``cheapest``, ``free_then_cheapest``, ``most_reliable``, ``weighted`` with
    ``weights``); ``max_staleness_secs``, ``stale_policy`` and ``exploration`` are those of
    ``select_model``; ``warm_up`` (on by default) spreads the traffic evenly over the
    deployments while any has no data in the window, so that each gets some before the
    strategy ranks them; ``rng`` makes the random choices reproducible. ``tier`` (default
    ``TierSettings()``) decides from a local read tier over ``store``, so Redis is off the
    request's path; ``None`` ranks with a round trip per decision. ``data_age_secs`` is how
    old the data of the last decision was.
    """

    def __init__(
        self,
        router: Router,
        store: TelemetryStore | AsyncTelemetryStore,
        strategy: Strategy | str = Strategy.FASTEST,
        *,
        weights: Weights | None = None,
        max_staleness_secs: int | None = None,
        stale_policy: StalePolicy = "exclude",
        exploration: float = 0.05,
        warm_up: bool = True,
        rng: random.Random | None = None,
        tier: TierSettings | None = DEFAULT_TIER,
    ) -> None:
        if not isinstance(store, TelemetryStore | AsyncTelemetryStore):
            raise InvalidInputError(
                f"SharedStateRouting needs a TelemetryStore or an AsyncTelemetryStore, "
                f"got {type(store).__name__}"
            )
        try:
            self.strategy = Strategy(strategy)
        except ValueError:
            choices = ", ".join(s.value for s in Strategy)
            raise InvalidInputError(
                f"unknown strategy {strategy!r}; choose one of {choices}"
            ) from None
        if not 0.0 <= exploration <= 1.0:
            raise InvalidInputError(f"exploration must be between 0 and 1, got {exploration}")
        self.router = router
        self.store = store
        self.weights = weights
        self.max_staleness_secs = max_staleness_secs
        self.stale_policy: StalePolicy = stale_policy
        self.exploration = exploration
        self.warm_up = warm_up
        self.rng = rng or random.Random()
        #: decisions made without Redis (random healthy deployment)
        self.fallbacks = 0
        self._limited: dict[str, datetime | None] = {}  # key -> back at, from the last ranking
        self._down = False
        #: the local read tier (None: a round trip per decision)
        self.tier: LocalTier | AsyncLocalTier | None = None
        if tier is not None:
            if isinstance(store, AsyncTelemetryStore):
                self.tier = AsyncLocalTier(store, tier)
            else:
                self.tier = LocalTier(store, tier)
        #: how old the data of the last decision was, in seconds (0: read for it)
        self.data_age_secs = 0.0

    # -- LiteLLM's interface ------------------------------------------------------------------

    async def async_get_available_deployment(  # type: ignore[override]  # base says None
        self,
        model: str,
        messages: list[dict[str, str]] | None = None,
        input: str | list[object] | None = None,
        specific_deployment: bool | None = False,
        request_kwargs: dict[str, object] | None = None,
    ) -> Deployment:
        """The deployment for this request: from the tier's memory, or one round trip (off
        the loop for a sync store, and so is a tier's first read)."""
        deployments, keys = self._candidates(model)
        if len(deployments) == 1:
            return deployments[0]
        tier, options = self.tier, self._options()
        decided: Ranking | Decision
        try:
            if isinstance(tier, AsyncLocalTier):
                decided = await tier.rank_models(keys, self.strategy, **options)
            elif tier is not None and not tier.state.unread(keys):
                decided = tier.rank_models(keys, self.strategy, **options)
            elif tier is not None:
                decided = await asyncio.to_thread(tier.rank_models, keys, self.strategy, **options)
            elif isinstance(self.store, AsyncTelemetryStore):
                decided = await self.store.rank_models(keys, self.strategy, **options)
            else:
                decided = await asyncio.to_thread(
                    self.store.rank_models, keys, self.strategy, **options
                )
        except TelemetryError as exc:
            return self._fallback(deployments, keys, exc)
        return self._pick(deployments, keys, decided)

    def get_available_deployment(  # type: ignore[override]  # base says None
        self,
        model: str,
        messages: list[dict[str, str]] | None = None,
        input: str | list[object] | None = None,
        specific_deployment: bool | None = False,
        request_kwargs: dict[str, object] | None = None,
    ) -> Deployment:
        """The deployment for a sync request. An ``AsyncTelemetryStore`` cannot be awaited
        here: the pick then falls back (use a ``TelemetryStore`` for sync calls)."""
        deployments, keys = self._candidates(model)
        if len(deployments) == 1:
            return deployments[0]
        if isinstance(self.store, AsyncTelemetryStore):
            why = TelemetryError("an AsyncTelemetryStore cannot serve a sync Router call")
            return self._fallback(deployments, keys, why)
        try:
            decided: Ranking | Decision
            if isinstance(self.tier, LocalTier):
                decided = self.tier.rank_models(keys, self.strategy, **self._options())
            else:
                decided = self.store.rank_models(keys, self.strategy, **self._options())
        except TelemetryError as exc:
            return self._fallback(deployments, keys, exc)
        return self._pick(deployments, keys, decided)

    # -- the decision -------------------------------------------------------------------------

    def _options(self) -> dict[str, Any]:
        return {
            "weights": self.weights,
            "max_staleness_secs": self.max_staleness_secs,
            "stale_policy": self.stale_policy,
        }

    def _candidates(self, model: str) -> tuple[list[Deployment], list[str]]:
        """The deployments that may serve ``model``, and their keys in the store."""
        registry = self.router.registry()
        found: list[Deployment] = list(registry.deployments(model) or [])
        if not found and (one := registry.deployment_dict(model)) is not None:
            found = [one]  # a specific deployment, named by its id
        if not found:
            raise BadRequestError(
                message=f"SharedStateRouting: the Router has no deployment for model={model!r}",
                model=model,
                llm_provider="",
            )
        return found, [deployment_key(d) for d in found]

    def _pick(
        self, deployments: Sequence[Deployment], keys: list[str], decided: Ranking | Decision
    ) -> Deployment:
        if isinstance(decided, Decision):
            ranking, self.data_age_secs = decided.ranking, decided.age_secs
        else:
            ranking, self.data_age_secs = decided, 0.0
        if self._down:
            self._down = False
            log.warning("redis-telemetry is reachable again: routing on the shared state")
        self._limited = {
            e.model: e.available_at for e in ranking.excluded if e.reason == "subscription_limited"
        }
        try:
            chosen = choose(ranking, self.exploration, self.rng, warm_up=self.warm_up)
        except NoModelAvailable as exc:
            raise RateLimitError(
                message=f"SharedStateRouting: {exc}", llm_provider="", model=""
            ) from exc
        return deployments[keys.index(chosen)]

    def _fallback(
        self, deployments: Sequence[Deployment], keys: list[str], error: Exception
    ) -> Deployment:
        """A random deployment not known to be limited (any, when all are)."""
        self.fallbacks += 1
        if not self._down:
            self._down = True
            log.warning(
                "redis-telemetry cannot rank deployments (%s); routing to a random "
                "healthy deployment until it can",
                error,
            )
        now = datetime.now(UTC)
        healthy = [
            d
            for d, k in zip(deployments, keys, strict=True)
            if k not in self._limited or ((back := self._limited[k]) is not None and back <= now)
        ]
        return self.rng.choice(healthy or list(deployments))
