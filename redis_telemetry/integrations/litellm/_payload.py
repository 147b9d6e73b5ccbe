"""LiteLLM's logging payload to a ``CompletionEvent`` (pure functions; no LiteLLM import).

The input is what LiteLLM hands a ``CustomLogger`` hook: ``kwargs`` with its
``standard_logging_object`` (a ``StandardLoggingPayload``, litellm 1.109 to 1.110) and, for a
failure, the ``exception``. Any field may be missing or malformed (older versions, custom
providers): the event then carries what is known, and nothing here raises.

A provider's 429 blocks the deployment through the event itself: its error text states the end
(``core.limits.answer_429``), which ``record()`` reads, so the block and the event are one
write, and the limit key holds the provider's text.
"""

from __future__ import annotations

import math
import time
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from ...core import limits, rules
from ...models import CompletionEvent, TokenBreakdown

#: How a completion is keyed in the store: a rule name, or a function of the payload.
ModelKey = Literal["deployment", "model_group", "model"] | Callable[[Mapping[str, Any]], str | None]

#: The key of a call whose payload names no model at all.
UNKNOWN_MODEL = "litellm/unknown"
#: How long a provider's 429 that says nothing of when to retry blocks the deployment, in
#: seconds (LiteLLM's own cooldown is 5 s too).
DEFAULT_COOLDOWN_SECS = limits.COOLDOWN_429_SECS


@dataclass(frozen=True)
class Outcome:
    """One call, ready to store: the event, and whether it blocks its deployment (``limited``:
    the event's error text says until when, for ``record()`` to read)."""

    event: CompletionEvent
    limited: bool = False


def _map(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _count(value: object) -> int:
    """A token count, or 0 when it is not a sane integer."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return 0
    return min(max(int(value), 0), rules.MAX_STORED_COUNT)


def clean_key(key: str) -> str:
    """``key`` made a valid model name: braces (Redis Cluster hash tags) become parentheses,
    control characters go, and it is cut to the store's limit."""
    key = key.replace("{", "(").replace("}", ")")
    key = "".join(ch for ch in key if unicodedata.category(ch) != "Cc")
    return key[: rules.MAX_MODEL_LEN] or UNKNOWN_MODEL


def model_key(payload: Mapping[str, Any], rule: ModelKey = "deployment") -> str:
    """The store's model name for a call.

    ``deployment`` (the default) is the Router deployment's id (``model_info.id``, or the stable
    hash LiteLLM derives from the deployment's config), so two deployments of one model stay
    apart and every replica with the same config uses the same key; a call made without a Router
    falls back to the model. ``model_group`` is the Router's ``model_name``; ``model`` is the
    provider's model, prefixed with its provider (``openai/gpt-4o``). A function gets the
    payload and returns the key.
    """
    hidden = _map(payload.get("hidden_params"))
    model = _text(payload.get("model")) or _text(hidden.get("litellm_model_name"))
    provider = _text(payload.get("custom_llm_provider"))
    if model and provider and not model.startswith(f"{provider}/"):
        model = (
            f"{provider}/{model}"  # LiteLLM sends "gpt-4o" on some paths, "openai/gpt-4o" on others
        )
    found: str | None
    if callable(rule):
        found = rule(payload)
    elif rule == "model_group":
        found = _text(payload.get("model_group")) or model
    elif rule == "model":
        found = model
    else:
        found = _text(payload.get("model_id")) or _text(hidden.get("model_id")) or model
    return clean_key(found) if isinstance(found, str) and found else UNKNOWN_MODEL


def tokens(payload: Mapping[str, Any]) -> TokenBreakdown:
    """Tokens by kind. LiteLLM's ``prompt_tokens`` include cached and cache-creation tokens and
    its ``completion_tokens`` include reasoning (the OpenAI convention); they are split out, so
    ``total`` is the sum of the parts."""
    usage = _map(_map(payload.get("metadata")).get("usage_object")) or _map(
        _map(payload.get("hidden_params")).get("usage_object")
    )
    prompt_details = _map(usage.get("prompt_tokens_details"))
    completion_details = _map(usage.get("completion_tokens_details"))
    prompt = _count(payload.get("prompt_tokens", usage.get("prompt_tokens")))
    completion = _count(payload.get("completion_tokens", usage.get("completion_tokens")))
    cache_read = _count(prompt_details.get("cached_tokens")) or _count(
        usage.get("cache_read_input_tokens")
    )
    cache_write = _count(prompt_details.get("cache_write_tokens")) or _count(
        usage.get("cache_creation_input_tokens")
    )
    reasoning = min(_count(completion_details.get("reasoning_tokens")), completion)
    cache_read = min(cache_read, prompt)
    cache_write = min(cache_write, prompt - cache_read)
    parts = {
        "input": prompt - cache_read - cache_write,
        "output": completion - reasoning,
        "reasoning": reasoning,
        "cache_read": cache_read,
        "cache_write": cache_write,
    }
    return TokenBreakdown(total=sum(parts.values()), **parts)


def _seconds(value: object) -> float | None:
    if isinstance(value, datetime):
        return rules.to_utc(value).timestamp()
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _latency_ms(payload: Mapping[str, Any]) -> tuple[int | None, float]:
    """(latency in ms, completion time in epoch seconds) from ``startTime``/``endTime``. Without
    a usable ``startTime`` the latency is unknown (None: the call counts for success, tokens and
    cost, not latency), never a made-up 0 ms that would rank the deployment fastest."""
    start, end = _seconds(payload.get("startTime")), _seconds(payload.get("endTime"))
    now = time.time()
    measured_end = end is not None and abs(end - now) <= rules.MAX_FUTURE_MS / 1000
    if end is None or not measured_end:
        end = now
    if start is None or not measured_end or start > end:
        return None, end
    return min(round((end - start) * 1000), rules.MAX_STORED_COUNT), end


def _cost(payload: Mapping[str, Any]) -> float:
    cost = payload.get("response_cost")
    if isinstance(cost, bool) or not isinstance(cost, int | float) or not math.isfinite(cost):
        return 0.0
    return min(max(float(cost), 0.0), rules.MAX_STORED_COST)


def session(payload: Mapping[str, Any], kwargs: Mapping[str, Any], key: str | None) -> str:
    """The session: ``metadata[key]`` of the request (``litellm_params.metadata``), else
    LiteLLM's own ``session_id`` (``litellm_session_id``), else empty. ``key=None`` reads only
    LiteLLM's."""
    found: object = None
    if key is not None:
        request_meta = _map(_map(kwargs.get("litellm_params")).get("metadata"))
        found = request_meta.get(key)
        if found is None:
            found = _map(kwargs.get("metadata")).get(key)
    text = found if isinstance(found, str) else (str(found) if found is not None else "")
    text = text or _text(payload.get("session_id")) or ""
    return text[: rules.MAX_SESSION_LEN]


def _status(exception: object, info: Mapping[str, Any]) -> int | None:
    code = getattr(exception, "status_code", None)
    if isinstance(code, int) and not isinstance(code, bool):
        return code
    text = info.get("error_code")
    return int(text) if isinstance(text, str) and text.isdigit() else None


def is_limit(exception: object, info: Mapping[str, Any]) -> bool:
    """A provider's rate limit: a ``RateLimitError`` or HTTP 429. Timeouts and 5xx are not, nor
    is the Router's own "no deployment available" (``RouterRateLimitError``)."""
    names = {cls.__name__ for cls in type(exception).__mro__} if exception is not None else set()
    if "RouterRateLimitError" in names:
        return False
    return (
        "RateLimitError" in names
        or info.get("error_class") == "RateLimitError"
        or _status(exception, info) == 429
    )


def headers_of(exception: object) -> Any:
    """The response headers an exception carries, where LiteLLM's own retry logic looks (any
    mapping; None when there are none)."""
    try:
        for holder in (exception, getattr(exception, "response", None)):
            headers = getattr(holder, "headers", None)
            if headers:
                return headers
        found = getattr(exception, "litellm_response_headers", None)
    except Exception:  # a foreign exception object: no headers
        return None
    return found if found else None


def error_text(payload: Mapping[str, Any], exception: object) -> str:
    """The error's text: LiteLLM's ``error_str``, its error information, or the exception."""
    info = _map(payload.get("error_information"))
    text = _text(payload.get("error_str")) or _text(info.get("error_message"))
    if text is None and exception is not None:
        text = f"{type(exception).__name__}: {exception}"
    return rules.clip_error(text or "unknown error")


def outcome(
    kwargs: Mapping[str, Any],
    success: bool,
    *,
    key: ModelKey = "deployment",
    session_key: str | None = "session_id",
    cooldown_secs: int = DEFAULT_COOLDOWN_SECS,
) -> Outcome:
    """The event (and limit) for one LiteLLM call, from whatever its payload holds. A provider's
    429 blocks the deployment for what the provider said (``retry-after-ms``, ``Retry-After``,
    a reset time or "retry after N seconds" in its text), else for ``cooldown_secs``."""
    payload = _map(kwargs.get("standard_logging_object"))
    if not payload:  # no standard payload: the request's own fields are all there is
        payload = {"model": kwargs.get("model")}
    latency, end = _latency_ms(payload)
    completed_at = datetime.fromtimestamp(end, UTC)
    exception = None if success else kwargs.get("exception")
    info = _map(payload.get("error_information"))
    error = None if success else error_text(payload, exception)
    limited = False
    if error is not None and is_limit(exception, info):
        found, error = limits.answer_429(error, headers_of(exception), completed_at, cooldown_secs)
        limited = found.until is None or found.until > completed_at
    event = CompletionEvent(
        model=model_key(payload, key),
        session_id=session(payload, kwargs, session_key),
        completed_at=completed_at,
        latency_ms=latency,
        success=success,
        tokens=tokens(payload),
        cost_usd=_cost(payload),
        error=error,
    )
    return Outcome(event, limited=limited)
