"""The OTLP receiver's logic without a server: the OTLP JSON rules, protobuf decoding, and
each mapping rule of Claude Code's log events and GenAI spans (docs/otlp.md's tables)."""

from __future__ import annotations

import base64
import json
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from redis_telemetry import is_subscription_limit_error
from redis_telemetry.core import limits
from redis_telemetry.core.bodies import BodyError
from redis_telemetry.otlp import claude, genai, json_body, proto_body, receiver
from redis_telemetry.otlp.records import BAD_ID, LogRecord, Span, Unmappable

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
NS = int(NOW.timestamp()) * 10**9


def kv(key: str, value: dict[str, Any]) -> dict[str, Any]:
    return {"key": key, "value": value}


# -- the OTLP JSON rules --------------------------------------------------------------------------


def test_ids_are_hex_int64_are_strings_or_numbers_enums_integers_unknown_fields_ignored() -> None:
    body = {
        "resourceSpans": [
            {
                "resource": {"attributes": [kv("service.name", {"stringValue": "app"})]},
                "schemaUrl": "https://opentelemetry.io/schemas/1.37.0",
                "scopeSpans": [
                    {
                        "scope": {"name": "x"},
                        "spans": [
                            {
                                "traceId": "5B8EFFF798038103D269B633813FC60C",
                                "spanId": "eee19b7ec3c1b174",
                                "kind": 3,
                                "startTimeUnixNano": "1000000000",
                                "endTimeUnixNano": 3000000000,
                                "status": {"code": 2, "message": "boom"},
                                "notAField": [1, 2],
                            },
                            {
                                "trace_id": "5b8efff798038103d269b633813fc60c",
                                "span_id": "7u7MWurpsWE=",  # base64: not hex
                                "kind": "SPAN_KIND_CLIENT",
                                "status": {"code": "STATUS_CODE_ERROR"},
                            },
                        ],
                    }
                ],
            }
        ]
    }
    first, second = json_body.decode("traces", json.dumps(body).encode()).spans
    assert first.trace_id == "5b8efff798038103d269b633813fc60c"
    assert first.span_id == "eee19b7ec3c1b174"
    assert (first.kind, first.status_code, first.status_message) == (3, 2, "boom")
    assert (first.start_time_unix_nano, first.end_time_unix_nano) == (10**9, 3 * 10**9)
    assert first.resource == {"service.name": "app"}
    assert (second.span_id, second.kind, second.status_code) == (BAD_ID, 3, 2)


def test_any_values_of_every_type() -> None:
    values = {
        "s": {"stringValue": "text"},
        "i": {"intValue": "9007199254740993"},  # past a double's precision: kept exact
        "n": {"intValue": 7},
        "d": {"doubleValue": 0.5},
        "nan": {"doubleValue": "NaN"},
        "b": {"boolValue": True},
        "bytes": {"bytesValue": base64.b64encode(b"\x00\x01").decode()},
        "a": {"arrayValue": {"values": [{"stringValue": "stop"}, {"intValue": "2"}]}},
        "kv": {"kvlistValue": {"values": [kv("k", {"stringValue": "secret"})]}},
        "empty": {},
    }
    got = {k: json_body.any_value(v) for k, v in values.items()}
    assert got.pop("nan") != got.pop("nan", 0)  # NaN is not equal to itself
    assert got == {
        "s": "text",
        "i": 9007199254740993,
        "n": 7,
        "d": 0.5,
        "b": True,
        "bytes": b"\x00\x01",
        "a": ["stop", 2],
        "kv": None,
        "empty": None,
    }


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"[]", "the body is not a JSON object"),
        (b'{"resourceLogs": [{"scopeLogs": 5}]}', "resourceLogs[0].scopeLogs is not an array"),
        (
            b'{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"timeUnixNano": "soon"}]}]}]}',
            "resourceLogs[0].scopeLogs[0].logRecords[0].timeUnixNano is not an integer",
        ),
    ],
)
def test_a_body_not_shaped_as_the_request_is_400_naming_where(body: bytes, says: str) -> None:
    with pytest.raises(BodyError) as caught:
        json_body.decode("logs", body)
    assert caught.value.status == 400
    assert says in str(caught.value)


def test_json_and_protobuf_decode_to_the_same_records() -> None:
    request = trace_service_pb2.ExportTraceServiceRequest()
    res = request.resource_spans.add()
    res.resource.attributes.add(key="service.name").value.string_value = "app"
    span = res.scope_spans.add().spans.add()
    span.trace_id, span.span_id = bytes.fromhex("ab" * 16), bytes.fromhex("cd" * 8)
    span.name, span.kind = "chat m", 3
    span.start_time_unix_nano, span.end_time_unix_nano = 5, 10**9
    span.status.code, span.status.message = 2, "no"
    span.attributes.add(key="gen_ai.usage.input_tokens").value.int_value = 12
    span.attributes.add(key="gen_ai.usage.cost").value.double_value = 0.25
    span.attributes.add(key="stream").value.bool_value = False
    json_text = {
        "resourceSpans": [
            {
                "resource": {"attributes": [kv("service.name", {"stringValue": "app"})]},
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": "ab" * 16,
                                "spanId": "cd" * 8,
                                "name": "chat m",
                                "kind": 3,
                                "startTimeUnixNano": "5",
                                "endTimeUnixNano": str(10**9),
                                "status": {"code": 2, "message": "no"},
                                "attributes": [
                                    kv("gen_ai.usage.input_tokens", {"intValue": "12"}),
                                    kv("gen_ai.usage.cost", {"doubleValue": 0.25}),
                                    kv("stream", {"boolValue": False}),
                                ],
                            }
                        ]
                    }
                ],
            }
        ]
    }
    from_proto = proto_body.decode("traces", request.SerializeToString())
    from_json = json_body.decode("traces", json.dumps(json_text).encode())
    assert from_proto == from_json
    assert from_proto.spans[0].attributes["gen_ai.usage.input_tokens"] == 12


def test_without_opentelemetry_proto_protobuf_is_415_saying_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.proto.collector.logs.v1", None)
    assert not proto_body.available()
    with pytest.raises(BodyError) as caught:
        receiver.decode("logs", b"", "protobuf")
    assert caught.value.status == 415
    assert "pip install 'redis-telemetry[otlp]'" in str(caught.value)
    assert "\n" not in str(caught.value)
    assert receiver.decode("logs", b"{}", "json").logs == []  # JSON needs nothing


@pytest.mark.parametrize(
    ("header", "kind"),
    [
        ("application/json", "json"),
        ("application/x-protobuf", "protobuf"),
        ("Application/JSON; charset=utf-8", "json"),
    ],
)
def test_the_content_type_picks_the_encoding(header: str, kind: str) -> None:
    assert receiver.encoding(header) == kind


@pytest.mark.parametrize("header", [None, "text/plain", "application/x-ndjson"])
def test_another_content_type_is_415(header: str | None) -> None:
    with pytest.raises(BodyError) as caught:
        receiver.encoding(header)
    assert caught.value.status == 415
    assert receiver.answer_encoding(header) == "json"


# -- Claude Code's log events ---------------------------------------------------------------------


def record(name: str, t: int = NS, **attrs: Any) -> LogRecord:
    return LogRecord(
        time_unix_nano=t,
        body=f"claude_code.{name}",
        attributes={"event.name": name, "session.id": "s1", **attrs},
        resource={"service.name": "claude-code"},
    )


REQUEST = {
    "model": "claude-opus-4-5",
    "request_id": "req_1",
    "event.sequence": 4,
    "duration_ms": 1234,
    "cost_usd": 0.5,
    "input_tokens": 3,
    "output_tokens": 500,
    "cache_read_tokens": 40000,
    "cache_creation_tokens": 2000,
}


@pytest.mark.parametrize("as_text", [False, True])
def test_an_api_request_is_a_success_with_its_latency_tokens_and_cost(as_text: bool) -> None:
    attrs = {k: str(v) if as_text and not isinstance(v, str) else v for k, v in REQUEST.items()}
    event = claude.to_event(record("api_request", **attrs), NOW)
    assert event is not None
    assert (event.model, event.session_id, event.success, event.latency_ms) == (
        "claude-opus-4-5",
        "s1",
        True,
        1234,
    )
    assert event.completed_at == NOW
    assert event.cost_usd == 0.5
    assert event.tokens.model_dump() == {
        "total": 42503,
        "input": 3,
        "output": 500,
        "reasoning": 0,
        "cache_read": 40000,
        "cache_write": 2000,
    }
    assert event.event_id == "claude-otlp:req_1"


def test_cost_usd_micros_wins_over_cost_usd() -> None:
    event = claude.to_event(record("api_request", **REQUEST, cost_usd_micros="123456"), NOW)
    assert event is not None
    assert event.cost_usd == 0.123456


def test_the_event_id_is_the_request_id_else_session_and_sequence_else_a_digest() -> None:
    no_request = {k: v for k, v in REQUEST.items() if k != "request_id"}
    by_sequence = claude.to_event(record("api_request", **no_request), NOW)
    assert by_sequence is not None
    assert by_sequence.event_id == "claude-otlp:s1:4"
    bare = {k: v for k, v in no_request.items() if k != "event.sequence"}
    one = claude.to_event(record("api_request", **bare, prompt="my secret plan"), NOW)
    again = claude.to_event(record("api_request", **bare, prompt="my secret plan"), NOW)
    other = claude.to_event(record("api_request", **bare, prompt="another"), NOW)
    assert one is not None
    assert again is not None
    assert other is not None
    assert one.event_id == again.event_id != other.event_id  # a redelivery is the same
    assert "secret" not in (one.event_id or "")


def test_the_time_is_the_records_else_event_timestamp_else_observed_else_now() -> None:
    stamp = "2026-12-06T11:59:00.500Z"
    at = claude.completed_at(record("api_request", t=0, **{"event.timestamp": stamp}), NOW)
    assert at == datetime(2026, 12, 6, 11, 59, 0, 500000, tzinfo=UTC)
    observed = LogRecord(observed_time_unix_nano=NS - 10**9, attributes={})
    assert claude.completed_at(observed, NOW) == NOW - timedelta(seconds=1)
    assert claude.completed_at(LogRecord(), NOW) == NOW


def test_a_429_blocks_for_the_short_cooldown_unless_a_reset_is_known() -> None:
    event = claude.to_event(
        record("api_error", model="m", error="Rate limited", status_code="429", attempt=11), NOW
    )
    assert event is not None
    assert event.error is not None
    assert (event.success, event.latency_ms) == (False, None)
    assert event.error.startswith("API Error: 429 Rate limited")
    found = limits.from_text(event.error, NOW)
    assert found is not None
    assert found.until == NOW + timedelta(seconds=limits.COOLDOWN_429_SECS)
    with_reset = claude.to_event(
        record("api_error", model="m", error="limit · resets 3pm (UTC)", status_code=429), NOW
    )
    assert with_reset is not None
    assert with_reset.error is not None
    reset = limits.from_text(with_reset.error, NOW)
    assert reset is not None
    assert reset.until == datetime(2026, 12, 6, 15, 0, tzinfo=UTC)


def test_another_error_is_a_failure_that_blocks_nothing() -> None:
    event = claude.to_event(
        record("api_error", model="m", error="Overloaded", status_code=529, duration_ms="900"),
        NOW,
    )
    assert event is not None
    assert (event.success, event.latency_ms, event.error) == (
        False,
        900,
        "API Error: 529 Overloaded",
    )
    assert not is_subscription_limit_error(event.error or "")
    offline = claude.to_event(record("api_error", model="m", error="Connection error."), NOW)
    assert offline is not None
    assert offline.error == "API Error: Connection error."


@pytest.mark.parametrize(
    "name", ["user_prompt", "tool_result", "tool_decision", "api_request_body", "hook"]
)
def test_every_other_event_is_dropped(name: str) -> None:
    assert claude.to_event(record(name, model="m", prompt="secret"), NOW) is None


def test_a_record_that_is_not_claude_codes_is_dropped() -> None:
    other = LogRecord(body="GET / 200", attributes={"event.name": "api_request", "model": "m"})
    assert claude.to_event(other, NOW) is None
    by_name = LogRecord(
        attributes={"event.name": "api_request", "model": "m"},
        resource={"service.name": "claude-code"},
    )
    assert claude.to_event(by_name, NOW) is not None


@pytest.mark.parametrize(
    ("attrs", "says"),
    [
        ({"input_tokens": 5}, "claude_code.api_request without a model"),
        ({"model": "m", "input_tokens": "many"}, "input_tokens is not a non-negative number"),
        ({"model": "m", "output_tokens": -1}, "output_tokens is not a non-negative number"),
        ({"model": "m", "cost_usd": "free"}, "cost_usd is not a cost"),
        ({"model": "a{b}"}, "model"),
    ],
)
def test_an_api_request_that_cannot_be_stored_is_unmappable(
    attrs: dict[str, Any], says: str
) -> None:
    with pytest.raises(Unmappable, match=says):
        claude.to_event(record("api_request", **attrs), NOW)


# -- GenAI spans ----------------------------------------------------------------------------------


def span(attrs: dict[str, Any], kind: int = 3, status: int = 0, message: str = "") -> Span:
    return Span(
        trace_id="ab" * 16,
        span_id="cd" * 8,
        name="chat",
        kind=kind,
        start_time_unix_nano=NS - 1_500_000_000,
        end_time_unix_nano=NS,
        attributes=attrs,
        status_code=status,
        status_message=message,
    )


@pytest.mark.parametrize(
    ("attrs", "kind", "counted"),
    [
        ({"gen_ai.operation.name": "chat", "gen_ai.request.model": "m"}, 1, True),
        ({"gen_ai.operation.name": "text_completion", "gen_ai.request.model": "m"}, 1, True),
        ({"gen_ai.operation.name": "generate_content", "gen_ai.request.model": "m"}, 1, True),
        ({"gen_ai.operation.name": "acompletion", "gen_ai.request.model": "m"}, 1, True),
        ({"gen_ai.operation.name": "embeddings", "gen_ai.request.model": "m"}, 3, False),
        ({"gen_ai.operation.name": "aembedding", "gen_ai.request.model": "m"}, 3, False),
        ({"gen_ai.operation.name": "execute_tool", "gen_ai.request.model": "m"}, 3, False),
        ({"gen_ai.operation.name": "invoke_agent", "gen_ai.request.model": "m"}, 3, False),
        ({"gen_ai.request.model": "m"}, 3, True),  # a CLIENT span with a model
        ({"gen_ai.response.model": "m"}, 3, True),
        ({"gen_ai.request.model": "m"}, 1, False),  # INTERNAL, no operation
        ({"http.request.method": "GET"}, 3, False),
    ],
)
def test_only_inference_spans_count(attrs: dict[str, Any], kind: int, counted: bool) -> None:
    assert (genai.to_event(span(attrs, kind), NOW) is not None) is counted


def test_claude_codes_own_spans_are_left_to_its_log_events() -> None:
    """Claude Code's traces beta: claude_code.llm_request, a model attribute; its calls are
    counted from its log events, so the span would count each call twice."""
    attrs = {"gen_ai.system": "anthropic", "gen_ai.request.model": "claude-opus-4-5"}
    ids = {"trace_id": "ab" * 16, "span_id": "cd" * 8}
    llm_request = Span(**ids, name="claude_code.llm_request", kind=3, attributes=attrs)
    assert genai.to_event(llm_request, NOW) is None
    by_service = Span(**ids, kind=3, attributes=attrs, resource={"service.name": "claude-code"})
    assert genai.to_event(by_service, NOW) is None
    assert genai.to_event(span(attrs), NOW) is not None  # the same attributes from elsewhere


def test_a_span_is_a_success_timed_end_minus_start_with_the_response_model() -> None:
    event = genai.to_event(
        span(
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": "gpt-5",
                "gen_ai.response.model": "gpt-5-2025-08-07",
                "gen_ai.conversation.id": "conv-9",
                "gen_ai.usage.cost": 0.02,
            }
        ),
        NOW,
    )
    assert event is not None
    assert (event.model, event.session_id, event.latency_ms, event.success) == (
        "gpt-5-2025-08-07",
        "conv-9",
        1500,
        True,
    )
    assert (event.completed_at, event.cost_usd, event.error) == (NOW, 0.02, None)
    assert event.event_id == f"otel:{'ab' * 16}:{'cd' * 8}"


@pytest.mark.parametrize(
    ("attrs", "tokens"),
    [
        (  # current names: cached in the input, reasoning in the output
            {
                "gen_ai.usage.input_tokens": 1000,
                "gen_ai.usage.cache_read.input_tokens": 700,
                "gen_ai.usage.cache_creation.input_tokens": 100,
                "gen_ai.usage.output_tokens": 300,
                "gen_ai.usage.reasoning.output_tokens": 120,
            },
            (1300, 200, 180, 120, 700, 100),
        ),
        (  # LiteLLM's v1 names, and cache_write
            {
                "gen_ai.usage.prompt_tokens": 50,
                "gen_ai.usage.completion_tokens": 10,
                "gen_ai.usage.cache_write.input_tokens": 20,
            },
            (60, 30, 10, 0, 0, 20),
        ),
        (  # an emitter whose input excludes the cache: never below 0
            {"gen_ai.usage.input_tokens": 5, "gen_ai.usage.cache_read.input_tokens": 900},
            (900, 0, 0, 0, 900, 0),
        ),
    ],
)
def test_tokens_are_split_so_that_nothing_counts_twice(
    attrs: dict[str, Any], tokens: tuple[int, ...]
) -> None:
    event = genai.to_event(span({"gen_ai.request.model": "m", **attrs}), NOW)
    assert event is not None
    t = event.tokens
    assert (t.total, t.input, t.output, t.reasoning, t.cache_read, t.cache_write) == tokens


def test_litellms_cost_is_its_total_cost() -> None:
    attrs = {"gen_ai.request.model": "m", "gen_ai.cost.total_cost": 0.003}
    event = genai.to_event(span({**attrs, "gen_ai.cost.input_cost": 0.001}), NOW)
    assert event is not None
    assert event.cost_usd == 0.003


def test_an_error_span_is_a_failure_with_its_error_type() -> None:
    event = genai.to_event(
        span({"gen_ai.request.model": "m", "error.type": "timeout"}, status=2, message="read"),
        NOW,
    )
    assert event is not None
    assert (event.success, event.error) == (False, "timeout: read")
    plain = genai.to_event(span({"gen_ai.request.model": "m"}, status=2), NOW)
    assert plain is not None
    assert plain.error == "error"
    unset = genai.to_event(span({"gen_ai.request.model": "m", "error.type": "x"}, status=1), NOW)
    assert unset is not None
    assert unset.success  # only an ERROR status fails


def test_a_rate_limited_span_blocks_for_the_cooldown_only() -> None:
    for attrs, message in (
        ({"error.type": "RateLimitError", "http.response.status_code": 429}, ""),
        ({"error.type": "RateLimitError"}, "Error code: 429 - rate_limit_error"),
        ({"error.type": "429"}, ""),
    ):
        event = genai.to_event(span({"gen_ai.request.model": "m", **attrs}, 3, 2, message), NOW)
        assert event is not None
        assert event.error is not None
        found = limits.from_text(event.error, NOW)
        assert found is not None, event.error
        assert found.until == NOW + timedelta(seconds=limits.COOLDOWN_429_SECS)


def test_a_span_without_an_end_is_untimed_and_stamped_now() -> None:
    s = Span(trace_id="ab" * 16, span_id="cd" * 8, kind=3, attributes={"gen_ai.request.model": "m"})
    event = genai.to_event(s, NOW)
    assert event is not None
    assert (event.latency_ms, event.completed_at) == (None, NOW)


# -- the receiver's answers -----------------------------------------------------------------------


def test_a_partial_success_names_the_count_and_the_first_reasons() -> None:
    batch = receiver.Batch(
        spans=[span({"gen_ai.operation.name": "chat"}) for _ in range(5)]
        + [span({"gen_ai.request.model": "m"})]
    )
    mapped = receiver.map_batch(batch, NOW)
    assert (len(mapped.events), mapped.rejected) == (1, 5)
    assert mapped.message.startswith("5 not stored: span 0: the chat span")
    assert mapped.message.endswith("; and 2 more")
    assert json.loads(receiver.answer("traces", mapped, "json")) == {
        "partialSuccess": {"rejectedSpans": "5", "errorMessage": mapped.message}
    }
    parsed = trace_service_pb2.ExportTraceServiceResponse.FromString(
        receiver.answer("traces", mapped, "protobuf")
    )
    assert parsed.partial_success.rejected_spans == 5
    logs = logs_service_pb2.ExportLogsServiceResponse.FromString(
        receiver.answer("logs", receiver.Mapped(rejected=1, reasons=["x"]), "protobuf")
    )
    assert logs.partial_success.rejected_log_records == 1
    assert receiver.answer("logs", receiver.Mapped(), "json") == b"{}"
    assert receiver.answer("logs", receiver.Mapped(), "protobuf") == b""


def test_a_long_status_message_is_a_well_formed_protobuf() -> None:
    message = "x" * 300  # a two-byte length
    body = receiver.status(503, message, "protobuf")
    assert body[:2] == b"\x08\x0e"  # code 14, UNAVAILABLE
    assert body[2:5] == b"\x12\xac\x02"  # field 2, length 300
    assert body[5:] == message.encode()


@pytest.mark.parametrize(
    ("names", "field", "value"),
    [
        (genai.INPUT, "total", 40),
        (genai.OUTPUT, "output", 40),
        (genai.CACHE_READ, "cache_read", 40),
        (genai.CACHE_CREATION, "cache_write", 40),
        (genai.REASONING, "reasoning", 40),
    ],
)
def test_every_name_of_a_token_count_is_read(
    names: tuple[str, ...], field: str, value: int
) -> None:
    for name in names:
        event = genai.to_event(span({"gen_ai.request.model": "m", name: value}), NOW)
        assert event is not None
        assert getattr(event.tokens, field) == value, name
