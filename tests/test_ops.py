"""The core's operations driven in memory, against canned replies: no Redis.

Each operation is a generator of command batches (see ``core.commands``); these tests answer
its batches by hand and check what it sends and what it makes of the replies, the way h11
tests its state machine without a socket.
"""

from __future__ import annotations

import inspect
from collections.abc import Generator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from redis.exceptions import NoScriptError

from redis_telemetry import (
    AsyncTelemetryStore,
    RecordResult,
    TelemetryError,
    TelemetryStore,
    WindowMismatchError,
)
from redis_telemetry.core.commands import Batch, Cmd, Eval, SingleCommand, together
from redis_telemetry.core.ops import StoreCore
from redis_telemetry.core.replies import recovering
from redis_telemetry.core.scripts import SCRIPTS
from redis_telemetry.core.window import CONFIG_RECHECK_MS

from . import helpers


def event(*args: Any, **fields: Any) -> Any:
    """``helpers.event`` without cost, unless given: a costly event's first write of the day
    also lists its model among the spenders (one more registry call, tested below)."""
    fields.setdefault("cost_usd", 0.0)
    return helpers.event(*args, **fields)


class Clock:
    """The writer's clock, moved by hand."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now

    @property
    def ms(self) -> int:
        return int(self.now * 1000)


def drive(op: Generator[Batch, list[Any], Any], *replies: list[Any]) -> tuple[list[Batch], Any]:
    """Run ``op``, answering its batches with ``replies`` in turn: (batches sent, result)."""
    sent: list[Batch] = []
    try:
        batch = next(op)
        for reply in replies:
            sent.append(batch)
            batch = op.send(reply)
    except StopIteration as stop:
        return sent, stop.value
    raise AssertionError(f"the operation sent one batch more than expected: {batch}")


def stored(n: int, now_ms: int, created: int = 0) -> list[int]:
    """``record.lua``'s reply for ``n`` events stored (``created``: into an empty key)."""
    return [n, 0, 0, now_ms, 0, created]


def scripts_of(batch: Batch) -> list[str]:
    return [c.script if isinstance(c, Eval) else c.method for c in batch]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def core(clock: Clock) -> StoreCore:
    return StoreCore("telemetry", 3600, 600, clock=clock)


def test_a_new_model_yields_config_then_register_and_record(core: StoreCore, clock: Clock) -> None:
    op = core.record(event("m", cost_usd=0.01))
    assert not isinstance(op, SingleCommand)
    sent, result = drive(op, [b"3600"], [clock.ms, clock.ms, stored(1, clock.ms)])
    # the model's registry, then (a costly event) the spenders' registry, then the write
    assert [scripts_of(b) for b in sent] == [["config"], ["register", "register", "record"]]
    config, (register, spenders, record) = sent[0][0], sent[1]
    assert isinstance(spenders, Eval)
    assert spenders.keys == ("telemetry:spenders",)
    assert isinstance(config, Eval)
    assert config.keys == ("telemetry:config",)
    assert config.args[0] == 3600
    assert isinstance(register, Eval)
    assert register.args[1] == "m"
    assert isinstance(record, Eval)
    assert record.keys == (
        "telemetry:{m}:events",
        "telemetry:{m}:limit",
        "telemetry:{m}:totals",
        "telemetry:{m}:sessions",
        "telemetry:{m}:latency",
        "telemetry:{m}:ids",
        "telemetry:{m}:spend",
    )
    assert record.args[0] == "3600000 600000 2000 1000000"  # window, limit TTL, grace, cap
    assert result == RecordResult(stored=1, stored_positions=(0,))


def test_a_registered_model_is_one_command(core: StoreCore, clock: Clock) -> None:
    drive(core.record_batch([event("m")]), [b"3600"], [clock.ms, stored(1, clock.ms)])
    op = core.record(event("m"))
    assert isinstance(op, SingleCommand)
    assert op.command.script == "record"
    assert op.finish(stored(1, clock.ms)) == RecordResult(stored=1, stored_positions=(0,))
    assert op.finish([0, 1, 0, clock.ms, 0, 0]) == RecordResult(duplicates=1)
    assert op.then(stored(1, clock.ms)) is None  # the key held events: nothing more
    with pytest.raises(TelemetryError, match="Redis error"):
        op.finish(NoScriptError("NOSCRIPT"))
    sent, _ = drive(op.fallback(), [stored(1, clock.ms)])  # the same event, as a batch
    assert [scripts_of(b) for b in sent] == [["record"]]
    assert sent[0][0] == op.command


def test_an_events_key_found_empty_lists_the_model_again(core: StoreCore, clock: Clock) -> None:
    drive(core.record_batch([event("m")]), [b"3600"], [clock.ms, stored(1, clock.ms)])
    op = core.record(event("m"))
    assert isinstance(op, SingleCommand)
    follow = op.then(stored(1, clock.ms, created=1))  # Redis lost the data under the store
    assert follow is not None
    sent, result = drive(follow, [clock.ms])
    assert [scripts_of(b) for b in sent] == [["register"]]
    assert result == RecordResult(stored=1, stored_positions=(0,))
    sent, _ = drive(core.record_batch([event("m")]), [stored(1, clock.ms, created=1)], [clock.ms])
    assert [scripts_of(b) for b in sent] == [["record"], ["register"]]


def test_a_subscription_limit_error_is_never_the_single_command(core: StoreCore) -> None:
    drive(core.record_batch([event("m")]), [b"3600"], [0, stored(1, 0)])
    at = datetime.fromtimestamp(core._clock(), UTC)
    limited = core.record(
        event("m", success=False, error="weekly session limit reached", completed_at=at)
    )
    assert not isinstance(limited, SingleCommand)
    sent, _ = drive(limited, [0, stored(1, 0)])
    register, record = sent[0]
    assert isinstance(register, Eval)
    assert register.args[1:] == ("m", register.args[2], 600_000)
    assert isinstance(record, Eval)
    # 0: the store's TTL, from the event's completion (then the spend argument, none here)
    assert record.args[-4:] == (1, 0, "weekly session limit reached", "")


def test_a_limit_error_with_a_reset_time_blocks_until_then(core: StoreCore, clock: Clock) -> None:
    drive(core.record_batch([event("m")]), [b"3600"], [0, stored(1, 0)])
    error = "You've hit your limit · resets 3pm (UTC)"
    at = datetime.fromtimestamp(clock.now, UTC)
    e = event("m", success=False, error=error, completed_at=at)
    limited = core.record(e)
    # a 7-hour block outlives the config's TTL: the window is confirmed again, longer, first
    sent, _ = drive(limited, [b"3600"], [0, stored(1, 0)])
    assert [scripts_of(b) for b in sent] == [["config"], ["register", "record"]]
    record = sent[1][-1]
    assert isinstance(record, Eval)
    reset = at.replace(hour=15, minute=0, second=0, microsecond=0)
    if reset <= at:
        reset += timedelta(days=1)
    assert record.args[-4:-1] == (1, int(reset.timestamp() * 1000), error)


def test_the_window_is_confirmed_again_after_config_recheck_ms(
    core: StoreCore, clock: Clock
) -> None:
    drive(core.record_batch([event("m")]), [b"3600"], [clock.ms, stored(1, clock.ms)])
    clock.now += CONFIG_RECHECK_MS / 1000 - 1
    assert isinstance(core.record(event("m")), SingleCommand)
    clock.now += 1
    op = core.record(event("m"))
    assert not isinstance(op, SingleCommand)
    with pytest.raises(WindowMismatchError, match=r"window_secs=1200.*window_secs=3600"):
        drive(op, [b"1200"])


def test_a_refused_window_writes_nothing(core: StoreCore) -> None:
    op = core.record_batch([event("m"), event("n")])
    assert scripts_of(next(op)) == ["config"]
    with pytest.raises(WindowMismatchError, match="namespace 'telemetry' uses window_secs=60"):
        op.send([b"60"])  # raises before any write batch is yielded
    with pytest.raises(TelemetryError, match=r"refusing to write\. Repair it with set_window"):
        drive(core.record(event("m")), [b"an hour"])  # type: ignore[arg-type]


def test_wait_goes_to_every_node_written(clock: Clock) -> None:
    core = StoreCore("telemetry", 3600, 600, clock=clock, wait_for_replicas=2, wait_timeout_ms=50)
    assert not isinstance(core.record(event("m")), SingleCommand)  # WAIT: never one command
    writes = [clock.ms, stored(1, clock.ms), stored(1, clock.ms)]
    sent, result = drive(core.record_batch([event("a"), event("b")]), [b"3600"], [*writes, 2, 2, 2])
    waits = [c for c in sent[1] if isinstance(c, Cmd) and c.method == "wait"]
    assert [(c.args, c.route) for c in waits] == [
        ((2, 50), "telemetry:models"),
        ((2, 50), "telemetry:{a}:events"),
        ((2, 50), "telemetry:{b}:events"),
    ]
    assert result == RecordResult(stored=2, stored_positions=(0, 1))
    with pytest.raises(TelemetryError, match="only 1 of 2 replicas acknowledged"):
        drive(core.record_batch([event("a"), event("b")]), [*writes[1:], 2, 1, 2])


def test_noscript_resends_only_the_failed_evalshas(core: StoreCore, clock: Clock) -> None:
    """A flushed script cache: one SCRIPT LOAD per missing script, then only the EVALSHAs
    that failed go again (the ones that ran are not repeated)."""
    op = recovering(core.record_batch([event("a"), event("b"), event("c")]))
    now = clock.ms
    missing = NoScriptError("NOSCRIPT No matching script")
    sent, result = drive(
        op,
        [b"3600"],
        [now, missing, stored(1, now), missing],
        [b"sha1"],
        [stored(1, now), stored(1, now)],
    )
    assert [scripts_of(b) for b in sent] == [
        ["config"],
        ["register", "record", "record", "record"],
        ["script_load"],
        ["record", "record"],
    ]
    load = sent[2][0]
    assert isinstance(load, Cmd)
    assert load.args == (SCRIPTS["record"],)
    assert load.route in ("telemetry:{a}:events", "telemetry:{c}:events")
    assert sent[3] == [sent[1][1], sent[1][3]]  # events a and c, as first sent
    assert result == RecordResult(stored=3, stored_positions=(0, 1, 2))


def _parameters(method: Any) -> list[tuple[str, Any, Any]]:
    return [(p.name, p.kind, p.default) for p in inspect.signature(method).parameters.values()]


def test_the_core_and_both_stores_expose_the_same_operations() -> None:
    """Every store operation is a core operation with the same parameters, sync and async."""
    shell_only = {"aclose", "close", "with_window"}
    sync = {n for n, v in vars(TelemetryStore).items() if not n.startswith("_") and callable(v)}
    async_ = {
        n for n, v in vars(AsyncTelemetryStore).items() if not n.startswith("_") and callable(v)
    }
    assert sync - shell_only == async_ - shell_only
    assert len(sync) >= 17
    for name in sorted(sync - shell_only):
        core = getattr(StoreCore, name)
        blocking = getattr(TelemetryStore, name)
        awaited = getattr(AsyncTelemetryStore, name)
        assert _parameters(core) == _parameters(blocking) == _parameters(awaited), name
        assert inspect.iscoroutinefunction(awaited), name
        assert not inspect.iscoroutinefunction(blocking), name


def test_a_block_until_a_time_sends_the_time_for_the_server_to_judge(
    core: StoreCore, clock: Clock
) -> None:
    """The script compares ``until`` with the server's clock: the writer's clock, even far
    off, only sizes the config's TTL."""
    until_ms = clock.ms + 5_000
    until = datetime.fromtimestamp(until_ms / 1000, UTC)
    sent, _ = drive(core.mark_subscription_limited("m", until=until), [b"3600"], [0, 5_000])
    register, limit = sent[1]
    assert register == Eval("register", ("telemetry:models",), (2000, "m", until_ms, 0))
    assert limit == Eval("limit", ("telemetry:{m}:limit",), (until_ms, "manual"))
    clock.now += 3600  # this clock says the time is long past: the server still decides
    sent, _ = drive(core.mark_subscription_limited("m", until=until), [b"3600"], [0, 0])
    assert sent[-1][1] == limit


def _asks(name: str, rounds: int, log: list[Any]) -> Generator[Batch, list[Any], str]:
    """An operation of ``rounds`` round trips of one command each, logging its replies."""
    for i in range(rounds):
        try:
            log.append((yield [Cmd("get", (f"{name}{i}",))]))
        except TelemetryError as exc:
            log.append(str(exc))
    return name


def test_together_sends_both_operations_rounds_as_one() -> None:
    first: list[Any] = []
    second: list[Any] = []
    op = together(_asks("a", 1, first), _asks("b", 2, second))
    assert [c.args for c in next(op)] == [("a0",), ("b0",)]
    assert [c.args for c in op.send(["ra0", "rb0"])] == [("b1",)]  # the first is done
    with pytest.raises(StopIteration) as stop:
        op.send(["rb1"])
    assert stop.value.value == ("a", "b")
    assert (first, second) == ([["ra0"]], [["rb0"], ["rb1"]])


def test_together_gives_an_error_to_the_first_and_sends_the_seconds_batch_again() -> None:
    first: list[Any] = []
    second: list[Any] = []
    op = together(_asks("a", 2, first), _asks("b", 1, second))
    next(op)
    again = op.throw(TelemetryError("boom"))
    assert [c.args for c in again] == [("a1",), ("b0",)]
    with pytest.raises(StopIteration):
        op.send(["ra1", "rb0"])
    assert (first, second) == (["boom", ["ra1"]], [["rb0"]])
