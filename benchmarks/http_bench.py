"""The HTTP API's benchmark: each figure against the library called in process, same run.

    python benchmarks/http_bench.py              # its own redis-server and serve processes
    python benchmarks/http_bench.py --url URL    # on a server you run (it is FLUSHED)
    python benchmarks/http_bench.py --quick      # a smoke run with small sizes

1. **Throughput.** ``--clients`` processes (4) POST their events to ``/v1/events`` over one
   keep-alive connection each, in batches of 100 and of 1; then the same processes call
   ``record_batch`` with the same batches directly. Each starts from the events' plain fields,
   as a program holds them: JSON for the one, ``CompletionEvent`` objects for the other. Five
   rounds of each, alternating: events per second, and the median of the rounds' ratios HTTP /
   direct.
2. **Select latency.** ``POST /v1/select`` over one keep-alive connection, one request at a
   time, against ``select_model`` in process, on the same five models: p50 and p99. Then a
   ``serve --tier`` (selections from its local read tier) against ``GET /healthz`` on the
   same connection, alternating: the least an HTTP exchange with the server costs.
3. **Writers with retries.** 8 processes POST batches with event ids; every batch is sent
   until a 2xx answers it. Meanwhile the serve process is killed (SIGKILL: requests in flight
   may have been written with their answer lost) and started again, and Redis drops the
   server's connections (CLIENT KILL). The totals in Redis must equal the events sent.

Every serve process runs with a write token (checked on every request, as in production) and
a namespace of its phase's own. Writes benchmarks/results/http.json (``--out``) and prints a
table; the published figures are in benchmarks/http-results.json and docs/http.md.
"""

from __future__ import annotations

import http.client
import json
import multiprocessing
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis
from _clients import direct_store, per_second, timed_after  # processes behind a barrier
from bench import RESULTS, arguments, flushed, publish  # the same server, options, report

from redis_telemetry import CompletionEvent, TelemetryStore, TokenBreakdown

TOKEN = "bench-write-token"
MODELS = [f"bench/http-{i}" for i in range(5)]
HEADERS = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}


# -- the serve process ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


class Server:
    """One ``redis-telemetry serve`` process, ready once ``/healthz`` answers."""

    def __init__(
        self, url: str, namespace: str, port: int | None = None, extra: tuple[str, ...] = ()
    ) -> None:
        self.url, self.namespace, self.extra = url, namespace, extra
        self.port = port or free_port()
        self.log = Path(tempfile.mkdtemp(prefix="redis-telemetry-http-bench-")) / "serve.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Server:
        args = [sys.executable, "-m", "redis_telemetry", "--url", self.url]
        args += ["--namespace", self.namespace, "serve", "--port", str(self.port), *self.extra]
        env = {**os.environ, "REDIS_TELEMETRY_WRITE_TOKEN": TOKEN}
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=log, env=env)
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                sys.exit(f"serve exited: {self.log.read_text()}")
            try:
                if request(self.port, "GET", "/healthz")[0] == 200:
                    return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                sys.exit(f"serve not ready in 30s: {self.log.read_text()}")
            time.sleep(0.05)  # poll interval of a readiness check

    def kill(self) -> None:
        """SIGKILL: no graceful end, requests in flight lose their answers."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)


@contextmanager
def serving(url: str, namespace: str, *extra: str) -> Iterator[Server]:
    server = Server(url, namespace, extra=extra).start()
    try:
        yield server
    finally:
        server.stop()


def request(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    conn: http.client.HTTPConnection | None = None,
) -> tuple[int, bytes]:
    """One request, on ``conn`` (kept alive) or on a connection of its own."""
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=HEADERS)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        if own:
            conn.close()


# -- events --------------------------------------------------------------------------------------


def events(count: int, seed: int, ids: str | None = None) -> list[CompletionEvent]:
    """``count`` events over the five models (ids ``<ids>-<i>`` when ``ids`` is given)."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    return [
        CompletionEvent(
            model=MODELS[i % len(MODELS)],
            session_id=f"session-{seed}-{i % 20}",
            completed_at=now,
            latency_ms=rng.randint(200, 20_000),
            success=rng.random() > 0.05,
            tokens=TokenBreakdown(total=3000, input=2500, output=500),
            cost_usd=0.002,
            event_id=f"{ids}-{i}" if ids else None,
        )
        for i in range(count)
    ]


def as_json(batch: list[CompletionEvent]) -> bytes:
    return ("[" + ",".join(e.model_dump_json() for e in batch) + "]").encode()


# -- 1. throughput -------------------------------------------------------------------------------


def _client(how: str, target: str, batches: int, size: int, w: int, ready: Any, out: Any) -> None:
    """One client process: the same events, held as a program holds them (plain fields), sent
    over HTTP as JSON (``target`` a port), or made ``CompletionEvent`` objects and given to
    ``record_batch`` (``target`` a Redis URL and namespace). Each side's own work is timed."""
    held = [
        [e.model_dump(mode="json") for e in events(size, seed=w * 1_000_003 + b)]
        for b in range(batches)
    ]
    if how == "http":
        conn = http.client.HTTPConnection("127.0.0.1", int(target), timeout=30)
        with timed_after(ready, out):
            for batch in held:
                status, answer = request(0, "POST", "/v1/events", json.dumps(batch).encode(), conn)
                assert status == 200, answer
            conn.close()
    else:
        store = direct_store(target)
        with timed_after(ready, out):
            for batch in held:
                store.record_batch([CompletionEvent(**fields) for fields in batch])
            store.close()


def _run_clients(how: str, target: str, clients: int, batches: int, size: int) -> float:
    """Events per second of ``clients`` processes sending ``batches`` of ``size`` at once."""
    return per_second(_client, (how, target, batches, size), clients, batches * size, 600)


def bench_throughput(url: str, clients: int, batches: int, rounds: int) -> dict[str, Any]:
    """HTTP and direct in alternating rounds (the machine's other load falls on both), each
    round's ratio, and the medians."""
    rows = {}
    for size, requests in ((100, batches), (1, batches * 10)):
        http_rates, direct_rates = [], []
        with serving(url, f"bench-http-{size}") as server:
            for _ in range(rounds):
                http_rates.append(_run_clients("http", str(server.port), clients, requests, size))
                direct_rates.append(
                    _run_clients("direct", f"{url} bench-direct-{size}", clients, requests, size)
                )
        ratios = [h / d for h, d in zip(http_rates, direct_rates, strict=True)]
        rows[str(size)] = {
            "requests_per_client": requests,
            "rounds": rounds,
            "http_events_per_s": round(statistics.median(http_rates)),
            "direct_events_per_s": round(statistics.median(direct_rates)),
            "ratio": round(statistics.median(ratios), 3),
            "ratios": [round(r, 3) for r in ratios],
        }
    return {"clients": clients, "by_batch_size": rows}


# -- 2. select latency ---------------------------------------------------------------------------


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def bench_select(url: str, n: int) -> dict[str, Any]:
    namespace = "bench-select"
    with TelemetryStore.from_url(url, namespace=namespace) as store:
        store.record_batch(events(500, seed=7))
        ask = json.dumps({"candidates": MODELS, "strategy": "fastest"}).encode()
        with serving(url, namespace) as server:
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
            http_ms = []
            for _ in range(n):
                start = time.perf_counter()
                status, answer = request(0, "POST", "/v1/select", ask, conn)
                http_ms.append((time.perf_counter() - start) * 1000)
                assert status == 200, answer
            conn.close()
        direct_ms = []
        for _ in range(n):
            start = time.perf_counter()
            store.select_model(MODELS, "fastest")
            direct_ms.append((time.perf_counter() - start) * 1000)
        tier_ms, probe_ms = _tier_select(url, namespace, ask, n)
    return {
        "requests": n,
        "http_p50_ms": round(pct(http_ms, 0.5), 3),
        "http_p99_ms": round(pct(http_ms, 0.99), 3),
        "direct_p50_ms": round(pct(direct_ms, 0.5), 3),
        "direct_p99_ms": round(pct(direct_ms, 0.99), 3),
        "ratio_p50": round(pct(http_ms, 0.5) / pct(direct_ms, 0.5), 2),
        "tier_p50_ms": round(pct(tier_ms, 0.5), 3),
        "tier_p99_ms": round(pct(tier_ms, 0.99), 3),
        "healthz_p50_ms": round(pct(probe_ms, 0.5), 3),
        "healthz_p99_ms": round(pct(probe_ms, 0.99), 3),
        "tier_vs_healthz_p50": round(pct(tier_ms, 0.5) / pct(probe_ms, 0.5), 2),
        "tier_vs_http_p50": round(pct(tier_ms, 0.5) / pct(http_ms, 0.5), 3),
    }


def _tier_select(url: str, namespace: str, ask: bytes, n: int) -> tuple[list[float], list[float]]:
    """``POST /v1/select`` of a ``serve --tier``, and ``GET /healthz`` (an exchange that asks
    Redis nothing: the least a request costs) on the same connection, alternating."""
    with serving(url, namespace, "--tier") as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        assert request(0, "POST", "/v1/select", ask, conn)[0] == 200  # the tier's first read
        tier_ms, probe_ms = [], []
        for _ in range(n):
            start = time.perf_counter()
            status, answer = request(0, "POST", "/v1/select", ask, conn)
            mid = time.perf_counter()
            assert status == 200, answer
            assert request(0, "GET", "/healthz", None, conn)[0] == 200
            tier_ms.append((mid - start) * 1000)
            probe_ms.append((time.perf_counter() - mid) * 1000)
        conn.close()
    return tier_ms, probe_ms


# -- 3. writers with retries ---------------------------------------------------------------------


def _writer(port: int, w: int, batches: int, size: int, done: Any, out: Any) -> None:
    """Send every batch until a 2xx answers it, retrying what fails (a refused or dropped
    connection, a timeout, a 5xx); report what the answers counted."""
    rng = random.Random(w)
    counted = {"stored": 0, "duplicates": 0, "outside_window": 0, "retries": 0}
    conn: http.client.HTTPConnection | None = None
    for b in range(batches):
        body = as_json(events(size, seed=w * 7919 + b, ids=f"writer-{w}-batch-{b}"))
        pause = 0.05
        while True:
            try:
                conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                status, answer = request(port, "POST", "/v1/events", body, conn)
            except (OSError, http.client.HTTPException):
                status, answer = 0, b""
            if 200 <= status < 300:
                for key, value in json.loads(answer).items():
                    counted[key] += value
                break
            if 400 <= status < 500:
                raise AssertionError(f"refused: {status} {answer!r}")
            counted["retries"] += 1
            if conn is not None:
                conn.close()
                conn = None
            time.sleep(pause * (0.5 + rng.random()))
            pause = min(pause * 2, 1.0)
        with done.get_lock():
            done.value += 1
    out.put(counted)


def bench_writers(url: str, writers: int, batches: int, size: int) -> dict[str, Any]:
    namespace = "bench-writers"
    ctx = multiprocessing.get_context("spawn")
    done, out = ctx.Value("i", 0), ctx.Queue()
    server = Server(url, namespace).start()
    start = time.perf_counter()
    procs = [
        ctx.Process(target=_writer, args=(server.port, w, batches, size, done, out))
        for w in range(writers)
    ]
    for p in procs:
        p.start()
    total = writers * batches
    client = redis.Redis.from_url(url)
    disruptions = {"serve_killed": 0, "redis_connections_killed": 0}
    try:
        while done.value < total // 3:  # a third in: kill the server, start it again
            time.sleep(0.01)
        server.kill()
        disruptions["serve_killed"] += 1
        server = Server(url, namespace, port=server.port).start()
        while done.value < 2 * total // 3:  # two thirds in: Redis drops the server's links
            time.sleep(0.01)
        for _ in range(3):
            disruptions["redis_connections_killed"] += int(
                client.client_kill_filter(_type="normal", skipme=True)
            )
            time.sleep(0.05)
        counts = [out.get(timeout=600) for _ in procs]
        for p in procs:
            p.join(timeout=60)
    finally:
        server.stop()
        client.close()
    took = time.perf_counter() - start
    sent = writers * batches * size
    summed = {k: sum(c[k] for c in counts) for k in counts[0]}
    with TelemetryStore.from_url(url, namespace=namespace) as store:
        snaps = [store.model_performance(m) for m in MODELS]
    in_redis = sum(s.successful_completions + s.failed_completions for s in snaps)
    return {
        "writers": writers,
        "events_sent": sent,
        "in_redis": in_redis,
        "exact": in_redis == sent,
        "answered_stored": summed["stored"],
        "answered_duplicates": summed["duplicates"],
        "retries": summed["retries"],
        **disruptions,
        "seconds": round(took, 2),
    }


# -- the report ----------------------------------------------------------------------------------


def report(res: dict[str, Any]) -> str:
    t = res["throughput"]
    lines = [
        f"HTTP API benchmark ({res['machine']}; {res['when']})",
        "",
        "| figure | HTTP | in process | ratio |",
        "| --- | --- | --- | --- |",
    ]
    for size, row in t["by_batch_size"].items():
        lines.append(
            f"| `POST /v1/events`, {t['clients']} clients, batches of {size} | "
            f"{row['http_events_per_s']:,} events/s | {row['direct_events_per_s']:,} events/s "
            f"(`record_batch`) | {row['ratio']:.2f}x |"
        )
    s = res["select"]
    lines.append(
        f"| `POST /v1/select` p50 / p99 | {s['http_p50_ms']:.2f} / {s['http_p99_ms']:.2f} ms | "
        f"{s['direct_p50_ms']:.2f} / {s['direct_p99_ms']:.2f} ms (`select_model`) | "
        f"{s['ratio_p50']:.1f}x |"
    )
    lines.append(
        f"| `POST /v1/select`, `serve --tier`, p50 / p99 | {s['tier_p50_ms']:.2f} / "
        f"{s['tier_p99_ms']:.2f} ms | `GET /healthz` on the same server (asks Redis nothing): "
        f"{s['healthz_p50_ms']:.2f} / {s['healthz_p99_ms']:.2f} ms | "
        f"{s['tier_vs_healthz_p50']:.1f}x; "
        f"{s['tier_vs_http_p50']:.2f}x the select without the tier |"
    )
    w = res["writers"]
    lines += [
        "",
        f"{w['writers']} HTTP writers with retries: {w['events_sent']:,} events sent, "
        f"{w['in_redis']:,} in Redis ({'exact' if w['exact'] else 'NOT EXACT'}); "
        f"{w['retries']} retries, {w['answered_duplicates']} answered as duplicates; "
        f"serve killed {w['serve_killed']}x, {w['redis_connections_killed']} Redis connections "
        f"dropped; {w['seconds']} s",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--clients", type=int, default=4, help="client processes (default 4)")
    parser.add_argument("--out", type=Path, default=RESULTS / "http.json")
    args = parser.parse_args()
    with flushed(args.url) as (url, run):
        res: dict[str, Any] = {**run, "quick": args.quick}
        res["throughput"] = bench_throughput(
            url, args.clients, 5 if args.quick else 100, 1 if args.quick else 5
        )
        res["select"] = bench_select(url, 100 if args.quick else 3000)
        res["writers"] = bench_writers(url, 8, 6 if args.quick else 60, 50)
    publish(res, args.out, report(res))
    if not res["writers"]["exact"]:
        sys.exit("the writers' totals are not exact")


if __name__ == "__main__":
    main()
