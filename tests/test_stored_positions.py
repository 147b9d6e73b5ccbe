"""``RecordResult.stored_positions``: which events a write newly stored, exactly as
``record.lua`` decided it (a call that stores only some of its events lists their positions)."""

from __future__ import annotations

import redis
import redis.asyncio

from redis_telemetry import AsyncTelemetryStore, CompletionEvent, TelemetryStore
from redis_telemetry.core import ops

from .helpers import event

WINDOW = 600


def _new(events: list[CompletionEvent], positions: tuple[int, ...]) -> list[str | None]:
    return [events[i].event_id for i in positions]


def _mixed_batch() -> list[CompletionEvent]:
    """Two models interleaved: new events, one a model already holds, one too old, an id
    repeated within the batch, an event without an id, and an id the other model holds."""
    return [
        event("a", event_id="a-new-1", ago_secs=5),  # 0: new
        event("a", event_id="a-old", ago_secs=4),  # 1: the model holds it
        event("b", event_id="b-new-1", ago_secs=4),  # 2: new
        event("a", event_id="a-aged", ago_secs=WINDOW + 60),  # 3: too old
        event("a", event_id="a-new-1", ago_secs=3),  # 4: repeats 0 within the batch
        event("b", event_id="a-old", ago_secs=3),  # 5: new for b (ids are per model)
        event("a", ago_secs=2),  # 6: no id: new
        event("b", event_id="b-held", ago_secs=2),  # 7: b holds it
        event("a", event_id="a-new-2", ago_secs=1),  # 8: new
    ]


def test_a_batch_reports_exactly_the_events_it_stored(r: redis.Redis) -> None:
    store = TelemetryStore(r, window_secs=WINDOW)
    held = [event("a", event_id="a-old", ago_secs=9), event("b", event_id="b-held", ago_secs=9)]
    assert store.record_batch(held).stored_positions == (0, 1)
    batch = _mixed_batch()
    result = store.record_batch(batch)
    assert (result.stored, result.duplicates, result.outside_window) == (5, 3, 1)
    assert result.stored_positions == (0, 2, 5, 6, 8)
    assert _new(batch, result.stored_positions) == ["a-new-1", "b-new-1", "a-old", None, "a-new-2"]
    again = store.record_batch(batch)  # redelivered: only the event without an id is new
    assert (again.stored, again.duplicates, again.stored_positions) == (1, 7, (6,))


def test_record_says_whether_its_event_was_stored(r: redis.Redis) -> None:
    store = TelemetryStore(r, window_secs=WINDOW)
    one = event("m", event_id="one", ago_secs=3)
    assert store.record(one).stored_positions == (0,)
    assert store.record(one).stored_positions == ()  # the steady-state single command
    assert store.record(event("m", ago_secs=WINDOW + 60)).stored_positions == ()


def test_positions_span_the_calls_of_a_large_batch(r: redis.Redis) -> None:
    """More events than one record.lua call takes: each call's positions are its own."""
    store = TelemetryStore(r, window_secs=WINDOW)
    n = ops.SCRIPT_CHUNK + 200
    batch = [event("m", event_id=f"e{i}", ago_secs=60 - i * 0.01) for i in range(n)]
    known = [0, 7, ops.SCRIPT_CHUNK - 1, ops.SCRIPT_CHUNK + 3, n - 1]
    store.record_batch([batch[i] for i in known])
    result = store.record_batch(batch)
    assert result.stored_positions == tuple(i for i in range(n) if i not in known)


def test_a_restore_reports_positions_in_the_dump(r: redis.Redis) -> None:
    store = TelemetryStore(r, window_secs=WINDOW)
    store.record_batch([event("a", event_id=f"e{i}", ago_secs=9 - i) for i in range(3)])
    dump = store.dump()
    r.delete("telemetry:{a}:events", "telemetry:{a}:ids", "telemetry:{a}:totals")
    store.record(dump.events[1])
    assert store.restore(dump).stored_positions == (0, 2)
    summary = store.export_summary()
    assert store.import_summary(summary).stored_positions == ()


async def test_the_async_store_reports_the_same(ar: redis.asyncio.Redis) -> None:
    store = AsyncTelemetryStore(ar, window_secs=WINDOW)
    await store.record_batch([event("a", event_id="a-old", ago_secs=9)])
    await store.record_batch([event("b", event_id="b-held", ago_secs=9)])
    result = await store.record_batch(_mixed_batch())
    assert result.stored_positions == (0, 2, 5, 6, 8)
    await store.aclose()


def test_a_model_being_rebuilt_reports_the_same(r: redis.Redis) -> None:
    """While the totals are rebuilt from the members, every call takes the general path."""
    store = TelemetryStore(r, window_secs=WINDOW)
    store.record_batch([event("m", event_id=f"e{i}", ago_secs=30 - i) for i in range(5)])
    r.hdel("telemetry:{m}:totals", "layout")
    batch = [event("m", event_id=f"e{i}", ago_secs=9 - i) for i in (3, 7, 1, 8)]
    assert store.record_batch(batch).stored_positions == (1, 3)
    assert store.record(event("m", event_id="e2")).stored_positions == ()
