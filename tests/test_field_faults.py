"""Field faults (issue 20): no write shortens a key's life, every key has a TTL, one event id
is one event per model, a limit ends relative to its event, and an index evicted alone heals.

Each test runs on fakeredis, a real redis-server and a real cluster (the ``r`` fixture)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import redis

from redis_telemetry import TelemetryStore
from redis_telemetry.core import backup

from .helpers import all_keys, event, recount, server_ms, stored_derived, wait_for_server_ms

MODEL_KEYS = ("events", "totals", "sessions", "latency", "ids")
WINDOW = 600


def model_keys(r: Any, model: str) -> list[str]:
    return [f"telemetry:{{{model}}}:{kind}" for kind in MODEL_KEYS]


def assert_live_until(r: Any, model: str, newest_ms: int, window_s: int = WINDOW) -> None:
    """Every key of ``model`` that exists has a TTL reaching past ``newest_ms`` + the window:
    it lives as long as its data."""
    now = server_ms(r)
    need = newest_ms + window_s * 1000 - now
    for key in model_keys(r, model):
        if r.exists(key):
            left = r.pttl(key)
            assert left > 0, f"{key} has no TTL ({left})"
            assert left >= need - 50, f"{key} lives {left} ms, its data {need} ms"


def newest_ms(r: Any, model: str) -> int:
    ((_, score),) = r.zrange(f"telemetry:{{{model}}}:events", -1, -1, withscores=True)
    return int(score)


# -- no write shortens a TTL -------------------------------------------------------------------


def test_reindex_of_an_older_layout_keeps_every_key_alive(r: redis.Redis) -> None:
    store = TelemetryStore(r, window_secs=WINDOW)
    store.record_batch([event("m", True, 100 + i) for i in range(5)])
    r.hdel("telemetry:{m}:totals", "layout")  # as an older release left it
    r.persist("telemetry:{m}:totals")
    store.reindex()
    assert r.hget("telemetry:{m}:totals", "layout") == b"3"
    assert_live_until(r, "m", newest_ms(r, "m"))
    assert stored_derived(r, "m") == recount(r, "m")


def test_the_eviction_self_heal_on_an_all_duplicate_write_keeps_every_key_alive(
    r: redis.Redis,
) -> None:
    store = TelemetryStore(r, window_secs=WINDOW)
    e = event("m", True, 100, event_id="e1")
    store.record(e)
    r.delete("telemetry:{m}:totals")  # evicted
    result = store.record(e)
    assert (result.stored, result.duplicates) == (0, 1)
    assert_live_until(r, "m", newest_ms(r, "m"))
    assert stored_derived(r, "m") == recount(r, "m")


def test_a_late_event_does_not_cut_the_keys_ttl(r: redis.Redis) -> None:
    store = TelemetryStore(r, window_secs=WINDOW)
    store.record(event("m", True, 100))
    r.hdel("telemetry:{m}:totals", "layout")  # a rebuild follows on the next write
    store.record(event("m", True, 100, ago_secs=550))
    assert_live_until(r, "m", newest_ms(r, "m"))
    assert r.pttl("telemetry:{m}:events") > (WINDOW - 5) * 1000


def test_set_window_keeps_every_key_and_the_config_as_long_as_their_data(
    r: redis.Redis,
) -> None:
    store = TelemetryStore(r, window_secs=WINDOW)
    ahead = event("m", True, 100, ago_secs=-12 * 3600)  # stamped 12 h ahead
    store.record(ahead)
    store.set_window(60)  # shorter: nothing the data needs is shortened
    assert_live_until(r, "m", newest_ms(r, "m"), 60)
    assert r.pttl("telemetry:config") > 12 * 3600 * 1000
    store.set_window(7200)  # longer: every key follows
    assert_live_until(r, "m", newest_ms(r, "m"), 7200)


def test_a_ttl_longer_than_the_data_needs_is_kept(r: redis.Redis) -> None:
    store = TelemetryStore(r, window_secs=WINDOW)
    store.record(event("m", True, 100))
    for key in model_keys(r, "m"):
        r.pexpire(key, 10 * 86400 * 1000)  # set by hand, or by a longer window before
    store.record(event("m", True, 100, ago_secs=-60))  # newer: the TTLs are extended
    for key in model_keys(r, "m"):
        assert r.pttl(key) > 9 * 86400 * 1000, key


# -- every key has a TTL -------------------------------------------------------------------------


def test_every_key_has_a_ttl_whatever_the_order_of_successes_and_failures(
    r: redis.Redis,
) -> None:
    store = TelemetryStore(r, window_secs=WINDOW)
    store.record(event("m", False, error="boom"))
    store.record(event("m", True, latency_ms=None))
    store.record(event("m", True, 120))  # the sketch is created now, within 2 s
    store.record_batch([event("n", False, error="boom"), event("n", True, 80)])
    for key in all_keys(r):
        assert r.pttl(key) > 0, key


@pytest.mark.parametrize("lost", ["latency", "sessions", "ids"])
def test_an_index_evicted_alone_heals_from_the_members(r: redis.Redis, lost: str) -> None:
    store = TelemetryStore(r, window_secs=WINDOW)
    store.record_batch([event("m", True, 100 + i, session_id=f"s{i % 3}") for i in range(40)])
    r.delete(f"telemetry:{{m}}:{lost}")  # evicted by maxmemory, alone
    for i in range(3):
        store.record(event("m", True, 500 + i))
    store.reindex()
    assert stored_derived(r, "m") == recount(r, "m")
    snap = store.model_performance("m")
    assert snap.successful_completions == 43
    assert snap.latency_p50_ms is not None
    assert store.session_usage("s1").totals.message_count == 13
    assert_live_until(r, "m", newest_ms(r, "m"))


# -- one event id, one event ---------------------------------------------------------------------


def test_a_retry_rebuilt_with_the_same_id_is_one_event(r: redis.Redis) -> None:
    store = TelemetryStore(r, window_secs=WINDOW)
    first = store.record(event("m", True, 100, event_id="call-42"))
    again = store.record(event("m", True, 250, event_id="call-42"))  # completed_at: now again
    assert (first.stored, again.stored, again.duplicates) == (1, 0, 1)
    assert store.model_performance("m").successful_completions == 1
    assert [e.event_id for e in store.events("m")] == ["call-42"]
    assert [e.latency_ms for e in store.events("m")] == [100]  # the first one stays


def test_record_batch_stores_one_event_per_id_within_and_across_batches(
    r: redis.Redis,
) -> None:
    store = TelemetryStore(r, window_secs=WINDOW)
    batch = [event("m", True, 100 + i, event_id=f"id-{i % 3}") for i in range(6)]
    result = store.record_batch(batch)
    assert (result.stored, result.duplicates) == (3, 3)
    again = store.record_batch([event("m", False, event_id=f"id-{i}") for i in range(5)])
    assert (again.stored, again.duplicates) == (2, 3)
    snap = store.model_performance("m")
    assert (snap.successful_completions, snap.failed_completions) == (3, 2)
    assert sorted(e.event_id for e in store.events("m")) == [f"id-{i}" for i in range(5)]
    assert stored_derived(r, "m") == recount(r, "m")


def test_one_id_in_two_models_is_two_events(r: redis.Redis) -> None:
    store = TelemetryStore(r, window_secs=WINDOW)
    result = store.record_batch([event("a", event_id="x"), event("b", event_id="x")])
    assert result.stored == 2


def test_a_restore_of_events_rebuilt_with_other_fields_adds_nothing(r: redis.Redis) -> None:
    store = TelemetryStore(r, window_secs=WINDOW)
    store.record_batch([event("m", True, 100 + i, event_id=f"c{i}") for i in range(4)])
    dump = store.dump()
    shifted = [
        e.model_copy(update={"completed_at": e.completed_at - timedelta(seconds=1)})
        for e in dump.events
    ]
    result = store.restore(backup.Dump(header=dump.header, events=shifted, limits=dump.limits))
    assert (result.stored, result.duplicates) == (0, 4)
    assert store.model_performance("m").successful_completions == 4


def test_an_id_whose_event_left_the_window_is_free_again(r: redis.Redis) -> None:
    store = TelemetryStore(r, window_secs=WINDOW)
    store.record(event("m", True, 100, event_id="other"))
    aged = server_ms(r) - WINDOW * 1000 - 5
    r.hset("telemetry:{m}:ids", mapping={"call-7": aged, "call-8": aged})
    result = store.record(event("m", True, 100, event_id="call-7"))
    assert result.stored == 1
    batch = store.record_batch([event("m", True, 9, event_id="call-8"), event("m", True, 9)])
    assert batch.stored == 2
    assert store.model_performance("m").successful_completions == 4


def test_trims_take_ids_out_of_the_index(r: redis.Redis) -> None:
    store = TelemetryStore(r, window_secs=1)
    store.record(event("m", True, 100, event_id="old"))
    wait_for_server_ms(r, newest_ms(r, "m") + 1001)  # "old" leaves the window
    store.record_batch([event("m", True, 100 + i, event_id=f"new{i}") for i in range(3)])
    assert set(stored_derived(r, "m").ids) == {"new0", "new1", "new2"}
    assert stored_derived(r, "m") == recount(r, "m")


# -- a limit ends relative to its event ----------------------------------------------------------


def test_an_old_limit_error_blocks_nothing(r: redis.Redis) -> None:
    store = TelemetryStore(r, window_secs=7 * 86400, subscription_limit_ttl_secs=3600)
    store.record(event("m", False, error="weekly session limit reached", ago_secs=3 * 86400))
    assert store.model_performance("m").subscription_limit_reached is False
    assert r.exists("telemetry:{m}:limit") == 0


def test_a_limit_error_blocks_until_its_completion_plus_the_ttl(r: redis.Redis) -> None:
    store = TelemetryStore(r, window_secs=7 * 86400, subscription_limit_ttl_secs=3600)
    late = event("m", False, error="weekly session limit reached", ago_secs=1800)
    store.record_batch([late])
    snap = store.model_performance("m")
    assert snap.subscription_limit_reached
    assert snap.subscription_limit_expires_at is not None
    ends = late.completed_at + timedelta(seconds=3600)
    assert abs((snap.subscription_limit_expires_at - ends).total_seconds()) < 2


def test_a_layout_2_hash_is_read_from_its_totals_and_rebuilt_by_the_next_write(
    r: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """An upgrade: the previous release's hashes (layout 2, no id index) serve reads at once;
    the next write rebuilds them with the id index."""
    store = TelemetryStore(r, window_secs=WINDOW)
    store.record_batch([event("m", True, 100 + i, event_id=f"e{i}") for i in range(5)])
    r.hset("telemetry:{m}:totals", "layout", 2)
    r.delete("telemetry:{m}:ids")
    snap = store.model_performance("m")
    assert snap.successful_completions == 5
    assert snap.latency_p50_ms is not None
    assert "older release's layout" not in caplog.text  # not read from its events
    again = store.record(event("m", True, 100, event_id="e0"))
    assert again.stored == 0
    assert r.hget("telemetry:{m}:totals", "layout") == b"3"
    assert stored_derived(r, "m") == recount(r, "m")
