"""OTLP/JSON request bodies to records, by the OTLP JSON rules, without protobuf.

The rules (OTLP specification, "JSON Protobuf Encoding"): keys are the lowerCamelCase field
names; trace and span ids are hex strings (not base64, as protobuf's generic JSON mapping,
``json_format``, would read them); 64-bit integers are numbers or decimal strings; enums are
integers; unknown fields are ignored. The original snake_case names are read too, and an enum
given by its name, as protobuf's own JSON parser takes them.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from typing import Any, TypeVar

from .records import BAD_ID, ENUM_NAMES, Batch, LogRecord, Signal, Span, not_otlp, span_key

T = TypeVar("T")
_HEX = frozenset("0123456789abcdef")


class _Reader:
    """Reads one request's JSON, naming the signal in its refusals."""

    def __init__(self, signal: Signal) -> None:
        self.signal = signal

    def field(self, obj: dict[str, Any], camel: str) -> Any:
        value = obj.get(camel)
        if value is None:
            snake = "".join(f"_{c.lower()}" if c.isupper() else c for c in camel)
            value = obj.get(snake)
        return value

    def objects(self, obj: dict[str, Any], camel: str, where: str) -> list[dict[str, Any]]:
        value = self.field(obj, camel)
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise not_otlp(self.signal, f"{where}{camel} is not an array of objects")
        return value

    def object(self, obj: dict[str, Any], camel: str, where: str) -> dict[str, Any]:
        value = self.field(obj, camel)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise not_otlp(self.signal, f"{where}{camel} is not an object")
        return value

    def integer(self, obj: dict[str, Any], camel: str, where: str) -> int:
        """A 64-bit integer: a JSON number or a decimal string (0 when absent)."""
        value = self.field(obj, camel)
        if value is None:
            return 0
        found = _integer(value)
        if found is None:
            raise not_otlp(self.signal, f"{where}{camel} is not an integer: {value!r:.40}")
        return found

    def enum(self, obj: dict[str, Any], camel: str, where: str) -> int:
        value = self.field(obj, camel)
        if isinstance(value, str) and value in ENUM_NAMES:
            return ENUM_NAMES[value]
        return self.integer(obj, camel, where)

    def string(self, obj: dict[str, Any], camel: str, where: str) -> str:
        value = self.field(obj, camel)
        if value is None:
            return ""
        if not isinstance(value, str):
            raise not_otlp(self.signal, f"{where}{camel} is not a string")
        return value

    def attributes(
        self, obj: dict[str, Any], where: str, keep: Callable[[str], bool] | None = None
    ) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for kv in self.objects(obj, "attributes", where):
            key = kv.get("key")
            if isinstance(key, str) and (keep is None or keep(key)):
                out[key] = any_value(kv.get("value"))
        return out

    def each(
        self, obj: dict[str, Any], path: tuple[str, ...], read: Callable[..., T], where: str = ""
    ) -> list[T]:
        """``read(item, where, resource)`` for every item under ``path`` (resource, scope,
        items), with the resource's attributes."""
        out: list[T] = []
        outer, middle, inner = path
        for i, res in enumerate(self.objects(obj, outer, where)):
            at = f"{outer}[{i}]."
            resource = self.attributes(self.object(res, "resource", at), at + "resource.")
            for j, scope in enumerate(self.objects(res, middle, at)):
                at2 = f"{at}{middle}[{j}]."
                for k, item in enumerate(self.objects(scope, inner, at2)):
                    out.append(read(item, f"{at2}{inner}[{k}].", resource))
        return out


def _integer(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if text.lstrip("-").isdigit():
            return int(text)
    return None


def any_value(value: object, depth: int = 0) -> Any:
    """An ``AnyValue`` as a Python value: scalars, and an array of them one level deep; a
    key-value list, or anything deeper, is None (no mapping reads one)."""
    if not isinstance(value, dict):
        return None
    if "stringValue" in value or "string_value" in value:
        found = value.get("stringValue", value.get("string_value"))
        return found if isinstance(found, str) else None
    if "boolValue" in value or "bool_value" in value:
        found = value.get("boolValue", value.get("bool_value"))
        return found if isinstance(found, bool) else None
    if "intValue" in value or "int_value" in value:
        return _integer(value.get("intValue", value.get("int_value")))
    if "doubleValue" in value or "double_value" in value:
        found = value.get("doubleValue", value.get("double_value"))
        if isinstance(found, int | float) and not isinstance(found, bool):
            return float(found)
        return {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}.get(
            found if isinstance(found, str) else ""
        )
    if "bytesValue" in value or "bytes_value" in value:
        found = value.get("bytesValue", value.get("bytes_value"))
        try:
            return base64.b64decode(found, validate=True) if isinstance(found, str) else None
        except (binascii.Error, ValueError):
            return None
    array = value.get("arrayValue", value.get("array_value"))
    if isinstance(array, dict) and depth == 0:
        values = array.get("values")
        if isinstance(values, list):
            return [any_value(v, depth + 1) for v in values]
    return None


def hex_id(value: str, size: int) -> str | None:
    """A trace or span id as lower-case hex of ``size`` bytes; '' when empty; None when it is
    not hex of that size (a base64 id, as ``json_format`` writes them, is not one)."""
    text = value.strip().lower()
    if not text:
        return ""
    return text if len(text) == size * 2 and set(text) <= _HEX else None


def decode(signal: Signal, body: bytes) -> Batch:
    """The records of a JSON export request of ``signal``; a :class:`BodyError` (400) when
    the body is not JSON or not shaped as that request."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise not_otlp(signal, f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise not_otlp(signal, "the body is not a JSON object")
    reader = _Reader(signal)
    if signal == "logs":
        return Batch(
            logs=reader.each(data, ("resourceLogs", "scopeLogs", "logRecords"), _log(reader))
        )
    if signal == "traces":
        return Batch(
            spans=reader.each(data, ("resourceSpans", "scopeSpans", "spans"), _span(reader))
        )
    return Batch()


def _log(r: _Reader) -> Callable[[dict[str, Any], str, dict[str, Any]], LogRecord]:
    def read(item: dict[str, Any], where: str, resource: dict[str, Any]) -> LogRecord:
        return LogRecord(
            time_unix_nano=r.integer(item, "timeUnixNano", where),
            observed_time_unix_nano=r.integer(item, "observedTimeUnixNano", where),
            body=any_value(r.field(item, "body")),
            attributes=r.attributes(item, where),
            resource=resource,
            event_name=r.string(item, "eventName", where),
        )

    return read


def _span(r: _Reader) -> Callable[[dict[str, Any], str, dict[str, Any]], Span]:
    def read(item: dict[str, Any], where: str, resource: dict[str, Any]) -> Span:
        status = r.object(item, "status", where)
        trace = hex_id(r.string(item, "traceId", where), 16)
        span = hex_id(r.string(item, "spanId", where), 8)
        return Span(
            trace_id=BAD_ID if trace is None else trace,
            span_id=BAD_ID if span is None else span,
            name=r.string(item, "name", where),
            kind=r.enum(item, "kind", where),
            start_time_unix_nano=r.integer(item, "startTimeUnixNano", where),
            end_time_unix_nano=r.integer(item, "endTimeUnixNano", where),
            attributes=r.attributes(item, where, span_key),
            resource=resource,
            status_code=r.enum(status, "code", where + "status."),
            status_message=r.string(status, "message", where + "status."),
        )

    return read
