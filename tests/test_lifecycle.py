"""Edges of a store's life (issue 13): what a snapshot reports after caps, ties, corrupt
members, cleared limits, restores and lost data (every backend of the ``r`` fixture)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import redis

from redis_telemetry import TelemetryStore

from .helpers import event, server_ms
from .servers import RedisServer


def test_capped_counts_only_cap_removals_not_aged_events(r: redis.Redis) -> None:
    TelemetryStore(r, window_secs=3600, max_events_per_model=5).record_batch(
        [event("m", ago_secs=100 + i) for i in range(5)]
    )
    store = TelemetryStore(r, window_secs=3600, max_events_per_model=5)
    store.set_window(60)  # the five events are now aged out, not over the cap
    result = store.record(event("m"))  # six members, not a multiple of four
    assert result.stored == 1
    assert result.capped == 0
    assert r.hget("telemetry:{m}:totals", "capped") is None
    assert store.model_performance("m").successful_completions == 1


def _both_paths(store: TelemetryStore, model: str) -> tuple[datetime | None, datetime | None]:
    return (
        store.model_performance(model).last_event_at,
        store.model_performance(model, percentiles=True).last_event_at,
    )


def test_last_event_at_agrees_with_many_events_in_the_newest_millisecond(
    r: redis.Redis, store: TelemetryStore
) -> None:
    base = datetime.fromtimestamp(server_ms(r) // 1000 - 5, UTC)
    store.record_batch(
        [event("m", completed_at=base + timedelta(microseconds=199 - i)) for i in range(200)]
    )
    newest = base + timedelta(microseconds=199)
    assert _both_paths(store, "m") == (newest, newest)


def test_a_corrupt_member_with_the_newest_score_is_skipped(
    r: redis.Redis, store: TelemetryStore
) -> None:
    at = datetime.fromtimestamp(server_ms(r) // 1000 - 5, UTC)
    store.record(event("m", completed_at=at))
    r.zadd("telemetry:{m}:events", {b"not msgpack": int(at.timestamp() * 1000) + 1000})
    assert _both_paths(store, "m") == (at, at)


def test_known_models_drops_a_model_once_its_limit_is_cleared(
    r: redis.Redis, store: TelemetryStore
) -> None:
    store.record(event("busy"))
    store.mark_subscription_limited("idle", 600)
    assert store.known_models() == ["busy", "idle"]
    assert store.clear_subscription_limit("idle")
    assert store.known_models() == ["busy"]


def _limit_end_ms(r: redis.Redis, key: str) -> int:
    pttl = r.pttl(key)
    assert pttl > 0
    return server_ms(r) + pttl


def test_restore_brings_limits_back_until_the_end_the_dump_names(
    r: redis.Redis, store: TelemetryStore
) -> None:
    store.record(event("m"))
    until = datetime.fromtimestamp(server_ms(r) // 1000 + 900, UTC)
    store.mark_subscription_limited("m", until=until)
    dump = store.dump()
    (dumped,) = dump.limits
    assert dumped.expires_at is not None
    assert abs(dumped.expires_at - until) <= timedelta(milliseconds=50)  # a cluster: two clocks
    copy = TelemetryStore(r, window_secs=3600, namespace="copy")
    copy.restore(dump)
    end = _limit_end_ms(r, "copy:{m}:limit")
    assert abs(end - int(dumped.expires_at.timestamp() * 1000)) <= 50  # this read's round trips
    copy.mark_subscription_limited("m", 3600)  # a longer block now in place...
    longer = _limit_end_ms(r, "copy:{m}:limit")
    copy.restore(dump)  # ...is kept by restoring again
    assert abs(_limit_end_ms(r, "copy:{m}:limit") - longer) <= 50


def test_restore_does_not_block_again_a_model_whose_limit_was_lifted(
    r: redis.Redis, store: TelemetryStore
) -> None:
    store.record(event("m", success=False, error="You've hit your usage limit"))
    assert store.model_performance("m").subscription_limit_reached
    assert store.clear_subscription_limit("m")
    dump = store.dump()
    assert dump.limits == []
    for ns in ("copy", "telemetry"):  # into a fresh namespace, and back over the original
        restoring = TelemetryStore(r, window_secs=3600, namespace=ns)
        for _ in range(2):  # restoring twice changes nothing
            restoring.restore(dump)
            perf = restoring.model_performance("m")
            assert perf.failed_completions == 1
            assert not perf.subscription_limit_reached
            assert r.exists(f"{ns}:{{m}}:limit") == 0


def _listed_everywhere(r: redis.Redis, store: TelemetryStore, model: str, count: int) -> None:
    """``model`` is listed, with ``count`` completions, by this store and by a fresh one."""
    for reader in (store, TelemetryStore(r, window_secs=3600)):
        assert reader.known_models() == [model]
        (perf,) = reader.all_model_performances()
        assert (perf.model, perf.successful_completions) == (model, count)


def test_a_model_is_listed_again_after_flushall_under_a_running_store(
    r: redis.Redis, store: TelemetryStore
) -> None:
    store.record(event("m"))
    store.record(event("m"))  # the steady state: registered, one EVALSHA
    r.flushall()
    assert store.record(event("m")).stored == 1  # the single-event path
    _listed_everywhere(r, store, "m", 1)
    r.flushall()
    assert store.record_batch([event("m"), event("m")]).stored == 2  # the batch path
    _listed_everywhere(r, store, "m", 2)


def test_a_model_is_listed_again_after_a_restart_without_persistence(tmp_path: Path) -> None:
    server = RedisServer(workdir=tmp_path).start()
    try:
        with server.client() as client:
            store = TelemetryStore(client, window_secs=3600)
            store.record(event("m"))
            store.record(event("m"))
            server.stop()
            server.start()  # same port, nothing saved: data and script cache are gone
            assert store.record(event("m")).stored == 1
            _listed_everywhere(client, store, "m", 1)
    finally:
        server.cleanup()


def test_the_config_lives_as_long_as_future_stamped_events(r: redis.Redis) -> None:
    store = TelemetryStore(r, window_secs=60)
    store.record(event("m"))  # the window confirmed: the config lives about two minutes
    store.record(event("m", ago_secs=-12 * 3600))  # stamped twelve hours ahead
    store.record_batch([event("n", ago_secs=-20 * 3600), event("n")])
    config = r.pttl("telemetry:config")
    assert config >= r.pttl("telemetry:{m}:events") > 12 * 3600 * 1000
    assert config >= r.pttl("telemetry:{n}:events") > 20 * 3600 * 1000
