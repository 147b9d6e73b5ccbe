"""Connection failures surface as TelemetryUnavailable within a bounded time."""

from __future__ import annotations

import time

import pytest

from redis_telemetry import (
    AsyncTelemetryStore,
    TelemetryError,
    TelemetryStore,
    TelemetryUnavailable,
)

from .helpers import event
from .servers import free_port


def test_unreachable_server_raises_quickly() -> None:
    store = TelemetryStore.from_url(f"redis://127.0.0.1:{free_port()}/0")
    start = time.monotonic()
    with pytest.raises(TelemetryUnavailable, match="unreachable"):
        store.record(event("m"))
    with pytest.raises(TelemetryError):
        store.all_model_performances()
    assert time.monotonic() - start < 10
    store.client.close()


async def test_unreachable_server_raises_quickly_async() -> None:
    store = AsyncTelemetryStore.from_url(f"redis://127.0.0.1:{free_port()}/0")
    start = time.monotonic()
    with pytest.raises(TelemetryUnavailable):
        await store.model_performance("m")
    assert time.monotonic() - start < 10
    await store.aclose()


def test_from_url_refuses_decode_responses() -> None:
    with pytest.raises(TelemetryError, match="decode_responses"):
        TelemetryStore.from_url("redis://127.0.0.1:1/0", decode_responses=True)
