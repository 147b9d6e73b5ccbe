"""Real redis-server processes stopped, killed -9, restarted, and replies lost on the wire."""

from __future__ import annotations

import contextlib
import multiprocessing
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from redis_telemetry import (
    BufferedWriter,
    ConnectionSettings,
    TelemetryStore,
    TelemetryUnavailable,
)

from .helpers import event
from .servers import RedisServer

FAST = ConnectionSettings(socket_timeout=2.0, socket_connect_timeout=0.5, retries=2)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    s = RedisServer(workdir=tmp_path).start()
    yield s
    s.cleanup()


def test_unreachable_then_back_same_store_object(server: RedisServer) -> None:
    store = TelemetryStore.from_url(server.url, connection=FAST)
    store.record(event("m"))
    server.stop()
    for call in (lambda: store.record(event("m")), store.all_model_performances):
        start = time.monotonic()
        with pytest.raises(TelemetryUnavailable):
            call()
        assert time.monotonic() - start < 5  # bounded, never a hang
    server.start()  # same port; nothing persisted, and the script cache is empty
    # for breaker_secs after the outage calls fail at once; then the next one tries Redis
    give_up = time.monotonic() + 10
    while True:
        try:
            result = store.record(event("m"))
        except TelemetryUnavailable as exc:
            error = str(exc)
        else:
            break
        assert "failing at once" in error  # the breaker's, not Redis's: it is back
        assert time.monotonic() < give_up
        time.sleep(0.05)  # poll interval while the breaker waits
    assert result.stored == 1  # NOSCRIPT recovered transparently
    assert store.model_performance("m").successful_completions == 1
    store.client.close()


# -- kill -9 with AOF ------------------------------------------------------------------------


def _acked_writer(url: str, writer: int, log_path: str, stop_at: float) -> None:
    """Record events one by one; log each id only after record() returned."""
    store = TelemetryStore.from_url(url, connection=FAST)
    with open(log_path, "a", buffering=1) as log:
        n = 0
        while time.time() < stop_at:
            e = event(f"m{n % 3}", event_id=f"w{writer}-{n}")
            try:
                store.record(e)
            except Exception:  # the server is gone: stop
                return
            log.write(f"{e.event_id} {time.time():.6f}\n")
            n += 1


def _kill9_run(tmp_path: Path, fsync: str) -> tuple[int, list[tuple[str, float]], float]:
    """(events found after restart, acknowledged (id, time) pairs, kill time)."""
    args = ("--appendonly", "yes", "--appendfsync", fsync)
    server = RedisServer(*args, workdir=tmp_path).start()
    ctx = multiprocessing.get_context("spawn")
    logs = [tmp_path / f"writer-{w}.log" for w in range(3)]
    procs = [
        ctx.Process(target=_acked_writer, args=(server.url, w, str(logs[w]), time.time() + 60))
        for w in range(3)
    ]
    for p in procs:
        p.start()
    deadline = time.monotonic() + 60
    while sum(1 for lg in logs if lg.exists() and lg.stat().st_size > 2000) < 3:
        assert time.monotonic() < deadline, "writers never got going"
        time.sleep(0.05)
    killed_at = time.time()
    server.stop(kill=True)  # SIGKILL while they write
    for p in procs:
        p.join(timeout=60)
    server.start()
    acked = [
        (parts[0], float(parts[1]))
        for lg in logs
        for parts in (line.split() for line in lg.read_text().splitlines())
    ]
    store = TelemetryStore.from_url(server.url)
    found = {e.event_id for e in store.dump().events}
    store.client.close()
    server.cleanup()
    missing = [(i, t) for i, t in acked if i not in found]
    return len(found), missing, killed_at


@pytest.mark.slow
def test_kill9_loses_nothing_acknowledged_with_fsync_always(tmp_path: Path) -> None:
    found, missing, _ = _kill9_run(tmp_path, "always")
    assert found > 0
    assert missing == []


@pytest.mark.slow
def test_kill9_with_fsync_everysec_loses_at_most_the_last_seconds(tmp_path: Path) -> None:
    found, missing, killed_at = _kill9_run(tmp_path, "everysec")
    assert found > 0
    # everysec fsyncs once a second: only writes acknowledged in the last ~2 s may be lost
    assert all(killed_at - t < 2.0 for _, t in missing), missing[:5]
    oldest = max((killed_at - t for _, t in missing), default=0.0)
    print(
        f"everysec: {len(missing)} acknowledged events lost, acknowledged up to "
        f"{oldest:.3f}s before the kill"
    )


# -- a reply lost on the wire ----------------------------------------------------------------


class ReplyDroppingProxy:
    """Forwards TCP both ways; when armed, swallows the next reply and cuts the connection."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.armed = threading.Event()
        self.dropped = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, replies: bool) -> None:
        try:
            while data := src.recv(65536):
                if replies and self.armed.is_set():
                    self.armed.clear()
                    self.dropped += 1
                    break  # the command ran; its reply never arrives
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def close(self) -> None:
        self.listener.close()


@pytest.mark.parametrize("batch", [False, True])
def test_a_retry_after_a_lost_reply_counts_once(server: RedisServer, batch: bool) -> None:
    proxy = ReplyDroppingProxy(server.port)
    store = TelemetryStore.from_url(f"redis://127.0.0.1:{proxy.port}/0", connection=FAST)
    store.record(event("m"))  # connected, scripts loaded, window claimed
    proxy.armed.set()
    if batch:
        store.record_batch([event("m"), event("n", False, error="boom")])
    else:
        store.record(event("m"))
    assert proxy.dropped == 1  # the write reached Redis, its reply was lost, redis-py retried
    direct = TelemetryStore.from_url(server.url)
    expected = {"m": 2, "n": 1 if batch else 0}
    for model, count in expected.items():
        perf = direct.model_performance(model)
        assert perf.successful_completions + perf.failed_completions == count
        assert len(direct.events(model)) == count
    store.client.close()
    direct.client.close()
    proxy.close()


# -- fire-and-forget ------------------------------------------------------------------------


def test_buffered_writer_never_blocks_and_delivers_after_an_outage(server: RedisServer) -> None:
    store = TelemetryStore.from_url(server.url, connection=FAST)
    writer = BufferedWriter(
        store, max_events=1000, batch_size=50, flush_interval=0.05, backoff=0.05, max_backoff=0.2
    )
    writer.submit(event("m"))
    assert writer.flush(timeout=10)
    server.stop()
    callers: set[str] = set()
    run = store._run

    def spy(op: Any) -> Any:
        callers.add(threading.current_thread().name)
        return run(op)

    store._run = spy  # type: ignore[method-assign]
    writer.submit_many([event("m", latency_ms=i) for i in range(200)])
    deadline = time.monotonic() + 10
    while writer.stats().failed_flushes == 0:  # the thread is retrying against a dead server
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert writer.stats().pending == 200
    assert callers == {"telemetry-flush"}  # submit never waits for Redis: only the writer does
    server.start()
    assert writer.flush(timeout=30)
    stats = writer.stats()
    assert (stats.submitted, stats.written, stats.dropped, stats.pending) == (201, 201, 0, 0)
    # all 200 buffered during the outage arrived (the first died with the unpersisted server)
    assert store.model_performance("m").successful_completions == 200
    assert writer.close()


def test_buffered_writer_drops_the_oldest_when_full(
    server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    store = TelemetryStore.from_url(server.url, connection=FAST)
    server.stop()
    writer = BufferedWriter(
        store, max_events=10, batch_size=5, flush_interval=0.05, backoff=0.05, max_backoff=0.1
    )
    writer.submit_many([event("m", latency_ms=i) for i in range(25)])
    deadline = time.monotonic() + 10
    while (writer.stats().dropped, writer.stats().pending) != (15, 10):  # a batch may be in flight
        assert time.monotonic() < deadline, writer.stats()
        time.sleep(0.02)
    assert "dropped the oldest" in caplog.text
    server.start()
    assert writer.flush(timeout=30)
    kept = sorted(e.latency_ms for e in store.events("m", last=100))
    assert kept == list(range(15, 25))  # the newest ten survived
    assert writer.close()


def test_buffered_writer_does_not_retry_what_cannot_heal(
    server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A window mismatch and a permission error reject the batch once, with a callback, a
    counter and one log line; a connection error is still retried (the tests above)."""
    TelemetryStore.from_url(server.url, window_secs=7200).record(event("m"))
    errors: list[tuple[str, int]] = []
    writer = BufferedWriter(
        TelemetryStore.from_url(server.url, window_secs=3600, connection=FAST),
        batch_size=5,
        flush_interval=0.01,
        backoff=0.01,
        on_error=lambda exc, n: errors.append((type(exc).__name__, n)),
    )
    writer.submit_many([event("m") for _ in range(5)])
    assert writer.flush(timeout=10)  # nothing left pending: refused, not retried forever
    stats = writer.stats()
    assert (stats.rejected, stats.failed_flushes, stats.written) == (5, 0, 0)
    assert errors == [("WindowMismatchError", 5)]
    assert caplog.text.count("refused, not retried") == 1
    assert writer.close()

    with server.client() as admin:
        admin.acl_setuser(
            "no-writes",
            enabled=True,
            passwords=["+pw"],
            keys=["*"],
            commands=["+@read", "+evalsha", "+script|load", "+time", "+ping", "+hello"],
        )
    url = server.url.replace("redis://", "redis://no-writes:pw@")
    denied: list[tuple[str, int]] = []
    writer = BufferedWriter(
        TelemetryStore.from_url(url, window_secs=7200, connection=FAST),
        batch_size=3,
        flush_interval=0.01,
        on_error=lambda exc, n: denied.append((type(exc).__name__, n)),
    )
    writer.submit_many([event("m") for _ in range(3)])
    assert writer.flush(timeout=10)
    assert writer.stats().rejected == 3
    assert denied == [("PermissionDenied", 3)]
    assert writer.close()
