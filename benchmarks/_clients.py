"""What the throughput benchmarks share (http_bench.py, otlp_bench.py): client processes that
start together behind a barrier, each timing its own work, and the run's rate from the
slowest of them."""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from redis_telemetry import TelemetryStore


@contextmanager
def timed_after(ready: Any, out: Any) -> Iterator[None]:
    """In a client process: wait at the barrier ``ready`` (every client has built what it
    sends), then put the seconds the block took on ``out``."""
    ready.wait()
    start = time.perf_counter()
    yield
    out.put(time.perf_counter() - start)


def direct_store(target: str) -> TelemetryStore:
    """The store a client calls in process; ``target`` is ``"<redis url> <namespace>"``."""
    url, namespace = target.rsplit(" ", 1)
    return TelemetryStore.from_url(url, namespace=namespace)


def per_second(
    client: Callable[..., None], args: tuple[Any, ...], clients: int, each: int, timeout: float
) -> float:
    """Units a second of ``clients`` spawned processes, each running ``client(*args, w, ready,
    out)`` (``w`` its number) on ``each`` units, timed from the barrier by the slowest one."""
    ctx = multiprocessing.get_context("spawn")
    ready, out = ctx.Barrier(clients + 1), ctx.Queue()  # all start once all built their batches
    procs = [ctx.Process(target=client, args=(*args, w, ready, out)) for w in range(clients)]
    for p in procs:
        p.start()
    ready.wait()
    took: float = max(out.get(timeout=timeout) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    return clients * each / took
