"""The OTLP/HTTP receiver of `redis-telemetry serve`, through a real server process on a real
redis-server: the OpenTelemetry SDK's own OTLP/HTTP exporters (logs and spans), hand-built
JSON bodies shaped like Claude Code's (fixtures/otlp), and every status the receiver gives."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from opentelemetry._logs import LogRecord as ApiLogRecord
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import (
    InMemoryLogRecordExporter,
    LogRecordExportResult,
    SimpleLogRecordProcessor,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from redis_telemetry import TelemetryStore
from redis_telemetry.core.tokens import READ_TOKEN_ENV, WRITE_TOKEN_ENV
from redis_telemetry.ingest import IngestReport, parse_lines

from .api import Answer, Serve, gzipped
from .servers import HungListener, RedisClusterServers, RedisServer, free_port

FIXTURES = Path(__file__).parent / "fixtures" / "otlp"
NS = "otlp-api"
WRITE, READ = "otlp-write-secret", "otlp-read-secret"
JSON = {"Content-Type": "application/json"}
PROTOBUF = {"Content-Type": "application/x-protobuf"}


@pytest.fixture(scope="module")
def api(redis_server: RedisServer) -> Iterator[Serve]:
    env = {WRITE_TOKEN_ENV: WRITE, READ_TOKEN_ENV: READ}
    with Serve(redis_server.url, "--namespace", NS, env=env, token=WRITE) as server:
        yield server


@pytest.fixture
def store(redis_server: RedisServer) -> Iterator[TelemetryStore]:
    with TelemetryStore.from_url(redis_server.url, namespace=NS) as s:
        yield s


def now_ns() -> int:
    return time.time_ns()


def claude_body(version: str, model_suffix: str, session: str) -> dict[str, Any]:
    """A fixture's body, its records stamped now, its models and session made the test's own."""
    body = json.loads((FIXTURES / f"claude-code-{version}-logs.json").read_text())
    stamp = str(now_ns())
    for res in body["resourceLogs"]:
        for scope in res["scopeLogs"]:
            for record in scope["logRecords"]:
                record["timeUnixNano"] = record["observedTimeUnixNano"] = stamp
                for kv in record["attributes"]:
                    value = kv["value"]
                    if kv["key"] == "model":
                        value["stringValue"] += model_suffix
                    elif kv["key"] in ("session.id", "request_id"):
                        value["stringValue"] += session
    return body


def claude_records(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for res in body["resourceLogs"] for sc in res["scopeLogs"] for r in sc["logRecords"]]


# -- the SDK's own exporters ----------------------------------------------------------------------


def finished_spans(build: Any) -> Sequence[ReadableSpan]:
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "an-llm-app"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    build(provider.get_tracer("openllmetry-like"))
    provider.shutdown()
    return memory.get_finished_spans()


def chat_spans(tracer: Any, model: str, n: int = 3) -> None:
    for i in range(n):
        with tracer.start_as_current_span(f"chat {model}", kind=SpanKind.CLIENT) as span:
            span.set_attribute("gen_ai.operation.name", "chat")
            span.set_attribute("gen_ai.provider.name", "openai")
            span.set_attribute("gen_ai.request.model", model)
            span.set_attribute("gen_ai.response.model", model + "-2025")
            span.set_attribute("gen_ai.conversation.id", "conv-1")
            span.set_attribute("gen_ai.usage.input_tokens", 1000)
            span.set_attribute("gen_ai.usage.cache_read.input_tokens", 600)
            span.set_attribute("gen_ai.usage.output_tokens", 200 + i)
            span.set_attribute("gen_ai.usage.reasoning.output_tokens", 50)
            span.set_attribute("gen_ai.input.messages", '[{"role":"user","content":"secret"}]')
    with tracer.start_as_current_span("GET /health", kind=SpanKind.CLIENT):
        pass  # no model: not an inference span


@pytest.mark.parametrize("compression", [Compression.NoCompression, Compression.Gzip])
def test_the_sdks_span_exporter_records_each_chat_span_once(
    api: Serve, store: TelemetryStore, compression: Compression
) -> None:
    model = f"sdk/spans-{compression.value}"
    spans = finished_spans(lambda t: chat_spans(t, model))
    exporter = OTLPSpanExporter(
        endpoint=f"{api.base}/v1/traces",
        headers={"Authorization": f"Bearer {WRITE}"},
        compression=compression,
    )
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    assert exporter.export(spans) is SpanExportResult.SUCCESS  # redelivered: stored once
    exporter.shutdown()
    snap = store.model_performance(model + "-2025")  # the response model
    assert (snap.successful_completions, snap.failed_completions) == (3, 0)
    assert snap.latency_samples == 3
    assert snap.tokens.input == 3 * 400  # uncached: 1000 - 600 read
    assert snap.tokens.cache_read == 3 * 600
    assert snap.tokens.output == 150 + 151 + 152  # output - reasoning
    assert snap.tokens.reasoning == 150
    assert snap.tokens.total == 3 * 1000 + 200 + 201 + 202  # input + output, once each
    usage = store.session_usage("conv-1")
    assert usage.by_model[model + "-2025"].message_count == 3
    assert store.model_performance(model).successful_completions == 0


def test_the_sdks_log_exporter_records_claude_codes_events(
    api: Serve, store: TelemetryStore
) -> None:
    memory = InMemoryLogRecordExporter()
    provider = LoggerProvider(resource=Resource.create({"service.name": "claude-code"}))
    provider.add_log_record_processor(SimpleLogRecordProcessor(memory))
    logger = provider.get_logger("com.anthropic.claude_code.events")
    model = "sdk/claude-logs"
    for seq, (name, attrs) in enumerate(
        [
            ("user_prompt", {"prompt": "secret", "prompt_length": 6}),
            (
                "api_request",
                {
                    "model": model,
                    "request_id": "req_sdk_1",
                    "duration_ms": 1500,
                    "cost_usd": 0.25,
                    "input_tokens": 10,
                    "output_tokens": 90,
                    "cache_read_tokens": 1000,
                    "cache_creation_tokens": 100,
                },
            ),
            ("api_error", {"model": model, "error": "Overloaded", "status_code": 529}),
        ],
        1,
    ):
        logger.emit(
            ApiLogRecord(
                timestamp=now_ns(),
                body=f"claude_code.{name}",
                event_name=f"claude_code.{name}",
                attributes={
                    "event.name": name,
                    "session.id": "sdk-session",
                    "event.sequence": seq,
                    "user.email": "someone@example.com",
                    **attrs,
                },
            )
        )
    provider.shutdown()
    exporter = OTLPLogExporter(
        endpoint=f"{api.base}/v1/logs", headers={"Authorization": f"Bearer {WRITE}"}
    )
    records = memory.get_finished_logs()
    assert exporter.export(records) is LogRecordExportResult.SUCCESS
    assert exporter.export(records) is LogRecordExportResult.SUCCESS
    exporter.shutdown()
    snap = store.model_performance(model)
    assert (snap.successful_completions, snap.failed_completions) == (1, 1)
    assert snap.avg_latency_ms == 1500.0
    assert snap.total_cost_usd == pytest.approx(0.25)
    assert snap.tokens.model_dump() == {
        "total": 1200,
        "input": 10,
        "output": 90,
        "reasoning": 0,
        "cache_read": 1000,
        "cache_write": 100,
    }
    assert not snap.subscription_limit_reached  # a 529 blocks nothing


def test_the_exporters_environment_is_all_it_takes(
    api: Serve, store: TelemetryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OTEL_EXPORTER_OTLP_ENDPOINT=http://host:port and the token in OTEL_EXPORTER_OTLP_HEADERS,
    as docs/otlp.md sets them for Claude Code: the exporter finds /v1/traces by itself."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", api.base)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", f"Authorization=Bearer {WRITE}")
    spans = finished_spans(lambda t: chat_spans(t, "sdk/by-env", n=2))
    exporter = OTLPSpanExporter()
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    exporter.shutdown()
    assert store.model_performance("sdk/by-env-2025").successful_completions == 2


# -- Claude Code's JSON bodies --------------------------------------------------------------------


@pytest.mark.parametrize("version", ["2.1.100", "2.1.130"])
def test_claude_codes_json_logs_before_and_after_2_1_122_map_alike(
    api: Serve, store: TelemetryStore, version: str
) -> None:
    """Before 2.1.122 every number is a string; since, numbers are numbers."""
    suffix = f"@{version}"
    body = claude_body(version, suffix, version)
    answer = api.post("/v1/logs", body, headers=JSON)
    assert (answer.status, answer.json()) == (200, {})
    assert answer.headers["content-type"] == "application/json"
    sonnet = store.model_performance("claude-sonnet-4-5-20250929" + suffix)
    assert (sonnet.successful_completions, sonnet.failed_completions) == (1, 2)
    assert sonnet.avg_latency_ms == 2400.0
    assert sonnet.total_cost_usd == pytest.approx(0.0123)
    assert sonnet.tokens.model_dump() == {
        "total": 21862,
        "input": 12,
        "output": 350,
        "reasoning": 0,
        "cache_read": 20000,
        "cache_write": 1500,
    }
    # the 429 blocks for the short cooldown from the call's time (read well within it)
    stamp = int(claude_records(body)[0]["timeUnixNano"]) / 1e9
    assert sonnet.subscription_limit_reached
    assert sonnet.subscription_limit_expires_at is not None
    assert sonnet.subscription_limit_expires_at.timestamp() == pytest.approx(stamp + 5, abs=0.002)
    haiku = store.model_performance("claude-haiku-4-5-20251001" + suffix)
    assert (haiku.successful_completions, haiku.tokens.input) == (1, 300)
    usage = store.session_usage("S" + version)
    assert sum(m.message_count for m in usage.by_model.values()) == 4


def test_a_redelivered_429_backs_its_provider_off_once(api: Serve, store: TelemetryStore) -> None:
    """The fixture's session holds a 429 `api_error`: the server feeds it to the provider's
    backoff once, however often the exporter sends the batch again."""
    body = claude_body("2.1.130", "-fed", "fed")
    for _ in range(3):
        assert api.post("/v1/logs", body, headers=JSON).status == 200
    provider = store.provider_of("claude-sonnet-4-5-20250929-fed")
    status = store.provider_status(provider)
    assert (status.backoff_level, status.blocked_until is not None) == (1, True)


def stored_values(r: Any, pattern: str) -> list[bytes]:
    """Every key's name and value (members, fields), as Redis holds them (DUMP may compress)."""
    out: list[bytes] = []
    for key in r.scan_iter(pattern):
        out.append(key)
        kind = r.type(key)
        if kind == b"zset":
            out += r.zrange(key, 0, -1)
        elif kind == b"hash":
            out += [b for pair in r.hgetall(key).items() for b in pair]
        elif kind == b"string":
            out.append(r.get(key))
        elif kind == b"set":
            out += list(r.smembers(key))
        elif kind == b"list":
            out += r.lrange(key, 0, -1)
    return out


def test_nothing_of_a_prompt_an_email_or_a_user_id_is_stored(
    api: Serve, redis_server: RedisServer
) -> None:
    api.post("/v1/logs", claude_body("2.1.130", "@privacy", "privacy"), headers=JSON)
    with redis_server.client() as r:
        stored = b"\n".join(stored_values(r, f"{NS}:*"))
    assert b"req_011CUPaprivacy" in stored  # the event ids: what was read is there
    assert b"Sprivacy" in stored  # the session
    for secret in (b"someone@example.com", b"a3f1c0ffee", b"acc-1", b"please fix", b"org-1"):
        assert secret not in stored


def test_gzip_json_and_protobuf_bodies_are_read(api: Serve, store: TelemetryStore) -> None:
    body = json.dumps(claude_body("2.1.130", "@gz", "gz")).encode()
    gz = api.post("/v1/logs", gzipped(body), headers={**JSON, "Content-Encoding": "gzip"})
    assert (gz.status, gz.json()) == (200, {})
    assert store.model_performance("claude-haiku-4-5-20251001@gz").successful_completions == 1


def test_redelivery_stores_nothing_twice(api: Serve, store: TelemetryStore) -> None:
    body = claude_body("2.1.130", "@again", "again")
    for _ in range(3):
        assert api.post("/v1/logs", body, headers=JSON).status == 200
    sonnet = store.model_performance("claude-sonnet-4-5-20250929@again")
    assert (sonnet.successful_completions, sonnet.failed_completions) == (1, 2)


# -- partial success ------------------------------------------------------------------------------


def span_json(model: str | None, span_id: str, **extra: Any) -> dict[str, Any]:
    attrs = [{"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}}]
    if model:
        attrs.append({"key": "gen_ai.request.model", "value": {"stringValue": model}})
    end = now_ns()
    return {
        "traceId": "5b8efff798038103d269b633813fc60c",
        "spanId": span_id,
        "name": "chat",
        "kind": 3,
        "startTimeUnixNano": str(end - 250_000_000),
        "endTimeUnixNano": end,  # a number: int64 values come either way
        "attributes": attrs,
        "status": {},
        "someFieldFromTheFuture": {"ignored": True},
        **extra,
    }


def traces(*spans: dict[str, Any]) -> dict[str, Any]:
    return {"resourceSpans": [{"resource": {}, "scopeSpans": [{"spans": list(spans)}]}]}


def test_records_that_cannot_be_mapped_are_a_partial_success(
    api: Serve, store: TelemetryStore
) -> None:
    body = traces(
        span_json("partial/a", "eee19b7ec3c1b174"),
        span_json(None, "eee19b7ec3c1b175"),  # chat without a model
        span_json("partial/a", "7u7MWurpsWE="),  # a base64 id, as json_format writes them
    )
    answer = api.post("/v1/traces", body, headers=JSON)
    assert answer.status == 200
    partial = answer.json()["partialSuccess"]
    assert partial["rejectedSpans"] == "2"
    assert "span 1: the chat span 'chat' names no model" in partial["errorMessage"]
    assert "span 2: its traceId or spanId is not hex" in partial["errorMessage"]
    snap = store.model_performance("partial/a")
    assert (snap.successful_completions, snap.avg_latency_ms) == (1, 250.0)


def test_a_partial_success_in_protobuf(api: Serve) -> None:
    request = trace_service_pb2.ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add()
    span.trace_id, span.span_id, span.kind = b"\x01" * 16, b"\x02" * 8, 3
    span.attributes.add(key="gen_ai.operation.name").value.string_value = "chat"
    answer = api.post("/v1/traces", request.SerializeToString(), headers=PROTOBUF)
    assert answer.status == 200
    assert answer.headers["content-type"] == "application/x-protobuf"
    parsed = trace_service_pb2.ExportTraceServiceResponse.FromString(answer.body)
    assert parsed.partial_success.rejected_spans == 1
    assert "names no model" in parsed.partial_success.error_message


def test_a_full_success_in_protobuf_is_an_empty_response(api: Serve) -> None:
    request = logs_service_pb2.ExportLogsServiceRequest()
    record = request.resource_logs.add().scope_logs.add().log_records.add()
    record.body.string_value = "claude_code.user_prompt"
    answer = api.post("/v1/logs", request.SerializeToString(), headers=PROTOBUF)
    assert (answer.status, answer.body) == (200, b"")


# -- statuses -------------------------------------------------------------------------------------


def varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[at]
        value |= (byte & 0x7F) << shift
        at, shift = at + 1, shift + 7
        if not byte & 0x80:
            return value, at


def rpc_status(answer: Answer) -> tuple[int, str]:
    """A google.rpc.Status answer's code and message, in JSON or protobuf."""
    if answer.headers["content-type"] == "application/json":
        data = answer.json()
        assert set(data) == {"code", "message"}
        return data["code"], data["message"]
    assert answer.body[0] == 0x08  # field 1, varint: the code
    code, at = varint(answer.body, 1)
    assert answer.body[at] == 0x12  # field 2, bytes: the message
    size, at = varint(answer.body, at + 1)
    assert at + size == len(answer.body)
    return code, answer.body[at:].decode()


@pytest.mark.parametrize(
    ("body", "headers", "status", "says"),
    [
        (b"{not json", JSON, 400, "not an OTLP traces export request: not JSON"),
        (b'{"resourceSpans": {}}', JSON, 400, "resourceSpans is not an array of objects"),
        (b"\xff\xff\xff", PROTOBUF, 400, "the protobuf does not decode"),
        (b"{}", {"Content-Type": "text/plain"}, 415, "'text/plain' is not OTLP"),
        (b"{}", {**JSON, "Content-Encoding": "br"}, 415, "Content-Encoding 'br'"),
        (b"not gzip", {**JSON, "Content-Encoding": "gzip"}, 400, "not valid gzip"),
    ],
)
def test_bad_bodies_are_refused_with_a_status_message(
    api: Serve, body: bytes, headers: dict[str, str], status: int, says: str
) -> None:
    answer = api.post("/v1/traces", body, headers=headers)
    assert answer.status == status
    code, message = rpc_status(answer)
    assert code == 3
    assert says in message


def test_a_protobuf_error_is_a_protobuf_status(api: Serve) -> None:
    answer = api.post("/v1/logs", b"\xff\xff", headers=PROTOBUF)
    assert answer.status == 400
    assert answer.headers["content-type"] == "application/x-protobuf"
    code, message = rpc_status(answer)
    assert code == 3  # INVALID_ARGUMENT
    assert "does not decode" in message


def test_a_body_past_the_limit_after_decompression_is_413(redis_server: RedisServer) -> None:
    with Serve(redis_server.url, "--namespace", NS, "--max-body-bytes", "4096") as server:
        big = json.dumps(traces(*(span_json("big/a", f"{i:016x}") for i in range(40)))).encode()
        assert len(gzipped(big)) < 4096 < len(big)
        answer = server.post(
            "/v1/traces", gzipped(big), headers={**JSON, "Content-Encoding": "gzip"}
        )
        assert answer.status == 413
        assert "larger than the limit of 4096 bytes" in rpc_status(answer)[1]


def test_a_token_is_needed_to_export(api: Serve) -> None:
    none = api.post("/v1/logs", b"{}", headers=JSON, token=None)
    assert none.status == 401
    assert none.headers["www-authenticate"] == "Bearer"
    assert rpc_status(none)[0] == 16
    assert api.post("/v1/logs", b"{}", headers=JSON, token="wrong").status == 401
    reader = api.post("/v1/traces", b"", headers=PROTOBUF, token=READ)
    assert reader.status == 403
    assert rpc_status(reader) == (7, "the read token may not write; send the write token")


@pytest.mark.parametrize("kind", [JSON, PROTOBUF])
def test_metrics_are_accepted_and_dropped(api: Serve, kind: dict[str, str]) -> None:
    answer = api.post("/v1/metrics", b"{}" if kind is JSON else b"", headers=kind)
    assert answer.status == 200
    assert answer.body == (b"{}" if kind is JSON else b"")


def test_protobuf_without_the_otlp_extra_is_415_and_json_still_works(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    hidden = tmp_path / "opentelemetry" / "proto"  # an empty package hides opentelemetry-proto
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text("")
    env = {"PYTHONPATH": str(tmp_path)}
    with Serve(redis_server.url, "--namespace", NS, env=env) as server:
        answer = server.post("/v1/traces", b"", headers=PROTOBUF)
        assert answer.status == 415
        code, message = rpc_status(answer)
        assert code == 3
        assert "pip install 'redis-telemetry[otlp]'" in message
        assert server.post("/v1/traces", b"{}", headers=JSON).status == 200


def test_redis_down_is_503_with_retry_after() -> None:
    with Serve(f"redis://127.0.0.1:{free_port()}/0") as server:
        answer = server.post(
            "/v1/traces", traces(span_json("down/a", "eee19b7ec3c1b176")), headers=JSON
        )
        assert (answer.status, answer.headers["retry-after"]) == (503, "1")
        code, message = rpc_status(answer)
        assert code == 14
        assert message.startswith("Redis is unreachable")


def test_a_hung_redis_is_503_within_the_stores_deadline() -> None:
    hung = HungListener()
    try:
        with Serve(hung.url, "--timeout", "1") as server:
            body = traces(span_json("hung/a", "eee19b7ec3c1b177"))
            answer = server.post("/v1/traces", body, headers=JSON, timeout=10)
            assert (answer.status, answer.headers["retry-after"]) == (503, "1")
            assert "deadline 1s" in rpc_status(answer)[1]
    finally:
        hung.close()


def test_an_empty_request_is_a_success(api: Serve) -> None:
    for path in ("/v1/logs", "/v1/traces"):
        assert (
            api.post(path, b"{}", headers=JSON).status,
            api.post(path, b"", headers=PROTOBUF).status,
        ) == (200, 200)


def test_the_copy_of_a_body_is_not_changed(api: Serve) -> None:
    body = claude_body("2.1.130", "@copy", "copy")
    kept = copy.deepcopy(body)
    api.post("/v1/logs", body, headers=JSON)
    assert body == kept


# -- one session through OTLP and stdout ----------------------------------------------------------


def test_a_session_through_otlp_and_stdout_counts_each_call_once(
    api: Serve, store: TelemetryStore, redis_server: RedisServer
) -> None:
    """OTLP counts the calls; stdout, read with --format claude-limits, adds its limits only."""
    stdout_log = Path(__file__).parent / "fixtures" / "claude-2.1.240-stream-json.jsonl"
    session, model = "7d0c9a4e-2b61-4f3a-8e15-0000000000a1", "claude-opus-4-7"
    both = parse_lines("claude", stdout_log.read_text().splitlines())
    assert any(e.session_id == session for e in both.events)  # --format claude would count it
    calls = [
        {
            "timeUnixNano": str(now_ns()),
            "body": {"stringValue": "claude_code.api_request"},
            "attributes": [
                {"key": k, "value": {"stringValue": v}}
                for k, v in {
                    "event.name": "api_request",
                    "session.id": session,
                    "model": model,
                    "request_id": f"req_both_{i}",
                    "duration_ms": "900",
                    "output_tokens": "40",
                }.items()
            ],
        }
        for i in range(3)
    ]
    body = {"resourceLogs": [{"scopeLogs": [{"logRecords": calls}]}]}
    assert api.post("/v1/logs", body, headers=JSON).status == 200
    cli = [sys.executable, "-m", "redis_telemetry", "--url", redis_server.url, "--namespace", NS]
    ingest = subprocess.run(
        [*cli, "ingest", "--format", "claude-limits", str(stdout_log)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ingest.returncode == 0, ingest.stderr
    report = ingest.stdout + ingest.stderr
    assert "0 events recorded" in report
    assert "2 runs left to OTLP (--format claude-limits)" in report
    assert store.session_usage(session).by_model[model].message_count == 3
    assert store.model_performance(model).successful_completions == 3


def test_claude_limits_keeps_the_limits_and_leaves_the_runs() -> None:
    lines = (Path(__file__).parent / "fixtures" / "claude-2.1.240-stream-json.jsonl").read_text()
    full = parse_lines("claude", lines.splitlines())
    limits_only = parse_lines("claude-limits", lines.splitlines())
    assert full.events
    assert limits_only.events == []
    assert limits_only.limits == full.limits
    assert limits_only.limits  # the "resets 3pm" the OTLP events do not carry


def test_claude_limits_reading_runs_and_no_limit_exits_0() -> None:
    report = IngestReport("claude-limits")
    report.ignored = 3  # the lines around the runs
    assert report.exit_code == 1  # nothing read at all: the wrong format, most likely
    report.elsewhere = 2
    assert (report.exit_code, report.hint) == (0, None)
    assert "2 runs left to OTLP (--format claude-limits)" in report.lines()


def test_an_export_of_many_models_on_a_redis_cluster(redis_cluster: RedisClusterServers) -> None:
    """One request, five models in five hash slots: each model's events, once."""
    models = [f"cluster/otlp-{i}" for i in range(5)]
    spans = finished_spans(lambda t: [chat_spans(t, m, n=2) for m in models])
    with Serve(redis_cluster.url, "--namespace", "otlp-cluster") as server:
        exporter = OTLPSpanExporter(endpoint=f"{server.base}/v1/traces")
        assert exporter.export(spans) is SpanExportResult.SUCCESS
        assert exporter.export(spans) is SpanExportResult.SUCCESS
        exporter.shutdown()
    with TelemetryStore.from_url(redis_cluster.url, namespace="otlp-cluster") as store:
        for m in models:
            assert store.model_performance(m + "-2025").successful_completions == 2
