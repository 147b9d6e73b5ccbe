"""The shipped ACL file, TLS, and namespace isolation, on real redis-server processes."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis

from redis_telemetry import TelemetryError, TelemetryStore

from .api import Serve
from .helpers import dump_all, event
from .servers import RedisServer, free_port, wait_replicas_online

ACL = Path(__file__).resolve().parents[1] / "deploy" / "users.acl"


@pytest.fixture(scope="module")
def acl_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    workdir = tmp_path_factory.mktemp("acl")
    acl = workdir / "users.acl"
    acl.write_text(ACL.read_text())  # redis-server rewrites nothing, but keep the source clean
    server = RedisServer(
        "--aclfile", str(acl), workdir=workdir, auth=("telemetry-admin", "change-me-admin")
    ).start()
    yield server
    server.cleanup()


def url(server: RedisServer, user: str) -> str:
    return f"redis://{user}:change-me-{user.split('-')[-1]}@127.0.0.1:{server.port}/0"


@pytest.fixture
def admin(acl_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(url(acl_server, "telemetry-admin"))
    client.flushall()
    yield client
    client.close()


def test_every_documented_option_works_as_the_shipped_users(
    acl_server: RedisServer, admin: redis.Redis, tmp_path: Path
) -> None:
    """WAIT (wait_for_replicas) with a real replica, the write options as the writer, and the
    read options as the reader."""
    replica = RedisServer(
        "--replicaof",
        "127.0.0.1",
        str(acl_server.port),
        "--masteruser",
        "telemetry-admin",
        "--masterauth",
        "change-me-admin",
        "--aclfile",
        str(tmp_path / "users.acl"),
        workdir=tmp_path,
        auth=("telemetry-admin", "change-me-admin"),
    )
    (tmp_path / "users.acl").write_text(ACL.read_text())
    replica.start()
    try:
        with replica.client() as replica_client:  # readiness: in sync, not merely attached
            wait_replicas_online(admin, [replica_client])
        writer = TelemetryStore.from_url(
            url(acl_server, "telemetry-writer"), wait_for_replicas=1, wait_timeout_ms=5000
        )
        assert writer.record(event("a")).stored == 1
        assert writer.record_batch([event("a"), event("b")]).stored == 2
        writer.mark_subscription_limited("c", ttl_secs=60)
        writer.mark_subscription_limited("d", until=datetime.now(UTC) + timedelta(minutes=5))
        assert writer.clear_subscription_limit("d") is True
        summary = writer.export_summary()
        dump = writer.dump()
        writer.import_summary(summary)
        assert writer.restore(dump).stored == 0  # restoring what is there adds nothing
        writer.set_window(7200)
        writer = writer.with_window(7200)
        writer.record(event("e"))
        writer.client.close()

        reader = TelemetryStore.from_url(url(acl_server, "telemetry-reader"), window_secs=7200)
        # 2 recorded, and 2 again from the imported summary (its events carry no ids)
        assert reader.model_performance("a", percentiles=True).successful_completions == 4
        assert reader.known_models() == ["a", "b", "c", "e"]  # "d"'s limit was cleared
        assert reader.select_model(["a", "c"], strategy="cheapest") == "a"
        assert reader.stored_window() == 7200
        reader.client.close()
    finally:
        replica.cleanup()


def test_writer_writes_and_reader_reads_everything(
    acl_server: RedisServer, admin: redis.Redis, tmp_path: Path
) -> None:
    writer = TelemetryStore.from_url(url(acl_server, "telemetry-writer"))
    writer.record_batch([event("a"), event("b", False, error="weekly session limit reached")])
    writer.mark_subscription_limited("c", ttl_secs=60)
    admin.script_flush()
    writer.record(event("a"))  # SCRIPT LOAD after a flushed cache is allowed too
    assert writer.model_performance("a").successful_completions == 2

    reader = TelemetryStore.from_url(url(acl_server, "telemetry-reader"))
    assert [p.model for p in reader.all_model_performances()] == ["a", "b", "c"]
    assert reader.model_performance("b").subscription_limit_reached
    assert reader.session_usage("test-session").totals.message_count == 3
    assert reader.known_models() == ["a", "b", "c"]
    assert reader.export_summary().window_secs == 3600
    assert len(reader.dump().events) == 3
    assert reader.rank_models(["a", "b"]).ranked[0].model == "a"
    status = subprocess.run(
        [
            sys.executable,
            "-m",
            "redis_telemetry",
            "--url",
            url(acl_server, "telemetry-reader"),
            "status",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert status.returncode == 0, status.stderr
    assert '"model": "a"' in status.stdout
    for s in (writer, reader):
        s.client.close()


def test_serve_selects_from_its_tier_as_the_reader(
    acl_server: RedisServer, admin: redis.Redis
) -> None:
    """``serve --tier`` as the shipped read-only user: the tier's reads (snapshots, limits,
    providers) are all the reader's commands."""
    writer = TelemetryStore.from_url(url(acl_server, "telemetry-writer"))
    writer.record_batch([event("a", latency_ms=100), event("b", latency_ms=900)])
    writer.mark_subscription_limited("c", ttl_secs=60)
    with Serve(url(acl_server, "telemetry-reader"), "--tier") as api:
        got = api.post("/v1/select", {"candidates": ["a", "b", "c"]})
        assert got.status == 200, got.body
        assert (got.json()["model"], got.json()["stale"]) == ("a", False)
        assert [c["reason"] for c in got.json()["ranking"]] == [
            "ranked",
            "ranked",
            "subscription_limited",
        ]
        assert "NOPERM" not in api.stderr
    writer.client.close()


def test_a_readers_write_fails_clearly_and_writes_nothing(
    acl_server: RedisServer, admin: redis.Redis
) -> None:
    TelemetryStore.from_url(url(acl_server, "telemetry-writer")).record(event("a"))
    before = dump_all(admin)
    reader = TelemetryStore.from_url(url(acl_server, "telemetry-reader"))
    for write in (
        lambda: reader.record(event("a")),
        lambda: reader.mark_subscription_limited("a"),
        lambda: reader.clear_subscription_limit("a"),
        lambda: reader.set_window(60),
    ):
        with pytest.raises(TelemetryError, match="permission denied"):
            write()
    assert dump_all(admin) == before
    reader.client.close()


@pytest.mark.parametrize("user", ["telemetry-writer", "telemetry-reader"])
def test_no_user_touches_keys_outside_the_namespace(
    acl_server: RedisServer, admin: redis.Redis, user: str
) -> None:
    admin.set("other:secret", "x")
    client = redis.Redis.from_url(url(acl_server, user))
    with pytest.raises(redis.exceptions.NoPermissionError):
        client.get("other:secret")
    with pytest.raises(redis.exceptions.NoPermissionError):
        client.set("other:new", "y")
    elsewhere = TelemetryStore(client, namespace="other")
    with pytest.raises(TelemetryError, match="permission denied"):
        elsewhere.record(event("m"))
    with pytest.raises(TelemetryError, match="permission denied"):
        elsewhere.all_model_performances()
    assert admin.keys("other:*") == [b"other:secret"]
    client.close()


def _certificates(folder: Path) -> dict[str, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1, made with openssl."""
    ca_key, ca, key, csr, cert = (
        folder / n for n in ("ca.key", "ca.crt", "s.key", "s.csr", "s.crt")
    )
    ext = folder / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    steps = [
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=redis-telemetry test CA",
            "-keyout",
            ca_key,
            "-out",
            ca,
        ],
        [
            "openssl",
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            key,
            "-out",
            csr,
        ],
        [
            "openssl",
            "x509",
            "-req",
            "-in",
            csr,
            "-CA",
            ca,
            "-CAkey",
            ca_key,
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            ext,
            "-out",
            cert,
        ],
    ]
    for step in steps:
        subprocess.run([str(a) for a in step], check=True, capture_output=True)
    return {"ca": ca, "key": key, "cert": cert}


def test_tls(tmp_path: Path) -> None:
    if subprocess.run(["which", "openssl"], capture_output=True).returncode:
        pytest.fail("openssl is needed to make the test's certificates")
    certs = _certificates(tmp_path)
    tls_port = free_port()
    server = RedisServer(
        "--tls-port",
        str(tls_port),
        "--tls-cert-file",
        str(certs["cert"]),
        "--tls-key-file",
        str(certs["key"]),
        "--tls-ca-cert-file",
        str(certs["ca"]),
        "--tls-auth-clients",
        "no",
        workdir=tmp_path,
    ).start()
    try:
        store = TelemetryStore.from_url(
            f"rediss://127.0.0.1:{tls_port}/0", ssl_ca_certs=str(certs["ca"])
        )
        store.record(event("secure"))
        assert store.model_performance("secure").successful_completions == 1
        store.client.close()
        untrusted = TelemetryStore.from_url(f"rediss://127.0.0.1:{tls_port}/0")
        with pytest.raises(TelemetryError):
            untrusted.known_models()  # the system trust store does not know this CA
        untrusted.client.close()
    finally:
        server.cleanup()
