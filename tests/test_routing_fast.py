"""Routing's results are built without pydantic's validation (``routing._build``): they must be
exactly what the validated build gives, field by field, type by type, with the same fields set."""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from redis_telemetry import ModelPerformanceSnapshot, Weights
from redis_telemetry.core import providers as pv
from redis_telemetry.core import routing
from redis_telemetry.core.routing import Ranking, Strategy

from .test_routing import NOW, snap

Build = Callable[..., Any]


def validated(cls: type[BaseModel], values: dict[str, Any], given: frozenset[str], _: None) -> Any:
    """What ``routing._build`` stands for: pydantic's validated construction."""
    return cls(**{k: values[k] for k in given})


def candidates() -> list[ModelPerformanceSnapshot]:
    """Every kind of candidate: fast and slow, free, failing, without latencies, empty
    windows, limited with and without an expiry, an expired limit, stale, and one built by
    ``model_construct`` with integers where the fields are floats."""
    return [
        snap("a/fast", 40, 2, 310.5, 0.4, latency_p95_ms=900.0),
        snap("a/slow", 30, 0, 12_345.25, 0.02, latency_p95_ms=30_000.0),
        snap("b/free", 10, 5, 800.0, 0.0),
        snap("b/failing", 0, 9, 0.0, 0.3),
        snap("b/untimed", 5, 0, 0.0, 0.1, latency_samples=0),
        snap("c/empty", 0, 0, 0.0, 0.0),
        snap("c/empty-too", 0, 0, 0.0, 0.0),
        snap(
            "c/limited",
            8,
            1,
            500.0,
            0.1,
            subscription_limit_reached=True,
            subscription_limit_expires_at=NOW + timedelta(hours=2),
        ),
        snap("c/limited-forever", 8, 0, 400.0, 0.1, subscription_limit_reached=True),
        snap(
            "c/limit-over",
            8,
            0,
            450.0,
            0.1,
            subscription_limit_reached=True,
            subscription_limit_expires_at=NOW - timedelta(minutes=1),
        ),
        snap("d/stale", 20, 0, 200.0, 0.1).model_copy(
            update={"last_event_at": NOW - timedelta(hours=1)}
        ),
        ModelPerformanceSnapshot.model_construct(
            **snap("d/ints", 3, 0, 700, 0).__dict__
            | {"throughput": 0, "avg_latency_ms": 700, "success_rate": 1, "latency_p95_ms": 800}
        ),
    ]


def status(provider: str, verdict: str, blocked: bool = False, forced: bool = False) -> Any:
    budget = pv.ProviderBudget(
        provider=provider,
        hour_spend_usd=0.9,
        day_spend_usd=1.5,
        hour_cap_usd=1.0,
        day_cap_usd=2.0,
        verdict=verdict,  # type: ignore[arg-type]
        forced=forced,
    )
    return pv.ProviderStatus(
        provider=provider,
        models=[],
        budget=budget,
        blocked_until=NOW + timedelta(minutes=5) if blocked else None,
        block_reason="usage limit" if blocked else None,
        backoff_level=0,
        backoff_until=None,
    )


STATUSES: list[dict[str, Any]] = [
    {},
    {"a": status("a", "ok"), "b": status("b", "ok")},
    {"a": status("a", "near_exhaustion"), "b": None},
    {"a": status("a", "ok", blocked=True), "b": status("b", "near_exhaustion")},
    {"b": status("b", "exhausted"), "c": status("c", "exhausted", forced=True)},
    {"c": status("c", "ok", blocked=True), "d": status("d", "near_exhaustion")},
]


def rankings() -> Iterator[Ranking]:
    """Rankings of :func:`candidates` under every strategy, stale policy and provider set."""
    snaps = candidates()
    for strategy in Strategy:
        for policy in ("exclude", "unknown", "keep"):
            for weights in (None, Weights(success_rate=2.0, cost=0.5, throughput=1.0)):
                ranking = routing.rank(
                    snaps,
                    strategy,
                    weights=weights,
                    max_staleness_secs=600,
                    stale_policy=policy,  # type: ignore[arg-type]
                    now=NOW,
                )
                yield ranking
                for given in STATUSES:
                    by_model = {s.model: given.get(s.model.split("/")[0]) for s in snaps}
                    yield routing.apply_providers(ranking, by_model)


def typed(obj: Any) -> Any:
    """``obj``'s contents as they are held, with each value's type and each model's fields
    set, so that a value of another type (1 for 1.0) or a field left unset shows."""
    if isinstance(obj, BaseModel):
        return (
            type(obj),
            sorted(obj.model_fields_set),
            obj.__pydantic_extra__,
            obj.__pydantic_private__,
            {k: typed(v) for k, v in obj.__dict__.items()},
        )
    if isinstance(obj, list):
        return [typed(v) for v in obj]
    return (type(obj), obj)


def both(monkeypatch: pytest.MonkeyPatch, build: Build) -> tuple[list[Ranking], list[Ranking]]:
    """Every ranking built by ``build``, and built by pydantic's validation."""
    monkeypatch.setattr(routing, "_build", build)
    fast = list(rankings())
    monkeypatch.setattr(routing, "_build", validated)
    slow = list(rankings())
    return fast, slow


def assert_same(fast: list[Ranking], slow: list[Ranking]) -> None:
    assert len(fast) == len(slow)
    for f, s in zip(fast, slow, strict=True):
        assert typed(f) == typed(s)
        assert f.model_dump() == s.model_dump()


def test_rankings_are_what_the_validated_build_gives(monkeypatch: pytest.MonkeyPatch) -> None:
    """Over every strategy, stale policy and set of provider verdicts (blocked, exhausted,
    near exhaustion, none): every ranked and excluded model, field by field and type by
    type, with the same fields set (``available_at`` only where it is given, as before);
    and each ranking's places run 1, 2, 3..., its explanations say them, and a weighted one
    is ordered by score."""
    fast, slow = both(monkeypatch, routing._build)
    assert_same(fast, slow)
    reasons = {e.reason for r in fast for e in r.excluded}
    assert reasons == {
        "subscription_limited",
        "stale",
        "unknown",
        "provider_blocked",
        "budget_exhausted",
    }
    assert any("near exhaustion" in x.explanation for r in fast for x in r.ranked)
    timed = {"subscription_limited", "provider_blocked"}  # the ones given available_at
    for r in fast:
        assert all(
            ("available_at" in e.model_fields_set) == (e.reason in timed) for e in r.excluded
        )
        assert [x.rank for x in r.ranked] == list(range(1, len(r.ranked) + 1))
        assert all(x.explanation.startswith(f"#{x.rank} by ") for x in r.ranked)
        if r.strategy == Strategy.WEIGHTED:
            keys = [(-x.score, -x.snapshot.success_rate) for x in r.ranked]
            assert keys == sorted(keys)


def _drop(field: str, build: Build) -> Build:
    def dropping(cls: type[BaseModel], values: dict[str, Any], given: Any, p: None) -> Any:
        return build(cls, {k: v for k, v in values.items() if k != field}, given, p)

    return dropping


def _retype(field: str, to: type, build: Build) -> Build:
    def retyping(cls: type[BaseModel], values: dict[str, Any], given: Any, p: None) -> Any:
        held = values.get(field)
        if held is not None and held not in (float("inf"), float("-inf")):
            values = {**values, field: to(held)}
        return build(cls, values, given, p)

    return retyping


@pytest.mark.parametrize(
    "broken",
    [
        _drop("explanation", routing._build),
        _drop("available_at", routing._build),
        _retype("score", int, routing._build),
        _retype("rank", float, routing._build),
        _retype("strategy", str, routing._build),
    ],
    ids=["drops explanation", "drops available_at", "int score", "float rank", "str strategy"],
)
def test_the_check_catches_a_dropped_or_mistyped_field(
    monkeypatch: pytest.MonkeyPatch, broken: Build
) -> None:
    """The comparison above fails for a fast build that drops a field or gives one another
    type than validation would."""
    with pytest.raises((AssertionError, AttributeError)):
        assert_same(*both(monkeypatch, broken))


def test_a_forked_process_chooses_with_its_own_random_state() -> None:
    """``choose`` without ``rng`` draws from one generator of the module (seeding a new one
    at every decision costs more than the rest of a cached decision), seeded again in a
    forked child: the child's explorations are not the parent's."""
    if not hasattr(os, "fork"):
        pytest.skip("no fork here")
    snaps = [snap("known", 5, 0, 100.0, 0.1)] + [snap(f"new-{i}", 0, 0, 0, 0) for i in range(50)]
    ranking = routing.rank(snaps, now=NOW)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        picks = ",".join(routing.choose(ranking, exploration=1.0) for _ in range(8))
        os.write(write, picks.encode())
        os._exit(0)
    os.close(write)
    ours = ",".join(routing.choose(ranking, exploration=1.0) for _ in range(8))
    with os.fdopen(read) as f:
        theirs = f.read()
    os.waitpid(pid, 0)
    assert theirs
    assert ours != theirs
    assert routing.choose(ranking, exploration=1.0, rng=random.Random(3)) == routing.choose(
        ranking, exploration=1.0, rng=random.Random(3)
    )
