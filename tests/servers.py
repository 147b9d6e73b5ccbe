"""Start and stop throwaway ``redis-server`` processes for the tests (never port 6379)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
import redis.cluster

IN_CI = os.environ.get("CI", "").lower() == "true"


def require(binary: str, skipped: str, install: str) -> str:
    """The path of ``binary``; skip loudly (saying what is ``skipped`` and how to
    ``install`` it) when it is missing, except in CI where that fails."""
    path = shutil.which(binary)
    if path is None:
        reason = f"{binary} is NOT installed: {skipped}. {install}"
        if IN_CI:
            pytest.fail(reason + " CI=true requires it.", pytrace=False)
        pytest.skip(reason)
    return path


def require_redis_server() -> str:
    """redis-server's path, or a loud skip (a failure in CI)."""
    return require(
        "redis-server",
        "every real-server test is skipped",
        "Install it (apt-get install redis-server) or run `bash .ci/run`.",
    )


def _is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(cluster: bool = False) -> int:
    """A TCP port nothing listens on right now. A cluster node also needs port + 10000 (its
    bus), so it gets a port of at most 55535 whose bus port is free too."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        if not cluster:
            return port
        port = 20000 + port % 35000
        if _is_free(port) and _is_free(port + 10000):
            return port


def online_replicas(primary: redis.Redis) -> int:
    """Replicas the primary reports in sync (``slaveN: state=online``), not merely attached."""
    info = primary.info("replication")
    return sum(
        1
        for name, value in info.items()
        if name.startswith("slave") and isinstance(value, dict) and value["state"] == "online"
    )


def poll(ready: Callable[[], bool], deadline: float, failure: str) -> None:
    """Call ``ready`` until it says True (a Redis error: not yet); past the monotonic
    ``deadline``, RuntimeError(failure)."""
    while True:
        try:
            if ready():
                return
        except redis.RedisError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(failure)
        time.sleep(0.05)  # poll interval of a readiness check


def acknowledged(primary: redis.Redis, replicas: int, deadline: float) -> None:
    """WAIT until ``replicas`` replicas acknowledged every write so far, or RuntimeError."""
    left_ms = max(1, int((deadline - time.monotonic()) * 1000))
    acked = primary.wait(replicas, left_ms)
    if acked < replicas:
        raise RuntimeError(f"WAIT: {acked} of {replicas} replicas acknowledged")


def wait_replicas_online(
    primary: redis.Redis, replicas: list[redis.Redis], timeout: float = 30.0
) -> None:
    """Poll until every replica's link is up and the primary sees them all online, then WAIT
    until they acknowledged everything written so far (fails the test on timeout)."""
    deadline = time.monotonic() + timeout

    def ready() -> bool:
        links = [r.info("replication").get("master_link_status") for r in replicas]
        return links == ["up"] * len(replicas) and online_replicas(primary) == len(replicas)

    poll(ready, deadline, f"replicas not online after {timeout}s")
    acknowledged(primary, len(replicas), deadline)


class RedisServer:
    """One ``redis-server`` on a free port with its own data directory."""

    def __init__(
        self,
        *extra_args: str,
        port: int | None = None,
        workdir: Path | None = None,
        auth: tuple[str, str] | None = None,
    ):
        self.binary = require_redis_server()
        self.port = port or free_port()
        self._own_dir = workdir is None
        self.dir = workdir or Path(tempfile.mkdtemp(prefix="redis-telemetry-test-"))
        self.extra_args = extra_args
        self.auth = dict(zip(("username", "password"), auth, strict=True)) if auth else {}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.dir),
            "--save",
            "",
            "--appendonly",
            "no",
            "--logfile",
            "redis.log",
            *self.extra_args,
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.stop(kill=True)
            raise
        return self

    def wait_ready(self, timeout: float) -> None:
        """Poll PING until the server answers; fail with its log if it dies or times out."""
        deadline = time.monotonic() + timeout
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5, **self.auth)
        try:
            while True:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise RuntimeError(f"redis-server exited early: {self.log_tail()}")
                try:
                    if client.ping():
                        return
                except (redis.ConnectionError, redis.exceptions.BusyLoadingError):
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server not ready in {timeout}s: {self.log_tail()}")
                time.sleep(0.02)  # poll interval of a readiness check, not a stand-in for one
        finally:
            client.close()

    def log_tail(self) -> str:
        log = self.dir / "redis.log"
        return log.read_text(errors="replace")[-2000:] if log.exists() else "(no log)"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, **self.auth)

    def stop(self, kill: bool = False) -> None:
        if self.proc is None:
            return
        if kill:
            self.proc.kill()
        else:
            self.proc.terminate()
        self.proc.wait(timeout=10)
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)


class RedisClusterServers:
    """A local Redis Cluster: ``masters`` primaries (and ``replicas`` each), free ports."""

    def __init__(self, masters: int = 3, replicas: int = 0) -> None:
        self.binary = require_redis_server()
        self.cli = shutil.which("redis-cli")
        if self.cli is None:
            pytest.fail("redis-cli is missing (it comes with redis-server)", pytrace=False)
        self.replicas = replicas
        self.nodes = [
            RedisServer(
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "2000",
                port=free_port(cluster=True),
            )
            for _ in range(masters * (1 + replicas))
        ]

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}/0"

    def start(self, timeout: float = 60.0) -> RedisClusterServers:
        try:
            for node in self.nodes:
                node.start()
            assert self.cli is not None
            subprocess.run(
                [
                    self.cli,
                    "--cluster",
                    "create",
                    *(f"127.0.0.1:{n.port}" for n in self.nodes),
                    "--cluster-replicas",
                    str(self.replicas),
                    "--cluster-yes",
                ],
                check=True,
                capture_output=True,
                timeout=60,
            )
            self.wait_ok(timeout)
            self.wait_replicas(timeout)
        except BaseException:
            self.cleanup()
            raise
        return self

    def wait_ok(self, timeout: float, nodes: list[RedisServer] | None = None) -> None:
        """Poll CLUSTER INFO until every running node reports cluster_state:ok."""
        deadline = time.monotonic() + timeout
        for node in nodes or [n for n in self.nodes if n.proc is not None]:
            with node.client() as c:
                poll(
                    lambda c=c: c.cluster("INFO").get("cluster_state") == "ok",  # type: ignore[misc]
                    deadline,
                    f"cluster not ok after {timeout}s",
                )

    def wait_replicas(self, timeout: float) -> None:
        """Poll until every node sees all replicas attached and each replica is in sync: its
        link up and its primary reporting it online (then WAIT: it acknowledged everything)."""
        want = len(self.nodes) - len(self.nodes) // (1 + self.replicas)
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            with node.client() as c:

                def ready(c: redis.Redis = c) -> bool:
                    view = c.execute_command("CLUSTER", "NODES").decode()
                    info = c.info("replication")
                    return view.count("slave") == want and (
                        online_replicas(c) == self.replicas
                        if info["role"] == "master"
                        else info.get("master_link_status") == "up"
                    )

                poll(ready, deadline, f"replicas not attached after {timeout}s")
        if not self.replicas:
            return
        for node in self.nodes:
            with node.client() as c:
                if c.info("replication")["role"] == "master":
                    acknowledged(c, self.replicas, deadline)
        # CLUSTER SLOTS lists a replica only once gossip reports data replicated to it
        seed = self.nodes[0]
        with redis.cluster.RedisCluster(host="127.0.0.1", port=seed.port, **seed.auth) as rc:
            for i in range(30):
                rc.set(f"warm-up:{{{i}}}", 1)
            for node in self.nodes:
                with node.client() as c:
                    while any(len(r) < 3 + self.replicas for r in c.cluster("SLOTS")):
                        if time.monotonic() > deadline:
                            raise RuntimeError("replicas never showed in CLUSTER SLOTS")
                        time.sleep(0.05)  # poll interval of a readiness check
            rc.flushall()

    def cleanup(self) -> None:
        for node in self.nodes:
            node.cleanup()


class HungListener:
    """A TCP listener that accepts every connection and never reads or answers: a server that
    hangs (SIGSTOP, a frozen VM, a proxy whose backend is gone). Counts the connections."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.port: int = self.sock.getsockname()[1]
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def accepted(self) -> int:
        """Connections accepted so far."""
        with self._lock:
            return len(self._conns)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:  # closed
                return
            with self._lock:
                self._conns.append(conn)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept() (Linux)
        self.sock.close()
        self._thread.join(timeout=5)
        assert not self._thread.is_alive()
        with self._lock:
            for conn in self._conns:
                conn.close()


@contextlib.contextmanager
def sigstopped(server: RedisServer) -> Iterator[RedisServer]:
    """``server`` frozen with SIGSTOP (its kernel still accepts connections); SIGCONT after."""
    assert server.proc is not None
    os.kill(server.proc.pid, signal.SIGSTOP)
    try:
        yield server
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
