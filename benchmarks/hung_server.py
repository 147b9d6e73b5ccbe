"""How long each call waits on a Redis that accepts connections and never answers.

Two hung servers: a TCP listener that accepts every connection and never reads (a proxy whose
backend is gone), and a real redis-server frozen with SIGSTOP (its kernel still accepts). For
each, with the defaults (no option set): ``record()`` and ``rank_models()`` on a new store,
``record()`` again right after (the breaker's case), ``redis-telemetry status``, and
``serve``'s scrape and Redis probe (``/readyz``; an older release's ``/healthz``), each
requested more than a second after the last failure (so each meets the server itself). Prints a
Markdown table: seconds, and the connections the listener accepted. It uses only the public API
and the command, so it measures an older release too (``PYTHONPATH=<its checkout>``, with
``/healthz`` for ``/readyz``).

    .venv/bin/python benchmarks/hung_server.py [--json FILE] [--timeout SECS]

``--timeout`` sets the deadline (``from_url(timeout=)``, ``$REDIS_TELEMETRY_TIMEOUT``) instead
of the default: the test suite's smoke run uses a short one.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import redis
from bench import own_server  # the same throwaway redis-server as bench.py

from redis_telemetry import CompletionEvent, TelemetryError, TelemetryStore

#: the exporter's breaker opens for 1 s after a failure: wait longer before the next request
AFTER_A_FAILURE = 1.5


class Listener:
    """Accepts every connection and never reads or answers; counts the connections."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.port: int = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        for conn in self.conns:
            conn.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def listener() -> Iterator[tuple[str, Callable[[], int]]]:
    hung = Listener()
    try:
        yield f"redis://127.0.0.1:{hung.port}/0", lambda: len(hung.conns)
    finally:
        hung.close()


@contextlib.contextmanager
def stopped_server() -> Iterator[tuple[str, Callable[[], int]]]:
    with own_server() as url:
        with redis.Redis.from_url(url) as client:
            pid = int(client.info("server")["process_id"])
        os.kill(pid, signal.SIGSTOP)
        try:
            yield url, lambda: -1  # its accepts are not counted
        finally:
            os.kill(pid, signal.SIGCONT)


def timed(call: Callable[[], Any]) -> tuple[float, str]:
    """Seconds ``call`` took, and how it ended."""
    start = time.monotonic()
    try:
        call()
        outcome = "answered"
    except TelemetryError as exc:
        outcome = type(exc).__name__
    return time.monotonic() - start, outcome


def http(url: str) -> tuple[float, str]:
    start = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=600) as resp:
            code = resp.status
    except urllib.error.HTTPError as exc:
        code = exc.code
    return time.monotonic() - start, f"HTTP {code}"


def measure(url: str, accepted: Callable[[], int], timeout: float | None) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    options: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
    env = {**os.environ, **({} if timeout is None else {"REDIS_TELEMETRY_TIMEOUT": str(timeout)})}
    event = CompletionEvent(model="m", latency_ms=900, success=True)

    def row(call: str, took: float, outcome: str, before: int) -> None:
        conns = accepted() - before if before >= 0 else None
        rows.append({"call": call, "secs": round(took, 2), "outcome": outcome, "conns": conns})
        print(f"  {call}: {took:.2f}s {outcome} ({conns} connections)", file=sys.stderr)

    store = TelemetryStore.from_url(url, **options)
    before = accepted()
    row("record()", *timed(lambda: store.record(event)), before)
    before = accepted()
    row("record() again at once", *timed(lambda: store.record(event)), before)
    ranker = TelemetryStore.from_url(url, **options)
    before = accepted()
    row("rank_models()", *timed(lambda: ranker.rank_models(["m", "n"])), before)

    before = accepted()
    start = time.monotonic()
    status = subprocess.run(
        [sys.executable, "-m", "redis_telemetry", "--url", url, "status"],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    row("redis-telemetry status", time.monotonic() - start, f"exit {status.returncode}", before)

    port = free_port()
    serve = subprocess.Popen(
        [sys.executable, "-m", "redis_telemetry", "--url", url, "serve", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        assert serve.stdout is not None
        serve.stdout.readline()  # listening (after its first read of Redis failed)
        for path in ("/metrics", "/readyz"):
            time.sleep(AFTER_A_FAILURE)  # each request meets the server, not the breaker
            before = accepted()
            row(f"exporter {path}", *http(f"http://127.0.0.1:{port}{path}"), before)
    finally:
        serve.terminate()
        serve.communicate(timeout=30)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="also write the results to FILE")
    parser.add_argument("--timeout", type=float, help="the deadline (default: the library's)")
    args = parser.parse_args()
    results: dict[str, list[dict[str, Any]]] = {}
    for name, server in (("listener", listener), ("SIGSTOP", stopped_server)):
        print(f"{name}:", file=sys.stderr)
        with server() as (url, accepted):
            results[name] = measure(url, accepted, args.timeout)
    print("| call | never-answering listener | SIGSTOPped redis-server |")
    print("| --- | --- | --- |")
    for a, b in zip(results["listener"], results["SIGSTOP"], strict=True):
        print(
            f"| {a['call']} | {a['secs']:.2f} s, {a['outcome']}, {a['conns']} connections "
            f"| {b['secs']:.2f} s, {b['outcome']} |"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
