"""The public types: validation rules, the phrase list, and JSON interop with the reference."""

from __future__ import annotations

import json
import os
import re
import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from redis_telemetry import (
    CompletionEvent,
    ModelPerformanceSnapshot,
    ModelUsage,
    TelemetrySummary,
    TokenBreakdown,
    is_subscription_limit_error,
)
from redis_telemetry.core import codec

FIXTURES = Path(__file__).parent / "fixtures"
# What chrono's DateTime<Utc> deserialiser accepts: RFC 3339 with a UTC offset.
RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?(Z|\+00:00)$")
SERDE_EVENT_FIELDS = {
    "model",
    "session_id",
    "completed_at",
    "latency_ms",
    "success",
    "tokens",
    "cost_usd",
    "error",
}
SERDE_SNAPSHOT_FIELDS = {
    "model",
    "successful_completions",
    "failed_completions",
    "window_secs",
    "throughput",
    "avg_latency_ms",
    "success_rate",
    "last_event_at",
    "subscription_limit_reached",
    "subscription_limit_expires_at",
}


def test_subscription_limit_detection() -> None:
    assert is_subscription_limit_error("weekly session limit reached")
    assert is_subscription_limit_error("Rate Limit Exceeded - try again later")
    assert is_subscription_limit_error("Error 429: Too Many Requests")
    assert is_subscription_limit_error("Quota exceeded for this billing period")
    assert not is_subscription_limit_error("connection refused")
    assert not is_subscription_limit_error("syntax error in response")


@pytest.mark.parametrize(
    "phrase",
    [
        "weekly session limit",
        "monthly limit",
        "rate limit exceeded",
        "quota exceeded",
        "429 too many requests",  # a bare "429" is no longer enough (docs/ingest.md)
        "too many requests",
        "capacity limit",
        "spending limit",
        "billing limit",
        "usage limit",
        "subscription limit",
    ],
)
def test_every_reference_phrase_is_detected_in_any_case(phrase: str) -> None:
    assert is_subscription_limit_error(f"provider said: {phrase.upper()}!")


def test_rust_events_parse() -> None:
    lines = (FIXTURES / "rust-completion-events.jsonl").read_text().splitlines()
    events = [CompletionEvent.model_validate_json(line) for line in lines]
    assert events[0].completed_at == datetime(2026, 10, 2, 8, 0, 1, 250000, tzinfo=UTC)
    assert events[1].error == "weekly session limit reached"
    assert events[2].completed_at == datetime(2026, 10, 2, 8, 2, 30, 500000, tzinfo=UTC)
    assert events[2].tokens == TokenBreakdown(
        total=7000, input=6000, output=800, reasoning=200, cache_read=0, cache_write=0
    )
    assert all(e.event_id is None for e in events)


def test_our_events_are_serde_shaped() -> None:
    e = CompletionEvent(
        model="m",
        completed_at=datetime(2026, 10, 2, 10, 0, tzinfo=timezone(timedelta(hours=2))),
        latency_ms=5,
        success=True,
    )
    data = json.loads(e.model_dump_json())
    assert set(data) == SERDE_EVENT_FIELDS  # no event_id while none is set
    assert data["completed_at"] == "2026-10-02T08:00:00Z"
    assert RFC3339_UTC.match(data["completed_at"])
    assert set(data["tokens"]) == {
        "total",
        "input",
        "output",
        "reasoning",
        "cache_read",
        "cache_write",
    }
    assert data["error"] is None  # serde's Option<String> serialises None as null
    assert isinstance(data["latency_ms"], int)
    assert isinstance(data["cost_usd"], float)
    with_id = json.loads(e.model_copy(update={"event_id": "abc"}).model_dump_json())
    assert with_id["event_id"] == "abc"  # an extra field, which serde ignores


def test_rust_summary_round_trips() -> None:
    text = (FIXTURES / "rust-telemetry-summary.json").read_text()
    summary = TelemetrySummary.model_validate_json(text)
    assert summary.model_performances[1].subscription_limit_reached
    assert summary.model_performances[1].subscription_limit_expires_at == datetime(
        2026, 10, 2, 9, 1, tzinfo=UTC
    )
    ours = json.loads(summary.model_dump_json())
    theirs = json.loads(text)
    for mine, ref in zip(ours["model_performances"], theirs["model_performances"], strict=True):
        # ours adds cost fields only; serde ignores unknown fields, so the Rust side parses it
        assert set(mine) - SERDE_SNAPSHOT_FIELDS == {
            "total_cost_usd",
            "tokens",
            "avg_cost_per_1k_tokens",
            "is_free",
            "avg_cost_per_1k_total_tokens",
            "latency_p50_ms",
            "latency_p95_ms",
            "latency_p99_ms",
            "latency_samples",
        }
        assert set(mine) >= SERDE_SNAPSHOT_FIELDS
        for key in SERDE_SNAPSHOT_FIELDS - {"last_event_at", "subscription_limit_expires_at"}:
            assert mine[key] == ref[key]
        for key in ("last_event_at", "subscription_limit_expires_at"):
            assert mine[key] is None or RFC3339_UTC.match(mine[key])
            assert _instant(mine[key]) == _instant(ref[key])
    assert RFC3339_UTC.match(ours["exported_at"])
    assert TelemetrySummary.model_validate_json(summary.model_dump_json()) == summary


def _instant(text: str | None) -> Any:
    return None if text is None else datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_naive_datetime_is_utc_and_aware_is_converted() -> None:
    naive = CompletionEvent(model="m", latency_ms=1, success=True, completed_at="2026-01-01T00:00")
    assert naive.completed_at == datetime(2026, 1, 1, tzinfo=UTC)
    assert naive.completed_at.tzinfo is UTC
    aware = CompletionEvent(
        model="m", latency_ms=1, success=True, completed_at="2026-01-01T02:00:00+02:00"
    )
    assert aware.completed_at == datetime(2026, 1, 1, tzinfo=UTC)
    assert aware.completed_at.tzinfo is UTC


@pytest.mark.parametrize(
    ("fields", "field_name"),
    [
        ({"model": ""}, "model"),
        ({"model": "{x}"}, "model"),
        ({"model": "x\x00"}, "model"),
        ({"model": "é" * 257}, "model"),
        ({"latency_ms": -1}, "latency_ms"),
        ({"latency_ms": 2**64}, "latency_ms"),
        ({"tokens": {"input": -1}}, "tokens.input"),
        ({"cost_usd": float("nan")}, "cost_usd"),
        ({"cost_usd": -1}, "cost_usd"),
        ({"session_id": "s" * 1025}, "session_id"),
        ({"error": "\ud800"}, "error"),
        ({"event_id": ""}, "event_id"),
    ],
)
def test_validation_names_the_field(fields: dict[str, Any], field_name: str) -> None:
    values: dict[str, Any] = {"model": "m", "latency_ms": 1, "success": True, **fields}
    with pytest.raises(ValidationError) as info:
        CompletionEvent(**values)
    assert field_name.split(".")[-1] in str(info.value)


def test_validation_on_assignment() -> None:
    e = CompletionEvent(model="m", latency_ms=1, success=True)
    with pytest.raises(ValidationError):
        e.latency_ms = -3


def test_u64_bounds_are_accepted() -> None:
    e = CompletionEvent(model="m", latency_ms=2**64 - 1, success=True)
    assert e.latency_ms == 2**64 - 1


def test_snapshot_helpers() -> None:
    snap = ModelPerformanceSnapshot.empty("m", 60)
    assert snap.is_stale(10**9)
    assert not snap.is_subscription_limited()
    recent = snap.model_copy(update={"last_event_at": datetime.now(UTC) - timedelta(seconds=30)})
    assert not recent.is_stale(60)
    assert recent.is_stale(10)
    blocked = snap.model_copy(update={"subscription_limit_reached": True})
    assert blocked.is_subscription_limited()
    expired = blocked.model_copy(
        update={"subscription_limit_expires_at": datetime.now(UTC) - timedelta(seconds=1)}
    )
    assert not expired.is_subscription_limited()


def test_model_usage_merge() -> None:
    a = ModelUsage(input_tokens=1, output_tokens=2, total_tokens=3, cost_usd=0.5, message_count=1)
    a.merge(
        ModelUsage(
            input_tokens=10, output_tokens=20, total_tokens=30, cost_usd=1.0, message_count=2
        )
    )
    assert a == ModelUsage(
        input_tokens=11, output_tokens=22, total_tokens=33, cost_usd=1.5, message_count=3
    )


def test_event_ids_are_unique_across_threads_and_a_fork() -> None:
    ids = [codec.new_event_id() for _ in range(3)]
    others: list[str] = []
    thread = threading.Thread(target=lambda: others.append(codec.new_event_id()))
    thread.start()
    thread.join()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child reports the id it drew, and leaves at once
        os.write(write, codec.new_event_id().encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.close(read)
    os.waitpid(pid, 0)
    every = [*ids, *others, child, codec.new_event_id()]
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in every)
    assert len(set(every)) == len(every)
    prefixes = {i[:16] for i in every}
    assert len(prefixes) == 3  # this thread, the other thread, the child
    assert ids[1] == ids[0][:16] + f"{int(ids[0][16:], 16) + 1:016x}"  # a counter after it


VALID_EVENT = {"model": "m", "latency_ms": 5, "success": True}


@pytest.mark.parametrize(
    ("change", "field_name"),
    [
        ({"success": "yes"}, "success"),
        ({"success": "true"}, "success"),
        ({"success": 1}, "success"),
        ({"latency_ms": "5"}, "latency_ms"),
        ({"latency_ms": 5.0}, "latency_ms"),
        ({"latency_ms": True}, "latency_ms"),
        ({"tokens": {"input": "10"}}, "input"),
        ({"cost_usd": "0.5"}, "cost_usd"),
    ],
)
def test_json_types_are_strict_as_serde_reads_them(change: dict[str, Any], field_name: str) -> None:
    """What the reference's serde refuses is refused, from JSON and from a decoded dict."""
    text = json.dumps(VALID_EVENT | change)
    with pytest.raises(ValidationError) as info:
        CompletionEvent.model_validate_json(text)
    assert field_name in str(info.value)
    with pytest.raises(ValidationError):
        CompletionEvent.model_validate(json.loads(text))


def test_strict_types_still_take_what_serde_takes() -> None:
    e = CompletionEvent.model_validate_json(
        json.dumps(VALID_EVENT | {"cost_usd": 1, "completed_at": "2026-01-01T00:00:00Z"})
    )
    assert (e.cost_usd, e.success) == (1.0, True)  # an integer is a number
    assert e.completed_at == datetime(2026, 1, 1, tzinfo=UTC)
    summary = json.loads((FIXTURES / "rust-telemetry-summary.json").read_text())
    snap = summary["model_performances"][0]
    for field, bad in (("subscription_limit_reached", "no"), ("window_secs", "3600")):
        with pytest.raises(ValidationError, match=field):
            TelemetrySummary.model_validate_json(
                json.dumps(summary | {"model_performances": [snap | {field: bad}]})
            )
    with pytest.raises(ValidationError, match="message_count"):
        ModelUsage.model_validate_json('{"message_count": "3"}')
