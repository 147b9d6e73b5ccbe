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
import math
import multiprocessing
import os
import platform
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import msgpack
import redis

from redis_telemetry import CompletionEvent, TelemetryStore, TokenBreakdown
from redis_telemetry.core import codec, snapshot, totals

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


def interleaved(
    cases: dict[str, Callable[[], Any]], n: int, settle: Callable[[], Any] | None = None
) -> dict[str, list[float]]:
    """``n`` timings of each case, one call of each in turn (after two warm-up calls of each),
    so that drift on a shared machine hits every case alike. ``settle``, when given, runs
    untimed before each timed call, so that every case starts after the same light work: a
    heavy case (large replies) slows the round trip that follows it, which would otherwise
    fall on whichever case comes next, the baseline included."""
    out: dict[str, list[float]] = {name: [] for name in cases}
    for fn in cases.values():  # warm-up
        fn()
        fn()
    for _ in range(n):
        for name, fn in cases.items():
            if settle is not None:
                settle()
            start = time.perf_counter()
            fn()
            out[name].append(time.perf_counter() - start)
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


#: The session ``session_usage()`` is timed on: 100 events, 5 on each of the 20 models.
SESSION = "bench-session"


def fill(store: TelemetryStore, count: int) -> None:
    """Put ``count`` events in the window, spread over its first 50 minutes; 100 of them
    belong to SESSION, spread over every model."""
    for start in range(0, count, 5000):
        batch = make_events(min(5000, count - start), 3000, seed=start)
        if start == 0:
            for i, e in enumerate(batch[:100]):
                e.session_id = SESSION
                e.model = MODELS[i % len(MODELS)]
        store.record_batch(batch)


# -- cases ------------------------------------------------------------------------------------


RESETSTAT = "cmdstat_config|resetstat"
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
    events = make_events(4 * n + 2, 60)
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
    # Redis CPU of one record.lua call, and of its id-index step (HSETNX: one event id is one
    # event), from INFO commandstats (it counts the commands a script calls too)
    alone = [core._record_eval(e.model, [codec.prepare(e, now_ms)]) for e in events[3 * n : 4 * n]]
    client.config_resetstat()
    for c in alone:
        client.evalsha(sha, len(c.keys), *c.keys, *c.args)
    stats = client.info("commandstats")
    inner = [v["calls"] for k, v in stats.items() if k not in ("cmdstat_evalsha", RESETSTAT)]
    return {
        "script_cpu_us": stats["cmdstat_evalsha"]["usec"] / n,
        "commands_per_call": sum(inner) / n,
        # one shard's Redis CPU bounds the record() calls it can take a second
        "write_ceiling_per_s": 1e6 * n / stats["cmdstat_evalsha"]["usec"],
        "id_index_cpu_us": stats.get("cmdstat_hsetnx", {"usec": 0})["usec"] / n,
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
    script_us = 0
    for k in range(rounds + 2):
        client.config_resetstat()
        start = time.perf_counter()
        store.record_batch(batches[k])
        mid = time.perf_counter()
        raw_zadd(k)
        if k >= 2:  # two warm-up rounds
            ours.append(mid - start)
            base.append(time.perf_counter() - mid)
            # Redis CPU of the batch's scripts (record.lua, register.lua; no EVALSHA in raw_zadd)
            script_us += client.info("commandstats")["cmdstat_evalsha"]["usec"]
    ours_rate = 1000 / pct(ours, 0.5)  # medians, as for record(): one slow round is noise
    base_rate = 1000 / pct(base, 0.5)
    return {
        "script_cpu_us_per_event": script_us / (1000 * rounds),
        "batch_ceiling_events_per_s": 1e6 * 1000 * rounds / script_us,
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


#: The previous release's snapshot.lua (running sums without a latency sketch), the baseline
#: of what the sketch costs a snapshot: HMGET of the sums, the aged members, the newest ones.
PREVIOUS_SNAPSHOT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cutoff = now - tonumber(ARGV[1])
local fields = {}
for i = 3, #ARGV do fields[#fields + 1] = ARGV[i] end
local probe = tonumber(ARGV[2])
local newest = redis.call('ZREVRANGE', KEYS[1], 0, probe - 1, 'WITHSCORES')
return {now, redis.call('HMGET', KEYS[2], unpack(fields)),
  redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', cutoff, 'WITHSCORES'), newest,
  redis.call('PTTL', KEYS[3])}
"""


def previous_snapshots(client: redis.Redis, script: Any) -> list[Any]:
    """all_model_performances() as the previous release computed it, step for step: one
    round trip with the namespace's window, the server's time, the registry and one script per
    model; then per model the sums less the aged members, the newest member's time, and the
    snapshot object. No percentiles."""
    keys = [
        (f"telemetry:{{{m}}}:events", f"telemetry:{{{m}}}:totals", f"telemetry:{{{m}}}:limit")
        for m in MODELS
    ]
    fields = [f for f in totals.FIELDS if f != "untimed"]  # the previous release's
    pipe = client.pipeline(transaction=False)
    pipe.hget("telemetry:config", "window_secs")
    pipe.time()
    pipe.zrange("telemetry:models", 0, -1, withscores=True)
    for k in keys:
        script(keys=k, args=[WINDOW * 1000, 32, *fields], client=pipe)
    _, _, registry, *replies = pipe.execute()
    assert len(registry) == len(MODELS)
    out = []
    for m, (now, sums, aged, newest, pttl) in zip(MODELS, replies, strict=True):
        left = dict(zip(fields, (int(v or 0) for v in sums), strict=True))
        for e in snapshot.decode_window(m, snapshot.pairs(aged), -1.0):
            for name, v in zip(totals.FIELDS, codec.stored_sums(e), strict=True):
                if name in left:
                    left[name] -= v
        last = snapshot.newest_us(m, snapshot.pairs(newest), now - WINDOW * 1000)
        t = totals.Totals(**left)
        out.append(snapshot._snapshot(m, t, last, WINDOW, int(now), int(pttl)))
    return out


def naive_snapshots(store: TelemetryStore) -> list[Any]:
    """The naive design: fetch every member in the window, decode, count."""
    reading = store._run(store._core.read(None, "window"))
    return [
        snapshot.performance(m, reading.events[m], WINDOW, reading.now_ms, reading.limit_pttl[m])
        for m in reading.models
    ]


def naive_session(store: TelemetryStore) -> Any:
    """session_usage() the simplest way: fetch and decode every event in the window."""
    reading = store._run(store._core.read(None, "window"))
    return [snapshot.usage_of(SESSION, reading.events[m]) for m in reading.models]


def bench_snapshots(
    url: str, sizes: list[int], n: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """all_model_performances() for 20 models (p50/p95/p99 from the sketch) against the
    previous release's snapshot (no percentiles) and against fetch-and-decode of the whole
    window; session_usage() of a 100-event session against fetch-and-decode."""
    rows: list[dict[str, Any]] = []
    sessions = []
    for size in sizes:
        client = redis.Redis.from_url(url)
        client.flushall()
        store = TelemetryStore(client, window_secs=WINDOW)
        fill(store, size)
        reader = TelemetryStore(client, window_secs=WINDOW)
        reader.all_model_performances()
        previous = client.register_script(PREVIOUS_SNAPSHOT)
        fast, prev = [], []
        for _ in range(n):  # interleaved, so that drift hits both alike
            start = time.perf_counter()
            reader.all_model_performances()
            mid = time.perf_counter()
            previous_snapshots(client, previous)
            fast.append(mid - start)
            prev.append(time.perf_counter() - mid)
        naive_n = 5 if size >= 10**6 else max(3, n // 10 if size >= 10**5 else n)
        naive = timed(partial(naive_snapshots, reader), naive_n)
        snaps = reader.all_model_performances()
        assert sum(s.successful_completions + s.failed_completions for s in snaps) == size
        assert all(s.latency_p99_ms is not None for s in snaps), "percentiles on every snapshot"
        rows.append(
            {
                "events": size,
                "fast_p50_s": pct(fast, 0.5),
                "fast_p99_s": pct(fast, 0.99),
                "previous_p50_s": pct(prev, 0.5),
                "vs_previous_p50": pct(fast, 0.5) / pct(prev, 0.5),
                "naive_p50_s": pct(naive, 0.5),
                "naive_p99_s": pct(naive, 0.99),
                "speedup_p50": pct(naive, 0.5) / pct(fast, 0.5),
            }
        )
        usage = reader.session_usage(SESSION)
        assert usage.totals.message_count == 100
        assert len(usage.by_model) == len(MODELS)
        ours = timed(partial(reader.session_usage, SESSION), n)
        scan = timed(partial(naive_session, reader), naive_n)
        sessions.append(
            {
                "events": size,
                "p50_s": pct(ours, 0.5),
                "p99_s": pct(ours, 0.99),
                "naive_p50_s": pct(scan, 0.5),
                "speedup_p50": pct(scan, 0.5) / pct(ours, 0.5),
            }
        )
        if size == sizes[-1] or size == 100_000:
            rows[-1]["memory"] = memory(client, size)
        client.close()
    return rows, sessions


def memory(client: redis.Redis, events: int) -> dict[str, Any]:
    """Bytes per stored event: the events keys, and what the totals (with the latency sketch)
    and the session index add."""
    ns = "telemetry"

    def size(kind: str) -> int:
        return sum(client.memory_usage(f"{ns}:{{{m}}}:{kind}", samples=0) or 0 for m in MODELS)

    ev, tot, ses, lat = size("events"), size("totals"), size("sessions"), size("latency")
    return {
        "events_key_bytes_per_event": ev / events,
        "totals_bytes": tot,
        "sketch_bytes": lat,
        "sketch_share_of_events": lat / ev if ev else 0.0,
        "sessions_bytes": ses,
        "index_bytes_per_event": ses / events,
        "index_share_of_events": ses / ev if ev else 0.0,
        "totals_share_of_events": tot / ev if ev else 0.0,
        "used_memory_bytes": client.info("memory")["used_memory"],
    }


def bench_accuracy(url: str, count: int) -> dict[str, Any]:
    """The sketch's percentiles against exact nearest rank on a long-tailed (lognormal)
    latency mix of ``count`` events in one model."""
    client = redis.Redis.from_url(url)
    client.flushall()
    store = TelemetryStore(client, window_secs=WINDOW)
    rng = random.Random(1)
    now = datetime.now(UTC)
    for start in range(0, count, 5000):
        store.record_batch(
            [
                CompletionEvent(
                    model="bench/lognormal",
                    completed_at=now - timedelta(seconds=(start + i) * 1e-3),
                    latency_ms=max(1, int(rng.lognormvariate(math.log(3000), 1.0))),
                    success=True,
                )
                for i in range(min(5000, count - start))
            ]
        )
    fast = store.model_performance("bench/lognormal")
    exact = store.model_performance("bench/lognormal", percentiles=True)
    errors = {}
    for name in ("latency_p50_ms", "latency_p95_ms", "latency_p99_ms"):
        got, truth = getattr(fast, name), getattr(exact, name)
        errors[name] = abs(got - truth) / truth
    client.close()
    return {"events": count, "relative_error": errors, "worst": max(errors.values())}


def bench_bounded(url: str, count: int, n: int) -> dict[str, Any]:
    """Idle against active snapshot cost, and the worst single script call, on one model
    holding ``count`` events. The model is read while its whole window is live (active),
    then after set_window(60) has aged every event (idle: no write since). Then the upkeep
    runs, a bounded step a call: the per-model cap halving the model, and the trim of every
    aged member; SLOWLOG records every command. The baseline: one ZREMRANGEBYSCORE of the
    same aged members on a copy of the key, the simplest trim there is (no totals kept)."""
    client = redis.Redis.from_url(url)
    client.flushall()
    model = "bench/one-model"
    store = TelemetryStore(client, window_secs=WINDOW)
    now = datetime.now(UTC)
    step = 3000 / count
    for start in range(0, count, 10_000):
        store.record_batch(
            [
                CompletionEvent(
                    model=model,
                    session_id=f"session-{(start + i) % 500}",
                    completed_at=now - timedelta(seconds=70 + (start + i) * step),
                    latency_ms=800 + ((start + i) * 37) % 9000,
                    success=True,
                )
                for i in range(min(10_000, count - start))
            ]
        )
    active = timed(partial(store.model_performance, model), n)
    events_key = f"telemetry:{{{model}}}:events"
    client.copy(events_key, "bench:copy")
    client.config_set("slowlog-log-slower-than", 0)
    client.config_set("slowlog-max-len", 100_000)
    client.slowlog_reset()
    client.zremrangebyscore("bench:copy", "-inf", "+inf")
    baseline = max(e["duration"] for e in client.slowlog_get(10) if b"ZREMRANGE" in e["command"])
    client.slowlog_reset()
    halved = TelemetryStore(client, window_secs=WINDOW, max_events_per_model=count // 2)
    cap_calls = halved.reindex()
    store.set_window(60)
    idle = timed(partial(store.model_performance, model), n)
    assert store.model_performance(model).successful_completions == 0
    trim_calls = store.reindex()
    assert client.zcard(events_key) == 0
    entries = client.slowlog_get(-1)
    client.config_set("slowlog-log-slower-than", 10_000)
    worst = max(e["duration"] for e in entries if e["command"].startswith(b"EVALSHA"))
    client.close()
    return {
        "events": count,
        "active_snapshot_p50_s": pct(active, 0.5),
        "idle_snapshot_p50_s": pct(idle, 0.5),
        "idle_vs_active": pct(idle, 0.5) / pct(active, 0.5),
        "upkeep_calls": {"cap": cap_calls, "trim": trim_calls},
        "worst_script_s": worst / 1e6,
        "one_zremrangebyscore_s": baseline / 1e6,
        "worst_vs_baseline": worst / baseline,
        "commands_logged": len(entries),
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


def report_writes(res: dict[str, Any]) -> str:
    """The table's head and its write rows (``--writes`` prints only these)."""
    r, b = res["record"], res["record_batch"]
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
        f"| (Redis CPU) | a `record.lua` call: {r['script_cpu_us']:.1f} µs, "
        f"{r['commands_per_call']:.1f} commands; one shard's ceiling: "
        f"{r['write_ceiling_per_s']:,.0f} `record()`/s | its id index "
        f"(`HSETNX`, one event id is one event): "
        f"{r['id_index_cpu_us']:.1f} µs a call | "
        f"{r['id_index_cpu_us'] / r['script_cpu_us']:.0%} |",
        f"| `record_batch(1000)` | {b['ours_events_per_s']:,.0f} events/s | pipelined raw ZADD: "
        f"{b['raw_zadd_events_per_s']:,.0f} events/s | {b['ratio']:.2f}x |",
        f"| (Redis CPU) | {b['script_cpu_us_per_event']:.1f} µs an event in a batch; one "
        f"shard's ceiling: {b['batch_ceiling_events_per_s']:,.0f} events/s | | |",
    ]
    if b["redis_benchmark_zadd_per_s"]:
        lines.append(
            f"| (server's own limit) | | `redis-benchmark -P 32 -t zadd`: "
            f"{b['redis_benchmark_zadd_per_s']:,.0f} ZADD/s | "
            f"{b['ours_events_per_s'] / b['redis_benchmark_zadd_per_s']:.2f}x |"
        )
    return "\n".join(lines)


def report(res: dict[str, Any]) -> str:
    c = res["concurrency"]
    lines = [report_writes(res)]
    first = res["snapshots"][0]
    for row in res["snapshots"]:
        lines.append(
            f"| `all_model_performances()` (p50/p95/p99 included) at {row['events']:,} events "
            f"| {ms(row['fast_p50_s'])} / {ms(row['fast_p99_s'])} "
            f"({row['fast_p50_s'] / first['fast_p50_s']:.2f}x the smallest) "
            f"| previous release, no percentiles: {ms(row['previous_p50_s'])}; fetch and "
            f"decode: {ms(row['naive_p50_s'])} | {row['vs_previous_p50']:.2f}x the previous; "
            f"{row['speedup_p50']:.1f}x faster than fetching |"
        )
    base = res["session_usage"][0]
    for u in res["session_usage"]:
        lines.append(
            f"| `session_usage()` of a 100-event session over 20 models, at {u['events']:,} "
            f"events | {ms(u['p50_s'])} / {ms(u['p99_s'])} "
            f"({u['p50_s'] / base['p50_s']:.2f}x the smallest) | fetch and decode: "
            f"{ms(u['naive_p50_s'])} | {u['speedup_p50']:.1f}x faster |"
        )
    a = res["accuracy"]
    worst_name = max(a["relative_error"], key=a["relative_error"].get)
    lines.append(
        f"| percentile accuracy, lognormal mix of {a['events']:,} | worst relative error "
        f"{a['worst']:.3%} ({worst_name}) | exact nearest rank (percentiles=True) | "
        f"bound: {1 / 128:.3%} |"
    )
    bd = res["bounded"]
    lines += [
        f"| idle model, whole window aged, {bd['events']:,} events | snapshot "
        f"{ms(bd['idle_snapshot_p50_s'])} | the same model active: "
        f"{ms(bd['active_snapshot_p50_s'])} | {bd['idle_vs_active']:.2f}x |",
        f"| worst single script call, {bd['events']:,} events in one model (cap halving it: "
        f"{bd['upkeep_calls']['cap']} calls; trim after idling: {bd['upkeep_calls']['trim']} "
        f"calls) | {bd['worst_script_s'] * 1000:.1f} ms of Redis time | one ZREMRANGEBYSCORE of "
        f"the aged members: {bd['one_zremrangebyscore_s'] * 1000:.1f} ms | "
        f"{bd['worst_vs_baseline']:.2f}x |",
    ]
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
                f"{mem['events_key_bytes_per_event']:.0f} bytes/event (events keys); session "
                f"index {mem['index_bytes_per_event']:.1f} bytes/event | totals "
                f"{mem['totals_bytes']:,} bytes, latency sketch {mem['sketch_bytes']:,} bytes "
                f"(20 models) | index {mem['index_share_of_events']:.2%}, sketch "
                f"{mem['sketch_share_of_events']:.2%} of the events keys |"
            )
    return "\n".join(lines)


def arguments(doc: str) -> argparse.ArgumentParser:
    """A benchmark's command line: ``--url`` (a server it flushes) and ``--quick``."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--url", help="a server to use (it is FLUSHED); default: start one")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    return parser


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--writes", action="store_true", help="only the write cases (record, record_batch)"
    )
    args = parser.parse_args()
    sizes = [1000, 5000] if args.quick else [10_000, 100_000, 1_000_000]
    n = 20 if args.quick else 200
    args.out.mkdir(parents=True, exist_ok=True)
    with flushed(args.url) as (url, run):
        client = redis.Redis.from_url(url)
        store = TelemetryStore(client, window_secs=WINDOW)
        res: dict[str, Any] = {**run, "quick": args.quick}
        res["record"] = bench_record(client, store, 200 if args.quick else 3000)
        res["record_batch"] = bench_batch(client, store, 5 if args.quick else 40)
        client.close()
        if args.writes:
            print(report_writes(res))
            return
        res["snapshots"], res["session_usage"] = bench_snapshots(url, sizes, n)
        res["accuracy"] = bench_accuracy(url, 5000 if args.quick else 100_000)
        res["bounded"] = bench_bounded(url, 20_000 if args.quick else 1_000_000, n)
        res["concurrency"] = bench_concurrency(url, 2, 2, 5 if args.quick else 50)
    (args.out / "bench.json").write_text(json.dumps(res, indent=2) + "\n")
    plotted = plot(res["snapshots"], args.out / "snapshot.png")
    print(report(res))
    print(f"\nresults: {args.out / 'bench.json'}" + (", plot: snapshot.png" if plotted else ""))


def about(client: redis.Redis) -> dict[str, str]:
    """The machine and the time of a run."""
    return {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, redis-server "
        f"{client.info('server')['redis_version']}",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def server(url: str | None) -> AbstractContextManager[str]:
    """The server a run uses: ``url`` (``--url``), or a throwaway one when it is None."""
    return own_server() if url is None else nullcontext(url)


@contextmanager
def flushed(url: str | None) -> Iterator[tuple[str, dict[str, str]]]:
    """The run's server (``server(url)``), flushed, and what ``about`` says of the run."""
    with server(url) as where:
        client = redis.Redis.from_url(where)
        client.flushall()
        run = about(client)
        client.close()
        yield where, run


def publish(res: dict[str, Any], path: Path, table: str) -> None:
    """Write a run's results to ``path`` as JSON, then print its table and where they went."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res, indent=2) + "\n")
    print(table)
    print(f"\nresults: {path}")


if __name__ == "__main__":
    main()
