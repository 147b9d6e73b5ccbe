"""Backends for the behavioural suite: every store test runs on fakeredis and on a real server."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import fakeredis
import pytest
import redis
import redis.asyncio
from hypothesis import settings

from redis_telemetry import AsyncTelemetryStore, TelemetryStore

from .servers import IN_CI, RedisServer

# CI replays the same examples every run (reproducible); local runs keep exploring new ones.
settings.register_profile("ci", derandomize=True, print_blob=True)
if IN_CI:
    settings.load_profile("ci")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One real redis-server for the whole run, on a free port, in its own temp dir."""
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.cleanup()


@dataclass
class Backend:
    """Makes sync and async clients that reach the same data."""

    name: str
    fake_server: fakeredis.FakeServer | None = None
    port: int | None = None

    def client(self) -> redis.Redis:
        if self.fake_server is not None:
            return fakeredis.FakeRedis(server=self.fake_server)
        return redis.Redis(port=self.port)

    def async_client(self) -> redis.asyncio.Redis:
        if self.fake_server is not None:
            return fakeredis.FakeAsyncRedis(server=self.fake_server)
        return redis.asyncio.Redis(port=self.port)


@pytest.fixture(params=["fakeredis", "redis-server"])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    if request.param == "fakeredis":
        yield Backend("fakeredis", fake_server=fakeredis.FakeServer())
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    with server.client() as c:
        c.flushall()
    yield Backend("redis-server", port=server.port)


@pytest.fixture
def r(backend: Backend) -> Iterator[redis.Redis]:
    """A raw client on the backend, for inspecting and tampering with keys."""
    client = backend.client()
    yield client
    client.close()


@pytest.fixture
def store(r: redis.Redis) -> TelemetryStore:
    return TelemetryStore(r, window_secs=3600)


@pytest.fixture
async def ar(backend: Backend) -> AsyncIterator[redis.asyncio.Redis]:
    client = backend.async_client()
    yield client
    await client.aclose()


@pytest.fixture
def astore(ar: redis.asyncio.Redis) -> AsyncTelemetryStore:
    return AsyncTelemetryStore(ar, window_secs=3600)


@pytest.fixture(params=["fakeredis-tcp", "redis-server"])
def url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A URL other processes can reach: fakeredis's TCP server, or a real redis-server."""
    if request.param == "redis-server":
        server: RedisServer = request.getfixturevalue("redis_server")
        with server.client() as c:
            c.flushall()
        yield server.url
        return
    fake = fakeredis.TcpFakeServer(("127.0.0.1", 0), server_type="redis")
    thread = threading.Thread(target=fake.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"redis://127.0.0.1:{fake.server_address[1]}/0"
    finally:
        fake.shutdown()
        fake.server_close()
        thread.join(timeout=5)
