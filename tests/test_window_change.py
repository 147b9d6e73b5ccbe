"""Window changes keep data (issue 13, item 4): after ``set_window(longer)`` every listed model's
keys live as long as the new window, idle models included, and a store still holding the old
window cannot trim with it (every backend of the ``r`` fixture)."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from redis_telemetry import TelemetryStore, WindowMismatchError
from redis_telemetry.core.window import REWINDOW_PAGE

from .helpers import dump_all, event, server_ms

HOUR_MS = 3600 * 1000


def test_a_longer_window_extends_every_models_keys_idle_ones_included(r: redis.Redis) -> None:
    old = TelemetryStore(r, window_secs=60)
    models = [f"m{i:03d}" for i in range(REWINDOW_PAGE + 50)]  # more than one page
    old.record_batch([event(m, ago_secs=30) for m in models])  # idle from now on
    for m in models[:3]:  # under the old window they go in about 32 s (and a 16th of 60 s)
        assert r.pttl(f"telemetry:{{{m}}}:events") <= 32_000 + 60_000 // 16
    sizes: list[int] = []
    execute = old._execute

    def spy(batch: Any, *rest: Any) -> list[Any]:
        sizes.append(len(batch))
        return execute(batch, *rest)

    old._execute = spy  # type: ignore[method-assign]
    old.set_window(3600)
    assert max(sizes) <= 2 * REWINDOW_PAGE  # bounded batches, never one call for every model
    now = server_ms(r)
    for m in models:
        for kind in ("events", "totals", "sessions", "latency"):
            key = f"telemetry:{{{m}}}:{kind}"
            assert 3600_000 - 30_000 - 1000 <= r.pttl(key) <= 3600_000 + 2000  # the new window
        keep = r.zscore("telemetry:models", m)
        assert keep is not None
        assert keep >= now + HOUR_MS - 31_000  # listed as long
    fresh = TelemetryStore(r, window_secs=3600)
    assert fresh.known_models() == models
    assert sum(p.successful_completions for p in fresh.all_model_performances()) == len(models)


def test_a_shorter_window_never_shortens_a_ttl(r: redis.Redis) -> None:
    store = TelemetryStore(r, window_secs=3600)
    store.record(event("m", ago_secs=10))
    before = r.pttl("telemetry:{m}:events")
    store.set_window(60)
    assert r.pttl("telemetry:{m}:events") > before - 1000
    assert r.hget("telemetry:{m}:totals", "window_ms") == b"60000"


def _stale_and_changed(r: redis.Redis, old: int, new: int) -> tuple[TelemetryStore, TelemetryStore]:
    """A store with window ``old`` that wrote (so it trusts its window for a minute), and one
    that then changed the namespace's window to ``new`` and wrote an event 10 minutes old."""
    stale = TelemetryStore(r, window_secs=old)
    stale.record(event("m"))
    stale.record(event("m"))  # the steady state: one EVALSHA, no config check
    changer = TelemetryStore(r, window_secs=old)
    changer.set_window(new)
    changer.record(event("m", ago_secs=600))  # inside the new window only (when longer)
    return stale, changer


def test_a_store_with_the_old_window_cannot_trim_after_a_change(r: redis.Redis) -> None:
    stale, changer = _stale_and_changed(r, 60, 3600)
    before = dump_all(r)
    for write in (
        lambda: stale.record(event("m")),  # the single-command path
        lambda: stale.record_batch([event("m"), event("m")]),  # the batch path
    ):
        with pytest.raises(WindowMismatchError) as caught:
            write()
        assert (caught.value.stored, caught.value.requested) == (3600, 60)
        assert dump_all(r) == before  # nothing written, nothing trimmed
    assert changer.model_performance("m").successful_completions == 3
    # the refusal made the stale store check the config again: it follows the change once
    # rebuilt, and the event ten minutes old is still counted
    follower = stale.with_window(stale.stored_window() or 0)
    assert follower.record(event("m")).stored == 1
    assert follower.model_performance("m").successful_completions == 4


def test_a_store_with_the_old_window_cannot_write_after_a_shorter_one(r: redis.Redis) -> None:
    stale, changer = _stale_and_changed(r, 3600, 60)
    with pytest.raises(WindowMismatchError) as caught:
        stale.record(event("m"))
    assert (caught.value.stored, caught.value.requested) == (60, 3600)
    assert changer.record(event("m")).stored == 1


def test_changing_the_window_back_lets_the_old_stores_write_again(r: redis.Redis) -> None:
    stale, changer = _stale_and_changed(r, 60, 3600)
    changer.set_window(60)
    assert r.hget("telemetry:{m}:totals", "window_ms") == b"60000"
    assert stale.record(event("m")).stored == 1
    assert stale.model_performance("m").successful_completions == 3  # the 600 s one aged out
