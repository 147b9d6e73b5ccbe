"""The behavioural suite: runs on fakeredis and on a real redis-server (see conftest.backend)."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta, timezone

import fakeredis
import msgpack
import pytest
import redis

from redis_telemetry import (
    CompletionEvent,
    InvalidInputError,
    ModelPerformanceSnapshot,
    TelemetryError,
    TelemetryStore,
    TelemetrySummary,
    TokenBreakdown,
    WindowMismatchError,
)
from redis_telemetry.core import scripts
from redis_telemetry.core.commands import SingleCommand
from redis_telemetry.core.snapshot import ms_to_datetime

from .helpers import all_keys, dump_all, event, now, recount, server_ms, stored_derived
from .servers import RedisServer

# -- the reference's tests, ported ------------------------------------------------------------


def test_record_and_query_performance(store: TelemetryStore) -> None:
    store.record(event("model-a", True, 100))
    store.record(event("model-a", True, 200))
    store.record(event("model-a", False, 5000))

    perf = store.model_performance("model-a")
    assert perf.successful_completions == 2
    assert perf.failed_completions == 1
    assert perf.avg_latency_ms == pytest.approx(150.0)
    assert perf.success_rate == pytest.approx(2 / 3)
    assert perf.throughput == pytest.approx(2 / 3600)
    assert perf.subscription_limit_reached
    assert perf.is_subscription_limited()


def test_session_usage(store: TelemetryStore) -> None:
    store.record(
        CompletionEvent(
            model="model-a",
            session_id="sess-1",
            completed_at=now(),
            latency_ms=100,
            success=True,
            tokens=TokenBreakdown(total=500, input=400, output=100),
            cost_usd=0.005,
        )
    )
    usage = store.session_usage("sess-1")
    assert usage.totals.total_tokens == 500
    assert usage.totals.input_tokens == 400
    assert usage.totals.output_tokens == 100
    assert usage.totals.message_count == 1
    assert usage.totals.cost_usd == pytest.approx(0.005)
    assert "model-a" in usage.by_model
    assert usage.window_end - usage.window_start == timedelta(seconds=3600)


def test_an_unmeasured_latency_counts_for_everything_but_latency(
    store: TelemetryStore, r: redis.Redis
) -> None:
    store.record_batch(
        [event("m", True, None) for _ in range(3)]
        + [event("m", True, 100), event("m", True, 300), event("m", False, None, error="x")]
    )
    fast = store.model_performance("m")
    assert (fast.successful_completions, fast.failed_completions) == (5, 1)
    assert fast.latency_samples == 2
    assert fast.avg_latency_ms == 200.0  # over the two measured, not the five successes
    assert fast.tokens.total == 6000
    assert fast.latency_p99_ms == pytest.approx(300, rel=1 / 128)
    exact = store.model_performance("m", percentiles=True)
    assert (exact.latency_p50_ms, exact.latency_p99_ms, exact.latency_samples) == (100, 300, 2)
    assert stored_derived(r, "m") == recount(r, "m")
    assert [e.latency_ms for e in store.events("m")].count(None) == 4
    only = event("n", True, None)
    store.record(only)
    snap = store.model_performance("n")
    assert (snap.latency_samples, snap.avg_latency_ms, snap.latency_p50_ms) == (0, 0.0, None)
    ranking = store.rank_models(["n", "m"], "fastest")
    assert [x.model for x in ranking.ranked] == ["m", "n"]  # n's latency is unknown, not 0 ms
    assert ranking.ranked[1].score == float("inf")


def test_unknown_model_returns_empty(store: TelemetryStore) -> None:
    perf = store.model_performance("unknown")
    assert perf.successful_completions == 0
    assert not perf.subscription_limit_reached
    assert perf == ModelPerformanceSnapshot.empty("unknown", 3600)


def test_import_summary_restores_events(r: redis.Redis, store: TelemetryStore) -> None:
    store.record(event("model-a", True, 200, session_id="sess-1"))
    assert store.model_performance("model-a").successful_completions == 1
    summary = store.export_summary()

    r.flushdb()
    restored = TelemetryStore(r, window_secs=3600)
    restored.import_summary(summary)
    perf = restored.model_performance("model-a")
    assert perf.successful_completions > 0
    assert perf.avg_latency_ms > 0.0


def test_import_summary_restores_subscription_limits(r: redis.Redis, store: TelemetryStore) -> None:
    store.record(
        event("model-b", False, 100, session_id="sess-2", error="weekly session limit reached")
    )
    summary = store.export_summary()

    r.flushdb()
    restored = TelemetryStore(r, window_secs=3600)
    restored.import_summary(summary)
    perf = restored.model_performance("model-b")
    assert perf.subscription_limit_reached
    assert 3590 < r.ttl("telemetry:{model-b}:limit") <= 3600


def test_import_summary_prunes_stale_data(store: TelemetryStore) -> None:
    old = now() - timedelta(seconds=7200)
    summary = TelemetrySummary(
        id="telemetry_summary",
        model_performances=[
            ModelPerformanceSnapshot(
                model="stale-model",
                successful_completions=5,
                failed_completions=0,
                window_secs=3600,
                throughput=0.001,
                avg_latency_ms=500.0,
                success_rate=1.0,
                last_event_at=old,
            )
        ],
        window_secs=3600,
        exported_at=old,
    )
    store.import_summary(summary)
    assert store.model_performance("stale-model").successful_completions == 0


# -- import details ---------------------------------------------------------------------------


def test_import_synthesises_like_the_reference(store: TelemetryStore) -> None:
    last = now() - timedelta(seconds=1300)
    summary = TelemetrySummary(
        model_performances=[
            ModelPerformanceSnapshot(
                model="m",
                successful_completions=3,
                failed_completions=7,
                window_secs=3600,
                throughput=0.01,
                avg_latency_ms=812.9,
                success_rate=0.85,
                last_event_at=last,
            )
        ],
        window_secs=3600,
        exported_at=last,
    )
    result = store.import_summary(summary)
    perf = store.model_performance("m")
    # 3 successes spread 1200 s apart back from `last`: the one at `last - 2400 s` is outside;
    # failures are capped at 3, at `last`; latency is the average, truncated like `as u64`.
    assert perf.successful_completions == 2
    assert perf.failed_completions == 3
    assert perf.avg_latency_ms == 812.0
    assert perf.last_event_at == last
    assert result.stored == 5
    assert result.outside_window == 1
    # ids derive from the summary: importing it again adds nothing
    again = store.import_summary(summary)
    assert again.stored == 0
    assert store.model_performance("m").successful_completions == 2


# -- semantics beyond the reference ---------------------------------------------------------


def test_identical_events_count_twice(store: TelemetryStore) -> None:
    e = event("m")
    store.record(e)
    store.record(e)
    store.record_batch([e, e.model_copy()])
    assert store.model_performance("m").successful_completions == 4


def test_an_event_with_an_id_is_stored_once(store: TelemetryStore) -> None:
    e = event("m", event_id="evt-1")
    assert store.record(e).stored == 1
    again = store.record(e)
    assert (again.stored, again.duplicates) == (0, 1)
    assert store.model_performance("m").successful_completions == 1


def test_a_batch_counts_each_event_with_an_id_once(store: TelemetryStore) -> None:
    a, b = event("m", event_id="evt-a"), event("m", False, event_id="evt-b")
    first = store.record_batch([a, b, a, event("n", event_id="evt-a")])
    assert (first.stored, first.duplicates) == (3, 1)  # evt-a twice for m; once for n
    old = event("m", ago_secs=4000, event_id="evt-old")
    c = event("m", event_id="evt-c", error="429 Too Many Requests", success=False)
    mixed = store.record_batch([b, c, old, a, c])
    assert (mixed.stored, mixed.duplicates, mixed.outside_window) == (1, 3, 1)
    perf = store.model_performance("m")
    assert (perf.successful_completions, perf.failed_completions) == (1, 2)
    assert perf.subscription_limit_reached  # from c, stored by the general path


def test_window_is_exact_at_read_time(r: redis.Redis) -> None:
    store = TelemetryStore(r, window_secs=2)
    store.record(event("m", ago_secs=1.0))
    store.record(event("m", latency_ms=300))
    assert store.model_performance("m").successful_completions == 2
    first = r.zrange("telemetry:{m}:events", 0, 0, withscores=True)[0][1]
    # wait (on the server's clock) until the older event has left the window; no write happens
    deadline = time.monotonic() + 10
    while server_ms(r) <= first + 2000:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    perf = store.model_performance("m")
    assert perf.successful_completions == 1
    assert perf.avg_latency_ms == 300.0
    assert r.zcard("telemetry:{m}:events") == 2  # still stored: the read is exact, not trimmed
    assert [p.successful_completions for p in store.all_model_performances()] == [1]


def test_old_events_are_not_stored(r: redis.Redis, store: TelemetryStore) -> None:
    result = store.record_batch([event("m", ago_secs=3601), event("m", ago_secs=10)])
    assert (result.stored, result.outside_window) == (1, 1)
    assert r.zcard("telemetry:{m}:events") == 1
    assert store.model_performance("m").successful_completions == 1


def test_only_old_events_leave_no_keys_behind(r: redis.Redis, store: TelemetryStore) -> None:
    store.record(event("m", ago_secs=7200))
    assert r.exists("telemetry:{m}:events") == 0
    assert store.known_models() == []


def test_writes_trim_events_at_or_before_the_cutoff(r: redis.Redis) -> None:
    store = TelemetryStore(r, window_secs=3600)
    key = "telemetry:{m}:events"
    store.record(event("m"))
    # an event written by hand, already out of the window
    r.zadd(key, {b"stale": server_ms(r) - 3_600_000})
    store.record(event("m"))
    assert r.zcard(key) == 3  # a single write trims when the count reaches a multiple of 4
    store.record(event("m"))
    assert r.zcard(key) == 3
    assert b"stale" not in r.zrange(key, 0, -1)
    r.zadd(key, {b"stale": server_ms(r) - 3_600_000})
    store.record_batch([event("m"), event("m")])  # a batch always trims
    assert r.zcard(key) == 5
    assert b"stale" not in r.zrange(key, 0, -1)
    assert store.model_performance("m").successful_completions == 5


def test_last_event_at_is_the_newest_not_the_last_pushed(store: TelemetryStore) -> None:
    newest = now() - timedelta(seconds=5)
    store.record(event("m", completed_at=newest))
    store.record(event("m", ago_secs=60))
    assert store.model_performance("m").last_event_at == newest


def test_limit_key_ttl_and_expiry(r: redis.Redis) -> None:
    store = TelemetryStore(r, window_secs=3600, subscription_limit_ttl_secs=120)
    store.record(event("m", False, error="Error 429: Too Many Requests"))
    ttl = r.ttl("telemetry:{m}:limit")
    assert 115 <= ttl <= 120
    perf = store.model_performance("m")
    assert perf.subscription_limit_reached
    assert perf.subscription_limit_expires_at is not None
    expected = datetime.fromtimestamp(server_ms(r) / 1000, UTC) + timedelta(seconds=120)
    assert abs((perf.subscription_limit_expires_at - expected).total_seconds()) < 5
    assert r.get("telemetry:{m}:limit") == b"Error 429: Too Many Requests"


def test_each_new_limit_error_extends_the_block(r: redis.Redis) -> None:
    store = TelemetryStore(r, window_secs=3600, subscription_limit_ttl_secs=100)
    store.record(event("m", False, error="weekly session limit reached"))
    r.pexpire("telemetry:{m}:limit", 5000)  # pretend the block is almost over
    store.record(event("m", False, error="weekly session limit reached"))
    assert r.ttl("telemetry:{m}:limit") > 90


def test_a_limit_error_blocks_until_the_reset_time_it_names(r: redis.Redis) -> None:
    store = TelemetryStore(r, window_secs=3600, subscription_limit_ttl_secs=100)
    at = datetime.fromtimestamp(server_ms(r) / 1000, UTC)
    reset = (at + timedelta(hours=5)).replace(minute=0, second=0, microsecond=0)
    error = f"5-hour limit reached ∙ resets {reset.strftime('%-I%p').lower()} (UTC)"
    store.record(event("m", False, error=error, completed_at=at))
    expires = store.model_performance("m").subscription_limit_expires_at
    assert expires is not None
    assert abs((expires - reset).total_seconds()) < 2  # the text's end, not the 100 s TTL
    assert store.known_models() == ["m"]
    # a default-length block after it keeps the longer one; a reset already past blocks nothing
    store.record_batch(
        [
            event("m", False),
            event(
                "n",
                False,
                error="weekly limit · resets 1:00am",
                completed_at=at - timedelta(days=2),
            ),
        ]
    )
    kept = store.model_performance("m").subscription_limit_expires_at
    assert kept is not None
    assert abs((kept - expires).total_seconds()) < 1  # read as now + PTTL: a ms either way
    assert not store.model_performance("n").subscription_limit_reached


def test_non_limit_errors_do_not_block(r: redis.Redis, store: TelemetryStore) -> None:
    store.record(event("m", False, error="connection refused"))
    assert r.exists("telemetry:{m}:limit") == 0
    perf = store.model_performance("m")
    assert perf.failed_completions == 1
    assert not perf.subscription_limit_reached
    assert perf.subscription_limit_expires_at is None


def test_mark_and_clear_subscription_limit(r: redis.Redis, store: TelemetryStore) -> None:
    store.mark_subscription_limited("m", ttl_secs=30)
    assert 25 <= r.ttl("telemetry:{m}:limit") <= 30
    assert store.model_performance("m").is_subscription_limited()
    assert store.known_models() == ["m"]  # a blocked model is listed even with no events
    store.mark_subscription_limited("n")
    assert 3590 <= r.ttl("telemetry:{n}:limit") <= 3600
    assert store.clear_subscription_limit("m") is True
    assert store.clear_subscription_limit("m") is False
    assert not store.model_performance("m").subscription_limit_reached


def test_a_limit_key_without_ttl_still_reads_as_limited(r: redis.Redis) -> None:
    store = TelemetryStore(r)
    r.set("telemetry:{m}:limit", "set by hand")
    perf = store.model_performance("m")
    assert perf.subscription_limit_reached
    assert perf.subscription_limit_expires_at is None
    assert perf.is_subscription_limited()


def test_known_models_and_all_performances_are_sorted(store: TelemetryStore) -> None:
    store.record_batch([event("zeta"), event("alpha"), event("mid", False)])
    assert store.known_models() == ["alpha", "mid", "zeta"]
    perfs = store.all_model_performances()
    assert [p.model for p in perfs] == ["alpha", "mid", "zeta"]
    assert [p.failed_completions for p in perfs] == [0, 1, 0]


def test_all_performances_picks_up_models_added_by_other_stores(r: redis.Redis) -> None:
    reader = TelemetryStore(r)
    writer = TelemetryStore(r)
    writer.record(event("a"))
    assert [p.model for p in reader.all_model_performances()] == ["a"]
    writer.record(event("b"))
    writer.record(event("a"))
    perfs = reader.all_model_performances()
    assert [(p.model, p.successful_completions) for p in perfs] == [("a", 2), ("b", 1)]


def test_session_usage_sums_per_model_within_the_window(store: TelemetryStore) -> None:
    store.record_batch(
        [
            event("a", session_id="s", cost_usd=0.5),
            event("a", session_id="s", cost_usd=0.25),
            event("b", session_id="s"),
            event("b", session_id="other"),
            event("b", session_id="s", ago_secs=4000),  # outside the window
        ]
    )
    usage = store.session_usage("s")
    assert sorted(usage.by_model) == ["a", "b"]
    assert usage.by_model["a"].message_count == 2
    assert usage.by_model["a"].cost_usd == pytest.approx(0.75)
    assert usage.by_model["b"].message_count == 1
    assert usage.totals.message_count == 3
    assert usage.totals.total_tokens == 3000
    assert store.session_usage("nobody").by_model == {}


def test_every_key_expires(r: redis.Redis, store: TelemetryStore) -> None:
    store.record_batch([event("a"), event("b", False, error="usage limit hit")])
    store.mark_subscription_limited("c", ttl_secs=60)
    keys = all_keys(r)
    assert sorted(keys) == [
        b"telemetry:config",
        b"telemetry:models",
        b"telemetry:spenders",
        b"telemetry:{a}:events",
        b"telemetry:{a}:ids",
        b"telemetry:{a}:latency",
        b"telemetry:{a}:sessions",
        b"telemetry:{a}:spend",
        b"telemetry:{a}:totals",
        b"telemetry:{b}:events",
        b"telemetry:{b}:ids",
        b"telemetry:{b}:limit",
        b"telemetry:{b}:sessions",
        b"telemetry:{b}:spend",
        b"telemetry:{b}:totals",
        b"telemetry:{c}:limit",
    ]
    assert all(r.pttl(k) > 0 for k in keys), {k: r.pttl(k) for k in keys}
    # the events key, its totals and its session index live just past the window (grace, and
    # the slack that spares most later writes an extension)
    assert 3600_000 < r.pttl("telemetry:{a}:events") <= 3602_000 + scripts.TTL_SLACK_MS
    for kind in ("totals", "sessions", "latency"):  # set together
        assert abs(r.pttl(f"telemetry:{{a}}:{kind}") - r.pttl("telemetry:{a}:events")) < 50


def test_keys_follow_the_documented_layout(r: redis.Redis) -> None:
    store = TelemetryStore(r, namespace="fleet")
    store.record(event("zai-coding-plan/glm-5.1", False, error="weekly session limit reached"))
    assert all_keys(r) == [
        b"fleet:config",
        b"fleet:models",
        b"fleet:spenders",
        b"fleet:{zai-coding-plan/glm-5.1}:events",
        b"fleet:{zai-coding-plan/glm-5.1}:ids",
        b"fleet:{zai-coding-plan/glm-5.1}:limit",
        b"fleet:{zai-coding-plan/glm-5.1}:sessions",
        b"fleet:{zai-coding-plan/glm-5.1}:spend",
        b"fleet:{zai-coding-plan/glm-5.1}:totals",
    ]
    assert r.type("fleet:{zai-coding-plan/glm-5.1}:events") == b"zset"
    assert r.hget("fleet:config", "window_secs") == b"3600"
    (member, score) = r.zrange("fleet:{zai-coding-plan/glm-5.1}:events", 0, -1, withscores=True)[0]
    decoded = msgpack.unpackb(member)
    assert decoded[0] == 1  # format version
    assert len(decoded[1]) == 32  # unique event id
    assert decoded[3] // 1000 == int(score)  # score = completed_at in epoch ms


# -- shared settings -------------------------------------------------------------------------


def test_window_mismatch_is_refused(r: redis.Redis) -> None:
    TelemetryStore(r, window_secs=3600).record(event("m"))
    other = TelemetryStore(r, window_secs=60)
    before = dump_all(r)
    with pytest.raises(WindowMismatchError, match=r"window_secs=3600.*window_secs=60"):
        other.record(event("m"))
    with pytest.raises(TelemetryError, match="3600"):
        other.model_performance("m")
    assert dump_all(r) == before


def test_first_store_sets_the_window_and_set_window_changes_it(r: redis.Redis) -> None:
    first = TelemetryStore(r, window_secs=600)
    first.known_models()
    assert r.hget("telemetry:config", "window_secs") is None  # reads claim nothing
    first.record(event("m"))
    assert r.hget("telemetry:config", "window_secs") == b"600"
    first.set_window(1200)
    assert r.hget("telemetry:config", "window_secs") == b"1200"
    assert first.model_performance("m").window_secs == 1200
    with pytest.raises(WindowMismatchError):
        TelemetryStore(r, window_secs=600).record(event("m"))
    TelemetryStore(r, window_secs=1200).record(event("m"))


def test_a_corrupt_config_refuses_writes_but_not_reads(
    r: redis.Redis, store: TelemetryStore, caplog: pytest.LogCaptureFixture
) -> None:
    store.record(event("m"))
    r.hset("telemetry:config", "window_secs", "an hour")
    fresh = TelemetryStore(r)
    with caplog.at_level(logging.WARNING, logger="redis_telemetry"):
        assert fresh.model_performance("m").successful_completions == 1
    assert "an hour" in caplog.text
    with pytest.raises(TelemetryError, match="not a positive integer"):
        fresh.record(event("m"))


def test_namespaces_are_isolated(r: redis.Redis) -> None:
    a = TelemetryStore(r, namespace="team-a", window_secs=60)
    b = TelemetryStore(r, namespace="team-b", window_secs=120)
    a.record(event("m", False, error="429 Too Many Requests"))
    assert b.known_models() == []
    assert not b.model_performance("m").subscription_limit_reached
    assert a.known_models() == ["m"]


# -- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"model": ""}, "model must not be empty"),
        ({"model": "a{b"}, "hash tag"),
        ({"model": "a}b"}, "hash tag"),
        ({"model": "a\nb"}, "control character"),
        ({"model": "x" * 257}, "limit is 256"),
        ({"latency_ms": -1}, "latency_ms must not be negative"),
        ({"tokens": TokenBreakdown.model_construct(total=-5)}, "tokens.total"),
        ({"cost_usd": float("nan")}, "finite"),
        ({"cost_usd": float("inf")}, "finite"),
        ({"cost_usd": -0.01}, "cost_usd must not be negative"),
        ({"success": "yes"}, "success must be a bool"),
        ({"completed_at": datetime.now(UTC) + timedelta(days=2)}, "future"),
    ],
)
def test_bad_events_write_nothing(
    r: redis.Redis, store: TelemetryStore, fields: dict[str, object], message: str
) -> None:
    store.record(event("good"))
    before = dump_all(r)
    # model_copy(update=...) bypasses pydantic: the write path must catch it
    bad = event("m").model_copy(update=fields)
    with pytest.raises(InvalidInputError, match=message):
        store.record(bad)
    with pytest.raises(InvalidInputError, match=r"event 2: "):
        store.record_batch([event("m"), event("other"), bad, event("m")])
    assert dump_all(r) == before


def test_pydantic_rejects_the_same_input() -> None:
    from pydantic import ValidationError

    for fields in ({"model": ""}, {"latency_ms": -1}, {"cost_usd": float("nan")}):
        with pytest.raises(ValidationError):
            event(**fields)  # type: ignore[arg-type]


def test_bad_arguments_are_refused(store: TelemetryStore) -> None:
    with pytest.raises(InvalidInputError, match="hash tag"):
        store.model_performance("x{y}")
    with pytest.raises(InvalidInputError, match="ttl_secs must be at least 1"):
        store.mark_subscription_limited("m", ttl_secs=0)
    with pytest.raises(InvalidInputError, match="expected a CompletionEvent"):
        store.record({"model": "m"})  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="window_secs"):
        TelemetryStore(store.client, window_secs=0)
    with pytest.raises(InvalidInputError, match="namespace"):
        TelemetryStore(store.client, namespace="a{b}")


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("window_secs", 0, "window_secs must be at least 1 second"),
        ("window_secs", 10**10, "window_secs must be at most ten years, got 10000000000"),
        ("wait_timeout_ms", 0, "wait_timeout_ms must be at least 1 millisecond"),
        ("wait_timeout_ms", 10**12, "wait_timeout_ms must be at most ten years"),
        ("max_events_per_model", 0, "max_events_per_model must be at least 1, got 0"),
        ("max_events_per_model", 10**13, "max_events_per_model must be at most 10\\^12"),
        ("max_events_per_model", -1, "max_events_per_model must not be negative"),
        ("wait_for_replicas", 1.5, "wait_for_replicas must be an integer"),
    ],
)
def test_each_setting_is_checked_as_what_it_is(setting: str, value: object, message: str) -> None:
    """Seconds, milliseconds and counts each have their own check and message."""
    client = fakeredis.FakeRedis()
    with pytest.raises(InvalidInputError, match=message):
        TelemetryStore(client, **{setting: value})  # type: ignore[arg-type]
    # a cap of a billion events is a count, not a duration past ten years
    assert TelemetryStore(client, max_events_per_model=10**9).window_secs == 3600


def test_a_decoding_client_is_refused(backend: object) -> None:
    client = redis.Redis(decode_responses=True)
    with pytest.raises(TelemetryError, match="decode_responses"):
        TelemetryStore(client)
    client.close()


def test_naive_datetimes_are_utc(store: TelemetryStore) -> None:
    naive = datetime.now(UTC).replace(tzinfo=None) - timedelta(seconds=3)
    store.record(event("m", completed_at=naive))
    assert store.model_performance("m").last_event_at == naive.replace(tzinfo=UTC)


def test_empty_batch_is_a_no_op(r: redis.Redis, store: TelemetryStore) -> None:
    assert store.record_batch([]).stored == 0
    assert all_keys(r) == []


# -- corrupt data already in Redis ------------------------------------------------------------


def test_garbage_members_are_skipped_and_logged(
    r: redis.Redis, store: TelemetryStore, caplog: pytest.LogCaptureFixture
) -> None:
    store.record(event("m", latency_ms=100))
    score = server_ms(r)
    r.zadd(
        "telemetry:{m}:events",
        {
            b"hello from redis-cli": score,
            msgpack.packb({"not": "an event"}): score,
            msgpack.packb([1, "id", "s", 1, -5, True, 0, 0, 0, 0, 0, 0, 0.0, None]): score,
            msgpack.packb([1, "id", "s", 1, 5, "yes", 0, 0, 0, 0, 0, 0, 0.0, None]): score,
        },
    )
    with caplog.at_level(logging.WARNING, logger="redis_telemetry"):
        perf = store.model_performance("m")
        usage = store.session_usage("test-session")
        summary = store.export_summary()
    assert perf.successful_completions == 1
    assert usage.totals.message_count == 1
    assert summary.model_performances[0].successful_completions == 1
    assert "skipped 4 unreadable member(s) of telemetry:{m}:events" in caplog.text


def test_garbage_in_the_registry_is_skipped(
    r: redis.Redis, store: TelemetryStore, caplog: pytest.LogCaptureFixture
) -> None:
    store.record(event("m"))
    r.zadd("telemetry:models", {b"\xff\xfe": server_ms(r) + 60_000, b"bad{name}": 1e15})
    with caplog.at_level(logging.WARNING, logger="redis_telemetry"):
        assert store.known_models() == ["m"]
        assert [p.model for p in store.all_model_performances()] == ["m"]
    assert "unreadable model" in caplog.text


# -- Rust-JSON interop -----------------------------------------------------------------------


def test_exported_summary_round_trips_through_json(store: TelemetryStore) -> None:
    store.record_batch([event("a"), event("b", False, error="monthly limit reached")])
    summary = store.export_summary()
    text = summary.model_dump_json()
    again = TelemetrySummary.model_validate_json(text)
    assert again == summary
    assert '"exported_at":"' in text
    assert text.count('Z"') >= 3  # RFC 3339 UTC


def test_script_cache_flush_on_a_plain_call(r: redis.Redis, store: TelemetryStore) -> None:
    store.record(event("m"))
    assert isinstance(
        store._core.record(event("m")), SingleCommand
    )  # the next one is a lone EVALSHA
    r.script_flush()
    assert store.record(event("m")).stored == 1
    assert store.model_performance("m").successful_completions == 2


def test_script_cache_flush_on_a_pipeline(r: redis.Redis, store: TelemetryStore) -> None:
    store.record_batch([event("a"), event("b")])
    r.script_flush()
    result = store.record_batch([event("a"), event("b"), event("c", False, error="429 Rate limit")])
    assert result.stored == 3
    perfs = store.all_model_performances()
    assert [(p.model, p.successful_completions + p.failed_completions) for p in perfs] == [
        ("a", 2),
        ("b", 2),
        ("c", 1),
    ]
    assert perfs[2].subscription_limit_reached


def test_exact_latency_percentiles_on_request(store: TelemetryStore) -> None:
    latencies = [100, 200, 300, 400, 500, 600, 700, 800, 900, 10_000]
    store.record_batch(
        [event("m", True, ms) for ms in latencies] + [event("m", False, 5, error="boom")]
    )
    plain = store.model_performance("m")  # from the latency sketch: within 1/128
    assert plain.latency_p50_ms == pytest.approx(500.0, rel=1 / 128)
    assert plain.latency_p50_ms != 500.0
    assert plain.latency_p99_ms == pytest.approx(10_000.0, rel=1 / 128)
    exact = store.model_performance("m", percentiles=True)
    assert exact.latency_p50_ms == 500.0  # nearest rank: the 5th of 10
    assert exact.latency_p95_ms == 10_000.0  # the 10th of 10; failures are not latencies
    assert exact.latency_p99_ms == 10_000.0
    percentiles = ("latency_p50_ms", "latency_p95_ms", "latency_p99_ms")
    assert exact.model_dump(exclude=set(percentiles)) == plain.model_dump(exclude=set(percentiles))
    (every,) = store.all_model_performances(percentiles=True)
    assert every == exact


def test_record_script_refuses_malformed_arguments(r: redis.Redis, store: TelemetryStore) -> None:
    store.record(event("m"))
    before = dump_all(r)
    keys = (
        "telemetry:{m}:events",
        "telemetry:{m}:limit",
        "telemetry:{m}:totals",
        "telemetry:{m}:sessions",
        "telemetry:{m}:latency",
        "telemetry:{m}:ids",
    )
    member = msgpack.packb([1, "x" * 32, "", 1, 1, True, 1, 1, 1, 1, 1, 1, 0.5, None])
    at = server_ms(r)
    sums = "1 0 1 0 5 1 1 1 1 1 1"  # totals.FIELDS
    for args in (
        ("3600000 3600000 2000", f"1 {at} {at} {sums} 0 0", at, member),  # a setting missing
        ("3600000 3600000 2000 0", f"1 {at} {sums} 0 0", at, member),  # newest missing
        ("3600000 3600000 2000 0", f"1 {at} {at} {sums} 1 0 0", at, member),  # a sum too many
        ("3600000 3600000 2000 0", f"1 {at} {at} {sums[:-1]}-1 0 0", at, member),  # negative
        ("3600000 3600000 2000 0", f"2 {at} {at} {sums} 0 0", at, member),  # one pair short
        ("3600000 3600000 2000 0", f"1 {at} {at} {sums} 1 0", at, member),  # no bucket pair
        ("3600000 3600000 2000 0", f"1 {at} {at} {sums} 0 0", at, member, "1", "0"),  # 2/3
        ("3600000 3600000 2000 0", f"1 {at} {at} {sums} 0 0", at, member, "1", "soon", "x"),
    ):
        with pytest.raises(redis.ResponseError, match=r"record\.lua: malformed arguments"):
            r.evalsha(store._shas()["record"], len(keys), *keys, *args)
    assert dump_all(r) == before


def test_with_window_is_the_same_store_with_another_window(r: redis.Redis) -> None:
    """Namespace, limit TTL, cap and client carry over; the original store is unchanged."""
    settings = {"subscription_limit_ttl_secs": 90, "namespace": "fleet", "max_events_per_model": 5}
    store = TelemetryStore(r, window_secs=600, **settings)  # type: ignore[arg-type]
    other = store.with_window(1200)
    assert type(other) is TelemetryStore
    assert store.window_secs == 600
    assert (other.window_secs, other.subscription_limit_ttl_secs) == (1200, 90)
    assert (other.namespace, other.client) == ("fleet", r)
    assert other.record_batch([event("m", ago_secs=i) for i in range(7)]).capped == 2
    other.record(event("m", success=False))  # a subscription-limit error: blocked 90 s
    assert 0 < r.pttl("fleet:{m}:limit") <= 90_000
    assert r.hget("fleet:config", "window_secs") == b"1200"
    with pytest.raises(WindowMismatchError):
        store.record(event("m"))


def test_with_window_keeps_wait_for_replicas(redis_server: RedisServer) -> None:
    store = TelemetryStore.from_url(redis_server.url, wait_for_replicas=1, wait_timeout_ms=20)
    with pytest.raises(
        TelemetryError, match="only 0 of 1 replicas acknowledged the write within 20"
    ):
        store.with_window(1200).record(event("m"))
    store.client.close()


# -- a block until a given time -----------------------------------------------------------------


def test_a_block_until_a_time_lasts_until_then_by_the_server_clock(
    r: redis.Redis, store: TelemetryStore
) -> None:
    until = ms_to_datetime(server_ms(r) + 600_000)
    store.mark_subscription_limited("m", until=until.astimezone(timezone(timedelta(hours=-7))))
    assert 590_000 < r.pttl("telemetry:{m}:limit") <= 600_000
    perf = store.model_performance("m")
    assert perf.subscription_limit_reached
    assert perf.subscription_limit_expires_at is not None
    assert abs((perf.subscription_limit_expires_at - until).total_seconds()) < 1
    assert store.known_models() == ["m"]
    store.mark_subscription_limited("m", until=until + timedelta(minutes=10))  # extends it
    assert 1_190_000 < r.pttl("telemetry:{m}:limit") <= 1_200_000


def test_a_block_until_a_time_never_shortens_a_longer_one(
    r: redis.Redis, store: TelemetryStore
) -> None:
    store.mark_subscription_limited("m", ttl_secs=3600)
    store.mark_subscription_limited("m", until=ms_to_datetime(server_ms(r) + 60_000))
    assert r.pttl("telemetry:{m}:limit") > 3_500_000
    r.set("telemetry:{n}:limit", "set by hand")  # no TTL: it gets one, as record.lua does
    store.mark_subscription_limited("n", until=ms_to_datetime(server_ms(r) + 60_000))
    assert 50_000 < r.pttl("telemetry:{n}:limit") <= 60_000


def test_a_block_until_a_past_time_blocks_nothing(r: redis.Redis, store: TelemetryStore) -> None:
    store.record(event("other"))
    before = dump_all(r)
    store.mark_subscription_limited("m", until=ms_to_datetime(server_ms(r) - 1))
    assert dump_all(r) == before
    assert not store.model_performance("m").subscription_limit_reached
    assert store.known_models() == ["other"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"until": datetime(2030, 1, 1)}, "until must be timezone-aware"),
        ({"until": "2030-01-01T00:00:00Z"}, "until must be a datetime, got str"),
        ({"until": datetime(2030, 1, 1, tzinfo=UTC), "ttl_secs": 60}, "not both"),
        ({"until": datetime(2100, 1, 1, tzinfo=UTC)}, "at most ten years away"),
    ],
)
def test_a_bad_until_is_refused_and_writes_nothing(
    r: redis.Redis, store: TelemetryStore, kwargs: dict[str, object], message: str
) -> None:
    before = dump_all(r)
    with pytest.raises(InvalidInputError, match=message):
        store.mark_subscription_limited("m", **kwargs)  # type: ignore[arg-type]
    assert dump_all(r) == before
