"""Ranking models from live snapshots (no I/O): strategies, hard filters, explanations.

Hard filters run first: a subscription-limited model is never ranked (it is reported with the
time it comes back); stale data follows ``stale_policy``; a model with no data in the window
is "unknown", never fastest or cheapest. The ranked models are then ordered by the strategy's
score. Ties break by success rate (higher first), then average latency (lower first), then
the model name (alphabetical), so equal inputs always give the same order.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, Field

from ..errors import InvalidInputError, TelemetryError
from ..models import ModelPerformanceSnapshot
from . import snapshot
from .providers import NEAR_EXHAUSTION_PENALTY, ProviderStatus

__all__ = [
    "ExcludedModel",
    "NoModelAvailable",
    "RankedModel",
    "Ranking",
    "StalePolicy",
    "Strategy",
    "Weights",
    "apply_providers",
    "choose",
    "rank",
]


class Strategy(StrEnum):
    """How ranked models are ordered."""

    FASTEST = "fastest"  # lowest average latency of successful completions
    TAIL_LATENCY = "tail_latency"  # lowest p95 latency of successful completions
    CHEAPEST = "cheapest"  # lowest avg_cost_per_1k_tokens (USD per 1,000 output tokens)
    FREE_THEN_CHEAPEST = "free_then_cheapest"  # free models first (by reliability), then cheapest
    MOST_RELIABLE = "most_reliable"  # highest success rate
    WEIGHTED = "weighted"  # a weighted sum of normalised metrics (see Weights)


class Weights(BaseModel):
    """Weights of the ``weighted`` strategy. Each metric is normalised to 0..1 across the
    candidates (1 = best: the highest success rate or throughput, the lowest latency or cost
    per success); the score is the weighted mean."""

    success_rate: float = Field(1.0, ge=0)
    latency: float = Field(1.0, ge=0)
    cost: float = Field(1.0, ge=0)
    throughput: float = Field(0.0, ge=0)


StalePolicy = Literal["exclude", "unknown", "keep"]


class RankedModel(BaseModel):
    """One usable model, its score under the strategy, and why it ranked there."""

    model: str
    rank: int
    score: float
    explanation: str
    snapshot: ModelPerformanceSnapshot


class ExcludedModel(BaseModel):
    """A candidate that was filtered out, and why."""

    model: str
    reason: Literal[
        "subscription_limited", "stale", "unknown", "provider_blocked", "budget_exhausted"
    ]
    explanation: str
    #: when a limited model comes back (None: unknown, or not limited)
    available_at: datetime | None = None


class Ranking(BaseModel):
    """The result of ``rank_models``: usable models best first, and the rest with reasons."""

    strategy: Strategy
    ranked: list[RankedModel]
    excluded: list[ExcludedModel]

    @property
    def unknown(self) -> list[str]:
        """Candidates without data in the window (the ones exploration sends traffic to)."""
        return [e.model for e in self.excluded if e.reason == "unknown"]

    @property
    def earliest_return(self) -> datetime | None:
        """When the first subscription-limited candidate comes back."""
        times = [e.available_at for e in self.excluded if e.available_at is not None]
        return min(times, default=None)


M = TypeVar("M", bound=BaseModel)
_RANKED = frozenset(RankedModel.model_fields)
_EXCLUDED = frozenset(ExcludedModel.model_fields)
_EXCLUDED_NO_TIME = _EXCLUDED - {"available_at"}
_RANKING = frozenset(Ranking.model_fields)
#: ``rank``'s weights when none are given (read only, never changed)
_DEFAULT_WEIGHTS = Weights()
#: ``choose``'s generator when the caller gives none: seeding a new ``random.Random`` costs
#: about 10 us, half a cached decision; a forked child seeds its own again
_RNG = random.Random()
if hasattr(os, "register_at_fork"):  # pragma: no branch (POSIX)
    os.register_at_fork(after_in_child=_RNG.seed)


#: ``_build(cls, values, given, None)`` is ``cls(**{k: values[k] for k in given})`` without
#: pydantic's validation (it is on every routing decision's path, once a model): ``values``
#: holds every field of ``cls`` in declaration order (the ones not ``given`` at their
#: defaults), each already of its field's type, as ``test_routing_fast`` checks against the
#: validated build.
_build: Callable[[type[M], dict[str, Any], frozenset[str], None], M] = snapshot.constructed


def _ranked(
    model: str, rank: int, score: float, explanation: str, s: ModelPerformanceSnapshot
) -> RankedModel:
    values = {
        "model": model,
        "rank": rank,
        "score": float(score),
        "explanation": explanation,
        "snapshot": s,
    }
    return _build(RankedModel, values, _RANKED, None)


def _excluded(
    model: str, reason: str, explanation: str, available_at: datetime | None = None, *, timed: bool
) -> ExcludedModel:
    """An ``ExcludedModel``; ``timed``: ``available_at`` was given (it is in the fields set)."""
    values = {
        "model": model,
        "reason": reason,
        "explanation": explanation,
        "available_at": available_at,
    }
    return _build(ExcludedModel, values, _EXCLUDED if timed else _EXCLUDED_NO_TIME, None)


def _ranking(
    strategy: Strategy, ranked: list[RankedModel], excluded: list[ExcludedModel]
) -> Ranking:
    values = {"strategy": strategy, "ranked": ranked, "excluded": excluded}
    return _build(Ranking, values, _RANKING, None)


class NoModelAvailable(TelemetryError):
    """Every candidate was filtered out; the message names each one's reason, and
    ``ranking`` holds the whole :class:`Ranking`. Defined here, beside the ranking it carries,
    so that ``errors`` imports nothing of the package."""

    def __init__(self, ranking: Ranking) -> None:
        self.ranking = ranking
        reasons = "; ".join(f"{e.model}: {e.explanation}" for e in ranking.excluded)
        back = ranking.earliest_return
        when = f" The earliest a limited model returns is {back.isoformat()}." if back else ""
        super().__init__(f"no candidate model is usable ({reasons}).{when}")


def _cost_per_success(s: ModelPerformanceSnapshot) -> float:
    if s.successful_completions == 0:
        return float("inf")
    return s.total_cost_usd / s.successful_completions


def _tie_key(s: ModelPerformanceSnapshot) -> tuple[float, float, str]:
    return (-s.success_rate, s.avg_latency_ms, s.model)


def _describe(s: ModelPerformanceSnapshot) -> str:
    cost = "free" if s.is_free else f"${_cost_per_success(s):.4f}/success"
    return (
        f"{s.success_rate:.0%} of {s.successful_completions + s.failed_completions} ok, "
        f"{s.avg_latency_ms:,.0f} ms avg, {cost}"
    )


#: (score shown, sort key, what the score means) of one model
Scored = tuple[float, tuple[object, ...], str]
#: A strategy's scoring: model -> Scored, over the usable snapshots
Scorer = Callable[[Sequence[ModelPerformanceSnapshot], Weights], dict[str, Scored]]


def _fastest(usable: Sequence[ModelPerformanceSnapshot], _: Weights) -> dict[str, Scored]:
    out: dict[str, Scored] = {}
    for s in usable:
        lat = s.avg_latency_ms if s.measured_latencies() else float("inf")
        out[s.model] = (lat, (lat, *_tie_key(s)), "average latency, ms")
    return out


def _tail_latency(usable: Sequence[ModelPerformanceSnapshot], _: Weights) -> dict[str, Scored]:
    out: dict[str, Scored] = {}
    for s in usable:
        p95 = s.latency_p95_ms if s.latency_p95_ms is not None else float("inf")
        out[s.model] = (p95, (p95, s.avg_latency_ms, *_tie_key(s)), "p95 latency, ms")
    return out


def _cost_per_1k_output(s: ModelPerformanceSnapshot) -> float:
    """Upstream's figure, ``avg_cost_per_1k_tokens`` (USD per 1,000 output tokens, every
    event), except that a model that cost something without any output token is never the
    cheapest by accident (upstream reads it as 0)."""
    if s.tokens.output > 0 or s.total_cost_usd == 0:
        return s.avg_cost_per_1k_tokens
    return float("inf")


def _cheapest(usable: Sequence[ModelPerformanceSnapshot], _: Weights) -> dict[str, Scored]:
    out: dict[str, Scored] = {}
    for s in usable:
        c = _cost_per_1k_output(s)
        key = (c, _cost_per_success(s), *_tie_key(s))
        out[s.model] = (c, key, "USD per 1,000 output tokens")
    return out


def _free_then_cheapest(
    usable: Sequence[ModelPerformanceSnapshot], _: Weights
) -> dict[str, Scored]:
    out: dict[str, Scored] = {}
    for s in usable:
        c = _cost_per_1k_output(s)
        tier = 0 if s.is_free else 1
        key = (tier, c if tier else 0.0, _cost_per_success(s), *_tie_key(s))
        out[s.model] = (c, key, "free first, then USD per 1,000 output tokens")
    return out


def _most_reliable(usable: Sequence[ModelPerformanceSnapshot], _: Weights) -> dict[str, Scored]:
    return {s.model: (s.success_rate, _tie_key(s), "success rate") for s in usable}


def _weighted(usable: Sequence[ModelPerformanceSnapshot], weights: Weights) -> dict[str, Scored]:
    total = weights.success_rate + weights.latency + weights.cost + weights.throughput
    if total <= 0:
        raise InvalidInputError("weighted strategy needs at least one positive weight")
    served = [s.avg_latency_ms for s in usable if s.measured_latencies()]
    best_lat = min(served, default=0.0)
    best_cost = min((_cost_per_success(s) for s in usable), default=0.0)
    best_thr = max((s.throughput for s in usable), default=0.0)
    out: dict[str, Scored] = {}
    for s in usable:
        lat = best_lat / s.avg_latency_ms if s.avg_latency_ms > 0 else 1.0
        if not s.measured_latencies():
            lat = 0.0
        cps = _cost_per_success(s)
        cost = 1.0 if cps == 0 else (best_cost / cps if cps != float("inf") else 0.0)
        thr = s.throughput / best_thr if best_thr > 0 else 0.0
        score = (
            weights.success_rate * s.success_rate
            + weights.latency * lat
            + weights.cost * cost
            + weights.throughput * thr
        ) / total
        out[s.model] = (score, (-score, *_tie_key(s)), "weighted score (1 = best)")
    return out


#: Each strategy's scorer (a test checks that every strategy has one).
SCORERS: dict[Strategy, Scorer] = {
    Strategy.FASTEST: _fastest,
    Strategy.TAIL_LATENCY: _tail_latency,
    Strategy.CHEAPEST: _cheapest,
    Strategy.FREE_THEN_CHEAPEST: _free_then_cheapest,
    Strategy.MOST_RELIABLE: _most_reliable,
    Strategy.WEIGHTED: _weighted,
}


def rank(
    snapshots: Sequence[ModelPerformanceSnapshot],
    strategy: Strategy | str = Strategy.FASTEST,
    *,
    weights: Weights | None = None,
    max_staleness_secs: int | None = None,
    stale_policy: StalePolicy = "exclude",
    now: datetime,
) -> Ranking:
    """Filter and order ``snapshots`` (one per candidate, in the caller's order)."""
    try:
        strategy = Strategy(strategy)
    except ValueError:
        choices = ", ".join(s.value for s in Strategy)
        raise InvalidInputError(f"unknown strategy {strategy!r}; choose one of {choices}") from None
    weights = weights or _DEFAULT_WEIGHTS
    usable: list[ModelPerformanceSnapshot] = []
    excluded: list[ExcludedModel] = []
    for s in snapshots:
        has_data = s.successful_completions + s.failed_completions > 0
        limited = s.subscription_limit_reached and (
            s.subscription_limit_expires_at is None or now < s.subscription_limit_expires_at
        )
        if limited:
            until = s.subscription_limit_expires_at
            when = f"until {until.isoformat()}" if until else "with no expiry set"
            excluded.append(
                _excluded(
                    s.model,
                    "subscription_limited",
                    f"subscription-limited {when}",
                    until,
                    timed=True,
                )
            )
        elif not has_data:
            excluded.append(_excluded(s.model, "unknown", "no data in the window", timed=False))
        elif (
            max_staleness_secs is not None
            and stale_policy != "keep"
            and s.last_event_at is not None
            and (now - s.last_event_at).total_seconds() > max_staleness_secs
        ):
            age = int((now - s.last_event_at).total_seconds())
            reason: Literal["stale", "unknown"] = (
                "stale" if stale_policy == "exclude" else "unknown"
            )
            why = f"stale: last event {age}s ago (limit {max_staleness_secs}s)"
            excluded.append(_excluded(s.model, reason, why, timed=False))
        else:
            usable.append(s)
    scored = SCORERS[strategy](usable, weights)
    ordered = sorted(usable, key=lambda s: scored[s.model][1])
    ranked = []
    by = strategy.value
    for i, s in enumerate(ordered, 1):
        score, _, meaning = scored[s.model]
        shown = f"{score:,.0f}" if abs(score) >= 1000 else f"{score:.4g}"
        why = f"#{i} by {by} ({meaning}: {shown}); {_describe(s)}"
        ranked.append(_ranked(s.model, i, score, why, s))
    return _ranking(strategy, ranked, excluded)


def _provider_exclusion(model: str, p: ProviderStatus) -> ExcludedModel | None:
    """Why ``model`` leaves the candidates for its provider's sake (None: it stays)."""
    if p.blocked_until is not None:
        why = (
            f"provider {p.provider} blocked until {p.blocked_until.isoformat()} ({p.block_reason})"
        )
        return _excluded(model, "provider_blocked", why, p.blocked_until, timed=True)
    b = p.budget
    if b.verdict == "exhausted":
        spend = "forced by exhaust()" if b.forced else _spend_text(p)
        why = f"provider {p.provider} budget exhausted ({spend})"
        return _excluded(model, "budget_exhausted", why, timed=False)
    return None


def _spend_text(p: ProviderStatus) -> str:
    b = p.budget
    parts = [f"hour ${b.hour_spend_usd:.4f} of ${b.hour_cap_usd:.4f}"] if b.hour_cap_usd else []
    if b.day_cap_usd is not None:
        parts.append(f"day ${b.day_spend_usd:.4f} of ${b.day_cap_usd:.4f}")
    return ", ".join(parts) or "cap 0"


def apply_providers(ranking: Ranking, status: Mapping[str, ProviderStatus | None]) -> Ranking:
    """``ranking`` with its providers' verdicts applied (upstream's rules): a model whose
    provider is blocked (a block or a 429 backoff) or whose budget is exhausted leaves the
    candidates, unknown ones too (exploration never picks them); a model whose provider is
    near exhaustion keeps its place, says so, and under ``weighted`` its score is multiplied by
    :data:`~.providers.NEAR_EXHAUSTION_PENALTY` and the order recomputed. ``status`` maps each
    model to its provider's status (None: nothing recorded), computed at the server's time."""
    excluded: list[ExcludedModel] = []
    for e in ranking.excluded:
        p = status.get(e.model)
        gone = _provider_exclusion(e.model, p) if p is not None and e.reason == "unknown" else None
        excluded.append(gone or e)
    kept: list[tuple[RankedModel, float, str]] = []
    weighted = ranking.strategy == Strategy.WEIGHTED
    penalised = False
    for r in ranking.ranked:
        p = status.get(r.model)
        if p is None:
            kept.append((r, r.score, ""))
            continue
        gone = _provider_exclusion(r.model, p)
        if gone is not None:
            excluded.append(gone)
            continue
        score, note = r.score, ""
        if p.budget.verdict == "near_exhaustion":
            note = f"; provider {p.provider} budget near exhaustion ({_spend_text(p)})"
            if weighted:
                score *= NEAR_EXHAUSTION_PENALTY
                penalised = True
                note += f": weighted score {r.score:.4g} x {NEAR_EXHAUSTION_PENALTY} = {score:.4g}"
        kept.append((r, score, note))
    if penalised:  # else the order stands: what is left of rank's order is still in it
        kept.sort(key=lambda k: (-k[1], *_tie_key(k[0].snapshot)))
    ranked = []
    for i, (r, score, note) in enumerate(kept, 1):
        if i == r.rank and not note:
            ranked.append(r)  # the same place, score and explanation: nothing to change
            continue
        _, _, rest = r.explanation.partition(" ")
        ranked.append(_ranked(r.model, i, score, f"#{i} {rest}{note}", r.snapshot))
    return _ranking(ranking.strategy, ranked, excluded)


def choose(
    ranking: Ranking,
    exploration: float = 0.0,
    rng: random.Random | None = None,
    *,
    warm_up: bool = False,
) -> str:
    """The model to use: the best ranked one, or, with probability ``exploration``, an
    unknown one (so models without data still get traffic). With ``warm_up``, while any
    candidate is unknown, one of all the usable candidates, evenly (so that each gets data
    before the strategy decides, rather than the first one with data taking nearly all of
    the traffic). Raises :class:`NoModelAvailable` when nothing is usable; never returns a
    subscription-limited model."""
    if not 0.0 <= exploration <= 1.0:
        raise InvalidInputError(f"exploration must be between 0 and 1, got {exploration}")
    rng = rng or _RNG
    unknown = ranking.unknown
    if warm_up and unknown:
        return rng.choice([r.model for r in ranking.ranked] + unknown)
    if unknown and (not ranking.ranked or rng.random() < exploration):
        return rng.choice(unknown)
    if not ranking.ranked:
        raise NoModelAvailable(ranking)
    return ranking.ranked[0].model
