"""Memory eviction as a contract (issue 13, item 11): what the store does at ``maxmemory`` under
each kind of ``maxmemory-policy``, on a real redis-server, and the warning ``from_url`` and the
CLI give when the policy can evict a model's events without its totals."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import redis

from redis_telemetry import AsyncTelemetryStore, CompletionEvent, TelemetryError, TelemetryStore
from redis_telemetry.cli import main
from redis_telemetry.core.memory import verdict

from .helpers import dump_all, event
from .servers import RedisClusterServers, RedisServer

MEMORY_LOG = "redis_telemetry.core.memory"
EVICTING = ("allkeys-lru", "allkeys-random", "volatile-lru", "volatile-ttl")
MODELS = [f"m{i:02d}" for i in range(40)]


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    """One redis-server for the module; each test sets its own maxmemory and policy."""
    s = RedisServer().start()
    try:
        yield s
    finally:
        s.cleanup()


@pytest.fixture
def admin(server: RedisServer) -> Iterator[redis.Redis]:
    client = server.client()
    client.config_set("maxmemory", 0)
    client.config_set("maxmemory-policy", "noeviction")
    client.flushall()
    yield client
    client.config_set("maxmemory", 0)
    client.config_set("maxmemory-policy", "noeviction")
    client.close()


def _limit(admin: redis.Redis, policy: str, room: int = 1_500_000) -> None:
    """Leave ``room`` bytes above what the server uses now, under ``policy``."""
    admin.config_set("maxmemory-policy", policy)
    admin.config_set("maxmemory", int(admin.info("memory")["used_memory"]) + room)


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == MEMORY_LOG and r.levelno >= 30]


def _batch(k: int) -> list[CompletionEvent]:
    """Five events per model, with ids: sending them again stores each once."""
    return [event(m, event_id=f"{k}-{m}-{j}") for m in MODELS for j in range(5)]


# -- the warning ------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", EVICTING)
def test_from_url_warns_once_when_the_policy_can_evict(
    admin: redis.Redis, server: RedisServer, policy: str, caplog: pytest.LogCaptureFixture
) -> None:
    admin.config_set("maxmemory-policy", policy)
    caplog.set_level(logging.DEBUG, logger="redis_telemetry")
    store = TelemetryStore.from_url(server.url)
    assert _warnings(caplog) == []  # no I/O when built
    store.record(event("m"))
    store.with_window(3600).known_models()  # the same connection: checked once
    store.model_performance("m")
    (line,) = _warnings(caplog)
    assert f"maxmemory-policy {policy} (maxmemory is 0 for now)" in line
    assert "\n" not in line
    store.client.close()


def test_from_url_is_silent_under_noeviction(
    admin: redis.Redis, server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    _limit(admin, "noeviction")
    caplog.set_level(logging.DEBUG, logger="redis_telemetry")
    store = TelemetryStore.from_url(server.url)
    store.record(event("m"))
    assert _warnings(caplog) == []
    store.client.close()


def test_a_store_given_a_client_is_not_checked(
    admin: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    admin.config_set("maxmemory-policy", "allkeys-lru")
    TelemetryStore(admin).record(event("m"))  # a client passed in is used as it is
    assert _warnings(caplog) == []


async def test_async_from_url_warns_at_its_first_operation(
    admin: redis.Redis, server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    admin.config_set("maxmemory-policy", "volatile-lfu")
    store = AsyncTelemetryStore.from_url(server.url)
    assert _warnings(caplog) == []
    await store.record(event("m"))
    await store.known_models()
    (line,) = _warnings(caplog)
    assert "maxmemory-policy volatile-lfu" in line
    await store.aclose()


def test_no_warning_and_no_failure_when_config_is_refused(
    admin: redis.Redis, server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    admin.config_set("maxmemory-policy", "allkeys-lru")
    admin.acl_setuser("no-config", enabled=True, passwords=["+pw"], keys=["*"], commands=["+@all"])
    admin.execute_command("ACL", "SETUSER", "no-config", "-config")
    caplog.set_level(logging.DEBUG, logger="redis_telemetry")
    url = f"redis://no-config:pw@127.0.0.1:{server.port}/0"
    store = TelemetryStore.from_url(url)
    assert store.record(event("m")).stored == 1
    assert _warnings(caplog) == []
    assert any("cannot read maxmemory-policy" in r.getMessage() for r in caplog.records)
    store.client.close()
    admin.acl_deluser("no-config")


@pytest.mark.parametrize(("policy", "warned"), [("allkeys-lfu", True), ("noeviction", False)])
def test_the_cli_warns_in_one_line(
    admin: redis.Redis,
    server: RedisServer,
    policy: str,
    warned: bool,
    capsys: pytest.CaptureFixture[str],
) -> None:
    admin.config_set("maxmemory-policy", policy)
    assert main(["--url", server.url, "status"]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if "maxmemory" in line]
    assert len(lines) == int(warned)
    if warned:
        assert "WARNING" in lines[0]
        assert "maxmemory-policy allkeys-lfu" in lines[0]


def test_the_verdict_of_each_policy() -> None:
    assert verdict("", {"maxmemory-policy": "noeviction", "maxmemory": "100"}) is None
    assert verdict("", {}) is None  # nothing readable: nothing to say
    for policy in (*EVICTING, "allkeys-lfu", "volatile-random", "volatile-lfu", "new-policy"):
        line = verdict("127.0.0.1:7000", {"maxmemory-policy": policy, "maxmemory": "100"})
        assert line is not None
        assert line.startswith(f"Redis at 127.0.0.1:7000 has maxmemory-policy {policy}: ")


# -- at the limit -----------------------------------------------------------------------------


def _whole(admin: redis.Redis, model: str) -> int:
    """A model's stored events, after checking its totals count exactly those."""
    card = int(admin.zcard(f"telemetry:{{{model}}}:events"))
    assert int(admin.hget(f"telemetry:{{{model}}}:totals", "ok") or 0) == card
    return card


def test_noeviction_refuses_writes_at_the_limit_and_keeps_every_model_whole(
    admin: redis.Redis, server: RedisServer
) -> None:
    store = TelemetryStore(server.client(), window_secs=3600)
    store.record(event("solo"))
    _limit(admin, "noeviction")
    reported = 0
    for k in range(1000):
        batch = _batch(k)
        try:
            reported += store.record_batch(batch).stored
        except TelemetryError as exc:
            refused, error = batch, exc
            break
    else:
        pytest.fail("never reached maxmemory")
    assert type(error) is TelemetryError
    assert str(error).startswith("Redis is out of memory (maxmemory reached, policy noeviction)")
    # each model's script is whole; a batch over many models may be stored for some of them
    stored = sum(_whole(admin, m) for m in MODELS)
    partly = stored - reported
    assert partly % 5 == 0
    assert 0 <= partly < len(refused)
    before = dump_all(admin)
    with pytest.raises(TelemetryError, match="out of memory"):
        store.record(event("solo"))
    assert dump_all(admin) == before  # nothing written, not even in part
    # reads go on; snapshots count exactly what is stored
    perfs = {p.model: p.successful_completions for p in store.all_model_performances()}
    assert sum(perfs.values()) == stored + 1
    admin.config_set("maxmemory", 0)  # memory back: sending the refused batch again is safe
    again = store.record_batch(refused)
    assert (again.stored, again.duplicates) == (len(refused) - partly, partly)
    assert sum(_whole(admin, m) for m in MODELS) == reported + len(refused)
    store.client.close()


@pytest.mark.parametrize("policy", ["allkeys-lru", "volatile-lru"])
def test_an_evicting_policy_fails_no_write_and_reads_report_what_survived(
    admin: redis.Redis, server: RedisServer, policy: str
) -> None:
    store = TelemetryStore(server.client(), window_secs=3600)
    store.record_batch(_batch(-1))
    _limit(admin, policy, room=600_000)
    for k in range(60):  # about twice what fits: every write succeeds, Redis evicts
        assert store.record_batch(_batch(k)).stored == 200
    assert int(admin.info("stats")["evicted_keys"]) > 0
    admin.config_set("maxmemory", 0)  # no eviction while the test reads
    listed = {p.model: p for p in store.all_model_performances()}
    for m in MODELS:
        card = int(admin.zcard(f"telemetry:{{{m}}}:events"))
        totals = admin.hget(f"telemetry:{{{m}}}:totals", "ok")
        # the running totals answer when both survived; evicted totals are read from the
        # events; evicted events read as empty
        expected = 0 if card == 0 else card if totals is None else int(totals)
        perf = store.model_performance(m)
        assert perf.successful_completions == expected
        if m in listed:
            assert listed[m].successful_completions == expected
        assert store.model_performance(m, percentiles=True).successful_completions == card
        assert len(store.events(m)) == card
    store.client.close()


def test_what_readers_report_when_eviction_splits_a_model(admin: redis.Redis) -> None:
    """Eviction of one key of a model, done by hand so that it is always the same key."""
    store = TelemetryStore(admin, window_secs=3600)
    store.record_batch([event("gone-events") for _ in range(10)])
    store.record_batch([event("gone-totals") for _ in range(10)])
    admin.delete("telemetry:{gone-events}:events", "telemetry:{gone-totals}:totals")
    # evicted events read as empty; evicted totals are read from the events
    assert store.model_performance("gone-events").successful_completions == 0
    assert store.model_performance("gone-events", percentiles=True).successful_completions == 0
    assert store.model_performance("gone-totals").successful_completions == 10
    assert store.model_performance("gone-totals", percentiles=True).successful_completions == 10
    assert store.known_models() == ["gone-totals"]
    # a write heals both: it starts the totals afresh, or rebuilds them from the events
    store.record(event("gone-events"))
    store.record(event("gone-totals"))
    assert store.model_performance("gone-events").successful_completions == 1
    assert store.model_performance("gone-totals").successful_completions == 11
    assert admin.hget("telemetry:{gone-totals}:totals", "ok") == b"11"
    assert store.known_models() == ["gone-events", "gone-totals"]


@pytest.mark.parametrize("asyncio", [False, True])
async def test_every_primary_of_a_cluster_is_checked(
    redis_cluster: RedisClusterServers, asyncio: bool, caplog: pytest.LogCaptureFixture
) -> None:
    odd = redis_cluster.nodes[-1]
    for node in redis_cluster.nodes:  # what earlier tests left (another window) goes
        with node.client() as c:
            c.flushall()
    with odd.client() as c:
        c.config_set("maxmemory-policy", "allkeys-random")
    try:
        if asyncio:
            astore = AsyncTelemetryStore.from_url(redis_cluster.url)
            await astore.known_models()
            await astore.aclose()
        else:
            store = TelemetryStore.from_url(redis_cluster.url)
            store.known_models()
            store.client.close()
    finally:
        with odd.client() as c:
            c.config_set("maxmemory-policy", "noeviction")
    (line,) = _warnings(caplog)
    assert line.startswith(f"Redis at 127.0.0.1:{odd.port} has maxmemory-policy allkeys-random")
