"""The running totals' one schema, and totals hashes written before a field existed."""

from __future__ import annotations

import re
import time

import pytest
import redis

from redis_telemetry import (
    CompletionEvent,
    ModelPerformanceSnapshot,
    TelemetryStore,
    TokenBreakdown,
)
from redis_telemetry.core import codec, scripts, snapshot, totals
from redis_telemetry.core.keys import Keys
from redis_telemetry.core.totals import Totals

from .helpers import event

KEY = "telemetry:{m}:totals"


def test_an_event_adds_to_each_total_by_name() -> None:
    tokens = (10, 4, 3, 2, 1, 5)
    ok = Totals._make(totals.contribution(True, 250, 7, tokens))
    expected = Totals(ok=1, latency=250, cost_nusd=7, total=10, input=4, output=3)
    assert ok == expected._replace(reasoning=2, cache_read=1, cache_write=5)
    failed = Totals._make(totals.contribution(False, 250, 7, tokens))
    assert failed == ok._replace(ok=0, failed=1, latency=0)


def test_the_token_totals_are_the_token_breakdown() -> None:
    assert tuple(TokenBreakdown.model_fields) == totals.TOKEN_FIELDS
    assert totals.FIELDS[-len(totals.TOKEN_FIELDS) :] == totals.TOKEN_FIELDS


def test_every_side_names_the_same_fields() -> None:
    e = event(tokens=TokenBreakdown(total=9, input=1, output=2, reasoning=3, cache_read=4))
    prepared = codec.prepare(e, int(time.time() * 1000))
    assert prepared.sums == codec.stored_sums(codec.decode(prepared.member))
    assert codec.TOTALS_FIELDS == totals.FIELDS
    assert scripts.snapshot_call(Keys(), "m", 1000).args[2:] == totals.FIELDS
    assert scripts.HEAD_FORMAT.count("%d") == 3 + len(totals.FIELDS)
    line = re.search(r"^local FIELDS = \{(.*)\}$", scripts.SCRIPTS["record"], flags=re.M)
    assert line is not None
    assert tuple(re.findall(r"'(\w+)'", line.group(1))) == totals.FIELDS


def test_record_lua_takes_its_field_lists_from_the_schema(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(totals, "ADDED_LATER", ("cache_write",))
    source = "local N = 1\nlocal FIELDS = {'old'}\nlocal ADDED_LATER = {}\nreturn N\n"
    names = ", ".join(f"'{f}'" for f in totals.FIELDS)
    assert scripts.render_fields(source) == (
        f"local N = 1\nlocal FIELDS = {{{names}}}\nlocal ADDED_LATER = {{'cache_write'}}\n"
        "return N\n"
    )
    with pytest.raises(RuntimeError, match="local ADDED_LATER"):
        scripts.render_fields("local FIELDS = {}\n")


def test_a_zero_total_may_be_absent_from_a_hash() -> None:
    """Fields the first release knew are written only once non-zero: their absence never
    sends a reader to the window."""
    assert not totals.ADDED_LATER
    assert not snapshot.lacks_fields([b"1", None] + [None] * 8, [(b"member", 1.0)])


@pytest.fixture
def added_later(
    request: pytest.FixtureRequest, r: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> tuple[tuple[str, ...], TelemetryStore]:
    """Fields taken as added after the hashes were written, and a store that knows it."""
    fields: tuple[str, ...] = request.param
    monkeypatch.setattr(totals, "ADDED_LATER", fields)
    monkeypatch.setitem(scripts.SCRIPTS, "record", scripts.render_fields(scripts.SCRIPTS["record"]))
    return fields, TelemetryStore(r)


def _events() -> list[CompletionEvent]:
    tokens = TokenBreakdown(
        total=90, input=40, output=30, reasoning=11, cache_read=6, cache_write=3
    )
    return [
        event(
            "m",
            latency_ms=100 + i,
            success=i % 3 != 0,
            error=None if i % 3 else "tool crashed",
            tokens=tokens,
            cost_usd=0.001 * i,
        )
        for i in range(7)
    ]


def _exact(store: TelemetryStore) -> ModelPerformanceSnapshot:
    """The snapshot computed from the window's events, without percentiles."""
    snap = store.model_performance("m", percentiles=True)
    return snap.model_copy(update={"latency_p50_ms": None, "latency_p95_ms": None})


def _member_sums(r: redis.Redis) -> list[int]:
    """The totals over the members stored, computed in Python."""
    sums = totals.zero()
    for member in r.zrange("telemetry:{m}:events", 0, -1):
        for i, v in enumerate(codec.stored_sums(codec.decode(member))):
            sums[i] += v
    return sums


def _same(a: ModelPerformanceSnapshot, b: ModelPerformanceSnapshot) -> None:
    ignore = {"throughput"} if a.last_event_at is None else set()
    assert a.model_dump(exclude=ignore) == b.model_dump(exclude=ignore)


ADDED = [("reasoning",), ("cache_write", "failed"), totals.FIELDS]


@pytest.mark.parametrize("added_later", ADDED, indirect=True)
def test_an_old_totals_hash_without_a_field_still_gives_exact_snapshots(
    r: redis.Redis, added_later: tuple[tuple[str, ...], TelemetryStore]
) -> None:
    """A hash written before a field existed (here: the field deleted) is read exactly, and
    the next write gives it the field's sum over the members already stored."""
    missing, store = added_later
    store.record_batch(_events()[:5])
    r.hdel(KEY, *missing)
    _same(store.model_performance("m"), _exact(store))  # read: from the events
    assert store.all_model_performances()[0].tokens.reasoning == 55
    store.record(_events()[5])  # write: the missing field gets its full sum
    store.record_batch(_events()[6:])
    held = r.hmget(KEY, *missing)
    assert None not in held
    assert [int(v or 0) for v in r.hmget(KEY, *totals.FIELDS)] == _member_sums(r)
    assert r.pttl(KEY) > 0
    perf = store.model_performance("m")
    _same(perf, _exact(store))
    assert perf.tokens.reasoning == 77
    assert perf.failed_completions == 3


@pytest.mark.parametrize("added_later", ADDED, indirect=True)
def test_a_duplicate_write_completes_an_old_hash_with_the_events_ttl(
    r: redis.Redis, added_later: tuple[tuple[str, ...], TelemetryStore]
) -> None:
    missing, store = added_later
    events = [e.model_copy(update={"event_id": f"e{i}"}) for i, e in enumerate(_events())]
    store.record_batch(events)
    for write in (lambda: store.record_batch(events[:2]), lambda: store.record(events[3])):
        r.hdel(KEY, *missing)
        assert write().stored == 0  # duplicates only: nothing added, the fields completed
        assert None not in r.hmget(KEY, *missing)
        assert [int(v or 0) for v in r.hmget(KEY, *totals.FIELDS)] == _member_sums(r)
        assert abs(r.pttl(KEY) - r.pttl("telemetry:{m}:events")) < 1000  # the same TTL
