"""The asyncio store gives the same results as the blocking one: one core drives both."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
import redis.asyncio

from redis_telemetry import (
    AsyncTelemetryStore,
    InvalidInputError,
    TelemetryError,
    TelemetryStore,
    WindowMismatchError,
)

from .helpers import dump_all, event


def _batch() -> list[Any]:
    return [
        event("alpha", True, 120, session_id="s1", cost_usd=0.2),
        event("alpha", False, 900, session_id="s1", error="connection reset"),
        event("beta", True, 40, session_id="s2"),
        event("gamma", False, 10, session_id="s1", error="You have hit your usage limit"),
        event("beta", True, 60, session_id="s1", ago_secs=30),
    ]


def _comparable(snapshots: list[Any]) -> list[dict[str, Any]]:
    """Snapshots minus the limit expiry, which is server time + PTTL at the moment of reading."""
    out = []
    for s in snapshots:
        data = s.model_dump()
        expires = data.pop("subscription_limit_expires_at")
        data["limited_for_a_while"] = expires is not None
        out.append(data)
    return out


async def test_async_writes_read_the_same_through_both_stores(
    r: redis.Redis, astore: AsyncTelemetryStore
) -> None:
    sync = TelemetryStore(r, window_secs=3600)
    result = await astore.record_batch(_batch())
    assert result.stored == 5
    await astore.record(event("alpha", True, 300, session_id="s2"))
    await astore.mark_subscription_limited("delta", ttl_secs=600)

    assert await astore.known_models() == sync.known_models() == ["alpha", "beta", "delta", "gamma"]
    a_perfs = await astore.all_model_performances()
    s_perfs = sync.all_model_performances()
    assert _comparable(a_perfs) == _comparable(s_perfs)
    assert _comparable([await astore.model_performance("alpha")]) == _comparable(
        [sync.model_performance("alpha")]
    )
    a_usage = await astore.session_usage("s1")
    s_usage = sync.session_usage("s1")
    assert a_usage.by_model == s_usage.by_model
    assert a_usage.totals == s_usage.totals
    assert a_usage.totals.message_count == 4


async def test_sync_writes_read_the_same_through_both_stores(
    r: redis.Redis, astore: AsyncTelemetryStore
) -> None:
    sync = TelemetryStore(r, window_secs=3600)
    sync.record_batch(_batch())
    a_summary = await astore.export_summary()
    s_summary = sync.export_summary()
    assert _comparable(a_summary.model_performances) == _comparable(s_summary.model_performances)
    assert a_summary.window_secs == s_summary.window_secs == 3600


async def test_async_import_clear_and_set_window(
    r: redis.Redis, astore: AsyncTelemetryStore
) -> None:
    sync = TelemetryStore(r, window_secs=3600)
    sync.record(event("m", False, error="weekly session limit reached"))
    summary = sync.export_summary()
    r.flushdb()
    result = await astore.import_summary(summary)
    assert result.stored == 1
    assert (await astore.model_performance("m")).subscription_limit_reached
    assert await astore.clear_subscription_limit("m") is True
    assert not (await astore.model_performance("m")).subscription_limit_reached
    await astore.set_window(7200)
    assert r.hget("telemetry:config", "window_secs") == b"7200"
    with pytest.raises(WindowMismatchError):
        TelemetryStore(r, window_secs=3600).record(event("m"))
    until = datetime.now(UTC) + timedelta(minutes=5)
    await astore.mark_subscription_limited("blocked", until=until)
    assert 250_000 < r.pttl("telemetry:{blocked}:limit") <= 300_000
    other = astore.with_window(600)  # the same client and settings, another window
    assert isinstance(other, AsyncTelemetryStore)
    assert (other.client, other.window_secs, astore.window_secs) == (astore.client, 600, 7200)
    assert (await other.with_window(7200).record(event("m"))).stored == 1


async def test_async_refuses_bad_input_and_writes_nothing(
    r: redis.Redis, astore: AsyncTelemetryStore
) -> None:
    await astore.record(event("ok"))
    before = dump_all(r)
    bad = event("m").model_copy(update={"latency_ms": -1})
    with pytest.raises(InvalidInputError, match="event 1: latency_ms"):
        await astore.record_batch([event("m"), bad])
    assert dump_all(r) == before


async def test_async_recovers_from_script_flush(
    r: redis.Redis, astore: AsyncTelemetryStore
) -> None:
    await astore.record(event("m"))
    r.script_flush()
    assert (await astore.record(event("m"))).stored == 1
    r.script_flush()
    assert (await astore.record_batch([event("m"), event("n")])).stored == 2
    assert (await astore.model_performance("m")).successful_completions == 3


def test_clients_of_the_wrong_kind_are_refused(r: redis.Redis) -> None:
    with pytest.raises(TelemetryError, match="AsyncTelemetryStore"):
        TelemetryStore(redis.asyncio.Redis())
    with pytest.raises(TelemetryError, match=r"redis\.asyncio"):
        AsyncTelemetryStore(r)
