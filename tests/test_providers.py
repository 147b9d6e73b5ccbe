"""Providers: exact shared spend, budgets and verdicts, blocks with reset times, 429 backoff,
aliases, and what routing does with them, on fakeredis, a real server and a real cluster."""

from __future__ import annotations

import logging
import multiprocessing
import shutil
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis

from redis_telemetry import AsyncTelemetryStore, ErrorSignatures, TelemetryStore
from redis_telemetry.core import limits, providers, routing
from redis_telemetry.core.commands import Cmd
from redis_telemetry.errors import InvalidInputError
from redis_telemetry.ingest.events import Limit
from redis_telemetry.ingest.run import apply_limit

from . import workers
from .conftest import Backend
from .helpers import all_keys, dump_all, event, server_ms
from .servers import RedisClusterServers, RedisServer
from .test_readme import ROOT, blocks, check_recipes, run_python_example

HOUR_MS, DAY_MS = 3_600_000, 86_400_000


def at_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def spent(store: TelemetryStore, model: str, cost: float, eid: str, at: datetime) -> int:
    e = event(model, cost_usd=cost, event_id=eid, completed_at=at)
    return store.record(e).stored


# -- the provider rule -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "provider"),
    [
        ("anthropic/claude-sonnet-4-5", "anthropic"),
        ("opencode-go/minimax-m2.5", "opencode-go"),
        ("sonnet", "claude-code"),
        ("opus", "claude-code"),
        ("haiku", "claude-code"),
        ("anthropic", "claude-code"),
        ("gpt-4o", "gpt-4o"),
        ("a/b/c", "a"),
    ],
)
def test_the_provider_rule_is_upstreams(model: str, provider: str) -> None:
    assert providers.provider_of(model, {}) == provider


def test_an_alias_folds_a_provider_for_every_replica(r: redis.Redis) -> None:
    one, two = TelemetryStore(r), TelemetryStore(r)
    assert one.provider_of("anthropic/claude-opus") == "anthropic"
    one.set_alias("anthropic", "claude-code")
    assert two.provider_of("anthropic/claude-opus") == "claude-code"
    assert two.aliases() == {"anthropic": "claude-code"}
    with pytest.raises(InvalidInputError, match="one hop"):
        two.set_alias("kimi", "anthropic")
    with pytest.raises(InvalidInputError, match="itself"):
        two.set_alias("kimi", "kimi")
    one.set_alias("anthropic", None)
    assert two.provider_of("anthropic/claude-opus") == "anthropic"


def test_spend_of_aliased_providers_is_summed(store: TelemetryStore, r: redis.Redis) -> None:
    now = at_ms(server_ms(r))
    spent(store, "anthropic/claude-opus", 0.5, "a", now)
    spent(store, "sonnet", 0.25, "b", now)
    assert store.budget("claude-code").day_spend_usd == 0.25
    store.set_alias("anthropic", "claude-code")
    b = store.budget("claude-code")
    assert b.day_spend_usd == 0.75
    assert [p.provider for p in store.providers()] == ["claude-code"]


# -- spend ------------------------------------------------------------------------------------


def test_spend_counts_each_stored_event_once(store: TelemetryStore, r: redis.Redis) -> None:
    now = at_ms(server_ms(r))
    assert spent(store, "kimi/k2", 0.5, "e1", now) == 1
    assert spent(store, "kimi/k2", 0.5, "e1", now) == 0  # a retry: a duplicate counts nothing
    batch = [
        event("kimi/k2", cost_usd=1.0, event_id="e1", completed_at=now),  # duplicate again
        event("kimi/k2", cost_usd=0.125, event_id="e2", completed_at=now),
        event("kimi/k3", cost_usd=0.25, event_id="e3", completed_at=now),
    ]
    assert store.record_batch(batch).stored == 2
    b = store.budget("kimi")
    assert (b.hour_spend_usd, b.day_spend_usd) == (0.875, 0.875)
    assert b.verdict == "uncapped"
    # a restored dump counts nothing more: its events keep their ids
    store.restore(store.dump())
    assert store.budget("kimi").day_spend_usd == 0.875


def test_an_event_of_an_earlier_hour_counts_in_its_day_only(
    store: TelemetryStore, r: redis.Redis
) -> None:
    """The hour boundary is the server's: an event stamped just before the current hour
    (by Redis's clock) is out of the hour window, in the day window when that is the same."""
    now = server_ms(r)
    hour_start = now // HOUR_MS * HOUR_MS
    if hour_start - 1 < now - 3_600_000 + 60_000:  # keep it inside the store's 1 h window
        pytest.skip("the hour began too long ago for the window")  # pragma: no cover
    spent(store, "zai/glm", 1.0, "before", at_ms(hour_start - 1))
    spent(store, "zai/glm", 2.0, "after", at_ms(hour_start))
    b = store.budget("zai")
    same_day = (hour_start - 1) // DAY_MS == now // DAY_MS
    assert b.hour_spend_usd == 2.0
    assert b.day_spend_usd == (3.0 if same_day else 2.0)


def test_the_hour_rolls_by_the_servers_clock(r: redis.Redis, backend: Backend) -> None:
    """The windows are read at the server's hour: spend of the current hour leaves the hour
    window when the server's clock passes the hour (a store with a long window records an event
    one hour back; its hour bucket is the previous one, while its day may still count)."""
    store = TelemetryStore(r, window_secs=3 * 86_400)
    now = server_ms(r)
    earlier = now - HOUR_MS
    spent(store, "roll/m", 1.0, "old", at_ms(earlier))
    spent(store, "roll/m", 4.0, "new", at_ms(now))
    b = store.budget("roll")
    assert b.hour_spend_usd == 4.0  # the previous hour rolled away
    assert b.day_spend_usd == (5.0 if earlier // DAY_MS == now // DAY_MS else 4.0)
    # and a day back rolls out of the day too
    spent(store, "roll/m", 8.0, "yesterday", at_ms(now - DAY_MS))
    assert store.budget("roll").day_spend_usd == b.day_spend_usd


def test_verdict_thresholds(store: TelemetryStore, r: redis.Redis) -> None:
    now = at_ms(server_ms(r))
    store.set_budget("p", hour_usd=1.0)
    assert store.budget("p").verdict == "ok"
    spent(store, "p/m", 0.79, "a", now)
    assert store.budget("p").verdict == "ok"
    spent(store, "p/m", 0.01, "b", now)  # 80% exactly
    assert store.budget("p").verdict == "near_exhaustion"
    spent(store, "p/m", 0.19, "c", now)
    assert store.budget("p").verdict == "near_exhaustion"
    spent(store, "p/m", 0.01, "d", now)  # 100%
    b = store.budget("p")
    assert (b.verdict, b.hour_cap_usd, b.day_cap_usd) == ("exhausted", 1.0, None)
    store.set_budget("p", hour_usd=None, day_usd=100.0)  # caps change at any time
    assert store.budget("p").verdict == "ok"
    store.set_budget("p", day_usd=1.25)
    assert store.budget("p").verdict == "near_exhaustion"
    store.set_budget("p", hour_usd=0.0)  # a cap of 0 is always exhausted
    assert store.budget("p").verdict == "exhausted"


def test_exhaust_forces_until_the_windows_roll(store: TelemetryStore) -> None:
    store.exhaust("idle")
    b = store.budget("idle")
    assert (b.verdict, b.forced, b.day_spend_usd) == ("exhausted", True, 0.0)
    store.set_budget("capped", hour_usd=5.0)
    store.exhaust("capped")
    assert store.budget("capped").verdict == "exhausted"


def test_bad_budgets_are_refused_and_change_nothing(store: TelemetryStore, r: redis.Redis) -> None:
    before = dump_all(r)
    for bad in (-1.0, float("nan"), float("inf"), "1", True):
        with pytest.raises(InvalidInputError, match="hour_usd"):
            store.set_budget("p", hour_usd=bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="'/'"):
        store.set_budget("a/b", day_usd=1.0)
    assert dump_all(r) == before


# -- blocks and backoff -----------------------------------------------------------------------

NOW = datetime(2026, 3, 1, 10, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "after"),
    [
        ("usage limit reached, resets in 2 hours", timedelta(hours=2)),
        ("resets in 30 minutes", timedelta(minutes=30)),
        ("5-hour limit reached, resets in 4h", timedelta(hours=4)),
        ("resets in 30m", timedelta(minutes=30)),
        ("you've hit your session limit, resets 11pm", timedelta(hours=12, minutes=30)),
        ("session limit reached, resets 7am", timedelta(hours=20, minutes=30)),
        ("quota resets at 14:00 UTC", timedelta(hours=3, minutes=30)),
        ("quota resets at 09:15 UTC.", timedelta(hours=22, minutes=45)),
        ("limit reached, resets 4pm (Europe/Berlin)", timedelta(hours=4, minutes=30)),
        ("retry after 90 seconds", timedelta(seconds=90)),
        ("resets whenever", timedelta(hours=1)),  # upstream: an unread reset is an hour
    ],
)
def test_each_reset_form(text: str, after: timedelta) -> None:
    assert providers.reset_time(text, NOW) == NOW + after


def test_no_reset_is_none_and_classify_picks_block_or_backoff() -> None:
    assert providers.reset_time("something unrelated", NOW) is None
    assert providers.classify("429 Too Many Requests", NOW) == ("backoff", None)
    assert providers.classify("usage limit reached", NOW) == (
        "block",
        NOW + timedelta(seconds=900),
    )
    assert providers.classify("usage limit, resets in 2h", NOW) == (
        "block",
        NOW + timedelta(hours=2),
    )
    assert providers.classify("connection reset by peer", NOW) == ("none", None)


def test_a_block_reads_its_reset_and_keeps_the_longer(
    store: TelemetryStore, r: redis.Redis
) -> None:
    assert store.provider_blocked_until("kimi") is None
    t0 = server_ms(r)
    until = store.block_provider("kimi", reason="usage limit, resets in 2 hours")
    assert until is not None
    assert abs(until.timestamp() * 1000 - (t0 + 2 * HOUR_MS)) < 5000
    shorter = store.block_provider("kimi", reason="resets in 30m")
    assert shorter == until  # a later block in place is kept
    default = store.block_provider("other", reason="quota exceeded")
    assert default is not None
    assert abs(default.timestamp() * 1000 - (t0 + 900_000)) < 5000
    fixed = at_ms(t0 + 5 * HOUR_MS)
    assert store.block_provider("other", until=fixed) == fixed
    assert store.provider_blocked_until("other") == fixed
    assert store.block_provider("third", until=at_ms(t0 - 1000)) is None  # past: nothing
    assert store.provider_blocked_until("third") is None
    store.unblock_provider("other")
    assert store.provider_blocked_until("other") is None


def test_backoff_sequence_and_its_reset(r: redis.Redis) -> None:
    one, two = TelemetryStore(r), TelemetryStore(r)  # two replicas share the backoff
    steps = []
    for i in range(7):
        t0 = server_ms(r)
        end = (one if i % 2 else two).provider_throttled("openai")
        steps.append(round((end.timestamp() * 1000 - t0) / 1000 / 10) * 10)
    assert steps == [60, 120, 240, 480, 600, 600, 600]
    assert two.provider_status("openai").backoff_level == 5
    one.provider_succeeded("openai")
    s = two.provider_status("openai")
    assert (s.backoff_level, s.blocked_until) == (0, None)
    t0 = server_ms(r)
    end = two.provider_throttled("openai")
    assert abs(end.timestamp() * 1000 - (t0 + 60_000)) < 5000


def test_provider_failed_feeds_blocks_and_backoff(store: TelemetryStore) -> None:
    assert store.provider_failed("a", "429 Too Many Requests") == "backoff"
    assert store.provider_status("a").backoff_level == 1
    assert store.provider_failed("b", "weekly limit reached") == "block"
    assert store.provider_blocked_until("b") is not None
    assert store.provider_failed("c", "socket closed") == "none"
    assert store.provider_blocked_until("c") is None


# -- routing ----------------------------------------------------------------------------------


def test_routing_drops_blocked_and_exhausted_providers(
    store: TelemetryStore, r: redis.Redis
) -> None:
    now = at_ms(server_ms(r))
    for i, m in enumerate(("a/fast", "b/mid", "c/slow")):
        store.record(event(m, latency_ms=100 * (i + 1), cost_usd=0.01, completed_at=now))
    assert store.select_model(["a/fast", "b/mid", "c/slow"]) == "a/fast"
    store.block_provider("a", reason="usage limit, resets in 2 hours")
    store.set_budget("b", day_usd=0.01)
    ranking = store.rank_models(["a/fast", "b/mid", "c/slow", "a/new"])
    assert [x.model for x in ranking.ranked] == ["c/slow"]
    why = {e.model: (e.reason, e.explanation) for e in ranking.excluded}
    assert why["a/fast"][0] == "provider_blocked"
    assert "blocked" in why["a/fast"][1]
    assert why["b/mid"][0] == "budget_exhausted"
    assert "budget exhausted" in why["b/mid"][1]
    assert why["a/new"][0] == "provider_blocked"  # exploration never picks it
    assert store.select_model(["a/fast", "a/new", "c/slow"], exploration=1.0) == "c/slow"


def test_near_exhaustion_penalises_the_weighted_score(
    store: TelemetryStore, r: redis.Redis
) -> None:
    now = at_ms(server_ms(r))
    store.record(event("a/m", latency_ms=100, cost_usd=0.01, completed_at=now))
    store.record(event("b/m", latency_ms=120, cost_usd=0.01, completed_at=now))
    before = store.rank_models(["a/m", "b/m"], "weighted")
    assert [x.model for x in before.ranked] == ["a/m", "b/m"]
    store.set_budget("a", hour_usd=0.0125)  # 80%
    after = store.rank_models(["a/m", "b/m"], "weighted")
    assert [x.model for x in after.ranked] == ["b/m", "a/m"]
    a = after.ranked[1]
    assert a.score == pytest.approx(before.ranked[0].score * providers.NEAR_EXHAUSTION_PENALTY)
    assert "near exhaustion" in a.explanation
    assert a.explanation.startswith("#2 ")
    fastest = store.rank_models(["a/m", "b/m"], "fastest")  # other strategies: said, kept
    assert [x.model for x in fastest.ranked] == ["a/m", "b/m"]
    assert "budget near exhaustion" in fastest.ranked[0].explanation


# -- TTLs and keys ----------------------------------------------------------------------------


def test_every_new_key_has_a_ttl(store: TelemetryStore, r: redis.Redis) -> None:
    now = at_ms(server_ms(r))
    store.record(event("k/m", cost_usd=0.5, completed_at=now))
    store.record_batch([event("k/n", cost_usd=0.5, completed_at=now) for _ in range(3)])
    store.set_budget("k", hour_usd=1.0, day_usd=2.0)
    store.exhaust("j")
    store.block_provider("i", reason="resets in 2h")
    store.provider_throttled("h")
    store.set_alias("g", "k")
    keys = all_keys(r)
    for name in (b":spend", b":provider", b"providers", b"spenders", b"aliases"):
        assert any(name in k for k in keys), name
    assert {k: r.pttl(k) for k in keys if r.pttl(k) < 0} == {}


def test_the_spend_hash_stays_bounded(r: redis.Redis) -> None:
    store = TelemetryStore(r, window_secs=3 * 86_400)
    now = server_ms(r)
    model = "bound/m"
    key = store._core.keys.spend(model)
    # stale fields of earlier hours (written by hand here) leave with the next new field
    r.hset(key, mapping={f"h:{now // HOUR_MS - 100 - i}": 1 for i in range(20)})
    r.pexpire(key, 60_000)
    store.record(event(model, cost_usd=0.5, completed_at=at_ms(now)))
    fields = {f.decode() for f in r.hkeys(key)}
    assert fields == {f"h:{now // HOUR_MS}", f"d:{now // DAY_MS}"}
    assert r.pttl(key) > 60_000  # extended to the day's end, never shortened


# -- async ------------------------------------------------------------------------------------


async def test_the_async_store_runs_the_same_ops(astore: AsyncTelemetryStore, ar: Any) -> None:
    sec, usec = await ar.time()
    now = at_ms(int(sec) * 1000 + int(usec) // 1000)
    await astore.record(event("x/m", cost_usd=0.5, completed_at=now, event_id="1"))
    await astore.record(event("x/m", cost_usd=0.5, completed_at=now, event_id="1"))
    await astore.set_budget("x", hour_usd=0.5)
    assert (await astore.budget("x")).verdict == "exhausted"
    assert await astore.provider_of("x/m") == "x"
    await astore.provider_throttled("x")
    assert await astore.provider_blocked_until("x") is not None
    ranking = await astore.rank_models(["x/m"])
    assert ranking.excluded[0].reason == "provider_blocked"


# -- exact spend under concurrent writers ---------------------------------------------------

WRITERS, EVENTS = 4, 60


@pytest.mark.slow
def test_exact_spend_under_concurrent_writers_with_retries(url: str) -> None:
    exact_spend_under_writers(url)


@pytest.mark.slow
def test_exact_spend_under_concurrent_writers_on_a_cluster(
    redis_cluster: RedisClusterServers,
) -> None:
    port = redis_cluster.nodes[0].port
    with redis.cluster.RedisCluster(host="127.0.0.1", port=port) as c:
        c.flushall()
    exact_spend_under_writers(f"redis+cluster://127.0.0.1:{port}/0")


def exact_spend_under_writers(url: str) -> None:
    """4 processes each write EVENTS events, every one twice (a retry) and some in batches
    that repeat another writer's ids: the spend is exactly the sum of the distinct events."""
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(WRITERS, mp_context=ctx) as pool:
        jobs = [pool.submit(workers.spender, url, w, EVENTS, WRITERS) for w in range(WRITERS)]
        stored = sum(f.result(timeout=120) for f in jobs)
    store = TelemetryStore.from_url(url)
    # ids overlap across writers: each distinct id once, cost (i + 1) micro-USD
    distinct = WRITERS * EVENTS // 2
    assert stored == distinct
    expected = sum(i + 1 for i in range(distinct)) / 1e6
    b = store.budget("spend")
    assert b.day_spend_usd == pytest.approx(expected, abs=1e-12)
    assert round(b.day_spend_usd * 1e9) == round(expected * 1e9)
    store.client.close()


def test_apply_providers_is_a_no_op_without_status() -> None:
    ranking = routing.Ranking(strategy=routing.Strategy.FASTEST, ranked=[], excluded=[])
    assert routing.apply_providers(ranking, {}) == ranking


# -- feeding: ingest and the LiteLLM integration ---------------------------------------------


def test_feedback_backs_off_blocks_and_resets(store: TelemetryStore, r: redis.Redis) -> None:
    now = at_ms(server_ms(r))
    _, cooled = limits.answer_429("429 Too Many Requests", {}, now, cooldown_secs=5)
    assert "no retry time given" in cooled  # what the LiteLLM logger stores for a bare 429
    failed = event("openai/gpt", False, error=cooled, completed_at=now)
    assert store.provider_feedback([failed, failed]) == 2  # each 429 escalates
    assert store.provider_status("openai").backoff_level == 2
    assert store.provider_feedback([event("openai/gpt", completed_at=now)]) == 1
    assert store.provider_status("openai").backoff_level == 0
    quota = event(
        "kimi/k2", False, error="usage limit reached, resets in 2 hours", completed_at=now
    )
    store.provider_feedback([quota])
    until = store.provider_blocked_until("kimi")
    assert until is not None
    assert abs((until - now).total_seconds() - 7200) < 5
    # history: a 429 older than the longest backoff changes nothing
    old = event("zai/glm", False, error="429 Too Many Requests", ago_secs=1200)
    assert store.provider_feedback([old]) == 0
    # a tool's failure is not the provider's
    tool = event("zai/glm", False, error=limits.not_the_providers("429 from a test server"))
    assert store.provider_feedback([tool]) == 0


def test_ingest_blocks_the_provider_for_an_account_limit_only(
    store: TelemetryStore, r: redis.Redis
) -> None:
    now = at_ms(server_ms(r))
    ends = now + timedelta(hours=3)
    assert apply_limit(store, Limit("anthropic/claude-opus", ends, "5-hour limit reached"), now)
    assert store.provider_blocked_until("anthropic") == ends.replace(
        microsecond=ends.microsecond // 1000 * 1000
    )
    weekly = Limit("kimi/opus-like", ends, "rate_limit_event: seven_day_opus")
    assert apply_limit(store, weekly, now)
    assert store.provider_blocked_until("kimi") is None  # the model only
    assert store.model_performance("kimi/opus-like").subscription_limit_reached
    bare = Limit("zai/glm", None, "429 Too Many Requests")
    assert apply_limit(store, bare, now)
    assert store.provider_status("zai").backoff_level == 1


def test_the_pages_redis_cli_recipes_answer_as_shown(redis_server: RedisServer) -> None:
    """docs/providers.md's recipes, replayed after its example (its own server, flushed)."""
    page = ROOT / "docs" / "providers.md"
    with redis_server.client() as c:
        c.flushall()
    run_python_example(blocks(page, "python")[0], "docs/providers.md", redis_server.url)
    cli = shutil.which("redis-cli")
    assert cli is not None
    assert check_recipes(blocks(page, "console")[0], cli, redis_server.port) >= 7


def _spending(
    store: TelemetryStore, r: redis.Redis, costs: dict[str, float], day_usd: float
) -> datetime:
    """Each model of ``costs`` spends its cost now; provider ``a`` gets a day cap."""
    now = at_ms(server_ms(r))
    store.record_batch([event(m, cost_usd=c, completed_at=now) for m, c in costs.items()])
    store.set_budget("a", day_usd=day_usd)
    return now


def _sent(store: TelemetryStore, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every batch the store sends from now on."""
    batches: list[Any] = []
    execute = store._execute

    def spied(batch: Any, deadline: Any) -> Any:
        batches.append(batch)
        return execute(batch, deadline)

    monkeypatch.setattr(store, "_execute", spied)
    return batches


def test_a_routing_read_of_providers_is_one_round_trip_once_warm(
    store: TelemetryStore, r: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = _spending(store, r, {"a/x": 0.1, "b/y": 0.1}, day_usd=10.0)
    batches = _sent(store, monkeypatch)
    first = store._run(store._core.provider_view(["a/x", "b/y"]))
    trips_cold = len(batches)
    batches.clear()
    warm = store._run(store._core.provider_view(["a/x", "b/y"]))
    assert (trips_cold, len(batches)) == (2, 1)
    assert warm.status == first.status
    assert warm.status["a"].budget.day_spend_usd == pytest.approx(0.1)
    # a new spender is read in a second round trip, once
    store.record(event("a/z", cost_usd=0.2, completed_at=now))
    batches.clear()
    again = store._run(store._core.provider_view(["a/x"]))
    assert len(batches) == 2
    assert again.status["a"].budget.day_spend_usd == pytest.approx(0.3)
    # a ranking reads the providers beside the snapshots: one round trip once warm
    store.rank_models(["a/x", "a/z", "b/y"])
    batches.clear()
    ranking = store.rank_models(["a/x", "a/z", "b/y"])
    assert len(batches) == 1
    assert {r.model for r in ranking.ranked} == {"a/x", "a/z", "b/y"}


def test_a_ranking_reads_its_candidates_spend_with_their_snapshots(
    store: TelemetryStore, r: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """snapshot.lua returns each candidate's spend: the ranking reads only the other
    spenders' spend hashes, still counts every model of a provider, and sees a candidate's new
    spend at once (the write that adds it moves the totals' gen)."""
    now = _spending(store, r, {"a/x": 2.0, "a/z": 7.0, "b/y": 0.1}, day_usd=10.0)
    store.rank_models(["a/x", "b/y"])  # warm: the spenders are known, the replies held
    batches = _sent(store, monkeypatch)
    ranking = store.rank_models(["a/x", "b/y"])
    spend_keys = [
        c.args[0]
        for batch in batches
        for c in batch
        if isinstance(c, Cmd) and c.method == "hgetall" and c.args[0].endswith(":spend")
    ]
    assert spend_keys == ["telemetry:{a/z}:spend"]  # not a candidate's
    assert {x.model for x in ranking.ranked} == {"a/x", "b/y"}  # 9.0 of 10: near, not out
    store.record(event("a/x", cost_usd=1.5, completed_at=now))  # 10.5 of 10: exhausted
    ranking = store.rank_models(["a/x", "b/y"])
    assert [x.model for x in ranking.ranked] == ["b/y"]
    assert [(e.model, e.reason) for e in ranking.excluded] == [("a/x", "budget_exhausted")]


def test_a_candidates_spend_key_of_another_type_is_read_as_before(
    store: TelemetryStore, r: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    _spending(store, r, {"a/x": 1.0, "a/z": 1.0}, day_usd=1.5)
    r.delete("telemetry:{a/x}:spend")
    r.set("telemetry:{a/x}:spend", "written by hand")
    with caplog.at_level(logging.WARNING):
        ranking = store.rank_models(["a/x"])
    assert "telemetry:{a/x}:spend" in caplog.text  # skipped, logged
    assert [x.model for x in ranking.ranked] == ["a/x"]  # a/z's 1.0 alone: not exhausted


def test_the_windows_roll_at_the_servers_hour_and_day() -> None:
    """The read picks the buckets of the server's hour and day: one millisecond past the hour,
    the hour's spend is 0 again, the day's stays; past midnight both are 0. A forced
    exhaustion rolls the same way."""
    hour = 493_210  # hours since the epoch, some hour of some day
    day = hour // 24
    fields = {f"h:{hour}": "5", f"d:{day}": "7"}
    last_ms = (hour + 1) * HOUR_MS - 1
    assert providers.spend_in(fields, last_ms) == (5, 7)
    assert providers.spend_in(fields, last_ms + 1) == (0, 7 if (hour + 1) // 24 == day else 0)
    assert providers.spend_in(fields, (day + 1) * DAY_MS) == (0, 0)
    forced = {"hour_cap": "100", "xh": str(hour), "xd": str(day)}
    assert providers.budget("p", forced, (0, 0), last_ms).verdict == "exhausted"
    assert providers.budget("p", forced, (0, 0), last_ms + 1).verdict == "ok"  # hour cap only
    day_capped = {**forced, "day_cap": "100"}
    assert providers.budget("p", day_capped, (0, 0), last_ms + 1).verdict == (
        "exhausted" if (hour + 1) // 24 == day else "ok"
    )
    uncapped = {"xh": str(hour), "xd": str(day)}
    assert providers.budget("p", uncapped, (0, 0), (day + 1) * DAY_MS).verdict == "uncapped"


def test_corrupt_fields_count_nothing() -> None:
    now_ms = 493_210 * HOUR_MS
    assert providers.spend_in({f"h:{493_210}": "x", f"d:{now_ms // DAY_MS}": "-5"}, now_ms) == (
        0,
        0,
    )
    b = providers.budget("p", {"hour_cap": "oops"}, (1, 1), now_ms)
    assert (b.hour_cap_usd, b.verdict) == (None, "uncapped")


def test_keys_of_the_wrong_type_read_as_empty(
    store: TelemetryStore, r: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    now = at_ms(server_ms(r))
    store.record(event("w/m", cost_usd=0.5, completed_at=now))
    r.set("telemetry:aliases", "by hand")
    r.set("telemetry:providers", "by hand")
    r.delete("telemetry:{w/m}:spend")
    r.set("telemetry:{w/m}:spend", "by hand")
    found = {p.provider: p for p in store.providers()}
    assert found["w"].budget.day_spend_usd == 0.0
    assert store.provider_of("w/m") == "w"
    skipped = " ".join(rec.message for rec in caplog.records)
    for key in ("telemetry:aliases", "telemetry:providers", "telemetry:{w/m}:spend"):
        assert f"skipped {key}" in skipped
    # a write still stores its event, whole: the spend key is left alone
    assert store.record(event("w/m", cost_usd=0.5, completed_at=now)).stored == 1
    assert store.model_performance("w/m").successful_completions == 2
    assert r.get("telemetry:{w/m}:spend") == b"by hand"


def test_error_signatures_sort_throttle_and_flake_first(store: TelemetryStore) -> None:
    """The reference's error_signatures.rs: a provider's own patterns, case-insensitive; a
    throttle exhausts the provider, a flake changes nothing."""
    sigs = ErrorSignatures(throttle=[r"insufficient balance"], flake=[r"connection reset|EOF"])
    assert store.provider_failed("kimi", "Insufficient Balance on account", sigs) == "throttle"
    assert store.budget("kimi").verdict == "exhausted"
    assert store.provider_failed("zai", "429 Too Many Requests, eof", sigs) == "flake"
    assert store.provider_status("zai").backoff_level == 0
    assert store.provider_failed("zai", "429 Too Many Requests", sigs) == "backoff"
    with pytest.raises(ValueError, match="invalid throttle error signature"):
        ErrorSignatures(throttle=["("])
