"""Worker processes for the concurrency tests (module-level so that spawn can import them)."""

from __future__ import annotations

from multiprocessing.synchronize import Event as EventType
from typing import Any

from redis_telemetry import TelemetryStore

from .helpers import event

MODELS = ("m-alpha", "m-beta", "m-gamma")


def writer(url: str, writer_id: int, singles: int, batches: int, batch_size: int) -> int:
    """Record ``singles`` events one by one and ``batches`` batches; return how many were sent."""
    store = TelemetryStore.from_url(url)
    session = f"writer-{writer_id}"
    sent = 0
    for i in range(singles):
        result = store.record(event(MODELS[i % 3], i % 5 != 0, 100 + i, session_id=session))
        assert result.stored == 1
        sent += 1
    for b in range(batches):
        events = [
            event(MODELS[(b + j) % 3], True, 50 + j, session_id=session) for j in range(batch_size)
        ]
        assert store.record_batch(events).stored == batch_size
        sent += batch_size
    store.client.close()
    return sent


def reader(url: str, stop: EventType) -> dict[str, Any]:
    """Read snapshots until told to stop; counts must never go down."""
    store = TelemetryStore.from_url(url)
    last: dict[str, int] = {}
    reads = 0
    regressions = 0
    while True:
        stopping = stop.is_set()
        for snap in store.all_model_performances():
            seen = snap.successful_completions + snap.failed_completions
            if seen < last.get(snap.model, 0):
                regressions += 1
            last[snap.model] = seen
        reads += 1
        if stopping:
            break
    store.client.close()
    return {"reads": reads, "regressions": regressions, "last": last}


def spender(url: str, writer_id: int, events: int, writers: int) -> int:
    """Write ``events`` costly events, each twice (a retry), half one by one and half in
    batches of 5; the ids overlap another writer's. Return how many were stored."""
    store = TelemetryStore.from_url(url)
    distinct = writers * events // 2
    ids = [(writer_id * events // 2 + k) % distinct for k in range(events)]
    mine = [event("spend/m", cost_usd=(i + 1) / 1e6, event_id=f"id-{i}") for i in ids]
    stored = 0
    for attempt in range(2):
        for e in mine[: events // 2]:
            stored += store.record(e).stored
        rest = mine[events // 2 :]
        for start in range(0, len(rest), 5):
            stored += store.record_batch(rest[start : start + 5]).stored
        assert attempt == 0 or stored <= events
    store.client.close()
    return stored
