"""Data written by hand into the namespace, and the per-model memory cap (both backends)."""

from __future__ import annotations

import json
import logging

import msgpack
import pytest
import redis

from redis_telemetry import TelemetryError, TelemetryStore
from redis_telemetry.cli import main

from .helpers import event, server_ms


def test_keys_of_the_wrong_type_are_skipped_and_reported(
    r: redis.Redis, store: TelemetryStore, caplog: pytest.LogCaptureFixture
) -> None:
    store.record_batch(
        [event("good"), event("bad-events"), event("bad-limit"), event("bad-totals")]
    )
    r.delete("telemetry:{bad-events}:events", "telemetry:{bad-events}:totals")
    r.set("telemetry:{bad-events}:events", "not a sorted set")
    r.hset("telemetry:{bad-totals}:totals", "ok", "many")
    r.delete("telemetry:{bad-limit}:limit")
    r.rpush("telemetry:{bad-limit}:limit", "a", "list")  # a strange value, still a key with a TTL?
    with caplog.at_level(logging.WARNING, logger="redis_telemetry"):
        perfs = {p.model: p for p in store.all_model_performances()}
        usage = store.session_usage("test-session")
        dump = store.dump()
        summary = store.export_summary()
    assert perfs["good"].successful_completions == 1
    assert perfs["bad-events"].successful_completions == 0  # unreadable: skipped, not a crash
    assert perfs["bad-limit"].successful_completions == 1
    assert perfs["bad-limit"].subscription_limit_reached  # any key there blocks, as documented
    assert perfs["bad-totals"].successful_completions == 0  # its count is unreadable
    assert perfs["bad-totals"].avg_latency_ms == 0.0
    assert usage.totals.message_count == 3
    assert {e.model for e in dump.events} == {"good", "bad-limit", "bad-totals"}
    assert len(summary.model_performances) == 4
    assert "skipped unreadable telemetry:{bad-events}:events" in caplog.text
    assert "unreadable running total" in caplog.text


def test_a_config_of_the_wrong_type_refuses_writes_but_not_reads(
    r: redis.Redis, store: TelemetryStore, caplog: pytest.LogCaptureFixture
) -> None:
    store.record(event("m"))
    r.delete("telemetry:config")
    r.set("telemetry:config", "window=3600")
    fresh = TelemetryStore(r)
    with caplog.at_level(logging.WARNING, logger="redis_telemetry"):
        assert fresh.model_performance("m").successful_completions == 1
    assert "skipped unreadable telemetry:config" in caplog.text
    with pytest.raises(TelemetryError, match="WRONGTYPE"):
        fresh.record(event("m"))


def test_a_garbage_registry_does_not_break_reads(r: redis.Redis, store: TelemetryStore) -> None:
    store.record(event("m"))
    r.delete("telemetry:models")
    r.set("telemetry:models", "oops")
    assert store.known_models() == []
    assert store.all_model_performances() == []
    assert store.model_performance("m").successful_completions == 1  # named models still read


def test_the_cli_keeps_working_on_corrupt_data(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    store = TelemetryStore.from_url(url)
    store.record_batch([event("good"), event("bad")])
    raw = redis.Redis.from_url(url)
    raw.zadd("telemetry:{bad}:events", {b"\x00garbage": 1e15})
    raw.hset("telemetry:config", "window_secs", "soon")
    for args in (["status", "--json"], ["export"], ["dump"], ["events", "bad", "--json"]):
        capsys.readouterr()
        assert main(["--url", url, *args]) == 0, args
    capsys.readouterr()
    main(["--url", url, "status", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert {d["model"]: d["successful_completions"] for d in data} == {"bad": 1, "good": 1}
    raw.close()
    store.client.close()


def test_the_per_model_cap_trims_the_oldest_and_says_so(
    r: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    store = TelemetryStore(r, max_events_per_model=5)
    store.record_batch([event("m", latency_ms=i, ago_secs=100 - i) for i in range(4)])
    with caplog.at_level(logging.WARNING, logger="redis_telemetry"):
        result = store.record_batch(
            [event("m", latency_ms=10 + i, ago_secs=50 - i) for i in range(4)]
        )
    assert result.capped == 3
    assert "removed 3 of the oldest events" in caplog.text
    assert r.zcard("telemetry:{m}:events") == 5
    assert r.hget("telemetry:{m}:totals", "capped") == b"3"
    kept = sorted(e.latency_ms for e in store.events("m", last=10))
    assert kept == [3, 10, 11, 12, 13]
    perf = store.model_performance("m")  # the totals follow the trimmed set exactly
    assert perf.successful_completions == 5
    assert perf.avg_latency_ms == (3 + 10 + 11 + 12 + 13) / 5
    with caplog.at_level(logging.WARNING, logger="redis_telemetry"):
        single = store.record(event("m", latency_ms=20))  # a lone write is capped the same way
    assert single.capped == 1
    assert "removed 1 of the oldest events" not in caplog.text  # the 1st, then every 1000th
    assert sorted(e.latency_ms for e in store.events("m", last=10)) == [10, 11, 12, 13, 20]
    other = TelemetryStore(r, max_events_per_model=None)  # no cap: nothing trimmed
    assert other.record(event("m")).capped == 0


def test_a_member_with_a_count_of_the_wrong_type_is_trimmed_not_counted(
    r: redis.Redis, store: TelemetryStore
) -> None:
    """record.lua skips a member it cannot sum (written by hand) and still trims it."""
    store.record(event("m"))
    old_ms = server_ms(r) - 7200_000
    bad = msgpack.packb([1, "id", "s", old_ms * 1000, 5, True, "many", 1, 1, 1, 1, 1, 0.0, None])
    r.zadd("telemetry:{m}:events", {bad: old_ms})
    assert store.record_batch([event("m"), event("m")]).stored == 2  # a batch always trims
    assert r.zscore("telemetry:{m}:events", bad) is None
    assert store.model_performance("m").successful_completions == 3
    assert store.model_performance("m").tokens.total == 3000
