"""Both stores are context managers that close their connections, as ``close()`` and
``aclose()`` do; counted by the server itself (CLIENT LIST, by the client's name). Each test
has its own namespace: the server is shared with other tests, which set other windows."""

from __future__ import annotations

import pytest

from redis_telemetry import AsyncTelemetryStore, TelemetryStore

from .helpers import event
from .servers import RedisServer


def connected(server: RedisServer, name: str) -> int:
    """How many connections the server holds for clients named ``name``."""
    with server.client() as c:
        return sum(1 for entry in c.client_list() if entry["name"] == name)


def test_with_closes_the_connections_even_on_an_error(redis_server: RedisServer) -> None:
    url = f"{redis_server.url}?client_name=with-block"
    with TelemetryStore.from_url(url, namespace="with-block") as store:
        store.record(event("m"))
        assert connected(redis_server, "with-block") == 1
    assert connected(redis_server, "with-block") == 0

    def fail_inside() -> None:
        with TelemetryStore.from_url(url, namespace="with-block") as store:
            store.record(event("m"))
            raise RuntimeError("the block failed")

    with pytest.raises(RuntimeError, match="the block failed"):
        fail_inside()
    assert connected(redis_server, "with-block") == 0


def test_close_closes_and_a_closed_store_reconnects(redis_server: RedisServer) -> None:
    store = TelemetryStore.from_url(f"{redis_server.url}?client_name=closed", namespace="closed")
    store.record(event("m"))
    store.close()
    assert connected(redis_server, "closed") == 0
    assert store.model_performance("m").successful_completions == 1  # used again: reconnects
    store.close()


async def test_async_with_closes_the_connections(redis_server: RedisServer) -> None:
    url = f"{redis_server.url}?client_name=async-block"
    async with AsyncTelemetryStore.from_url(url, namespace="with-block") as store:
        await store.record(event("m"))
        assert connected(redis_server, "async-block") == 1
    assert connected(redis_server, "async-block") == 0
    store = AsyncTelemetryStore.from_url(url, namespace="async-block")
    await store.record(event("m"))
    await store.aclose()
    assert connected(redis_server, "async-block") == 0
