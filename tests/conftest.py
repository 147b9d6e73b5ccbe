"""Backends for the behavioural suite: every store test runs on fakeredis and on a real server."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster
from hypothesis import settings

from redis_telemetry import AsyncTelemetryStore, TelemetryStore

from .servers import IN_CI, RedisClusterServers, RedisServer

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


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of the test's own, to stop, freeze or restart without disturbing others."""
    server = RedisServer(workdir=tmp_path).start()
    yield server
    server.cleanup()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterServers]:
    """One real 3-master Redis Cluster for the whole run (it takes a few seconds to form)."""
    servers = RedisClusterServers(masters=3).start()
    try:
        yield servers
    finally:
        servers.cleanup()


@dataclass
class Backend:
    """Makes sync and async clients that reach the same data."""

    name: str
    fake_server: fakeredis.FakeServer | None = None
    port: int | None = None
    cluster: bool = False

    def client(self) -> Any:
        if self.fake_server is not None:
            return fakeredis.FakeRedis(server=self.fake_server)
        if self.cluster:
            return redis.cluster.RedisCluster(host="127.0.0.1", port=self.port)
        return redis.Redis(port=self.port)

    def async_client(self) -> Any:
        if self.fake_server is not None:
            return fakeredis.FakeAsyncRedis(server=self.fake_server)
        if self.cluster:
            return redis.asyncio.cluster.RedisCluster(host="127.0.0.1", port=self.port)
        return redis.asyncio.Redis(port=self.port)


@pytest.fixture(params=["fakeredis", "redis-server", "redis-cluster"])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """The behavioural suite's backends: fakeredis, one real server, a real 3-master cluster."""
    if request.param == "fakeredis":
        yield Backend("fakeredis", fake_server=fakeredis.FakeServer())
        return
    if request.param == "redis-cluster":
        servers: RedisClusterServers = request.getfixturevalue("redis_cluster")
        port = servers.nodes[0].port
        with redis.cluster.RedisCluster(host="127.0.0.1", port=port) as c:
            c.flushall()
        yield Backend("redis-cluster", port=port, cluster=True)
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
async def astore(ar: redis.asyncio.Redis) -> AsyncIterator[AsyncTelemetryStore]:
    store = AsyncTelemetryStore(ar, window_secs=3600)
    yield store
    await store.aclose()  # also the per-node clients it opened on a cluster


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
