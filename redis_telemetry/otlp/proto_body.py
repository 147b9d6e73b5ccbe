"""OTLP/protobuf request bodies to records, with ``opentelemetry-proto`` (the ``otlp`` extra).

Without the package, a protobuf request is refused with 415 and one line saying what to
install; JSON requests need nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from ..core.bodies import BodyError
from .records import Batch, LogRecord, Signal, Span, not_otlp, span_key

#: what to install for protobuf bodies
INSTALL = "pip install 'redis-telemetry[otlp]'"


def _modules() -> tuple[Any, Any, Any]:
    try:
        from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
        from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
    except ImportError:
        raise BodyError(
            415,
            "application/x-protobuf needs opentelemetry-proto, which is not installed "
            f"({INSTALL}); send application/json instead",
        ) from None
    return logs_service_pb2, trace_service_pb2, metrics_service_pb2


def available() -> bool:
    """True when protobuf bodies can be read."""
    try:
        _modules()
    except BodyError:
        return False
    return True


def any_value(value: Any) -> Any:
    """An ``AnyValue`` message as a Python value (as ``json_body.any_value`` reads JSON)."""
    kind = value.WhichOneof("value")
    if kind in ("string_value", "bool_value", "int_value", "double_value", "bytes_value"):
        return getattr(value, kind)
    if kind == "array_value":
        return [_scalar(v) for v in value.array_value.values]
    return None


def _scalar(value: Any) -> Any:
    kind = value.WhichOneof("value")
    if kind in ("string_value", "bool_value", "int_value", "double_value", "bytes_value"):
        return getattr(value, kind)
    return None


def _attributes(kvs: Iterable[Any], keep: Callable[[str], bool] | None = None) -> dict[str, Any]:
    return {kv.key: any_value(kv.value) for kv in kvs if keep is None or keep(kv.key)}


def decode(signal: Signal, body: bytes) -> Batch:
    """The records of a protobuf export request of ``signal``; 400 when it does not decode,
    415 without ``opentelemetry-proto``."""
    logs_pb2, trace_pb2, metrics_pb2 = _modules()
    request = {
        "logs": logs_pb2.ExportLogsServiceRequest,
        "traces": trace_pb2.ExportTraceServiceRequest,
        "metrics": metrics_pb2.ExportMetricsServiceRequest,
    }[signal]()
    from google.protobuf.message import DecodeError  # protobuf comes with opentelemetry-proto

    try:
        request.ParseFromString(body)
    except (DecodeError, RecursionError, ValueError) as exc:
        raise not_otlp(signal, f"the protobuf does not decode: {exc}") from None
    if signal == "logs":
        return Batch(logs=list(_logs(request)))
    if signal == "traces":
        return Batch(spans=list(_spans(request)))
    return Batch()


def _logs(request: Any) -> Iterable[LogRecord]:
    for res in request.resource_logs:
        resource = _attributes(res.resource.attributes)
        for scope in res.scope_logs:
            for r in scope.log_records:
                yield LogRecord(
                    time_unix_nano=r.time_unix_nano,
                    observed_time_unix_nano=r.observed_time_unix_nano,
                    body=any_value(r.body),
                    attributes=_attributes(r.attributes),
                    resource=resource,
                    event_name=r.event_name,
                )


def _spans(request: Any) -> Iterable[Span]:
    for res in request.resource_spans:
        resource = _attributes(res.resource.attributes)
        for scope in res.scope_spans:
            for s in scope.spans:
                yield Span(
                    trace_id=s.trace_id.hex(),
                    span_id=s.span_id.hex(),
                    name=s.name,
                    kind=s.kind,
                    start_time_unix_nano=s.start_time_unix_nano,
                    end_time_unix_nano=s.end_time_unix_nano,
                    attributes=_attributes(s.attributes, span_key),
                    resource=resource,
                    status_code=s.status.code,
                    status_message=s.status.message,
                )


def response(signal: Signal, rejected: int, message: str) -> bytes:
    """The protobuf export response: empty on full success, else the partial success."""
    logs_pb2, trace_pb2, metrics_pb2 = _modules()
    if signal == "logs":
        answer = logs_pb2.ExportLogsServiceResponse()
        if rejected or message:
            answer.partial_success.rejected_log_records = rejected
            answer.partial_success.error_message = message
    elif signal == "traces":
        answer = trace_pb2.ExportTraceServiceResponse()
        if rejected or message:
            answer.partial_success.rejected_spans = rejected
            answer.partial_success.error_message = message
    else:
        answer = metrics_pb2.ExportMetricsServiceResponse()
    return bytes(answer.SerializeToString())
