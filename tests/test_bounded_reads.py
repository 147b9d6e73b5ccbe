"""Bounded reads (issue 20, items 5 and 6): every read script call is bounded in members,
bytes and ties; a model with any number of aged, untrimmed members reads exactly, a writer's
read trimming them and a read-only store's read subtracting them in bounded calls."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio

from redis_telemetry import AsyncTelemetryStore, TelemetryStore, TokenBreakdown
from redis_telemetry.core import codec, reads, rules, scripts, totals
from redis_telemetry.core.commands import Eval, Op
from redis_telemetry.core.replies import recovering

from .conftest import Backend
from .helpers import (
    event,
    recount,
    run_benchmark,
    server_ms,
    stored_derived,
    wait_for_server_ms,
)
from .servers import RedisServer

ACL = Path(__file__).resolve().parents[1] / "deploy" / "users.acl"
KEY = "telemetry:{m}:events"
#: The largest member the rules allow, about: a 16 KB error and a 1 KB session id.
BIG_ERROR = 16_000
BIG_SESSION = 1000


@cache
def _tied(n: int) -> tuple[tuple[bytes, int], ...]:
    """``n`` members of model "m" (prepared by the codec), all in one millisecond 30 minutes
    ahead (made once per run, the backends share them: stamped ahead, they stay in a 60 s
    window however long the run takes)."""
    at = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=30)
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    out = []
    for i in range(n):
        e = event("m", True, 10 + i % 50, completed_at=at + timedelta(microseconds=i % 1000))
        p = codec.prepare(e, now_ms)
        out.append((p.member, p.score_ms))
    return tuple(out)


def _put(r: Any, members: Any) -> None:
    """ZADD raw members (member, score) to model "m", pipelined, 5000 a command."""
    members = list(members)
    pipe = r.pipeline(transaction=False)
    for start in range(0, len(members), 5000):
        pipe.zadd(KEY, dict(members[start : start + 5000]))
    pipe.execute()


def _big(model: str, n: int, ago: float, rng: random.Random, step: float = 1e-3) -> list[Any]:
    """``n`` events with errors and session ids of random sizes up to the rules' limits."""
    return [
        event(
            model,
            i % 3 != 0,
            rng.randrange(1, 5000),
            session_id=f"s{i % 3}" + "x" * rng.randrange(BIG_SESSION),
            error="e" * rng.randrange(BIG_ERROR),
            ago_secs=ago - i * step,
            event_id=f"e{rng.getrandbits(64):016x}",
        )
        for i in range(n)
    ]


def _biggest(n: int, ago: float) -> list[Any]:
    """``n`` events of the largest size the rules allow (errors and session ids at their
    limits, in characters of one byte), 10 µs apart."""
    return [
        event(
            "m",
            i % 3 != 0,
            100,
            session_id=f"{i % 3}".ljust(rules.MAX_SESSION_LEN, "x"),
            error="e" * rules.MAX_ERROR_LEN,
            event_id=f"{ago}-{i}".ljust(rules.MAX_EVENT_ID_LEN, "i"),
            ago_secs=ago - i * 1e-5,
        )
        for i in range(n)
    ]


def _run(store: TelemetryStore, call: Eval) -> Any:
    """One script call through the store (its script cache), its reply as Redis gave it."""

    def op() -> Op[Any]:
        (reply,) = yield [call]
        return reply

    return store._run(op())


def _keys(store: TelemetryStore) -> Any:
    return store._core.keys


def _aging(model: str, n: int, window: int, ms_left: int, session: str = "s") -> list[Any]:
    """Events that leave a ``window``-second window about ``ms_left`` ms from now."""
    ago = window - ms_left / 1000
    return [
        event(
            model,
            i % 4 != 0,
            100 + i,
            ago_secs=ago - i / 1e6,
            session_id=f"{session}{i % 3}",
            error=None if i % 4 else "boom",
            tokens=TokenBreakdown(total=10 + i, input=7, output=3 + i),
            cost_usd=0.001 * (i % 5),
        )
        for i in range(n)
    ]


def _backlog(
    r: Any, store: TelemetryStore, aged: int, live: int, later: int = 0, ms_left: int = 1200
) -> None:
    """Model "m" with ``aged`` members aged out of a 60 s window but not trimmed (no write
    since they aged; they are written ``ms_left`` ms before they age), ``later`` more that age
    1.2 s after them, and ``live`` members in the window."""
    for start in range(0, aged, 2000):
        store.record_batch(_aging("m", min(2000, aged - start), 60, ms_left=ms_left))
    if later:
        store.record_batch(_aging("m", later, 60, ms_left=ms_left + 1200, session="t"))
    for start in range(0, live, 2000):
        store.record_batch(_aging("m", min(2000, live - start), 60, ms_left=55_000))
    wait_for_server_ms(r, server_ms(r) + ms_left + 100)
    assert r.zcount(KEY, "-inf", server_ms(r) - 60_000) == aged
    assert r.zcard(KEY) == aged + later + live


def _drive(
    store: TelemetryStore, op: Op[Any], between: Any = lambda calls: None
) -> tuple[Any, list[Eval]]:
    """Run ``op`` through the store (NOSCRIPT recovery included), calling ``between(calls)``
    with each batch's script calls before sending it: its result, and the script calls it
    sent."""
    for source in scripts.SCRIPTS.values():  # loaded: each call is sent once
        store.client.script_load(source)
    sent: list[Eval] = []
    driven = recovering(op)
    batch = next(driven)
    with store._guard.start() as deadline:
        try:
            while True:
                calls = [c for c in batch if isinstance(c, Eval)]
                between(calls)
                sent += calls
                batch = driven.send(store._execute(batch, deadline))
        except StopIteration as stop:
            return stop.value, sent


def _exact(store: TelemetryStore, model: str = "m") -> None:
    """The snapshot from the running totals equals the one read from the window's events,
    and every session's usage equals the one counted from those events."""
    fast = store.model_performance(model)
    slow = store.model_performance(model, percentiles=True)
    skip = {"latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "subscription_limit_expires_at"}
    assert fast.model_dump(exclude=skip) == slow.model_dump(exclude=skip)
    assert fast.successful_completions + fast.failed_completions > 0
    events = store.events(model)
    for session in {e.session_id for e in events}:
        usage = store.session_usage(session).by_model[model]
        mine = [e for e in events if e.session_id == session]
        assert usage.message_count == len(mine)
        assert usage.output_tokens == sum(e.tokens.output for e in mine)
        assert usage.total_tokens == sum(e.tokens.total for e in mine)


@pytest.fixture
def small(monkeypatch: pytest.MonkeyPatch) -> None:
    """Small bounds, so that small data crosses them: read calls of 5 aged members, upkeep
    from 10 aged members, calls of 3 (2 calls a model a round trip)."""
    monkeypatch.setattr(scripts, "MAX_AGED", 5)
    monkeypatch.setattr(reads, "UPKEEP_AT", 10)
    monkeypatch.setattr(scripts, "UPKEEP_STEP", 3)
    monkeypatch.setitem(scripts.SCRIPTS, "record", scripts.render_fields(scripts.SCRIPTS["record"]))
    monkeypatch.setattr(reads, "UPKEEP_BURST", 2)


# -- pages bounded by members and bytes, whatever the ties --------------------------------


def _pages(store: TelemetryStore, window_ms: int) -> Iterator[scripts.WindowPage]:
    """window.lua's pages of model "m", each after the last member of the one before."""
    after = None
    while True:
        page = scripts.window_reply(
            _run(store, scripts.window_call(_keys(store), "m", window_ms, after)), 0
        )
        yield page
        if not page.more:
            return
        after = (page.members[-1], page.members[-2])


def test_a_page_holds_at_most_its_members_and_bytes_whatever_the_ties(
    r: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scripts, "WINDOW_PAGE", 50)
    monkeypatch.setattr(scripts, "PAGE_BUDGET", 40_000)
    store = TelemetryStore(r, window_secs=3600)
    rng = random.Random(5)
    store.record_batch(_big("m", 60, 100, rng))
    _put(r, _tied(300))  # 300 in one millisecond, after them
    pages = list(_pages(store, 3_600_000))
    sizes = [len(p.members) // 2 for p in pages]
    for p in pages:
        held = p.members[::2]
        assert len(held) <= 50
        assert len(held) == 1 or sum(map(len, held)) <= 40_000
    assert max(sizes) == 50  # the ties are paged: no page takes them all
    got = [m for p in pages for m in p.members[::2]]
    assert got == r.zrange(KEY, 0, -1)  # every member once, in order


def test_every_event_of_60000_in_one_millisecond_is_read_once(
    r: redis.Redis, backend: Backend
) -> None:
    """60,000 on a real server (20,000 on fakeredis, slower: as many pages as it takes)."""
    n = 20_000 if backend.fake_server is not None else 60_000
    store = TelemetryStore(r, window_secs=3600)
    _put(r, _tied(60_000)[:n])
    events = store.events("m")
    assert len(events) == n
    assert len({e.event_id for e in events}) == n
    exact = store.model_performance("m", percentiles=True)
    assert exact.successful_completions == n


def test_every_event_of_maximum_size_is_read_once(r: redis.Redis) -> None:
    store = TelemetryStore(r, window_secs=3600)
    rng = random.Random(7)
    sent = _big("m", 300, 100, rng)
    store.record_batch(sent)
    got = store.events("m")
    assert sorted(e.event_id for e in got) == sorted(e.event_id for e in sent)
    assert {len(e.error or "") for e in got} == {len(e.error or "") for e in sent}


def test_a_page_whose_cursor_is_gone_restarts_at_its_score_without_repeats(
    r: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The member a page ended on is removed before the next page is read: the next page
    restarts at the first member of its score, and the reader drops the ones it has."""
    monkeypatch.setattr(scripts, "WINDOW_PAGE", 4)
    store = TelemetryStore(r, window_secs=3600)
    _put(r, _tied(10))
    before = r.zrange(KEY, 0, -1)

    def between(calls: list[Eval]) -> None:
        if any(c.args[1] != "" for c in calls):
            r.zrem(KEY, before[3])  # a later page is next: the first one's last member goes

    events, _ = _drive(store, store._core.events("m"), between)
    got = sorted(e.event_id for e in events)
    assert got == sorted(codec.decode(m).event_id for m in before)  # each once


# -- the newest members: a bounded sample of the newest millisecond ------------------------


def test_the_newest_probe_returns_a_bounded_sample_of_the_newest_millisecond(
    r: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scripts, "NEWEST_TIES", 100)
    store = TelemetryStore(r, window_secs=3600)
    at = datetime.fromtimestamp(server_ms(r) // 1000 - 5, UTC)
    store.record_batch(
        [event("m", completed_at=at + timedelta(microseconds=i % 999)) for i in range(3000)]
    )
    call = scripts.snapshot_call(_keys(store), "m", 3_600_000)
    newest = scripts.snapshot_reply(_run(store, call), 0).newest
    assert 2 * scripts.NEWEST_PROBE < len(newest) <= 2 * 100  # all of one ms, capped
    assert len(set(newest[1::2])) == 1
    monkeypatch.setattr(scripts, "NEWEST_BUDGET", 2000)
    call = scripts.snapshot_call(_keys(store), "m", 3_600_000)
    newest = scripts.snapshot_reply(_run(store, call), 0).newest
    assert sum(map(len, newest[::2])) <= 2000
    # last_event_at is then the newest of the sample: in the newest millisecond
    last = store.model_performance("m").last_event_at
    assert last is not None
    assert at <= last < at + timedelta(milliseconds=1)


# -- aged members subtracted in bounded calls ----------------------------------------------


def test_an_aged_part_is_read_a_bounded_number_of_bytes_a_call(
    r: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """snapshot.lua and session.lua subtract at most AGED_BUDGET bytes of aged members a
    call (one at least), going on from the cursor the previous call gave."""
    monkeypatch.setattr(scripts, "AGED_BUDGET", 30_000)
    store = TelemetryStore(r, window_secs=60)
    rng = random.Random(3)
    store.record_batch(_big("m", 60, 58.5, rng, step=1e-5))
    store.record_batch(_big("m", 80, 5, rng))
    wait_for_server_ms(r, server_ms(r) + 1600)
    members = r.zrange(KEY, 0, -1)
    assert r.zcount(KEY, "-inf", server_ms(r) - 60_000) == 60
    session = codec.decode(members[0]).session_id  # one with an index entry
    for kind in ("snapshot", "session"):
        taken, cursor, calls = 0, None, 0
        while True:
            later = cursor is not None
            oldest = b"" if cursor is None else cursor.oldest
            if kind == "snapshot":
                call = scripts.snapshot_call(_keys(store), "m", 60_000, cursor, later)
                got: Any = scripts.snapshot_reply(_run(store, call), 0, oldest)
            else:
                call = scripts.session_call(_keys(store), "m", 60_000, session, cursor, later)
                got = scripts.session_reply(_run(store, call), 0, oldest)
            assert got.state in ("aged", "ok")
            assert got.cursor is not None
            read = members[taken : got.cursor.next]
            assert len(read) == 1 or sum(map(len, read)) <= 30_000
            taken, cursor, calls = got.cursor.next, got.cursor, calls + 1
            if got.state == "ok":
                break
        assert taken == 60
        assert calls > 3


@pytest.mark.usefixtures("small")
def test_a_writers_read_trims_the_backlog_and_stays_exact(r: redis.Redis) -> None:
    store = TelemetryStore(r, window_secs=60)
    _backlog(r, store, aged=40, live=50)
    _exact(store)
    assert r.zcard(KEY) == 50  # the read's upkeep trimmed every aged member
    assert stored_derived(r, "m") == recount(r, "m")
    assert not store._core._read_only


@pytest.mark.usefixtures("small")
def test_a_read_only_store_subtracts_the_backlog_in_bounded_calls(r: redis.Redis) -> None:
    """A store that may not write reads on from each call's cursor (5 aged members a call),
    remembers how far it read, and next time reads only what aged since: exact each time."""
    writer = TelemetryStore(r, window_secs=60)
    _backlog(r, writer, aged=40, later=12, live=50)
    store = TelemetryStore(r, window_secs=60)
    store._core._read_only = True
    _exact(store)
    assert r.zcard(KEY) == 102  # nothing trimmed
    part = store._core._remembered("totals", "")["m"]
    assert part.cursor.next == 40
    wait_for_server_ms(r, server_ms(r) + 1300)  # the 12 later ones age too
    assert r.zcount(KEY, "-inf", server_ms(r) - 60_000) == 52
    snap, calls = _drive(store, store._core.model_performance("m"))
    assert snap.successful_completions + snap.failed_completions == 50
    assert len(calls) == 1 + 12 // 5  # resumed at rank 40: only the 12 new ones read
    assert calls[0].args[-3:] == ("", 40, part.cursor.oldest)
    _, calls = _drive(store, store._core.session_usage("s0"))  # the same for a session
    assert [c.script for c in calls] == ["session"] * (1 + 12 // 5)
    assert calls[0].args[-2] == 40
    _exact(store)
    assert r.zcard(KEY) == 102


@pytest.mark.usefixtures("small")
async def test_the_async_store_reads_a_backlog_the_same_way(
    r: redis.Redis, ar: redis.asyncio.Redis
) -> None:
    writer = TelemetryStore(r, window_secs=60)
    _backlog(r, writer, aged=40, live=50)
    read_only = AsyncTelemetryStore(ar, window_secs=60)
    read_only._core._read_only = True
    store = AsyncTelemetryStore(ar, window_secs=60)
    try:
        first = await read_only.model_performance("m")
        assert r.zcard(KEY) == 90
        second = await store.model_performance("m")  # trims the backlog
        assert r.zcard(KEY) == 50
    finally:
        await read_only.aclose()
        await store.aclose()
    assert first == second
    assert first.successful_completions + first.failed_completions == 50


@pytest.mark.usefixtures("small")
def test_a_read_that_meets_a_trim_starts_again(r: redis.Redis) -> None:
    """A writer trims between two calls of a read that subtracts the backlog itself: the next
    call sees the oldest member gone ('moved'), and the read starts again instead of mixing
    the two."""
    writer = TelemetryStore(r, window_secs=60)
    _backlog(r, writer, aged=40, live=50)
    store = TelemetryStore(r, window_secs=60)
    store._core._read_only = True

    def between(calls: list[Eval]) -> None:
        if any(_resume(c)[0] != "" for c in calls) and r.zcard(KEY) == 90:
            _upkeep(writer)  # a later call is next: a write trims 3 aged members first

    snap, calls = _drive(store, store._core.model_performance("m"), between)
    cutoff = _resume(calls[1])[0]
    assert [_resume(c)[:2] for c in calls[:3]] == [("", 0), (cutoff, 5), ("", 0)]
    assert r.zcard(KEY) == 87
    assert snap.successful_completions + snap.failed_completions == 50
    _exact(store)


def _resume(call: Eval) -> tuple[Any, ...]:
    """A snapshot.lua call's (cutoff, from, oldest): ('', 0, '') when a first call from rank 0
    leaves them out."""
    return (*call.args[1:], "", 0, "")[:3]


def _upkeep(store: TelemetryStore) -> None:
    """One record.lua call of model "m" that stores nothing: a bounded step of its upkeep."""
    core = store._core
    store._run(core._write([core._record_eval("m", ())], core._window_ms))


def test_a_later_call_after_a_trim_answers_moved(r: redis.Redis) -> None:
    writer = TelemetryStore(r, window_secs=60)
    _backlog(r, writer, aged=1200, live=1300)
    keys = _keys(writer)
    first = scripts.snapshot_reply(_run(writer, scripts.snapshot_call(keys, "m", 60_000)), 0)
    assert first.state == "aged"
    assert first.cursor is not None
    assert first.cursor.next == scripts.MAX_AGED
    _upkeep(writer)
    later = scripts.snapshot_call(keys, "m", 60_000, first.cursor, later=True)
    assert scripts.snapshot_reply(_run(writer, later), 0).state == "moved"
    session = scripts.session_call(keys, "m", 60_000, "s0", first.cursor, later=True)
    assert scripts.session_reply(_run(writer, session), 0).state == "moved"


@pytest.mark.usefixtures("small")
def test_a_backlog_larger_than_the_window_is_read_from_the_window(r: redis.Redis) -> None:
    """More members left aged than in the window: reading the window's events is less."""
    writer = TelemetryStore(r, window_secs=60)
    _backlog(r, writer, aged=40, live=6)
    store = TelemetryStore(r, window_secs=60)
    store._core._read_only = True
    snap, calls = _drive(store, store._core.model_performance("m"))
    assert snap.successful_completions + snap.failed_completions == 6
    assert [c.script for c in calls] == ["snapshot", "window"]
    _exact(store)


# -- a read-only ACL user, on a real server --------------------------------------------------


@pytest.fixture(scope="module")
def acl_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    workdir = tmp_path_factory.mktemp("acl")
    (workdir / "users.acl").write_text(ACL.read_text())
    server = RedisServer(
        "--aclfile",
        str(workdir / "users.acl"),
        workdir=workdir,
        auth=("telemetry-admin", "change-me-admin"),
    ).start()
    yield server
    server.cleanup()


def _as(server: RedisServer, user: str) -> redis.Redis:
    return redis.Redis(port=server.port, username=user, password=f"change-me-{user[10:]}")


@pytest.mark.usefixtures("small")
def test_the_shipped_reader_reads_a_backlog_exactly_without_writing(
    acl_server: RedisServer,
) -> None:
    with acl_server.client() as admin:
        admin.flushall()
    with _as(acl_server, "telemetry-writer") as w, _as(acl_server, "telemetry-reader") as rr:
        writer = TelemetryStore(w, window_secs=60)
        _backlog(w, writer, aged=40, live=50)
        reader = TelemetryStore(rr, window_secs=60)
        _exact(reader)
        assert reader._core._read_only  # Redis refused it the upkeep: remembered
        assert w.zcard(KEY) == 90  # nothing trimmed
        _exact(writer)  # the shipped writer may do the upkeep
        assert w.zcard(KEY) == 50


# -- no read script call holds a real server for 50 ms --------------------------------------


def test_no_read_script_call_holds_a_real_server_for_50_ms(redis_server: RedisServer) -> None:
    """SLOWLOG over the cases that made read scripts slow: 60,000 events in one millisecond;
    members of the maximum size, paged and (aged) subtracted; a backlog of aged members read
    by a store that may write (its upkeep) and by one that may not. Only the reads are
    logged (the data is written between them)."""
    slow: list[Any] = []
    with redis_server.client() as r:
        r.flushall()
        r.config_set("slowlog-log-slower-than", 50_000)  # microseconds
        store = TelemetryStore(r, window_secs=60)
        read_only = TelemetryStore(r, window_secs=60)
        read_only._core._read_only = True

        _put(r, _tied(60_000))
        r.hset("telemetry:{m}:totals", "layout", totals.LAYOUT)  # sums by hand: not checked
        r.slowlog_reset()
        assert store.model_performance("m").last_event_at is not None
        assert sum(len(p.members) // 2 for p in _pages(store, 60_000)) == 60_000
        slow += r.slowlog_get(128)

        r.delete(KEY, "telemetry:{m}:totals")
        for start in range(0, 3000, 100):  # 3000 members of the maximum size that stay
            store.record_batch(_biggest(100, 5 - start * 1e-5))
        aging = [_biggest(100, 56 - start * 1e-5) for start in range(0, 2000, 100)]
        for batch in aging:  # and 2000 that age soon
            store.record_batch(batch)
        newest = max(e.completed_at for batch in aging for e in batch)
        wait_for_server_ms(r, int(newest.timestamp() * 1000) + 60_001)
        assert r.zcount(KEY, "-inf", server_ms(r) - 60_000) == 2000
        r.slowlog_reset()
        events = read_only.events("m")
        assert len(events) == 3000
        usage = read_only.session_usage(events[0].session_id).by_model["m"]
        assert usage.message_count == sum(e.session_id == events[0].session_id for e in events)
        assert read_only.model_performance("m").failed_completions == sum(
            not e.success for e in events
        )
        slow += r.slowlog_get(128)

        r.delete(KEY, "telemetry:{m}:totals", "telemetry:{m}:sessions", "telemetry:{m}:latency")
        _backlog(r, store, aged=5000, live=6000, ms_left=3000)
        r.slowlog_reset()
        reader_snap, reader_usage = read_only.model_performance("m"), read_only.session_usage("s1")
        snap, usage = store.model_performance("m"), store.session_usage("s1")  # trims them
        slow += r.slowlog_get(128)
        assert r.zcard(KEY) == 6000
        assert reader_usage.by_model == usage.by_model
        assert reader_snap == snap
        assert snap.successful_completions + snap.failed_completions == 6000
        r.config_set("slowlog-log-slower-than", 10_000)
        assert [(e["duration"], e["command"][:200]) for e in slow] == []


@pytest.mark.slow
def test_the_benchmark_of_bounded_reads_runs(tmp_path: Path) -> None:
    result = run_benchmark("bounded_reads.py", "--quick", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    data = json.loads((tmp_path / "bounded_reads.json").read_text())
    assert data["backlog"]["exact"] is True
    assert [sorted(row["ours_s"]) for row in data["worst"]] == [
        ["snapshot", "window"],
        ["window"],
        ["session", "snapshot"],
    ]
    assert "| store that may write, steady p50 |" in result.stdout
