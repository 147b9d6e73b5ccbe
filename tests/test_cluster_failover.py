"""A failover that loses data under a running store (issue 13, item 3): a replica that missed
the registry's last write and the model's events is promoted, and the next write lists the
model again (a 3-master, 3-replica cluster of its own)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest
import redis

from redis_telemetry import TelemetryStore
from redis_telemetry.core.keys import Keys

from .helpers import event
from .servers import RedisClusterServers, RedisServer


@pytest.fixture(scope="module")
def replicated() -> Iterator[RedisClusterServers]:
    servers = RedisClusterServers(masters=3, replicas=1).start()  # replicas attached, in sync
    yield servers
    servers.cleanup()


def _server(cluster: RedisClusterServers, port: int) -> RedisServer:
    return next(n for n in cluster.nodes if n.port == port)


def _replica_of(cluster: RedisClusterServers, primary: RedisServer) -> RedisServer:
    with primary.client() as c:
        info = c.info("replication")
    (port,) = [int(v["port"]) for k, v in info.items() if k.startswith("slave")]
    return _server(cluster, port)


def _promoted(cluster: RedisClusterServers, node: RedisServer, timeout: float = 60.0) -> None:
    """Poll until ``node`` is a primary and every running node reports the cluster ok."""
    deadline = time.monotonic() + timeout
    with node.client() as c:
        while c.execute_command("ROLE")[0] != b"master":
            assert time.monotonic() < deadline, "the replica was not promoted"
            time.sleep(0.05)  # poll interval of a readiness check
    cluster.wait_ok(timeout)


@pytest.mark.slow
def test_a_failover_that_loses_the_registry_and_the_events_lists_the_model_again(
    replicated: RedisClusterServers,
) -> None:
    ns = "lost"
    store = TelemetryStore.from_url(replicated.url, namespace=ns)
    client = store.client
    keys = Keys(ns)
    primary = client.get_node_from_key(keys.models)
    # a model whose events sit on the registry's primary: one failover loses both
    model = next(
        m
        for i in range(10_000)
        if client.get_node_from_key(keys.events(m := f"model-{i}")).name == primary.name
    )
    victim = _server(replicated, primary.port)
    replica = _replica_of(replicated, victim)
    assert store.known_models() == []  # opens the store's connection to that primary
    with victim.client() as c:  # the replica loses its link and cannot connect again
        c.config_set("requirepass", "cut-off")
        c.client_kill_filter(_type="replica")
    deadline = time.monotonic() + 30
    with replica.client() as c:
        while c.info("replication")["master_link_status"] != "down":
            assert time.monotonic() < deadline, "the replica kept its link"
            time.sleep(0.05)  # poll interval of a readiness check
    assert store.record(event(model)).stored == 1
    assert store.record(event(model)).stored == 1  # registered: the steady state
    assert store.known_models() == [model]
    assert victim.proc is not None
    os.kill(victim.proc.pid, signal.SIGKILL)
    victim.proc.wait(timeout=10)
    victim.proc = None
    with replica.client() as c:
        c.execute_command("CLUSTER", "FAILOVER", "TAKEOVER")  # no votes needed: master is dead
    _promoted(replicated, replica)
    with redis.Redis(port=replica.port) as c:
        assert c.exists(keys.models) == c.exists(keys.events(model)) == 0  # both lost
    fresh = TelemetryStore.from_url(f"redis+cluster://127.0.0.1:{replica.port}/0", namespace=ns)
    assert fresh.known_models() == []
    # the same store still believes the model registered; its next write lists it again
    assert store.record(event(model)).stored == 1
    for reader in (store, fresh):
        assert reader.known_models() == [model]
        assert [(p.model, p.successful_completions) for p in reader.all_model_performances()] == [
            (model, 1)
        ]
    with redis.Redis(port=replica.port) as c:
        assert c.zscore(keys.models, model) is not None
    store.client.close()
    fresh.client.close()
