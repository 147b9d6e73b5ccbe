"""BufferedWriter survives any error in its loop, and flush() never waits forever."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import fakeredis
import pytest

from redis_telemetry import BufferedWriter, TelemetryError, TelemetryStore

from .helpers import event


@pytest.fixture
def store() -> Iterator[TelemetryStore]:
    s = TelemetryStore(fakeredis.FakeRedis(), window_secs=3600)
    yield s
    s.client.close()


def _failing_once(
    store: TelemetryStore, monkeypatch: pytest.MonkeyPatch, error: BaseException
) -> None:
    """The store's next write raises ``error``; the ones after it work."""
    run = store._run
    calls = 0

    def once(op: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            op.close()
            raise error
        return run(op)

    monkeypatch.setattr(store, "_run", once)


def test_the_writer_survives_an_error_it_did_not_expect(
    store: TelemetryStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _failing_once(store, monkeypatch, RuntimeError("a bug"))
    refused: list[tuple[TelemetryError, int]] = []
    writer = BufferedWriter(
        store, flush_interval=0.01, on_error=lambda e, n: refused.append((e, n))
    )
    with caplog.at_level(logging.ERROR, logger="redis_telemetry"):
        writer.submit_many([event("m"), event("m"), event("m")])
        assert writer.flush(timeout=10)  # the batch was rejected: nothing left to wait for
    assert writer.stats().rejected == 3
    ((error, count),) = refused
    assert count == 3
    assert isinstance(error.__cause__, RuntimeError)
    (record,) = [r for r in caplog.records if "not retried" in r.getMessage()]
    assert record.exc_info is not None  # logged with its traceback
    writer.submit_many([event("m"), event("n")])  # the thread still runs
    assert writer.flush(timeout=10)
    stats = writer.stats()
    assert (stats.written, stats.rejected, stats.pending) == (2, 3, 0)
    assert store.model_performance("m").successful_completions == 1
    assert writer.close()


def test_flush_never_waits_for_a_thread_that_stopped(
    store: TelemetryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Fatal(BaseException):
        """What no handler catches: the writer's thread ends."""

    died: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: died.append(args.exc_value))
    _failing_once(store, monkeypatch, Fatal())
    writer = BufferedWriter(store, flush_interval=0.01)
    writer.submit(event("m"))
    flushed: list[bool] = []
    waiter = threading.Thread(target=lambda: flushed.append(writer.flush()))  # no timeout
    waiter.start()
    waiter.join(timeout=30)
    assert not waiter.is_alive()  # flush() came back although the writer's thread is gone
    assert flushed == [False]  # and said the event was not written
    assert len(died) == 1
    assert isinstance(died[0], Fatal)
    assert writer.stats().pending == 1  # not written, and still counted as such
    assert not writer.close(timeout=0.1)
