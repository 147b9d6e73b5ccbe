"""GenAI client spans to completion events (no I/O).

Modelled on the OpenTelemetry semantic conventions for generative AI (gen-ai spans, v1.37
to 1.38, Development status), as OpenLLMetry, OpenLIT, LiteLLM's OTel callbacks and
opentelemetry-python-contrib emit them, with the older names those still write.

Only inference spans count: ``gen_ai.operation.name`` ``chat``, ``text_completion`` or
``generate_content`` (or a LiteLLM call type such as ``acompletion``); without an operation, a
CLIENT span with a model attribute. Any other operation (``embeddings``, ``execute_tool``,
``invoke_agent``, …) and any other span is dropped. No prompt, message, or tool argument is
read. Checked against LiteLLM 1.110's ``integrations/opentelemetry.py``.
"""

from __future__ import annotations

from datetime import datetime

from ..models import CompletionEvent
from . import claude
from .events import blocking_error, event, from_nanos
from .records import (
    BAD_ID,
    SPAN_KIND_CLIENT,
    STATUS_CODE_ERROR,
    Span,
    Unmappable,
    count,
    number,
    text,
)

#: the operations that are one model call each: the conventions' names, then the call types
#: LiteLLM's OTel callback writes as the operation outside its latest-conventions mode
INFERENCE = frozenset({"chat", "text_completion", "generate_content"}) | frozenset(
    {"completion", "acompletion", "atext_completion", "responses", "aresponses"}
    | {"anthropic_messages", "aanthropic_messages"}
)
#: each field, from the first of its attribute names present (current name first)
MODEL = ("gen_ai.response.model", "gen_ai.request.model")
INPUT = ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens")
OUTPUT = ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens")
CACHE_READ = (
    "gen_ai.usage.cache_read.input_tokens",
    "gen_ai.usage.cache_read_input_tokens",
    "gen_ai.usage.input_tokens.cached",
)
CACHE_CREATION = (
    "gen_ai.usage.cache_creation.input_tokens",
    "gen_ai.usage.cache_write.input_tokens",
    "gen_ai.usage.cache_creation_input_tokens",
    "gen_ai.usage.input_tokens.cache_write",
)
REASONING = ("gen_ai.usage.reasoning.output_tokens", "gen_ai.usage.reasoning_tokens")
COST = ("gen_ai.usage.cost", "gen_ai.cost.total_cost")
SESSION = ("gen_ai.conversation.id",)
OPERATION = ("gen_ai.operation.name",)
ERROR_TYPE = ("error.type",)
HTTP_STATUS = ("http.response.status_code", "http.status_code")
#: the prefix of the event ids this mapping writes
ID_PREFIX = "otel"


def is_inference(span: Span) -> bool:
    """True for a span that is one model call (see the module docstring). Claude Code's own
    spans (its traces beta: ``claude_code.llm_request``, with ``gen_ai.request.model``) are
    not: its calls are counted from its log events (``otlp.claude``), once."""
    if span.name.startswith(claude.PREFIX) or span.resource.get("service.name") == claude.SERVICE:
        return False
    operation = text(span.attributes, *OPERATION)
    if operation:
        return operation in INFERENCE
    return span.kind == SPAN_KIND_CLIENT and bool(text(span.attributes, *MODEL))


def tokens_of(span: Span) -> dict[str, int]:
    """The span's tokens by kind, each counted once: the conventions count cached tokens in
    the input and reasoning in the output, so uncached input = input - cache read - cache
    creation and output = output - reasoning (never below 0)."""
    attrs = span.attributes
    given_in, given_out = count(attrs, *INPUT), count(attrs, *OUTPUT)
    read, creation = count(attrs, *CACHE_READ), count(attrs, *CACHE_CREATION)
    reasoning = count(attrs, *REASONING)
    uncached = max(0, given_in - read - creation)
    out = max(0, given_out - reasoning)
    return {  # a TokenBreakdown's fields, checked with the event
        "total": uncached + read + creation + out + reasoning,
        "input": uncached,
        "output": out,
        "reasoning": reasoning,
        "cache_read": read,
        "cache_write": creation,
    }


def to_event(span: Span, now: datetime) -> CompletionEvent | None:
    """The completion event of one span; None when it is not an inference span;
    :class:`Unmappable` when it is one and cannot be stored."""
    if not is_inference(span):
        return None
    attrs = span.attributes
    model = text(attrs, *MODEL)
    if not model:
        raise Unmappable(f"the {text(attrs, *OPERATION)} span {span.name!r:.60} names no model")
    if BAD_ID in (span.trace_id, span.span_id) or not span.span_id:
        raise Unmappable("its traceId or spanId is not hex (the OTLP JSON rules)")
    start, end = from_nanos(span.start_time_unix_nano), from_nanos(span.end_time_unix_nano)
    latency = None
    if start is not None and end is not None and end >= start:
        latency = round((span.end_time_unix_nano - span.start_time_unix_nano) / 1e6)
    at = end or now
    failed = span.status_code == STATUS_CODE_ERROR
    error = None
    if failed:
        kind, message = text(attrs, *ERROR_TYPE), span.status_message.strip()
        said = ": ".join(p for p in (kind, message) if p) or "error"
        is_429 = text(attrs, *HTTP_STATUS) == "429" or kind == "429"
        error = blocking_error(said, at, is_429)
    cost = next((c for name in COST if (c := number(attrs.get(name))) is not None), None)
    return event(
        model=model,
        session_id=text(attrs, *SESSION),
        completed_at=at,
        latency_ms=latency,
        success=not failed,
        tokens=tokens_of(span),
        cost_usd=float(cost) if cost is not None and cost >= 0 else 0.0,
        error=error,
        event_id=f"{ID_PREFIX}:{span.trace_id}:{span.span_id}",
    )
