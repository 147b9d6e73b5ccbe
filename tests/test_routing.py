"""Ranking and selection from live snapshots: strategies, filters, ties, explanations."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from redis_telemetry import (
    AsyncTelemetryStore,
    InvalidInputError,
    ModelPerformanceSnapshot,
    NoModelAvailable,
    TelemetryStore,
    TokenBreakdown,
    Weights,
)
from redis_telemetry.core.routing import SCORERS, Strategy, choose, rank

from .helpers import event

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def snap(
    model: str,
    ok: int = 10,
    failed: int = 0,
    latency: float = 1000.0,
    cost: float = 0.1,
    **extra: object,
) -> ModelPerformanceSnapshot:
    total = ok + failed
    return ModelPerformanceSnapshot(
        model=model,
        successful_completions=ok,
        failed_completions=failed,
        window_secs=3600,
        throughput=ok / 3600,
        avg_latency_ms=latency if ok else 0.0,
        success_rate=ok / total if total else 0.0,
        last_event_at=NOW - timedelta(seconds=5) if total else None,
        total_cost_usd=cost,
        is_free=total > 0 and cost == 0,
        tokens=TokenBreakdown(total=1000 * total, output=200 * total),
        avg_cost_per_1k_tokens=cost / (200 * total) * 1000 if total else 0.0,
        **extra,
    )


def order(snaps: list[ModelPerformanceSnapshot], strategy: str, **kw: object) -> list[str]:
    return [r.model for r in rank(snaps, strategy, now=NOW, **kw).ranked]  # type: ignore[arg-type]


def test_fastest_orders_by_average_latency() -> None:
    snaps = [snap("slow", latency=9000), snap("fast", latency=300), snap("mid", latency=1200)]
    assert order(snaps, "fastest") == ["fast", "mid", "slow"]


def test_tail_latency_orders_by_p95_then_average() -> None:
    snaps = [
        snap("spiky", latency=300, latency_p95_ms=9000.0),
        snap("steady", latency=800, latency_p95_ms=1000.0),
        snap("steady-slower-avg", latency=900, latency_p95_ms=1000.0),
        snap("unknown", ok=0),
    ]
    assert order(snaps, "tail_latency") == ["steady", "steady-slower-avg", "spiky"]
    assert order(snaps, "fastest")[0] == "spiky"


def test_tail_latency_routes_on_the_stores_sketch(store: TelemetryStore) -> None:
    """From live data: two stalls in twenty move a fast model behind a steady one."""
    store.record_batch(
        [event("spiky", True, 100) for _ in range(18)]
        + [event("spiky", True, 5000) for _ in range(2)]
        + [event("steady", True, 900) for _ in range(20)]
    )
    assert store.select_model(["spiky", "steady"], "fastest") == "spiky"  # avg 590 vs 900
    ranking = store.rank_models(["spiky", "steady"], "tail_latency")
    assert [r.model for r in ranking.ranked] == ["steady", "spiky"]
    assert "p95 latency, ms" in ranking.ranked[0].explanation


def test_cheapest_orders_by_cost_per_1k_output_tokens() -> None:
    """Upstream's figure: USD per 1,000 output tokens over every event (200 output tokens an
    event here), failures included."""
    snaps = [snap("a", ok=10, cost=1.0), snap("b", ok=100, cost=2.0), snap("c", ok=1, cost=0.05)]
    assert order(snaps, "cheapest") == ["b", "c", "a"]  # $0.1, $0.25, $0.5 per 1k output
    failing = snap("d", ok=1, failed=9, cost=0.2)  # $0.1 per 1k output, $0.2 per success
    assert order([*snaps, failing], "cheapest") == ["b", "d", "c", "a"]


def test_free_then_cheapest() -> None:
    snaps = [
        snap("paid-cheap", cost=0.01),
        snap("free-flaky", ok=5, failed=5, cost=0.0),
        snap("free-solid", ok=10, cost=0.0),
        snap("paid", cost=1.0),
    ]
    assert order(snaps, "free_then_cheapest") == ["free-solid", "free-flaky", "paid-cheap", "paid"]


def test_most_reliable() -> None:
    snaps = [snap("a", ok=9, failed=1), snap("b", ok=10), snap("c", ok=5, failed=5)]
    assert order(snaps, "most_reliable") == ["b", "a", "c"]


def test_weighted_uses_the_callers_weights() -> None:
    fast_flaky = snap("fast-flaky", ok=5, failed=5, latency=200, cost=0.5)
    slow_solid = snap("slow-solid", ok=10, latency=4000, cost=0.5)
    snaps = [fast_flaky, slow_solid]
    assert order(snaps, "weighted", weights=Weights(success_rate=1, latency=0, cost=0)) == [
        "slow-solid",
        "fast-flaky",
    ]
    assert order(snaps, "weighted", weights=Weights(success_rate=0, latency=1, cost=0)) == [
        "fast-flaky",
        "slow-solid",
    ]
    ranking = rank(snaps, "weighted", weights=Weights(success_rate=1, latency=1, cost=0), now=NOW)
    scores = {r.model: r.score for r in ranking.ranked}
    assert scores["slow-solid"] == pytest.approx((1.0 + 200 / 4000) / 2)
    assert scores["fast-flaky"] == pytest.approx((0.5 + 1.0) / 2)
    with pytest.raises(InvalidInputError, match="positive weight"):
        rank(snaps, "weighted", weights=Weights(success_rate=0, latency=0, cost=0), now=NOW)


def test_limited_models_are_never_ranked_and_say_when_they_return() -> None:
    back = NOW + timedelta(minutes=30)
    snaps = [
        snap(
            "blocked",
            latency=10,
            subscription_limit_reached=True,
            subscription_limit_expires_at=back,
        ),
        snap("ok", latency=5000),
    ]
    ranking = rank(snaps, "fastest", now=NOW)
    assert [r.model for r in ranking.ranked] == ["ok"]
    (excluded,) = ranking.excluded
    assert (excluded.model, excluded.reason, excluded.available_at) == (
        "blocked",
        "subscription_limited",
        back,
    )
    assert ranking.earliest_return == back
    expired = snap(
        "was-blocked",
        latency=10,
        subscription_limit_reached=True,
        subscription_limit_expires_at=NOW - timedelta(seconds=1),
    )
    assert order([expired], "fastest") == ["was-blocked"]


def test_every_strategy_has_its_own_scorer() -> None:
    """A strategy without a scorer would fail loudly (KeyError), never rank as another."""
    assert set(SCORERS) == set(Strategy)
    assert len(set(SCORERS.values())) == len(Strategy)
    snaps = [
        snap("a", ok=9, failed=1, latency=500, latency_p95_ms=600.0),
        snap("b", latency=900, cost=0.0, latency_p95_ms=950.0),
    ]
    meanings = {rank(snaps, s, now=NOW).ranked[0].explanation.split("(")[1] for s in Strategy}
    assert len(meanings) == len(Strategy)


def test_unknown_models_are_never_fastest_or_cheapest() -> None:
    snaps = [snap("new", ok=0, cost=0.0), snap("known", latency=8000, cost=3.0)]
    for strategy in Strategy:
        ranking = rank(snaps, strategy, now=NOW)
        assert [r.model for r in ranking.ranked] == ["known"]
        assert ranking.unknown == ["new"]


def test_stale_policy() -> None:
    old = snap("old", latency=10).model_copy(update={"last_event_at": NOW - timedelta(minutes=20)})
    fresh = snap("fresh", latency=900)
    assert order([old, fresh], "fastest", max_staleness_secs=600) == ["fresh"]
    ranking = rank([old, fresh], "fastest", max_staleness_secs=600, now=NOW)
    assert ranking.excluded[0].reason == "stale"
    assert "last event 1200s ago" in ranking.excluded[0].explanation
    as_unknown = rank(
        [old, fresh], "fastest", max_staleness_secs=600, stale_policy="unknown", now=NOW
    )
    assert as_unknown.unknown == ["old"]
    assert order([old, fresh], "fastest", max_staleness_secs=600, stale_policy="keep") == [
        "old",
        "fresh",
    ]


def test_ties_break_deterministically() -> None:
    snaps = [snap("b", latency=500), snap("a", latency=500), snap("c", ok=9, failed=1, latency=500)]
    assert order(snaps, "fastest") == ["a", "b", "c"]  # success rate, then latency, then name
    assert order(list(reversed(snaps)), "fastest") == ["a", "b", "c"]


def test_explanations_carry_the_score_and_the_numbers() -> None:
    ranking = rank([snap("m", ok=19, failed=1, latency=812.4, cost=0.19)], "fastest", now=NOW)
    (r,) = ranking.ranked
    assert r.score == pytest.approx(812.4)
    assert r.explanation.startswith("#1 by fastest (average latency, ms: 812.4)")
    assert "95% of 20 ok, 812 ms avg, $0.0100/success" in r.explanation


def test_choose_explores_unknown_models_and_never_a_limited_one() -> None:
    snaps = [snap("known"), snap("new", ok=0), snap("blocked", subscription_limit_reached=True)]
    ranking = rank(snaps, "fastest", now=NOW)
    rng = random.Random(7)
    picks = [choose(ranking, exploration=0.3, rng=rng) for _ in range(1000)]
    assert set(picks) == {"known", "new"}
    assert 200 < picks.count("new") < 400
    assert choose(ranking) == "known"
    with pytest.raises(InvalidInputError):
        choose(ranking, exploration=1.5)


def test_nothing_usable_is_said_clearly() -> None:
    back = NOW + timedelta(minutes=5)
    snaps = [
        snap("a", subscription_limit_reached=True, subscription_limit_expires_at=back),
        snap(
            "b",
            subscription_limit_reached=True,
            subscription_limit_expires_at=back + timedelta(hours=1),
        ),
    ]
    with pytest.raises(NoModelAvailable) as info:
        choose(rank(snaps, "cheapest", now=NOW))
    message = str(info.value)
    assert "a: subscription-limited until" in message
    assert "b: subscription-limited until" in message
    assert f"earliest a limited model returns is {back.isoformat()}" in message


def test_unknown_strategy_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="unknown strategy 'quickest'"):
        rank([snap("a")], "quickest", now=NOW)


# -- through the stores (fakeredis and real redis-server) --------------------------------


def _fleet(store: TelemetryStore) -> None:
    store.record_batch(
        [event("fast", True, 300, cost_usd=0.02) for _ in range(5)]
        + [event("slow", True, 9000, cost_usd=0.0) for _ in range(5)]
        + [event("limited", True, 100), event("limited", False, 5, error="weekly session limit")]
    )


def test_rank_and_select_through_the_store(store: TelemetryStore) -> None:
    _fleet(store)
    candidates = ["limited", "slow", "fast", "brand-new"]
    ranking = store.rank_models(candidates, "fastest")
    assert [r.model for r in ranking.ranked] == ["fast", "slow"]
    assert {e.model: e.reason for e in ranking.excluded} == {
        "limited": "subscription_limited",
        "brand-new": "unknown",
    }
    assert ranking.earliest_return is not None
    assert store.select_model(candidates, "free_then_cheapest") == "slow"
    assert store.select_model(candidates) == "fast"
    with pytest.raises(NoModelAvailable, match="limited: subscription-limited"):
        store.select_model(["limited"])
    with pytest.raises(InvalidInputError, match="non-empty"):
        store.rank_models([])


async def test_async_ranking_equals_sync(
    store: TelemetryStore, astore: AsyncTelemetryStore
) -> None:
    _fleet(store)
    for strategy in ("fastest", "cheapest", "free_then_cheapest", "most_reliable", "weighted"):
        sync = store.rank_models(["fast", "slow", "limited"], strategy)
        asyn = await astore.rank_models(["fast", "slow", "limited"], strategy)
        assert [(r.model, r.score) for r in asyn.ranked] == [
            (r.model, r.score) for r in sync.ranked
        ]
        assert [e.model for e in asyn.excluded] == [e.model for e in sync.excluded]
    assert await astore.select_model(["fast", "slow"]) == store.select_model(["fast", "slow"])


# -- parity with upstream's select_best_model ------------------------------------------------


def upstream_pick(snaps: list[ModelPerformanceSnapshot], strategy: str) -> str | None:
    """Upstream's ``select_best_model`` (control_plane/telemetry.rs): over the models with
    events, Fastest is the lowest ``avg_latency_ms``, Cheapest the lowest
    ``avg_cost_per_1k_tokens``, FreeThenCheapest the first free model, else Cheapest."""
    seen = [s for s in snaps if s.successful_completions + s.failed_completions > 0]
    if not seen:
        return None
    if strategy == "fastest":
        return min(seen, key=lambda s: s.avg_latency_ms).model
    free = [s for s in seen if s.is_free]
    if strategy == "free_then_cheapest" and free:
        return free[0].model
    return min(seen, key=lambda s: s.avg_cost_per_1k_tokens).model


@given(
    st.lists(
        st.tuples(
            st.integers(1, 50), st.integers(0, 10), st.integers(1, 10_000), st.integers(0, 9)
        ),
        min_size=1,
        max_size=6,
    )
)
def test_fastest_cheapest_and_free_then_cheapest_pick_what_upstream_picks(
    rows: list[tuple[int, int, int, int]],
) -> None:
    """Where upstream's rule names one model (every model has successes, distinct figures, at
    most one free model), ours names the same."""
    snaps = [
        snap(f"m{i}", ok=ok, failed=failed, latency=float(lat), cost=cost / 100)
        for i, (ok, failed, lat, cost) in enumerate(rows)
    ]
    for strategy in ("fastest", "cheapest", "free_then_cheapest"):
        figure = [
            s.avg_latency_ms if strategy == "fastest" else s.avg_cost_per_1k_tokens for s in snaps
        ]
        if len(set(figure)) < len(figure) or sum(s.is_free for s in snaps) > 1:
            continue  # a tie: upstream's pick depends on a HashMap's order
        assert choose(rank(snaps, strategy, now=NOW)) == upstream_pick(snaps, strategy)


def test_no_model_wins_by_accident_where_upstream_would() -> None:
    """Upstream reads 0 for a model that only failed (latency) or had no output tokens (cost):
    it would win; here it never does."""
    only_failed = snap("only-failed", ok=0, failed=3, cost=0.5)
    ok = snap("ok", latency=800)
    assert upstream_pick([only_failed, ok], "fastest") == "only-failed"
    assert choose(rank([only_failed, ok], "fastest", now=NOW)) == "ok"
    no_output = snap("no-output", cost=0.5).model_copy(
        update={"tokens": TokenBreakdown(total=1000), "avg_cost_per_1k_tokens": 0.0}
    )
    assert upstream_pick([no_output, ok], "cheapest") == "no-output"
    assert choose(rank([no_output, ok], "cheapest", now=NOW)) == "ok"
    assert choose(rank([no_output, ok], "free_then_cheapest", now=NOW)) == "ok"


def test_ties_break_the_same_way_whatever_the_order() -> None:
    snaps = [snap("b"), snap("a"), snap("c", ok=9, failed=1, cost=0.09)]
    for strategy in ("fastest", "cheapest", "free_then_cheapest"):
        orders = {tuple(order(list(p), strategy)) for p in (snaps, snaps[::-1])}
        assert len(orders) == 1, strategy
    assert order(snaps, "fastest") == ["a", "b", "c"]  # success rate, then name
