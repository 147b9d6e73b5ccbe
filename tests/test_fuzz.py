"""Hypothesis throws odd input at every entry point: it works or fails clearly, changing nothing."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import fakeredis
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from redis_telemetry import (
    CompletionEvent,
    InvalidInputError,
    TelemetryStore,
    TokenBreakdown,
)

from .helpers import dump_all, event

FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

names = st.one_of(
    st.text(max_size=300),
    st.sampled_from(
        [
            "",
            "{",
            "a}",
            "{a}",
            "x" * 256,
            "x" * 257,
            "é" * 256,
            "a\x00b",
            "\ud800",
            "zai-coding-plan/glm-5.1",
            "  spaced  ",
        ]
    ),
)
numbers = st.one_of(
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, 10**12, 10**12 + 1, 2**53, 2**63, 2**64 - 1, 2**64, -1]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.text(max_size=5),
    st.none(),
)
times = st.one_of(
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
    st.datetimes(timezones=st.just(UTC)),
    st.just(datetime.now(UTC) + timedelta(days=2)),
)


def fresh_store() -> TelemetryStore:
    store = TelemetryStore(fakeredis.FakeRedis(server=fakeredis.FakeServer()))
    store.record(event("seed"))
    return store


def clear(exc: BaseException) -> bool:
    """A clear error names what is wrong in a readable sentence."""
    text = str(exc)
    return bool(text) and len(text) < 2000 and "Traceback" not in text


@FUZZ
@given(
    model=names,
    session=st.text(max_size=1100),
    latency=numbers,
    cost=numbers,
    tokens=numbers,
    at=times,
    error=st.one_of(st.none(), st.text(max_size=50)),
)
def test_events_are_stored_or_refused_without_a_trace(
    model: Any, session: str, latency: Any, cost: Any, tokens: Any, at: datetime, error: Any
) -> None:
    store = fresh_store()
    before = dump_all(store.client)
    fields = {
        "model": model,
        "session_id": session,
        "latency_ms": latency,
        "cost_usd": cost,
        "completed_at": at,
        "error": error,
        "success": error is None,
    }
    try:
        e = CompletionEvent(**fields, tokens=TokenBreakdown(input=tokens))
    except (ValidationError, TypeError) as exc:
        assert clear(exc)
        # the same values slipped past pydantic must be refused by the write path
        bypass = CompletionEvent.model_construct(
            **fields,
            tokens=TokenBreakdown.model_construct(
                total=0, input=tokens, output=0, reasoning=0, cache_read=0, cache_write=0
            ),
        )
        with pytest.raises(InvalidInputError) as info:
            store.record_batch([event("ok"), bypass])
        assert clear(info.value)
        assert dump_all(store.client) == before
        return
    try:
        result = store.record(e)
    except InvalidInputError as exc:
        assert clear(exc)
        assert dump_all(store.client) == before
        return
    assert result.stored + result.outside_window == 1
    perf = store.model_performance(e.model)
    assert perf.successful_completions + perf.failed_completions == result.stored


@FUZZ
@given(model=names, ttl=numbers, last=numbers)
def test_store_arguments_work_or_are_refused(model: Any, ttl: Any, last: Any) -> None:
    store = fresh_store()
    calls = [
        lambda: store.model_performance(model),
        lambda: store.mark_subscription_limited(model, ttl),
        lambda: store.clear_subscription_limit(model),
        lambda: store.events(model, last),
        lambda: store.session_usage(model),
        lambda: store.rank_models([model]),
    ]
    for call in calls:
        before = dump_all(store.client)
        try:
            call()
        except InvalidInputError as exc:
            assert clear(exc)
            assert dump_all(store.client) == before


json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**66), 2**66),
        st.floats(allow_nan=False),
        st.text(max_size=20),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=5)
    ),
    max_leaves=20,
)


@FUZZ
@given(
    st.dictionaries(
        st.sampled_from(list(CompletionEvent.model_fields)),
        json_values,
    )
)
def test_completion_event_json_parses_or_names_the_problem(data: dict[str, Any]) -> None:
    try:
        CompletionEvent.model_validate_json(json.dumps(data))
    except ValidationError as exc:
        assert exc.errors()[0]["loc"]  # names the field
    except ValueError as exc:  # json.dumps of odd floats never gets here; be explicit anyway
        pytest.fail(f"unexpected {exc!r}")
