"""The running totals never lie (issue 13, item 6): a pure-Python model of what a store keeps
against a real redis-server, random batches up to and past the totals' ceiling, and the
refusals that leave Redis unchanged. A fixed seed under CI=true; a fresh seed (printed on
failure) and a longer run locally."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import redis

from redis_telemetry import InvalidInputError, TelemetryStore, TokenBreakdown
from redis_telemetry.core import totals

from .helpers import event, recount, stored_derived
from .servers import RedisServer

CI = os.environ.get("CI") == "true"
SEED = 13 if CI else random.randrange(2**32)
OPERATIONS = 60 if CI else 200
MODELS = ("a", "b", "c")
BIG = 10**12  # the largest count an event may carry


@pytest.fixture
def real(redis_server: RedisServer) -> Iterator[redis.Redis]:
    with redis_server.client() as client:
        client.flushall()
        yield client


def _contribution(e: object) -> list[int]:
    ok = e.success  # type: ignore[attr-defined]
    tokens = e.tokens  # type: ignore[attr-defined]
    return [
        int(ok),
        int(not ok),
        e.latency_ms if ok else 0,  # type: ignore[attr-defined]
        0,  # untimed: every event here has a latency
        int(e.cost_usd * 1e9 + 0.5),  # type: ignore[attr-defined]
        *(getattr(tokens, name) for name in totals.TOKEN_FIELDS),
    ]


def _random_event(rng: random.Random, model: str) -> object:
    big = rng.random() < 0.5
    n = BIG if big else rng.randrange(5000)
    return event(
        model,
        success=rng.random() < 0.8,
        latency_ms=BIG if big else rng.randrange(10_000),
        ago_secs=4000.0 if rng.random() < 0.1 else rng.uniform(0, 3000),  # some outside
        tokens=TokenBreakdown(total=n, input=n // 2, output=n - n // 2),
        cost_usd=1e6 if rng.random() < 0.9 else rng.choice((0.0, 0.01)),
        event_id=f"e{rng.getrandbits(64):016x}",
    )


def test_the_totals_equal_a_model_of_the_stored_events(real: redis.Redis) -> None:
    rng = random.Random(SEED)
    store = TelemetryStore(real, window_secs=3600)
    stored: dict[str, dict[str, list[int]]] = {m: {} for m in MODELS}  # model -> id -> sums
    history: list[object] = []
    refusals = 0
    for step in range(OPERATIONS):
        model = rng.choice(MODELS)
        size = rng.randrange(1 if rng.random() < 0.2 else 500, 950)
        batch = [_random_event(rng, model) for _ in range(size)]
        if history and rng.random() < 0.3:  # retries of events already sent
            batch += rng.sample(history, min(len(history), rng.randrange(1, 50)))
            batch = [e for e in batch if e.model == model]  # type: ignore[attr-defined]
        # what the model predicts: refused when any total could pass the ceiling
        have = [sum(col) for col in zip(*stored[model].values(), strict=True)] or totals.zero()
        distinct = {e.event_id: e for e in batch}.values()  # type: ignore[attr-defined]
        plus = [sum(col) for col in zip(*map(_contribution, distinct), strict=True)]
        refused = any(h + p >= totals.CEILING for h, p in zip(have, plus, strict=True))
        before = real.zcard(f"telemetry:{{{model}}}:events")
        if refused:
            with pytest.raises(InvalidInputError, match="2\\^63"):
                store.record_batch(batch)
            refusals += 1
            assert real.zcard(f"telemetry:{{{model}}}:events") == before, (SEED, step)
        else:
            result = store.record_batch(batch)
            new = 0
            cutoff = datetime.now(UTC) - timedelta(seconds=3600)
            for e in distinct:
                eid = e.event_id  # type: ignore[attr-defined]
                if e.completed_at > cutoff and eid not in stored[model]:  # type: ignore[attr-defined]
                    stored[model][eid] = _contribution(e)
                    new += 1
            assert result.stored == new, (SEED, step)
            history += batch
        for m in MODELS:
            expect = [sum(col) for col in zip(*stored[m].values(), strict=True)] or totals.zero()
            raw = real.hmget(f"telemetry:{{{m}}}:totals", list(totals.FIELDS))
            assert [int(v or 0) for v in raw] == expect, (SEED, step, m)
            assert real.zcard(f"telemetry:{{{m}}}:events") == len(stored[m]), (SEED, step, m)
            if step % 10 == 9 or step == OPERATIONS - 1:  # the sketch and the session index too
                assert stored_derived(real, m) == recount(real, m), (SEED, step, m)
    assert refusals > 0 or not CI, "the fixed seed reaches the ceiling"


def test_a_batch_that_alone_would_pass_the_ceiling_is_refused_up_front(real: redis.Redis) -> None:
    store = TelemetryStore(real, window_secs=3600)
    batch = [event("m", cost_usd=1e6) for _ in range(totals.CEILING // 10**15 + 1)]
    with pytest.raises(InvalidInputError, match="cost_nusd past 2\\^63; nothing written"):
        store.record_batch(batch)
    assert real.keys("telemetry:{m}:*") == []
