"""Several OS processes write (record and record_batch) while others read: exact totals."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor

import pytest

from redis_telemetry import TelemetryStore

from . import workers

WRITERS, READERS = 3, 2
SINGLES, BATCHES, BATCH_SIZE = 40, 6, 25


@pytest.mark.slow
def test_concurrent_writers_and_readers_lose_nothing(url: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager, ProcessPoolExecutor(WRITERS + READERS, mp_context=ctx) as pool:
        stop = manager.Event()
        readers = [pool.submit(workers.reader, url, stop) for _ in range(READERS)]
        writers = [
            pool.submit(workers.writer, url, w, SINGLES, BATCHES, BATCH_SIZE)
            for w in range(WRITERS)
        ]
        sent = [f.result(timeout=120) for f in writers]
        stop.set()
        reads = [f.result(timeout=60) for f in readers]

    per_writer = SINGLES + BATCHES * BATCH_SIZE
    assert sent == [per_writer] * WRITERS
    assert all(r["reads"] > 0 for r in reads)
    assert [r["regressions"] for r in reads] == [0] * READERS

    store = TelemetryStore.from_url(url)
    perfs = store.all_model_performances()
    assert [p.model for p in perfs] == list(workers.MODELS)
    total = sum(p.successful_completions + p.failed_completions for p in perfs)
    assert total == WRITERS * per_writer
    # singles: every fifth is a failure; batches are all successes
    failures = sum(1 for i in range(SINGLES) if i % 5 == 0) * WRITERS
    assert sum(p.failed_completions for p in perfs) == failures
    for w in range(WRITERS):
        usage = store.session_usage(f"writer-{w}")
        assert usage.totals.message_count == per_writer
        assert usage.totals.total_tokens == per_writer * 1000
    # the readers' last view, taken after every writer finished, saw everything too
    assert all(sum(r["last"].values()) == WRITERS * per_writer for r in reads)
    store.client.close()
