"""Checks only a real Redis Cluster can answer: slots, spreading, round trips per node, the
registry's ordering, failover, WAIT and replica reads."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import redis.cluster
from redis.cluster import LoadBalancingStrategy, RedisCluster

from redis_telemetry import TelemetryError, TelemetryStore
from redis_telemetry.core.keys import Keys

from .helpers import event
from .servers import RedisClusterServers

MODELS = [f"vendor/model-{i:02d}" for i in range(20)]


@pytest.fixture
def store(redis_cluster: RedisClusterServers) -> Iterator[TelemetryStore]:
    s = TelemetryStore.from_url(redis_cluster.url)
    s.client.flushall()
    yield s
    s.client.close()


class NodeCalls:
    """Counts the pipelines a store sends, per node."""

    def __init__(self, store: TelemetryStore, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[Any] = []
        original = store._send_node

        def spy(name: Any, batch: Any) -> list[Any]:
            self.calls.append(name)
            return original(name, batch)

        monkeypatch.setattr(store, "_send_node", spy)


def test_one_slot_per_model_and_models_spread_over_masters(store: TelemetryStore) -> None:
    store.record_batch([event(m, False, error="429 Too Many Requests") for m in MODELS])
    client: RedisCluster = store.client
    nodes = set()
    layout = Keys(store.namespace)
    for m in MODELS:
        keys = [layout.events(m), layout.limit(m), layout.totals(m)]
        assert len({client.keyslot(k) for k in keys}) == 1
        assert all(client.exists(k) for k in keys)
        nodes.add(client.get_node_from_key(keys[0]).name)
    assert len(nodes) >= 2
    assert len(nodes) == len(client.get_primaries())


def test_a_batch_costs_one_round_trip_per_node(
    store: TelemetryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.record_batch([event(m) for m in MODELS])  # first: registers and claims the window
    spy = NodeCalls(store, monkeypatch)
    result = store.record_batch([event(m) for m in MODELS for _ in range(5)])
    assert result.stored == 100
    assert sorted(spy.calls) == sorted(set(spy.calls))  # never twice the same node
    assert len(spy.calls) == len(store.client.get_primaries())
    store.all_model_performances()  # now this store knows the models (and nodes the script)
    spy.calls.clear()
    perfs = store.all_model_performances()
    assert [p.successful_completions for p in perfs] == [6] * 20
    assert sorted(spy.calls) == sorted(set(spy.calls))
    assert len(spy.calls) <= len(store.client.get_primaries())


def test_a_client_dying_between_registry_and_events_leaves_a_listed_model(
    store: TelemetryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = store._send_node

    def dies_after_the_registry(name: Any, batch: Any) -> list[Any]:
        if any(getattr(c, "script", "") == "record" for c in batch):
            raise SystemExit("the client died here")
        return original(name, batch)

    monkeypatch.setattr(store, "_send_node", dies_after_the_registry)
    with pytest.raises(SystemExit):
        store.record_batch([event("half-written")])
    monkeypatch.undo()
    # the registry went first: it holds the model (harmless), which with no events yet is
    # not among known_models() (models with events in the window or an active limit)
    assert store.client.zscore("telemetry:models", "half-written") is not None
    assert store.known_models() == []
    assert store.model_performance("half-written").successful_completions == 0
    # and the invariant holds for every model that has events
    store.record_batch([event(m) for m in MODELS])
    listed = set(store.known_models())
    client: RedisCluster = store.client
    with_events = {
        k.decode().split("{")[1].split("}")[0]
        for k in client.keys("telemetry:*:events", target_nodes=RedisCluster.PRIMARIES)
    }
    assert with_events <= listed


def test_script_cache_flushed_on_every_node(store: TelemetryStore) -> None:
    store.record_batch([event(m) for m in MODELS])
    client: RedisCluster = store.client
    for node in client.get_primaries():
        client.get_redis_connection(node).script_flush()
    assert store.record_batch([event(m) for m in MODELS]).stored == 20
    assert sum(p.successful_completions for p in store.all_model_performances()) == 40


# -- failover, WAIT and replicas: a 3-master, 3-replica cluster of its own ------------------


@pytest.fixture(scope="module")
def replicated() -> Iterator[RedisClusterServers]:
    servers = RedisClusterServers(masters=3, replicas=1).start()  # replicas attached, in sync
    yield servers
    servers.cleanup()


def test_reads_from_replicas_are_opt_in(replicated: RedisClusterServers) -> None:
    seed = replicated.nodes[0]
    writer = TelemetryStore.from_url(replicated.url, wait_for_replicas=1)
    writer.record_batch([event(m) for m in MODELS])  # WAIT: every replica has them
    replicas_first = LoadBalancingStrategy.ROUND_ROBIN_REPLICAS
    client = RedisCluster(host="127.0.0.1", port=seed.port, load_balancing_strategy=replicas_first)
    reader = TelemetryStore(client)
    nodes = {reader._locate(Keys(reader.namespace).events(m), True) for m in MODELS}
    roles = set()
    for name in nodes:  # ask each node what it is
        host, port = str(name).rsplit(":", 1)
        with redis.Redis(host=host, port=int(port)) as node:
            roles.add(node.execute_command("ROLE")[0])
    assert roles == {b"slave"}  # reads went to replicas
    assert sum(p.successful_completions for p in reader.all_model_performances()) == 20
    # writes still go to primaries
    assert reader.record(event(MODELS[0])).stored == 1
    writer.client.close()
    client.close()


def test_wait_refuses_success_without_enough_replicas(replicated: RedisClusterServers) -> None:
    store = TelemetryStore.from_url(replicated.url, wait_for_replicas=2, wait_timeout_ms=200)
    with pytest.raises(TelemetryError, match="only 1 of 2 replicas acknowledged"):
        store.record(event("needs-two"))
    store.client.close()


@pytest.mark.slow
def test_failover_the_same_store_recovers(replicated: RedisClusterServers) -> None:
    ns = "failover"
    durable = TelemetryStore.from_url(
        replicated.url, namespace=ns, wait_for_replicas=1, wait_timeout_ms=2000
    )
    store = TelemetryStore.from_url(replicated.url, namespace=ns)  # must live through it
    acked = dict.fromkeys(MODELS, 0)
    for m in MODELS:
        durable.record(event(m))  # returns once a replica has it
        acked[m] += 1
    assert sum(p.successful_completions for p in store.all_model_performances()) == 20
    client: RedisCluster = store.client
    victim = client.get_node_from_key(Keys(store.namespace).events(MODELS[0]))
    server = next(n for n in replicated.nodes if n.port == victim.port)
    assert server.proc is not None
    os.kill(server.proc.pid, signal.SIGKILL)
    server.proc.wait(timeout=10)
    server.proc = None
    killed = time.monotonic()
    while True:  # the same store object serves again once a replica has taken over
        try:
            store.record(event(MODELS[0]))
            acked[MODELS[0]] += 1
            perfs = {p.model: p for p in store.all_model_performances()}
            break
        except TelemetryError:
            assert time.monotonic() - killed < 60, "no failover within 60 s"
    # every write a replica acknowledged (WAIT) before the kill survived the failover
    assert {m: perfs[m].successful_completions for m in MODELS} == acked
    durable.client.close()
    store.client.close()


def test_redis_cluster_url_needs_a_cluster(redis_server: Any) -> None:
    with pytest.raises(TelemetryError, match="as a Redis Cluster"):
        TelemetryStore.from_url(f"redis+cluster://127.0.0.1:{redis_server.port}/0")


def _drive(batch: Any, answers: dict[str, Any]) -> list[Any]:
    """Run core.cluster.send with canned per-node answers (no servers)."""
    from redis_telemetry.core import cluster

    driver = cluster.send(batch, lambda key, read: "a", lambda: ["a", "b-dead", "c"])
    try:
        step = next(driver)
        while True:
            node, commands = step  # type: ignore[misc]
            answer = answers[node]
            step = driver.send(answer if isinstance(answer, BaseException) else answer(commands))
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


def test_script_load_passes_over_an_unreachable_node() -> None:
    from redis_telemetry.core.commands import Cmd

    load = Cmd("script_load", ("return 1",), route="telemetry:{m}:events")
    ok = lambda commands: ["sha"] * len(commands)  # noqa: E731
    dead = redis.exceptions.ConnectionError("node gone")
    assert _drive([load], {"a": ok, "b-dead": dead, "c": ok}) == ["sha"]
    with pytest.raises(redis.exceptions.ConnectionError):
        _drive([load], {"a": dead, "b-dead": dead, "c": dead})
