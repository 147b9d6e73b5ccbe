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
from redis_telemetry.core import codec, scripts, sketch, totals
from redis_telemetry.core.keys import Keys
from redis_telemetry.core.totals import Totals

from .helpers import event, recount, stored_derived

KEY = "telemetry:{m}:totals"
SESSIONS = "telemetry:{m}:sessions"


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
    assert scripts.HEAD_FORMAT.count("%d") == 3 + len(totals.FIELDS) + 2
    for name in scripts.INCLUDES_EVENT:
        line = re.search(r"^local FIELDS = \{(.*)\}$", scripts.SCRIPTS[name], flags=re.M)
        assert line is not None
        assert tuple(re.findall(r"'(\w+)'", line.group(1))) == totals.FIELDS
    assert f"local LAYOUT = {totals.LAYOUT}\n" in scripts.SCRIPTS["record"]
    assert scripts.snapshot_call(Keys(), "m", 1000).args[0].split()[3] == str(totals.READ_LAYOUT)
    assert scripts.session_call(Keys(), "m", 1000, "s").args[2] == totals.READ_LAYOUT


def test_the_scripts_take_fields_layout_and_step_from_python(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(totals, "LAYOUT", 7)
    monkeypatch.setattr(scripts, "UPKEEP_STEP", 5)
    source = "local FIELDS = {'old'}\nlocal LAYOUT = 2\nlocal STEP = 1000\n-- #include event.lua\n"
    names = ", ".join(f"'{f}'" for f in totals.FIELDS)
    assert scripts.render(source, "local lib = 1\n") == (
        f"local FIELDS = {{{names}}}\nlocal LAYOUT = 7\nlocal STEP = 5\nlocal lib = 1\n"
    )
    with pytest.raises(RuntimeError, match="local FIELDS"):
        scripts.render_fields("local LAYOUT = 2\n")
    with pytest.raises(RuntimeError, match="include"):
        scripts.render("local FIELDS = {}\n", "")


def test_a_zero_total_may_be_absent_from_a_hash(r: redis.Redis) -> None:
    """Fields are written only once non-zero: their absence never sends a reader elsewhere."""
    store = TelemetryStore(r)
    store.record(event("m", tokens=TokenBreakdown(total=5)))
    assert r.hget(KEY, "reasoning") is None
    assert store.model_performance("m").tokens.total == 5


# -- totals written by an older release --------------------------------------------------------


def _events(n: int = 7) -> list[CompletionEvent]:
    tokens = TokenBreakdown(
        total=90, input=40, output=30, reasoning=11, cache_read=6, cache_write=3
    )
    return [
        event(
            "m",
            latency_ms=100 + 37 * i,
            success=i % 3 != 0,
            error=None if i % 3 else "tool crashed",
            tokens=tokens,
            cost_usd=0.001 * i,
            session_id=f"s{i % 2}",
            event_id=f"e{i}",
            ago_secs=(n - i) / 1000,
        )
        for i in range(n)
    ]


def _exact(store: TelemetryStore) -> ModelPerformanceSnapshot:
    """The snapshot computed from the window's events (exact percentiles)."""
    return store.model_performance("m", percentiles=True)


PERCENTILES = ("latency_p50_ms", "latency_p95_ms", "latency_p99_ms")


def _same(fast: ModelPerformanceSnapshot, exact: ModelPerformanceSnapshot) -> None:
    """Equal, but for percentiles from the sketch: the value of the exact one's bucket."""
    assert fast.model_dump(exclude=set(PERCENTILES)) == exact.model_dump(exclude=set(PERCENTILES))
    for name in PERCENTILES:
        value = getattr(exact, name)
        assert getattr(fast, name) in (value, sketch.value(sketch.bucket(int(value))))


def _make_old(r: redis.Redis) -> None:
    """Turn the model's keys into what the release before the sketch and session index
    wrote: the same totals, without `layout`, latency sketch or session index."""
    r.hdel(KEY, "layout")
    r.delete(SESSIONS, "telemetry:{m}:latency")


@pytest.fixture
def small_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    """record.lua doing 3 members of upkeep a call, so a few events take several calls."""
    monkeypatch.setattr(scripts, "UPKEEP_STEP", 3)
    monkeypatch.setitem(scripts.SCRIPTS, "record", scripts.render_fields(scripts.SCRIPTS["record"]))


def test_an_old_layout_is_read_exactly_from_the_events_and_logged_once(
    r: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    store = TelemetryStore(r)
    store.record_batch(_events())
    _make_old(r)
    assert r.hget(KEY, "layout") is None
    assert store.model_performance("m") == _exact(store)
    (every,) = store.all_model_performances()
    assert every == _exact(store)
    assert store.session_usage("s1").totals.message_count == 3
    assert store.session_usage("s0").totals.cost_usd == pytest.approx(0.012)
    warnings = [m for m in caplog.messages if "older release" in m]
    assert len(warnings) == 1
    assert "redis-telemetry reindex" in warnings[0]


@pytest.mark.usefixtures("small_steps")
def test_writes_rebuild_an_old_layout_a_bounded_step_each(r: redis.Redis) -> None:
    store = TelemetryStore(r)
    events = _events(10)
    store.record_batch(events[:8])
    _make_old(r)
    calls = 0
    while r.hget(KEY, "layout") is None:
        # each write does a step: duplicates only, then a new event mid-rebuild
        if calls == 2:
            store.record(events[8])
        else:
            assert store.record_batch(events[calls % 3 : calls % 3 + 2]).duplicates == 2
        _same(store.model_performance("m"), _exact(store))
        calls += 1
        assert calls < 10
        progress = r.hget(KEY, "rebuilt")
        if progress is not None:  # counted up to there: sums over those members only
            upto = float(progress)
            members = r.zrangebyscore("telemetry:{m}:events", "-inf", upto)
            assert stored_derived(r, "m").sums == recount_of(members)
    assert calls >= 3  # 9 members, 3 a call
    store.record(events[9])
    assert stored_derived(r, "m") == recount(r, "m")
    _same(store.model_performance("m"), _exact(store.__class__(r)))


def test_reindex_rebuilds_every_model_now(r: redis.Redis, small_steps: None) -> None:
    store = TelemetryStore(r)
    store.record_batch(_events(10) + [e.model_copy(update={"model": "n"}) for e in _events(4)])
    _make_old(r)
    r.hdel("telemetry:{n}:totals", "layout")
    assert store.reindex() >= 4 + 1
    for model in ("m", "n"):
        assert r.hget(f"telemetry:{{{model}}}:totals", "layout") == str(totals.LAYOUT).encode()
        assert stored_derived(r, model) == recount(r, model)
    assert store.reindex() == 2  # one call each: nothing left to do


def recount_of(members: list[bytes]) -> list[int]:
    sums = totals.zero()
    for member in members:
        for i, v in enumerate(codec.stored_sums(codec.decode(member))):
            sums[i] += v
    return sums
