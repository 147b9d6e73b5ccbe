"""A read names the ``gen`` of the reply it holds for each model; ``snapshot.lua`` answers
'same' (four cheap commands, nothing sent back) while nothing of the model changed, and every
change (a write, a trim, the cap, a window change, keys deleted or lost) makes it read whole
again. The results are those of a store that holds nothing."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import redis

from redis_telemetry import AsyncTelemetryStore, TelemetryStore
from redis_telemetry.core import codec, scripts
from redis_telemetry.core.scripts import SCRIPTS

from .helpers import event, now

MODELS = ["m1", "m2"]


@pytest.fixture
def answers(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Whether each first call a read named a ``gen`` for was answered 'same'."""
    seen: list[bool] = []
    same = scripts.same

    def spy(reply: Any, held: list[Any]) -> list[Any] | None:
        whole = same(reply, held)
        seen.append(whole is not None)
        return whole

    monkeypatch.setattr(scripts, "same", spy)
    return seen


def fresh(store: TelemetryStore) -> list[dict[str, Any]]:
    """What a store that holds no earlier reply reads."""
    other = TelemetryStore(store.client, window_secs=store.window_secs)
    return [p.model_dump() for p in other.all_model_performances()]


def read(store: TelemetryStore) -> list[dict[str, Any]]:
    return [p.model_dump() for p in store.all_model_performances()]


def test_an_unchanged_model_is_answered_same_and_reads_as_a_whole_read(
    store: TelemetryStore, answers: list[bool]
) -> None:
    store.record_batch([event(m, latency_ms=100 + i) for m in MODELS for i in range(30)])
    first = read(store)
    assert answers == []  # nothing held yet: nothing named
    assert read(store) == first == fresh(store)
    assert answers == [True, True]


def test_every_write_moves_gen_on(store: TelemetryStore, answers: list[bool]) -> None:
    store.record_batch([event(m) for m in MODELS])
    read(store)
    store.record(event("m1", latency_ms=5000))  # the one-event path
    assert read(store) == fresh(store)
    assert answers == [False, True]
    answers.clear()
    store.record_batch(
        [event("m2", success=False, error="boom"), event("m2", latency_ms=7)]
    )  # a batch
    assert read(store) == fresh(store)
    assert answers == [True, False]


def test_a_duplicate_is_not_a_change_but_reads_the_same(
    store: TelemetryStore, answers: list[bool]
) -> None:
    e = event("m1", event_id="retried")
    store.record(e)
    before = read(store)
    store.record(e)  # a retry: stored once
    assert read(store) == before == fresh(store)


def test_a_limit_shows_at_once_in_a_same_answer(store: TelemetryStore, answers: list[bool]) -> None:
    store.record_batch([event(m) for m in MODELS])
    read(store)
    store.mark_subscription_limited("m1", 600)
    got = {p.model: p for p in store.all_model_performances()}
    assert answers == [True, True]  # the limit is not a change of the totals
    assert got["m1"].subscription_limit_reached
    assert not got["m2"].subscription_limit_reached


def test_the_cap_trims_and_the_next_read_sees_it(r: redis.Redis, answers: list[bool]) -> None:
    store = TelemetryStore(r, window_secs=3600, max_events_per_model=5)
    store.record_batch([event("m1", latency_ms=i) for i in range(5)])
    assert read(store)[0]["successful_completions"] == 5
    store.record(event("m1", latency_ms=900))  # over the cap: the oldest leaves
    got = read(store)
    assert got == fresh(store)
    assert got[0]["successful_completions"] == 5
    assert got[0]["avg_latency_ms"] == (900 + 10) / 5
    assert answers == [False]


def test_members_aged_by_a_shorter_window_are_subtracted(
    store: TelemetryStore, answers: list[bool]
) -> None:
    at = now()
    store.record_batch([event("m1", completed_at=at - timedelta(seconds=s)) for s in (1, 2, 900)])
    assert read(store)[0]["successful_completions"] == 3
    store.set_window(600)  # the member 900 s old is now aged, and no write trimmed it yet
    got = read(store)
    assert answers == [False]
    assert got[0]["successful_completions"] == 2
    assert got == fresh(store)


def test_keys_deleted_by_hand_or_lost_are_seen(
    r: redis.Redis, store: TelemetryStore, answers: list[bool]
) -> None:
    store.record_batch([event(m) for m in MODELS])
    read(store)
    r.delete("telemetry:{m1}:events")  # by hand: the totals are left
    got = {p["model"]: p for p in read(store)}
    assert answers == [False, True]
    assert got["m1"]["successful_completions"] == 0
    answers.clear()
    r.delete("telemetry:{m2}:totals")  # by hand: read from the events
    got = {p["model"]: p for p in read(store)}
    assert answers == [False]  # m1 read empty: nothing held for it, nothing named
    assert got["m2"]["successful_completions"] == 1


def test_members_added_or_removed_by_hand_are_seen(
    r: redis.Redis, store: TelemetryStore, answers: list[bool]
) -> None:
    """Outside record.lua (by hand, or a writer of an older release that keeps no gen), the
    member count tells most changes."""
    store.record_batch([event("m1", latency_ms=100 + i) for i in range(3)])
    read(store)
    later = event("m1", completed_at=now() + timedelta(seconds=2), event_id="by-hand")
    prepared = codec.prepare(later, int(now().timestamp() * 1000))
    member = prepared.member
    r.zadd("telemetry:{m1}:events", {member: prepared.score_ms})
    (got,) = read(store)
    assert answers == [False]
    assert got["last_event_at"] == later.completed_at  # the totals do not count it
    answers.clear()
    r.zrem("telemetry:{m1}:events", member)
    assert read(store) == fresh(store)
    assert answers == [False]


def test_a_restart_that_emptied_redis_reads_the_new_data(
    r: redis.Redis, store: TelemetryStore, answers: list[bool]
) -> None:
    store.record(event("m1", latency_ms=100))
    read(store)
    r.flushall()  # on a cluster, every primary
    store.record(event("m1", latency_ms=4000))  # as many events, other numbers
    got = read(store)
    assert answers == [False]
    assert got == fresh(store)
    assert got[0]["avg_latency_ms"] == 4000


def test_a_malformed_known_gen_is_refused(r: redis.Redis, store: TelemetryStore) -> None:
    store.record(event("m1"))
    call = scripts.snapshot_call(store._core.keys, "m1", 3_600_000)
    with pytest.raises(redis.ResponseError, match="malformed settings"):
        r.eval(SCRIPTS["snapshot"], len(call.keys), *call.keys, call.args[0] + " 12x")


def test_a_snapshot_a_caller_changes_is_not_what_the_next_read_returns(
    store: TelemetryStore, answers: list[bool]
) -> None:
    store.record(event("m1", latency_ms=100))
    (first,) = store.all_model_performances()
    first.successful_completions = 99
    first.tokens.input = 7
    (again,) = store.all_model_performances()
    assert answers == [True]
    assert again.successful_completions == 1
    assert again.tokens.input == 800
    assert again is not first


def test_a_longer_window_answered_same_builds_the_snapshot_again(
    store: TelemetryStore, answers: list[bool]
) -> None:
    store.record(event("m1"))
    (before,) = store.all_model_performances()
    store.set_window(7200)  # nothing ages: the script answers 'same'
    (after,) = store.all_model_performances()
    assert answers == [True]
    assert (before.window_secs, after.window_secs) == (3600, 7200)
    assert after.throughput == before.throughput / 2
    assert [after.model_dump()] == fresh(store)


async def test_the_asyncio_store_is_answered_same_too(
    astore: AsyncTelemetryStore, answers: list[bool]
) -> None:
    await astore.record_batch([event(m) for m in MODELS])
    first = [p.model_dump() for p in await astore.all_model_performances()]
    again = [p.model_dump() for p in await astore.all_model_performances()]
    assert answers == [True, True]
    assert again == first
