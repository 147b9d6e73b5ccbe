"""The HTTP API of `redis-telemetry serve`: every endpoint and every error status, through a
real server process (uvicorn) on a free port, on a real redis-server started by the suite."""

from __future__ import annotations

import gzip
import json
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import trustme

from redis_telemetry import ModelPerformanceSnapshot, TelemetryStore, UsageSnapshot
from redis_telemetry.core.tokens import READ_TOKEN_ENV, WRITE_TOKEN_ENV

from .api import Serve, gzipped
from .helpers import dump_all
from .servers import HungListener, RedisServer, free_port
from .test_models import SERDE_EVENT_FIELDS, SERDE_SNAPSHOT_FIELDS

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures"
NS = "http-api"
READ, WRITE = "read-secret-1", "write-secret-2"
MiB = 1024 * 1024
#: a Redis URL where nothing listens (a free port, never 6379)
NOWHERE = f"redis://127.0.0.1:{free_port()}/0"


def ev(model: str, latency_ms: int | None = 100, success: bool = True, **fields: Any) -> dict:  # type: ignore[type-arg]
    """An event as a client sends it: serde's field names."""
    return {
        "model": model,
        "session_id": fields.pop("session_id", "s-1"),
        "completed_at": fields.pop("completed_at", datetime.now(UTC).isoformat()),
        "latency_ms": latency_ms,
        "success": success,
        "tokens": fields.pop("tokens", {"total": 300, "input": 200, "output": 100}),
        "cost_usd": fields.pop("cost_usd", 0.01),
        "error": fields.pop("error", None if success else "boom"),
        **fields,
    }


@pytest.fixture(scope="module")
def api(redis_server: RedisServer) -> Iterator[Serve]:
    """One server for the module, with a read and a write token; each test uses models of
    its own."""
    env = {READ_TOKEN_ENV: READ, WRITE_TOKEN_ENV: WRITE}
    with Serve(redis_server.url, "--namespace", NS, env=env, token=WRITE) as server:
        yield server


@pytest.fixture
def store(redis_server: RedisServer) -> Iterator[TelemetryStore]:
    """The library's own view of the server's namespace."""
    with TelemetryStore.from_url(redis_server.url, namespace=NS) as s:
        yield s


# -- POST /v1/events ----------------------------------------------------------------------------


def test_one_event_an_array_and_json_lines_are_recorded(api: Serve, store: TelemetryStore) -> None:
    one = api.post("/v1/events", ev("rec/a", 100))
    assert (one.status, one.json()) == (200, {"stored": 1, "duplicates": 0, "outside_window": 0})
    assert one.headers["content-type"] == "application/json"
    many = api.post("/v1/events", [ev("rec/a", 200), ev("rec/b", 50, False)])
    assert many.json() == {"stored": 2, "duplicates": 0, "outside_window": 0}
    lines = "\n".join(json.dumps(ev("rec/b", 70)) for _ in range(3)) + "\n\n"
    nd = api.post("/v1/events", lines, headers={"Content-Type": "application/x-ndjson"})
    assert nd.json() == {"stored": 3, "duplicates": 0, "outside_window": 0}
    a, b = store.model_performance("rec/a"), store.model_performance("rec/b")
    assert (a.successful_completions, a.avg_latency_ms) == (2, 150.0)
    assert (b.successful_completions, b.failed_completions) == (3, 1)


def test_the_references_serde_events_are_recorded_as_json_lines(
    api: Serve, store: TelemetryStore
) -> None:
    lines = (FIXTURES / "rust-completion-events.jsonl").read_text().splitlines()
    now = datetime.now(UTC).isoformat()
    fresh = [json.dumps({**json.loads(line), "completed_at": now}) for line in lines]
    answer = api.post("/v1/events", "\n".join(fresh), headers={"Content-Type": "application/jsonl"})
    assert answer.json()["stored"] == len(lines)
    models = {json.loads(line)["model"] for line in lines}
    assert set(store.known_models()) >= models


def test_a_duplicate_is_an_event_id_the_model_has_whatever_the_body_says(
    api: Serve, store: TelemetryStore
) -> None:
    first = api.post("/v1/events", ev("dup/a", 100, event_id="call-1"))
    assert first.json() == {"stored": 1, "duplicates": 0, "outside_window": 0}
    again = api.post("/v1/events", [ev("dup/a", 9999, False, event_id="call-1")])
    assert again.json() == {"stored": 0, "duplicates": 1, "outside_window": 0}
    other_model = api.post("/v1/events", ev("dup/b", 100, event_id="call-1"))
    assert other_model.json()["stored"] == 1  # one id is one event per model
    snap = store.model_performance("dup/a")
    assert (snap.successful_completions, snap.failed_completions, snap.avg_latency_ms) == (
        1,
        0,
        100.0,
    )


def test_an_event_older_than_the_window_is_answered_2xx_and_counted(
    api: Serve, store: TelemetryStore
) -> None:
    old = (datetime.now(UTC) - timedelta(hours=2)).isoformat()
    answer = api.post("/v1/events", [ev("old/a", completed_at=old), ev("old/a")])
    assert (answer.status, answer.json()) == (
        200,
        {"stored": 1, "duplicates": 0, "outside_window": 1},
    )
    assert store.model_performance("old/a").successful_completions == 1


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        ({"success": "yes"}, "event 2: success: Input should be a valid boolean"),
        ({"latency_ms": "5"}, "event 2: latency_ms: Input should be a valid integer"),
        ({"latency_ms": 5.0}, "event 2: latency_ms: Input should be a valid integer"),
        ({"tokens": {"input": 1.5}}, "event 2: tokens.input: Input should be a valid integer"),
        ({"cost_usd": "0.5"}, "event 2: cost_usd: Input should be a valid number"),
        ({"model": "a{b}"}, "event 2: model: model 'a{b}' contains '{' or '}'"),
        ({"completed_at": "yesterday"}, "event 2: completed_at: Input should be a valid datetime"),
    ],
)
def test_an_invalid_event_is_422_naming_its_index_and_field_and_writes_nothing(
    api: Serve,
    redis_server: RedisServer,
    bad: dict,
    says: str,  # type: ignore[type-arg]
) -> None:
    with redis_server.client() as r:
        before = dump_all(r)
        answer = api.post("/v1/events", [ev("bad/a"), ev("bad/b"), {**ev("bad/c"), **bad}])
        assert answer.status == 422
        assert answer.error.startswith(says), answer.error
        assert dump_all(r) == before  # nothing written: not even the two valid events


def test_an_invalid_line_of_json_lines_names_its_event_and_line(api: Serve) -> None:
    body = json.dumps(ev("bad/nd")) + "\n\n" + json.dumps({**ev("bad/nd"), "success": 1})
    answer = api.post("/v1/events", body, headers={"Content-Type": "application/x-ndjson"})
    assert (answer.status, answer.error) == (
        422,
        "event 1 (line 3): success: Input should be a valid boolean",
    )
    good = json.dumps(ev("bad/nd"))
    broken = api.post(
        "/v1/events", f"{good}\n{good}\n\n{{", headers={"Content-Type": "application/x-ndjson"}
    )
    assert broken.status == 400
    assert broken.error.startswith("event 2 (line 4): not JSON")


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"not json", "not a JSON object or array"),
        (b"[{", "the body is not JSON"),
        (b'{"model": ', "the body is not JSON"),
        (b"", "the body is empty"),
        (b"  42", "not a JSON object or array"),
    ],
)
def test_a_body_that_is_not_json_is_400_and_writes_nothing(
    api: Serve, redis_server: RedisServer, body: bytes, says: str
) -> None:
    with redis_server.client() as r:
        before = dump_all(r)
        answer = api.post("/v1/events", body, headers={"Content-Type": "application/json"})
        assert answer.status == 400
        assert says in answer.error
        assert dump_all(r) == before


def test_gzip_bodies_are_accepted_and_a_broken_or_other_encoding_is_refused(
    api: Serve, store: TelemetryStore
) -> None:
    body = gzipped(json.dumps([ev("gz/a", 10), ev("gz/a", 30)]).encode())
    answer = api.post("/v1/events", body, headers={"Content-Encoding": "gzip"})
    assert answer.json() == {"stored": 2, "duplicates": 0, "outside_window": 0}
    assert store.model_performance("gz/a").avg_latency_ms == 20.0
    broken = api.post("/v1/events", body[:-8], headers={"Content-Encoding": "gzip"})
    assert (broken.status, broken.error) == (400, "the gzip body ends before its gzip stream does")
    garbage = api.post("/v1/events", b"not gzip at all", headers={"Content-Encoding": "gzip"})
    assert garbage.status == 400
    assert garbage.error.startswith("the body is not valid gzip")
    brotli = api.post("/v1/events", b"{}", headers={"Content-Encoding": "br"})
    assert (brotli.status, brotli.error) == (
        415,
        "Content-Encoding 'br' is not supported; send gzip or no encoding",
    )
    assert store.model_performance("gz/a").successful_completions == 2


def test_413_past_16_mib_counted_after_decompression(api: Serve, redis_server: RedisServer) -> None:
    with redis_server.client() as r:
        before = dump_all(r)
        # 17 MiB of JSON that gzip makes about 17 KiB: refused for what it inflates to
        event = json.dumps(ev("big/a")).encode()
        padded = b"[" + event + b"," + b" " * (17 * MiB) + event + b"]"
        small = gzipped(padded)
        assert len(small) < MiB
        bomb = api.post("/v1/events", small, headers={"Content-Encoding": "gzip"})
        assert (bomb.status, bomb.error) == (
            413,
            f"the body is larger than the limit of {16 * MiB} bytes (after decompression)",
        )
        plain = api.post("/v1/events", padded)  # refused by its Content-Length
        assert plain.status == 413
        assert dump_all(r) == before
    just_under = b"[" + event + b"," + b" " * (16 * MiB - 2 * len(event) - 3) + event + b"]"
    assert len(just_under) == 16 * MiB
    fits = api.post("/v1/events", gzipped(just_under), headers={"Content-Encoding": "gzip"})
    assert fits.json()["stored"] == 2  # the limit itself passes


# -- reads --------------------------------------------------------------------------------------


def test_models_answer_the_snapshots_with_the_references_field_names(
    api: Serve, store: TelemetryStore
) -> None:
    api.post("/v1/events", [ev("vendor/read-a", 100), ev("vendor/read-a", 300, False)])
    listed = api.get("/v1/models").json()
    mine = [s for s in listed if s["model"] == "vendor/read-a"]
    assert mine == [store.model_performance("vendor/read-a").model_dump(mode="json")]
    assert set(mine[0]) >= SERDE_SNAPSHOT_FIELDS
    assert set(mine[0]) == set(ModelPerformanceSnapshot.model_fields)
    assert [s["model"] for s in listed] == sorted(s["model"] for s in listed)
    literal = api.get("/v1/models/vendor/read-a")
    encoded = api.get("/v1/models/vendor%2Fread-a")
    assert literal.status == encoded.status == 200
    assert literal.json() == encoded.json() == mine[0]
    exact = api.get("/v1/models/vendor/read-a?percentiles=true").json()
    assert exact["latency_p50_ms"] == 100.0  # exact, from the events (the sketch: within 0.78%)
    unknown = api.get("/v1/models/vendor/never-seen").json()
    assert (unknown["successful_completions"], unknown["last_event_at"]) == (0, None)


def test_a_session_answers_its_usage_per_model(api: Serve, store: TelemetryStore) -> None:
    api.post(
        "/v1/events",
        [ev("ses/a", session_id="issue/42"), ev("ses/b", session_id="issue/42", cost_usd=0.5)],
    )
    answer = api.get("/v1/sessions/issue/42").json()
    assert UsageSnapshot.model_validate(answer).by_model.keys() == {"ses/a", "ses/b"}
    assert answer["totals"] == {
        "input_tokens": 400,
        "output_tokens": 200,
        "total_tokens": 600,
        "cost_usd": 0.51,
        "message_count": 2,
    }
    assert answer["by_model"] == store.session_usage("issue/42").model_dump(mode="json")["by_model"]


def test_select_answers_the_model_and_every_candidates_reasons(api: Serve) -> None:
    api.post("/v1/events", [ev("sel/fast", 100), ev("sel/slow", 900), ev("sel/capped", 10)])
    api.request("PUT", "/v1/limits/sel/capped", {"ttl_secs": 600})
    ask = {"candidates": ["sel/slow", "sel/fast", "sel/capped", "sel/new"]}
    answer = api.post("/v1/select", ask, token=READ)  # a read: the read token may select
    assert answer.status == 200
    data = answer.json()
    assert data["model"] == "sel/fast"
    by_model = {c["model"]: c for c in data["ranking"]}
    assert [c["model"] for c in data["ranking"]] == [
        "sel/fast",
        "sel/slow",
        "sel/capped",
        "sel/new",
    ]
    assert by_model["sel/fast"]["rank"] == 1
    assert by_model["sel/fast"]["explanation"].startswith("#1 by fastest")
    capped = by_model["sel/capped"]
    assert (capped["usable"], capped["reason"]) == (False, "subscription_limited")
    assert capped["explanation"].startswith("subscription-limited until")
    back = datetime.fromisoformat(capped["available_at"])
    assert timedelta(seconds=590) < back - datetime.now(UTC) <= timedelta(seconds=600)
    assert by_model["sel/new"]["reason"] == "unknown"
    reliable = api.post("/v1/select", {**ask, "strategy": "most_reliable"}).json()
    assert reliable["ranking"][0]["explanation"].startswith("#1 by most_reliable")
    weighted = {**ask, "strategy": "weighted", "weights": {"latency": 0, "cost": 0}}
    assert api.post("/v1/select", weighted).json()["ranking"][0]["score"] == 1.0
    ten_minutes_ago = (datetime.now(UTC) - timedelta(minutes=10)).isoformat()
    api.post("/v1/events", ev("sel/quiet", 1, completed_at=ten_minutes_ago))
    fresh = {"candidates": ["sel/quiet", "sel/slow"], "max_staleness_secs": 60}
    answer = api.post("/v1/select", fresh).json()
    assert answer["model"] == "sel/slow"  # the faster one's data is stale: left out
    assert answer["ranking"][1]["reason"] == "stale"
    kept = api.post("/v1/select", {**fresh, "stale_policy": "keep"}).json()
    assert kept["model"] == "sel/quiet"


def test_select_is_409_naming_why_when_no_candidate_is_usable(api: Serve) -> None:
    api.post("/v1/events", [ev("none/a"), ev("none/b")])
    for model in ("none/a", "none/b"):
        api.request("PUT", f"/v1/limits/{model}", {"ttl_secs": 60})
    answer = api.post("/v1/select", {"candidates": ["none/a", "none/b"]})
    assert answer.status == 409
    assert answer.error.startswith("no candidate model is usable (none/a: subscription-limited")
    assert [c["reason"] for c in answer.json()["ranking"]] == ["subscription_limited"] * 2


@pytest.mark.parametrize(
    ("ask", "says"),
    [
        ({"candidates": ["a"], "strategy": "fastestt"}, "strategy: Input should be 'fastest'"),
        ({"candidates": []}, "candidates: List should have at least 1 item"),
        ({"candidates": ["a"], "strategies": "fastest"}, "strategies: Extra inputs are not"),
        ({"candidates": ["a"], "exploration": 2}, "exploration: Input should be less than"),
        ({"candidates": "a"}, "candidates: Input should be a valid array"),
    ],
)
def test_a_bad_selection_is_422_naming_the_field(
    api: Serve,
    ask: dict,
    says: str,  # type: ignore[type-arg]
) -> None:
    answer = api.post("/v1/select", ask)
    assert answer.status == 422
    assert answer.error.startswith(says), answer.error


def test_the_summary_exports_and_imports_in_the_references_shape(
    api: Serve, store: TelemetryStore
) -> None:
    api.post("/v1/events", [ev("sum/a")])
    exported = api.get("/v1/summary").json()
    assert set(exported) == {"id", "model_performances", "window_secs", "exported_at"}
    assert exported["id"] == "telemetry_summary"
    assert "sum/a" in [p["model"] for p in exported["model_performances"]]
    summary = json.loads((FIXTURES / "rust-telemetry-summary.json").read_text())
    summary["exported_at"] = datetime.now(UTC).isoformat()
    for p in summary["model_performances"]:
        p["model"] = "sum-import/" + p["model"]
        if p["last_event_at"] is not None:
            p["last_event_at"] = summary["exported_at"]
    first = api.post("/v1/summary", summary)
    assert first.status == 200
    assert first.json()["stored"] > 0
    again = api.post("/v1/summary", summary)  # the same summary again adds nothing
    assert again.json() == {
        "stored": 0,
        "duplicates": first.json()["stored"],
        "outside_window": first.json()["outside_window"],
    }
    wrong = api.post("/v1/summary", {**summary, "window_secs": "3600"})
    assert (wrong.status, wrong.error) == (422, "window_secs: Input should be a valid integer")


# -- limits ---------------------------------------------------------------------------------------


def test_limits_are_set_by_ttl_or_until_with_a_reason_and_lifted(
    api: Serve, store: TelemetryStore
) -> None:
    by_ttl = api.request("PUT", "/v1/limits/lim/a", {"ttl_secs": 120, "reason": "429 from vendor"})
    assert by_ttl.status == 200
    snap = by_ttl.json()
    assert snap["model"] == "lim/a"
    assert snap["subscription_limit_reached"] is True
    left = datetime.fromisoformat(snap["subscription_limit_expires_at"]) - datetime.now(UTC)
    assert timedelta(seconds=110) < left <= timedelta(seconds=120)
    until = (datetime.now(UTC) + timedelta(hours=2)).replace(microsecond=0)
    by_until = api.request("PUT", "/v1/limits/lim%2Fb", {"until": until.isoformat()})
    assert datetime.fromisoformat(by_until.json()["subscription_limit_expires_at"]) == until
    default = api.request("PUT", "/v1/limits/lim/c")  # no body: the default TTL
    assert default.json()["subscription_limit_reached"] is True
    reasons = {limit.model: limit.reason for limit in store.dump().limits}
    assert (reasons["lim/a"], reasons["lim/b"], reasons["lim/c"]) == (
        "429 from vendor",
        "manual",
        "manual",
    )
    assert api.request("DELETE", "/v1/limits/lim/a").json() == {"lifted": True}
    assert api.request("DELETE", "/v1/limits/lim/a").json() == {"lifted": False}
    assert not store.model_performance("lim/a").is_subscription_limited()


@pytest.mark.parametrize(
    ("ask", "says"),
    [
        ({"ttl_secs": 0}, "ttl_secs must be at least 1 second"),
        ({"ttl_secs": 5, "until": "2030-01-01T00:00:00Z"}, "give ttl_secs or until, not both"),
        ({"ttl_secs": "60"}, "ttl_secs: Input should be a valid integer"),
        ({"until": "soon"}, "until: Input should be a valid datetime"),
        ({"ttl": 60}, "ttl: Extra inputs are not permitted"),
    ],
)
def test_a_bad_limit_is_422_and_sets_nothing(
    api: Serve,
    store: TelemetryStore,
    ask: dict,
    says: str,  # type: ignore[type-arg]
) -> None:
    answer = api.request("PUT", "/v1/limits/lim/bad", ask)
    assert answer.status == 422
    assert answer.error.startswith(says), answer.error
    assert not store.model_performance("lim/bad").subscription_limit_reached


# -- providers ------------------------------------------------------------------------------


def test_providers_are_read_and_budgets_and_blocks_set(api: Serve) -> None:
    api.post("/v1/events", [ev("httpprov/a", cost_usd=0.5), ev("httpprov/b", cost_usd=0.25)])
    answer = api.request("PUT", "/v1/providers/httpprov/budget", {"hour_usd": 0.8})
    assert answer.status == 200
    state = answer.json()
    assert state["models"] == ["httpprov/a", "httpprov/b"]
    assert state["budget"]["hour_spend_usd"] == 0.75
    assert state["budget"]["verdict"] == "near_exhaustion"
    listed = {p["provider"]: p for p in api.get("/v1/providers", token=READ).json()}
    assert listed["httpprov"]["budget"]["hour_cap_usd"] == 0.8
    assert api.get("/v1/providers/httpprov", token=READ).json() == listed["httpprov"]
    blocked = api.request("PUT", "/v1/providers/httpprov/block", {"reason": "resets in 30m"})
    assert blocked.json()["blocked_until"] is not None
    chosen = api.post("/v1/select", {"candidates": ["httpprov/a", "httpprov/b"]}, token=READ)
    assert chosen.status == 409
    assert "provider httpprov blocked" in chosen.error
    assert api.request("DELETE", "/v1/providers/httpprov/block").json()["blocked_until"] is None
    assert (
        api.request("PUT", "/v1/providers/httpprov/budget", {"hour_usd": 1}, token=READ).status
        == 403
    )


@pytest.mark.parametrize(
    ("path", "ask", "says"),
    [
        ("/v1/providers/p/budget", {"hour_usd": -1}, "hour_usd: Input should be greater than"),
        ("/v1/providers/p/budget", {"hour": 1}, "hour: Extra inputs are not permitted"),
        ("/v1/providers/p/budget", {"day_usd": "1"}, "day_usd: Input should be a valid number"),
        ("/v1/providers/p/block", {"until": "soon"}, "until: Input should be a valid datetime"),
    ],
)
def test_a_bad_provider_body_is_422(api: Serve, path: str, ask: dict, says: str) -> None:  # type: ignore[type-arg]
    answer = api.request("PUT", path, ask)
    assert answer.status == 422
    assert answer.error.startswith(says), answer.error


# -- health, documents, unknown paths -----------------------------------------------------------


def test_health_and_readiness(api: Serve) -> None:
    assert api.get("/healthz")[::2] == (200, b"ok\n")
    assert api.get("/readyz")[::2] == (200, b"ok\n")


def test_unknown_paths_and_methods_are_json_errors(api: Serve) -> None:
    missing = api.get("/v1/nothing")
    assert (missing.status, missing.error) == (
        404,
        "no such path: /v1/nothing (the API's paths are in /openapi.json)",
    )
    wrong = api.request("PATCH", "/v1/events", b"{}")
    assert (wrong.status, wrong.error) == (405, "PATCH is not allowed on /v1/events")
    assert "POST" in wrong.headers["allow"]
    bad_query = api.get("/v1/models?percentiles=perhaps")
    assert bad_query.status == 422
    assert bad_query.error.startswith("query.percentiles: Input should be a valid boolean")


def test_the_openapi_document_is_3_1_and_its_copy_in_docs_is_equal(api: Serve) -> None:
    served = api.get("/openapi.json", token=None)  # the contract is open to read
    assert served.status == 200
    document = served.json()
    assert document["openapi"].startswith("3.1")
    copy = json.loads((ROOT / "docs" / "openapi.json").read_text())
    assert document == copy, (
        "docs/openapi.json differs from what the server serves; regenerate it with "
        "`python -c 'import json; from redis_telemetry.server import openapi_document; "
        "print(json.dumps(openapi_document(), indent=2))' > docs/openapi.json`"
    )
    assert set(document["paths"]) == {
        "/v1/events",
        "/v1/models",
        "/v1/models/{model}",
        "/v1/select",
        "/v1/sessions/{session_id}",
        "/v1/summary",
        "/v1/limits/{model}",
        "/v1/providers",
        "/v1/providers/{provider}",
        "/v1/providers/{provider}/budget",
        "/v1/providers/{provider}/block",
        "/healthz",
        "/readyz",
        "/v1/logs",  # the OTLP receiver (tests/test_otlp.py)
        "/v1/traces",
        "/v1/metrics",
    }
    schemas = document["components"]["schemas"]
    assert set(schemas["CompletionEvent"]["properties"]) >= SERDE_EVENT_FIELDS
    assert schemas["CompletionEvent"]["properties"]["success"] == {
        "title": "Success",
        "type": "boolean",
    }


def test_metrics_are_served_as_before(api: Serve) -> None:
    api.post("/v1/events", [ev("met/a")])
    answer = api.get("/metrics", token=READ)
    assert answer.status == 200
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert (
        f'redis_telemetry_window_completions{{model="met/a",outcome="ok",store_namespace="{NS}"}}'
        in answer.body.decode()
    )
    assert "redis_telemetry_up" in api.get("/", token=READ).body.decode()
    packed = api.get("/metrics", token=READ, headers={"Accept-Encoding": "gzip"})
    assert packed.headers["content-encoding"] == "gzip"  # as Prometheus asks for it
    assert "redis_telemetry_up" in gzip.decompress(packed.body).decode()


# -- tokens ----------------------------------------------------------------------------------------


def test_tokens_guard_reads_and_writes(api: Serve) -> None:
    event = ev("tok/a")
    for path in ("/v1/models", "/v1/summary", "/metrics", "/healthz", "/readyz"):
        anonymous = api.get(path, token=None)
        assert anonymous.status == 401, path
        assert anonymous.headers["www-authenticate"] == "Bearer"
        assert anonymous.error == "a bearer token is required: send 'Authorization: Bearer <token>'"
        assert api.get(path, token="not-the-token").error == "the bearer token is not valid"
        assert api.get(path, token=READ).status == 200
        assert api.get(path, token=WRITE).status == 200  # the writer can read
    basic = api.get("/v1/models", token=None, headers={"Authorization": f"Basic {READ}"})
    assert basic.status == 401
    assert api.post("/v1/events", event, token=None).status == 401
    by_reader = api.post("/v1/events", event, token=READ)
    assert (by_reader.status, by_reader.error) == (
        403,
        "the read token may not write; send the write token",
    )
    for method, path in (("PUT", "/v1/limits/tok/a"), ("DELETE", "/v1/limits/tok/a")):
        assert api.request(method, path, token=READ).status == 403
    assert api.post("/v1/summary", {}, token=READ).status == 403
    assert api.post("/v1/select", {"candidates": ["tok/a"]}, token=READ).status == 200
    assert api.post("/v1/events", event, token=WRITE).json()["stored"] == 1
    assert "is open" not in api.stderr  # no warning: both tokens are set


def test_a_read_token_alone_takes_no_writes_and_files_win_over_the_environment(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    token_file = tmp_path / "read.token"
    token_file.write_text("from-the-file\n")
    env = {READ_TOKEN_ENV: "from-the-environment"}
    args = ("--namespace", NS, "--read-token-file", str(token_file), "--open-metrics")
    with Serve(redis_server.url, *args, env=env, token="from-the-file") as server:
        assert server.get("/healthz", token=None).status == 200  # --open-metrics
        assert server.get("/metrics", token=None).status == 200
        assert server.get("/v1/models", token=None).status == 401
        assert server.get("/v1/models", token="from-the-environment").status == 401
        assert server.get("/v1/models").status == 200
        refused = server.post("/v1/events", ev("tok/ro"))
        assert (refused.status, refused.error) == (
            403,
            "this server takes no writes: it has a read token and no write token",
        )
        assert "reads through the HTTP API need no token" not in server.stderr


def test_an_open_server_warns_once_and_lets_anyone_read_and_write(
    redis_server: RedisServer,
) -> None:
    with Serve(redis_server.url, "--namespace", NS) as server:
        assert server.post("/v1/events", ev("open/a")).json()["stored"] == 1
        assert server.get("/v1/models/open/a").status == 200
        lines = [line for line in server.stderr.splitlines() if "WARNING" in line]
        assert len(lines) == 1, server.stderr
        assert lines[0].endswith(
            "the HTTP API is open: anyone who can reach it may read and write "
            f"(set {READ_TOKEN_ENV} and {WRITE_TOKEN_ENV})"
        )
        assert f"on http://127.0.0.1:{server.port} " in server.stdout  # loopback by default
        with pytest.raises(ConnectionRefusedError):  # 127.0.0.1 only, not every address
            socket.create_connection(("127.0.0.2", server.port), timeout=5).close()


def test_a_write_token_alone_leaves_reads_open_and_says_so(redis_server: RedisServer) -> None:
    env = {WRITE_TOKEN_ENV: WRITE}
    with Serve(redis_server.url, "--namespace", NS, env=env) as server:
        assert server.get("/v1/models").status == 200
        assert server.post("/v1/events", ev("wo/a")).status == 401
        assert server.post("/v1/events", ev("wo/a"), token=WRITE).status == 200
        assert "reads through the HTTP API need no token (no read token is set)" in server.stderr


def test_a_small_body_limit_is_an_option(redis_server: RedisServer) -> None:
    with Serve(redis_server.url, "--namespace", NS, "--max-body-bytes", "400") as server:
        event = json.dumps(ev("lim/small")).encode()
        assert len(event) < 400
        assert server.post("/v1/events", event).status == 200
        padded = event + b" " * (401 - len(event))
        answer = server.post("/v1/events", padded)
        assert (answer.status, answer.error) == (
            413,
            "the body is larger than the limit of 400 bytes (after decompression)",
        )
        chunked = server.connection()  # no Content-Length: counted as the chunks come
        chunked.putrequest("POST", "/v1/events")
        chunked.putheader("Transfer-Encoding", "chunked")
        chunked.endheaders()
        for piece in (padded[:300], padded[300:]):
            chunked.send(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        chunked.send(b"0\r\n\r\n")
        assert chunked.getresponse().status == 413
        chunked.close()
        declared = server.connection(timeout=10)  # a Content-Length past the limit: at once,
        declared.putrequest("POST", "/v1/events")  # without waiting for a byte of the body
        declared.putheader("Content-Length", str(10**9))
        declared.endheaders()
        assert declared.getresponse().status == 413
        declared.close()


# -- Redis down, hung, or refusing --------------------------------------------------------------


def test_redis_down_is_503_with_retry_after_and_the_process_stays_healthy() -> None:
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    with Serve(nowhere) as server:
        assert server.get("/healthz").status == 200  # the process
        for answer in (
            server.get("/readyz"),
            server.get("/v1/models"),
            server.post("/v1/events", ev("down/a")),
            server.post("/v1/select", {"candidates": ["down/a"]}),
        ):
            assert answer.status == 503
            assert answer.headers["retry-after"] == "1"
            assert answer.error.startswith("Redis is unreachable")
        assert "Traceback" not in server.stderr


def test_a_hung_redis_is_503_within_the_stores_deadline_then_at_once() -> None:
    hung = HungListener()  # accepts every connection, never answers
    try:
        with Serve(hung.url, "--timeout", "1") as server:
            start = time.monotonic()
            first = server.post("/v1/events", ev("hung/a"))
            assert time.monotonic() - start < 10  # generous: proves "does not hang"
            assert (first.status, first.headers["retry-after"]) == (503, "1")
            assert first.error.startswith("Redis is unreachable")
            assert "deadline 1s" in first.error  # given up by the store's deadline
            seen = hung.accepted
            again = server.get("/v1/models")  # the breaker: at once, no new connection
            assert again.status == 503
            assert "failing at once" in again.error
            assert hung.accepted == seen
            assert server.get("/healthz").status == 200  # the process still answers
    finally:
        hung.close()


def test_a_redis_user_that_may_not_write_is_a_500_naming_the_permission(
    tmp_path: Path,
) -> None:
    acl = tmp_path / "users.acl"
    acl.write_text((ROOT / "deploy" / "users.acl").read_text())
    redis = RedisServer("--aclfile", str(acl), auth=("telemetry-admin", "change-me-admin"))
    redis.start()
    try:
        reader = f"redis://telemetry-reader:change-me-reader@127.0.0.1:{redis.port}/0"
        with Serve(reader) as server:
            assert server.get("/v1/models").json() == []  # the reader user reads
            answer = server.post("/v1/events", ev("acl/a"))
            assert answer.status == 500
            assert "permission denied" in answer.error
    finally:
        redis.cleanup()


def test_tls_options_serve_https(redis_server: RedisServer, tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    context = ssl.create_default_context()
    ca.configure_trust(context)
    args = ("--tls-cert", str(tmp_path / "cert.pem"), "--tls-key", str(tmp_path / "key.pem"))
    with Serve(redis_server.url, *args, scheme="https", ssl_context=context) as server:
        assert server.get("/readyz").status == 200
        assert f"on https://127.0.0.1:{server.port} " in server.stdout


def serve_once(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``serve`` on Redis where nothing listens, for what it says before serving."""
    return subprocess.run(
        [sys.executable, "-m", "redis_telemetry", "--url", NOWHERE, "serve", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--tls-cert", "missing.pem", "--tls-key", "missing.pem"], "cannot use --tls-cert"),
        (["--tls-cert", "cert.pem"], "--tls-cert and --tls-key go together"),
        (["--read-token-file", "missing.token"], "cannot read the token file missing.token"),
        (["--write-token-file", "empty.token"], "the token file empty.token is empty"),
    ],
)
def test_bad_server_options_are_one_line(args: list[str], says: str, tmp_path: Path) -> None:
    (tmp_path / "empty.token").write_text("\n")
    result = serve_once("--port", str(free_port()), *args, cwd=tmp_path)
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()[-1:]
    assert says in line, result.stderr
    assert "Traceback" not in result.stderr


def test_a_port_in_use_is_one_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = serve_once("--port", str(port))
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr.strip().splitlines()[-1]


def test_the_server_follows_a_window_changed_in_redis(
    redis_server: RedisServer, store: TelemetryStore
) -> None:
    namespace = "http-window"
    with Serve(redis_server.url, "--namespace", namespace) as server:
        assert server.post("/v1/events", ev("win/a")).json()["stored"] == 1
        with TelemetryStore.from_url(redis_server.url, namespace=namespace) as other:
            other.set_window(7200)
        answer = server.post("/v1/events", ev("win/a"))
        assert answer.json()["stored"] == 1  # refused once by record.lua, then followed
        assert server.get("/v1/models/win/a").json()["window_secs"] == 7200


# -- the package --------------------------------------------------------------------------------


def test_importing_the_package_or_the_cli_does_not_import_the_server() -> None:
    probe = (
        "import sys, redis_telemetry, redis_telemetry.cli; "
        "print([m for m in sys.modules if m.split('.')[0] in ('fastapi', 'starlette', 'uvicorn')"
        " or m.startswith('redis_telemetry.server')])"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_serve_help_names_the_token_variables() -> None:
    text = subprocess.run(
        [sys.executable, "-m", "redis_telemetry", "serve", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f"${READ_TOKEN_ENV}" in text
    assert f"${WRITE_TOKEN_ENV}" in text


def test_serve_without_the_server_extra_says_what_to_install() -> None:
    probe = (
        "import sys; sys.modules['fastapi'] = None; "
        "from redis_telemetry.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    result = subprocess.run(
        [sys.executable, "-c", probe, "--url", nowhere, "serve"], capture_output=True, text=True
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "redis-telemetry: serve needs the server extra, and fastapi is not installed: "
        "pip install 'redis-telemetry[server]'"
    ]
