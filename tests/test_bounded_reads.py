"""Bounded reads (issue 20, item 5): every read script call is bounded in members, bytes and
ties: window pages go on after the (score, member) of the one before."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import pytest
import redis

from redis_telemetry import TelemetryStore
from redis_telemetry.core import codec, scripts
from redis_telemetry.core.commands import Eval, Op
from redis_telemetry.core.replies import recovering

from .conftest import Backend
from .helpers import event

KEY = "telemetry:{m}:events"
#: The largest member the rules allow, about: a 16 KB error and a 1 KB session id.
BIG_ERROR = 16_000
BIG_SESSION = 1000


@cache
def _tied(n: int) -> tuple[tuple[bytes, int], ...]:
    """``n`` members of model "m" (prepared by the codec), all in one millisecond 5 s ago
    (made once per run: the backends share them)."""
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=5)
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


def _run(store: TelemetryStore, call: Eval) -> Any:
    """One script call through the store (its script cache), its reply as Redis gave it."""

    def op() -> Op[Any]:
        (reply,) = yield [call]
        return reply

    return store._run(op())


def _keys(store: TelemetryStore) -> Any:
    return store._core.keys


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
    try:
        while True:
            calls = [c for c in batch if isinstance(c, Eval)]
            between(calls)
            sent += calls
            batch = driven.send(store._execute(batch))
    except StopIteration as stop:
        return stop.value, sent


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
