"""The server's writes feed the providers' state (429 backoff, blocks, successes) from the
events they newly stored: through the OTLP receiver and ``POST /v1/events``, in process over
the ASGI application, on fakeredis, a redis-server and a cluster. A redelivered export or a
retried request stores nothing again, so it escalates nothing again."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from redis_telemetry import AsyncTelemetryStore, TelemetryUnavailable
from redis_telemetry.server import create_app

MODEL = "acme/claude-x"  # provider "acme"
JSON = {"Content-Type": "application/json"}


@pytest.fixture
async def client(astore: AsyncTelemetryStore) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(astore))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


def kv(key: str, value: Any) -> dict[str, Any]:
    typed = {"intValue": value} if isinstance(value, int) else {"stringValue": value}
    return {"key": key, "value": typed}


def claude_logs(name: str, request_id: str, **attrs: Any) -> bytes:
    """An OTLP JSON export of one Claude Code log event (``api_request``, ``api_error``),
    stamped now, shaped as tests/fixtures/otlp's."""
    record = {
        "timeUnixNano": str(time.time_ns()),
        "body": {"stringValue": f"claude_code.{name}"},
        "attributes": [
            kv("event.name", name),
            kv("session.id", "feedback-session"),
            kv("model", MODEL),
            kv("request_id", request_id),
            kv("duration_ms", 800),
            *(kv(k, v) for k, v in attrs.items()),
        ],
    }
    resource = {"attributes": [kv("service.name", "claude-code")]}
    scope = {"scope": {"name": "com.anthropic.claude_code.events"}, "logRecords": [record]}
    return json.dumps({"resourceLogs": [{"resource": resource, "scopeLogs": [scope]}]}).encode()


async def level(store: AsyncTelemetryStore) -> int:
    return (await store.provider_status("acme")).backoff_level


async def test_a_redelivered_otlp_429_backs_the_provider_off_once(
    client: httpx.AsyncClient, astore: AsyncTelemetryStore
) -> None:
    throttled = claude_logs("api_error", "req-429", error="Rate limited", status_code=429)
    for _ in range(2):  # the exporter's retry of the same export
        assert (await client.post("/v1/logs", content=throttled, headers=JSON)).status_code == 200
    snap = await astore.model_performance(MODEL)
    assert snap.failed_completions == 1
    assert await level(astore) == 1
    assert (await astore.provider_blocked_until("acme")) is not None
    ok = claude_logs("api_request", "req-ok", cost_usd=0.01, output_tokens=5)
    assert (await client.post("/v1/logs", content=ok, headers=JSON)).status_code == 200
    assert await level(astore) == 0
    assert (await astore.provider_blocked_until("acme")) is None
    # an old 429 sent again stores nothing: the backoff the success ended stays ended
    assert (await client.post("/v1/logs", content=throttled, headers=JSON)).status_code == 200
    assert await level(astore) == 0


async def test_a_retried_post_of_a_429_backs_the_provider_off_once(
    client: httpx.AsyncClient, astore: AsyncTelemetryStore
) -> None:
    failed = {"model": MODEL, "latency_ms": 900, "success": False, "event_id": "e-429"}
    failed["error"] = "429 Too Many Requests"
    other = {"model": "other/m", "latency_ms": 5, "success": True, "event_id": "e-other"}
    for body in ([failed, other], [failed, other], failed):  # a batch, retried; then alone
        answer = await client.post("/v1/events", json=body)
        assert answer.status_code == 200
    assert answer.json() == {"stored": 0, "duplicates": 1, "outside_window": 0}
    assert await level(astore) == 1
    ok = {"model": MODEL, "latency_ms": 700, "success": True}
    assert (await client.post("/v1/events", json=ok)).json()["stored"] == 1
    assert await level(astore) == 0
    assert (await client.post("/v1/events", json=[failed])).json()["duplicates"] == 1
    assert await level(astore) == 0


async def test_a_failed_feedback_leaves_the_write_answered(
    client: httpx.AsyncClient,
    astore: AsyncTelemetryStore,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def down(events: Any) -> int:
        raise TelemetryUnavailable("Redis is unreachable: refused")

    monkeypatch.setattr(AsyncTelemetryStore, "provider_feedback", lambda self, events: down(events))
    throttled = claude_logs("api_error", "req-down", error="Rate limited", status_code=429)
    with caplog.at_level(logging.WARNING, logger="redis_telemetry.server.feedback"):
        otlp = await client.post("/v1/logs", content=throttled, headers=JSON)
        event = {"model": MODEL, "latency_ms": 5, "success": True}
        posted = await client.post("/v1/events", json=event)
    assert otlp.status_code == 200
    assert (posted.status_code, posted.json()["stored"]) == (200, 1)
    snap = await astore.model_performance(MODEL)
    assert (snap.successful_completions, snap.failed_completions) == (1, 1)
    logged = "stored 1 events, but feeding their providers failed: Redis is unreachable: refused"
    assert [r.getMessage() for r in caplog.records] == [logged, logged]
    assert await level(astore) == 0
