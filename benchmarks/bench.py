"""redis-telemetry benchmarks: every figure next to a baseline measured in the same run.

    python benchmarks/bench.py                 # full run on its own redis-server
    python benchmarks/bench.py --url URL       # on a server you run (it is FLUSHED)
    python benchmarks/bench.py --quick         # a smoke run with small sizes (CI)

Writes benchmarks/results/bench.json and, with matplotlib (the ``bench`` extra), a log-log
plot of snapshot latency against events in the window: benchmarks/results/snapshot.png.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import msgpack
import redis

from redis_telemetry import CompletionEvent, TelemetryStore, TokenBreakdown
from redis_telemetry.core import codec, snapshot

RESULTS = Path(__file__).resolve().parent / "results"
WINDOW = 3600
MODELS = [f"bench/model-{i:02d}" for i in range(20)]


# -- helpers ----------------------------------------------------------------------------------


@contextmanager
def own_server() -> Iterator[str]:
    """A throwaway redis-server on a free port (never 6379), removed afterwards."""
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not installed: install it, or pass --url")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    workdir = tempfile.mkdtemp(prefix="redis-telemetry-bench-")
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            workdir,
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)  # readiness poll
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        client.close()
        proc.terminate()
        proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)


def timed(fn: Callable[[], Any], n: int) -> list[float]:
    """``n`` wall-clock durations of ``fn`` in seconds (after two warm-up calls)."""
    fn()
    fn()
    out = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ms(x: float) -> str:
    return f"{x * 1000:.3f} ms"


def make_events(count: int, spread_secs: float, seed: int = 0) -> list[CompletionEvent]:
    """``count`` realistic events over the last ``spread_secs`` seconds, across MODELS."""
    now = datetime.now(UTC)
    step = spread_secs / max(1, count)
    return [
        CompletionEvent(
            model=MODELS[(i + seed) % len(MODELS)],
            session_id=f"session-{(i + seed) % 500}",
            completed_at=now - timedelta(seconds=spread_secs - i * step),
            latency_ms=800 + (i * 37) % 9000,
            success=i % 7 != 0,
            tokens=TokenBreakdown(total=12000, input=10000, output=1500, reasoning=500),
            cost_usd=0.0123,
            error=None if i % 7 else "upstream error 500",
        )
        for i in range(count)
    ]


def fill(store: TelemetryStore, count: int) -> None:
    """Put ``count`` events in the window, spread over its first 50 minutes."""
    for start in range(0, count, 5000):
        store.record_batch(make_events(min(5000, count - start), 3000, seed=start))


# -- cases ------------------------------------------------------------------------------------


#: The least an insert can do: the server's time and one ZADD NX, with record()'s arguments.
INSERT_ONLY = "redis.call('TIME') return redis.call('ZADD', KEYS[1], 'NX', ARGV[3], ARGV[4])"


def bench_record(client: redis.Redis, store: TelemetryStore, n: int) -> dict[str, Any]:
    """record() against a bare EVALSHA of `return 1` on the same client, calls interleaved
    (one of ours, one bare) so that drift on a shared machine hits both alike.

    Two reference points, interleaved too, show where the time goes: record.lua alone, its
    arguments built beforehand (no Python work), and INSERT_ONLY with the same arguments.
    """
    bare = client.register_script("return 1")
    insert_only = client.register_script(INSERT_ONLY)
    events = make_events(3 * n + 2, 60)
    store.record(events[-1])
    bare()
    core, sha = store._core, store._shas()["record"]
    now_ms = int(time.time() * 1000)
    prebuilt = [core._record_eval(e.model, [codec.prepare(e, now_ms)]) for e in events[n : 3 * n]]
    ours, base, script, insert = [], [], [], []
    for i, e in enumerate(events[:n]):
        start = time.perf_counter()
        store.record(e)
        mid = time.perf_counter()
        bare()
        ours.append(mid - start)
        base.append(time.perf_counter() - mid)
        c, d = prebuilt[2 * i], prebuilt[2 * i + 1]
        start = time.perf_counter()
        client.evalsha(sha, len(c.keys), *c.keys, *c.args)
        mid = time.perf_counter()
        insert_only(d.keys, d.args)
        script.append(mid - start)
        insert.append(time.perf_counter() - mid)
    return {
        "ours_p50_s": pct(ours, 0.5),
        "ours_p99_s": pct(ours, 0.99),
        "base_p50_s": pct(base, 0.5),
        "base_p99_s": pct(base, 0.99),
        "events_per_s": n / sum(ours),
        "ratio_p50": pct(ours, 0.5) / pct(base, 0.5),
        "script_only_ratio_p50": pct(script, 0.5) / pct(base, 0.5),
        "insert_only_ratio_p50": pct(insert, 0.5) / pct(base, 0.5),
    }


def bench_batch(client: redis.Redis, store: TelemetryStore, rounds: int) -> dict[str, Any]:
    """record_batch(1000), validation and encoding included, against pipelined raw ZADD of
    pre-encoded members of the same size; rounds interleaved (one of ours, one raw) so that
    drift on a shared machine hits both alike; rates from the median round."""
    batches = [make_events(1000, 60, seed=k) for k in range(rounds + 2)]
    member = msgpack.packb(
        [1, "0" * 32, "session-1", 1, 1, True, 1, 1, 1, 1, 1, 1, 0.0123, None]
    )  # the same size as ours
    members = [member[:-8] + i.to_bytes(8, "big") for i in range(1000 * (rounds + 2))]
    score = int(time.time() * 1000)

    def raw_zadd(k: int) -> None:
        pipe = client.pipeline(transaction=False)
        for m in members[k * 1000 : (k + 1) * 1000]:
            pipe.zadd("bench:raw", {m: score})
        pipe.execute()

    ours, base = [], []
    for k in range(rounds + 2):
        start = time.perf_counter()
        store.record_batch(batches[k])
        mid = time.perf_counter()
        raw_zadd(k)
        if k >= 2:  # two warm-up rounds
            ours.append(mid - start)
            base.append(time.perf_counter() - mid)
    ours_rate = 1000 / pct(ours, 0.5)  # medians, as for record(): one slow round is noise
    base_rate = 1000 / pct(base, 0.5)
    return {
        "ours_events_per_s": ours_rate,
        "raw_zadd_events_per_s": base_rate,
        "ratio": ours_rate / base_rate,
        "redis_benchmark_zadd_per_s": redis_benchmark_zadd(client),
    }


def redis_benchmark_zadd(client: redis.Redis) -> float | None:
    """The server's own limit: `redis-benchmark -P 32 -t zadd` requests per second."""
    binary = shutil.which("redis-benchmark")
    if binary is None:
        return None
    port = client.connection_pool.connection_kwargs["port"]
    out = subprocess.run(
        [binary, "-p", str(port), "-P", "32", "-t", "zadd", "-n", "200000", "-q"],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    found = re.findall(r"([\d.]+) requests per second", out)
    return float(found[-1]) if found else None


def bench_snapshots(
    url: str, sizes: list[int], n: int
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """all_model_performances() for 20 models against fetch-and-decode of the whole window."""
    rows = []
    usage: dict[str, Any] = {}
    for size in sizes:
        client = redis.Redis.from_url(url)
        client.flushall()
        store = TelemetryStore(client, window_secs=WINDOW)
        fill(store, size)
        reader = TelemetryStore(client, window_secs=WINDOW)
        reader.all_model_performances()
        fast = timed(reader.all_model_performances, n)
        naive = timed(
            partial(naive_snapshots, reader),
            5 if size >= 10**6 else max(3, n // 10 if size >= 10**5 else n),
        )
        got = {s.model: s.successful_completions for s in reader.all_model_performances()}
        assert (
            sum(got.values()) + sum(s.failed_completions for s in reader.all_model_performances())
            == size
        ), "exact totals"
        row: dict[str, Any] = {
            "events": size,
            "fast_p50_s": pct(fast, 0.5),
            "fast_p99_s": pct(fast, 0.99),
            "naive_p50_s": pct(naive, 0.5),
            "naive_p99_s": pct(naive, 0.99),
            "speedup_p50": pct(naive, 0.5) / pct(fast, 0.5),
        }
        rows.append(row)
        if size == max(s for s in sizes if s <= 100_000):
            samples = timed(partial(reader.session_usage, "session-7"), max(3, n // 10))
            usage = {"events": size, "p50_s": pct(samples, 0.5)}
        if size == sizes[-1] or size == 100_000:
            rows[-1]["memory"] = memory(client, size)
        client.close()
    return rows, usage


def naive_snapshots(store: TelemetryStore) -> list[Any]:
    """The naive design: fetch every member in the window, decode, count."""
    reading = store._run(store._core.read(None, "window"))
    return [
        snapshot.performance(m, reading.events[m], WINDOW, reading.now_ms, reading.limit_pttl[m])
        for m in reading.models
    ]


def memory(client: redis.Redis, events: int) -> dict[str, Any]:
    """Bytes per stored event, and the running totals' share."""
    ns = "telemetry"
    ev = sum(client.memory_usage(f"{ns}:{{{m}}}:events", samples=0) or 0 for m in MODELS)
    tot = sum(client.memory_usage(f"{ns}:{{{m}}}:totals", samples=0) or 0 for m in MODELS)
    used = client.info("memory")["used_memory"]
    return {
        "events_key_bytes_per_event": ev / events,
        "totals_bytes": tot,
        "totals_share_of_events": tot / ev if ev else 0.0,
        "used_memory_bytes": used,
    }


def _writer(url: str, w: int, batches: int, out: Any) -> None:
    store = TelemetryStore.from_url(url, window_secs=WINDOW)
    for b in range(batches):
        store.record_batch(make_events(200, 60, seed=w * 100_000 + b * 200))
    out.put(batches * 200)


def _reader(url: str, stop: Any, out: Any) -> None:
    store = TelemetryStore.from_url(url, window_secs=WINDOW)
    samples = []
    while not stop.is_set():
        start = time.perf_counter()
        store.all_model_performances()
        samples.append(time.perf_counter() - start)
    out.put(samples)


def bench_concurrency(url: str, writers: int, readers: int, batches: int) -> dict[str, Any]:
    """W writer and R reader processes on one server; exact totals checked at the end."""
    client = redis.Redis.from_url(url)
    client.flushall()
    TelemetryStore(client, window_secs=WINDOW).record(make_events(1, 1)[0])
    ctx = multiprocessing.get_context("spawn")
    counts, reads, stop = ctx.Queue(), ctx.Queue(), ctx.Event()
    rs = [ctx.Process(target=_reader, args=(url, stop, reads)) for _ in range(readers)]
    ws = [ctx.Process(target=_writer, args=(url, w, batches, counts)) for w in range(writers)]
    for p in rs:
        p.start()
    start = time.perf_counter()
    for p in ws:
        p.start()
    sent = sum(counts.get(timeout=600) for _ in ws)
    elapsed = time.perf_counter() - start
    for p in ws:
        p.join()
    stop.set()
    samples = [s for _ in rs for s in reads.get(timeout=600)]
    for p in rs:
        p.join()
    perfs = TelemetryStore(client, window_secs=WINDOW).all_model_performances()
    stored = sum(p.successful_completions + p.failed_completions for p in perfs)
    client.close()
    assert stored == sent + 1, f"exact totals: stored {stored}, sent {sent + 1}"
    return {
        "writers": writers,
        "readers": readers,
        "events": sent,
        "events_per_s": sent / elapsed,
        "snapshot_p50_s": pct(samples, 0.5),
        "snapshot_p99_s": pct(samples, 0.99),
        "snapshots": len(samples),
        "exact": True,
    }


# -- report -----------------------------------------------------------------------------------


def plot(rows: list[dict[str, Any]], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    xs = [r["events"] for r in rows]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.loglog(xs, [r["fast_p50_s"] * 1000 for r in rows], "o-", label="running totals (ours)")
    ax.loglog(xs, [r["naive_p50_s"] * 1000 for r in rows], "s--", label="fetch and decode")
    ax.set_xlabel("events in the window (20 models)")
    ax.set_ylabel("all_model_performances() p50, ms")
    ax.set_title("Snapshot latency against window size")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def report(res: dict[str, Any]) -> str:
    r, b, c = res["record"], res["record_batch"], res["concurrency"]
    lines = [
        f"machine: {res['machine']}",
        "",
        "| case | ours | same-run baseline | ratio |",
        "| --- | --- | --- | --- |",
        f"| `record()` p50 / p99 | {ms(r['ours_p50_s'])} / {ms(r['ours_p99_s'])} "
        f"({r['events_per_s']:,.0f} events/s) | EVALSHA `return 1`: {ms(r['base_p50_s'])} / "
        f"{ms(r['base_p99_s'])} | {r['ratio_p50']:.2f}x the round trip |",
        f"| (where it goes) | `record.lua` alone, arguments built beforehand: "
        f"{r['script_only_ratio_p50']:.2f}x | `TIME` + `ZADD NX` only, same arguments: "
        f"{r['insert_only_ratio_p50']:.2f}x | |",
        f"| `record_batch(1000)` | {b['ours_events_per_s']:,.0f} events/s | pipelined raw ZADD: "
        f"{b['raw_zadd_events_per_s']:,.0f} events/s | {b['ratio']:.2f}x |",
    ]
    if b["redis_benchmark_zadd_per_s"]:
        lines.append(
            f"| (server's own limit) | | `redis-benchmark -P 32 -t zadd`: "
            f"{b['redis_benchmark_zadd_per_s']:,.0f} ZADD/s | "
            f"{b['ours_events_per_s'] / b['redis_benchmark_zadd_per_s']:.2f}x |"
        )
    for row in res["snapshots"]:
        lines.append(
            f"| `all_model_performances()` at {row['events']:,} events | "
            f"{ms(row['fast_p50_s'])} / {ms(row['fast_p99_s'])} | fetch and decode: "
            f"{ms(row['naive_p50_s'])} / {ms(row['naive_p99_s'])} | "
            f"{row['speedup_p50']:.1f}x faster |"
        )
    u = res["session_usage"]
    if u:
        lines.append(
            f"| `session_usage()` p50 at {u['events']:,} events | {ms(u['p50_s'])} | "
            "(none: scans the window) | |"
        )
    lines.append(
        f"| concurrency: {c['writers']} writers + {c['readers']} readers | "
        f"{c['events_per_s']:,.0f} events/s written, snapshot p99 {ms(c['snapshot_p99_s'])} "
        f"| exact totals: {c['exact']} ({c['events']:,} events) | |"
    )
    for row in res["snapshots"]:
        if "memory" in row:
            mem = row["memory"]
            lines.append(
                f"| memory at {row['events']:,} events | "
                f"{mem['events_key_bytes_per_event']:.0f} bytes/event (events keys) | totals: "
                f"{mem['totals_bytes']:,} bytes | {mem['totals_share_of_events']:.2%} of events |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", help="a server to use (it is FLUSHED); default: start one")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    sizes = [1000, 5000] if args.quick else [1000, 10_000, 100_000, 1_000_000]
    n = 20 if args.quick else 200
    args.out.mkdir(parents=True, exist_ok=True)
    with own_server() if args.url is None else _given(args.url) as url:
        client = redis.Redis.from_url(url)
        client.flushall()
        store = TelemetryStore(client, window_secs=WINDOW)
        res: dict[str, Any] = {
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}, redis-server "
            f"{client.info('server')['redis_version']}",
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "quick": args.quick,
        }
        res["record"] = bench_record(client, store, 200 if args.quick else 3000)
        res["record_batch"] = bench_batch(client, store, 5 if args.quick else 40)
        client.close()
        res["snapshots"], res["session_usage"] = bench_snapshots(url, sizes, n)
        res["concurrency"] = bench_concurrency(url, 2, 2, 5 if args.quick else 50)
    (args.out / "bench.json").write_text(json.dumps(res, indent=2) + "\n")
    plotted = plot(res["snapshots"], args.out / "snapshot.png")
    print(report(res))
    print(f"\nresults: {args.out / 'bench.json'}" + (", plot: snapshot.png" if plotted else ""))


@contextmanager
def _given(url: str) -> Iterator[str]:
    yield url


if __name__ == "__main__":
    main()
