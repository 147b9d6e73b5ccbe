"""A bounded soak: writers and readers together while the window trims continuously.

CI runs a short version (8 s). The full one: REDIS_TELEMETRY_SOAK_SECS=60 pytest -m soak
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import time
from pathlib import Path
from typing import Any

import pytest

from redis_telemetry import TelemetryStore
from redis_telemetry.core import codec

from .helpers import event
from .servers import RedisServer

SECS = float(os.environ.get("REDIS_TELEMETRY_SOAK_SECS", "8"))
WINDOW = 2
MODELS = [f"soak-{i}" for i in range(4)]


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _writer(url: str, seed: int, ready: Any, out: Any) -> None:
    store = TelemetryStore.from_url(url, window_secs=WINDOW)
    ready.wait()  # every process is up: the clock starts for all of them at once
    start = time.time()
    until = start + SECS
    sent = stored = errors = 0
    rss_early = None
    while time.time() < until:
        batch = [event(MODELS[(seed + i) % 4], i % 9 != 0, 10 + i) for i in range(20)]
        try:
            stored += store.record_batch(batch).stored + store.record(event(MODELS[seed])).stored
        except Exception:
            errors += 1
        sent += 21
        if rss_early is None and time.time() - start > (until - start) / 3:
            rss_early = _rss_mb()
    out.put(
        {
            "sent": sent,
            "stored": stored,
            "errors": errors,
            "rss_early": rss_early,
            "rss_late": _rss_mb(),
        }
    )


def _reader(url: str, ready: Any, out: Any) -> None:
    store = TelemetryStore.from_url(url, window_secs=WINDOW)
    ready.wait()
    until = time.time() + SECS
    reads = errors = 0
    while time.time() < until:
        try:
            store.all_model_performances()
            reads += 1
        except Exception:
            errors += 1
    out.put({"reads": reads, "errors": errors})


@pytest.mark.soak
@pytest.mark.slow
def test_soak(tmp_path: Path) -> None:
    server = RedisServer(workdir=tmp_path).start()
    try:
        _soak(server)
    finally:
        server.cleanup()


def _soak(server: RedisServer) -> None:
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    ready = ctx.Barrier(4)  # two writers, one reader and this process
    procs = [ctx.Process(target=_writer, args=(server.url, w, ready, results)) for w in range(2)]
    procs.append(ctx.Process(target=_reader, args=(server.url, ready, results)))
    for p in procs:
        p.start()
    client = server.client()
    empty = client.info("memory")["used_memory"]
    ready.wait(timeout=120)  # spawned interpreters can take seconds to import on a busy host
    until = time.time() + SECS
    samples = []
    while time.time() < until:
        if time.time() > until - SECS + 3 * WINDOW:  # the window is full: memory should be flat
            pipe = client.pipeline(transaction=False)
            pipe.info("memory")
            for model in MODELS:
                pipe.zcard(f"telemetry:{{{model}}}:events")
            info, *counts = pipe.execute()
            samples.append((info["used_memory"] - empty) / max(1, sum(counts)))
        time.sleep(0.25)  # sampling interval, not a readiness wait
    reports = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    writers = [r for r in reports if "sent" in r]
    readers = [r for r in reports if "reads" in r]
    assert [r["errors"] for r in reports] == [0, 0, 0]
    assert sum(r["stored"] for r in writers) == sum(r["sent"] for r in writers)  # nothing lost
    assert readers[0]["reads"] > 0
    assert len(samples) >= 6
    # Redis memory flat once the window is full: the bytes held per event in the window do not
    # grow (the total follows the write rate, which a shared CPU makes wobble)
    third = len(samples) // 3
    early, late = samples[:third], samples[-third:]
    assert sum(late) / len(late) < 1.3 * sum(early) / len(early), samples
    assert max(samples) < 3 * min(samples), samples
    for r in writers:  # the client's memory flat too
        assert r["rss_late"] < r["rss_early"] * 1.2 + 5, r
    # after all that trimming, every model's running totals still equal its members' sums
    for model in MODELS:
        pipe = client.pipeline(transaction=True)
        pipe.hmget(f"telemetry:{{{model}}}:totals", *codec.TOTALS_FIELDS)
        pipe.zrange(f"telemetry:{{{model}}}:events", 0, -1)
        totals, members = pipe.execute()
        sums = [0] * len(codec.TOTALS_FIELDS)
        for m in members:
            for i, v in enumerate(codec.stored_sums(codec.decode(m))):
                sums[i] += v
        assert [int(t or 0) for t in totals] == sums, model
    client.close()
