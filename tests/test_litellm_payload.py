"""LiteLLM payloads to events, without Redis: tokens, keys, sessions, limits, missing fields.

The payloads model LiteLLM 1.110.2's ``StandardLoggingPayload`` (litellm/types/utils.py) and
the ``kwargs`` its ``CustomLogger`` hooks receive.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network at import

import httpx
import litellm
import pytest

from redis_telemetry.core import limits
from redis_telemetry.integrations.litellm import check_litellm_version
from redis_telemetry.integrations.litellm._payload import (
    UNKNOWN_MODEL,
    clean_key,
    headers_of,
    is_limit,
    model_key,
    outcome,
    session,
    tokens,
)


def payload(**fields: Any) -> dict[str, Any]:
    """A success payload as LiteLLM 1.110.2 sends it for a Router call (trimmed)."""
    base: dict[str, Any] = {
        "model": "openai/gpt-4o-mini",
        "model_id": "dep-a",
        "model_group": "coder",
        "api_base": "",
        "prompt_tokens": 10,
        "completion_tokens": 20,
        "total_tokens": 30,
        "response_cost": 1.35e-05,
        "startTime": time.time() - 0.25,
        "endTime": time.time(),
        "session_id": "",
        "error_str": None,
        "error_information": None,
        "status": "success",
        "metadata": {"usage_object": {"prompt_tokens": 10, "completion_tokens": 20}},
        "hidden_params": {"model_id": "dep-a", "litellm_model_name": "openai/gpt-4o-mini"},
    }
    base.update(fields)
    return base


def rate_limit(headers: dict[str, str] | None = None) -> litellm.RateLimitError:
    response = httpx.Response(
        429, headers=headers or {}, request=httpx.Request("POST", "https://api.example/v1")
    )
    return litellm.RateLimitError("slow down", llm_provider="openai", model="m", response=response)


def test_a_success_gives_tokens_cost_latency_and_the_deployment_key() -> None:
    found = outcome({"standard_logging_object": payload()}, True)
    e = found.event
    assert (e.model, e.success, e.error) == ("dep-a", True, None)
    assert (e.tokens.input, e.tokens.output, e.tokens.total) == (10, 20, 30)
    assert e.cost_usd == pytest.approx(1.35e-05)
    assert 200 <= e.latency_ms <= 300
    assert abs((datetime.now(UTC) - e.completed_at).total_seconds()) < 5
    assert not found.limited


def test_cached_cache_creation_and_reasoning_tokens_are_split_out() -> None:
    usage = {
        "prompt_tokens": 1000,
        "completion_tokens": 300,
        "prompt_tokens_details": {"cached_tokens": 600, "cache_write_tokens": 100},
        "completion_tokens_details": {"reasoning_tokens": 120},
    }
    t = tokens(payload(prompt_tokens=1000, completion_tokens=300, metadata={"usage_object": usage}))
    assert (t.input, t.cache_read, t.cache_write, t.output, t.reasoning) == (
        300,
        600,
        100,
        180,
        120,
    )
    assert t.total == 1300
    # Anthropic-style fields at the top of the usage object
    anthropic = {"cache_read_input_tokens": 40, "cache_creation_input_tokens": 5}
    t = tokens(payload(prompt_tokens=50, completion_tokens=7, metadata={"usage_object": anthropic}))
    assert (t.input, t.cache_read, t.cache_write, t.output, t.total) == (5, 40, 5, 7, 57)


def test_the_model_key_rules() -> None:
    p = payload()
    assert model_key(p) == "dep-a"
    assert model_key(p, "model_group") == "coder"
    assert model_key(p, "model") == "openai/gpt-4o-mini"
    assert model_key(p, lambda q: f"team-x/{q['model_group']}") == "team-x/coder"
    # no Router: no deployment id, so the model names the call
    assert model_key(payload(model_id=None, hidden_params={})) == "openai/gpt-4o-mini"
    assert model_key({}) == UNKNOWN_MODEL
    assert clean_key("a{b}\x00c") == "a(b)c"
    assert len(clean_key("x" * 1000)) == 256


def test_the_session_comes_from_request_metadata_then_litellm() -> None:
    kwargs = {"litellm_params": {"metadata": {"session_id": "agent-7", "run": 42}}}
    assert session(payload(), kwargs, "session_id") == "agent-7"
    assert session(payload(), kwargs, "run") == "42"
    assert session(payload(session_id="ls-1"), {}, "session_id") == "ls-1"
    assert session(payload(session_id="ls-1"), kwargs, None) == "ls-1"
    assert session({}, {}, "session_id") == ""


def test_missing_and_malformed_fields_give_an_event_with_what_is_known() -> None:
    bare = outcome({"standard_logging_object": {"model": "custom/llm"}}, True).event
    assert (bare.model, bare.latency_ms, bare.tokens.total, bare.cost_usd) == (
        "custom/llm",
        None,  # no startTime: not measured, never a 0 ms success that ranks it fastest
        0,
        0.0,
    )
    nothing = outcome({}, False).event
    assert (nothing.model, nothing.success, nothing.error) == (
        UNKNOWN_MODEL,
        False,
        "unknown error",
    )
    junk = payload(
        prompt_tokens="ten",
        completion_tokens=-5,
        response_cost=float("nan"),
        startTime="yesterday",
        endTime=None,
        metadata=["not", "a", "dict"],
        model_id=7,
    )
    e = outcome({"standard_logging_object": junk}, True).event
    assert (e.model, e.tokens.total, e.cost_usd, e.latency_ms) == ("dep-a", 0, 0.0, None)
    reversed_times = payload(startTime=time.time(), endTime=time.time() - 10)
    assert outcome({"standard_logging_object": reversed_times}, True).event.latency_ms is None
    no_start = payload(startTime=None)
    assert outcome({"standard_logging_object": no_start}, True).event.latency_ms is None
    far_end = payload(endTime=time.time() + 10 * 86400)  # not a measured end
    assert outcome({"standard_logging_object": far_end}, True).event.latency_ms is None
    huge = payload(response_cost=1e12, prompt_tokens=10**15)
    e = outcome({"standard_logging_object": huge}, True).event
    assert (e.cost_usd, e.tokens.input) == (1e6, 10**12)


def failure(**fields: Any) -> dict[str, Any]:
    """A 429's payload, timed just now."""
    base = {
        "status": "failure",
        "error_str": "litellm.RateLimitError: slow down",
        "error_information": {"error_code": "429", "error_class": "RateLimitError"},
    }
    return payload(**{**base, **fields})


def limited(exc: object = None, cooldown: int = 5, **fields: Any) -> tuple[bool, str, float]:
    """(limited, the stored error text, seconds until the end record() reads in it)."""
    found = outcome(
        {"standard_logging_object": failure(**fields), "exception": exc},
        False,
        cooldown_secs=cooldown,
    )
    assert not found.event.success
    error = found.event.error or ""
    end = limits.from_text(error, found.event.completed_at)
    assert end is not None  # record() reads it as a limit
    assert end.until is not None  # with an end: never the store's hour-long TTL
    return found.limited, error, (end.until - found.event.completed_at).total_seconds()


def test_a_429_blocks_for_what_the_provider_said() -> None:
    # Retry-After seconds, stated in the stored text for record() to read
    assert limited(rate_limit({"retry-after": "120"})) == (
        True,
        "litellm.RateLimitError: slow down (HTTP 429; retry after 120 seconds)",
        120,
    )
    # retry-after-ms first, as the OpenAI SDKs read it
    assert limited(rate_limit({"retry-after-ms": "2500", "retry-after": "600"}))[2] == 3
    # an HTTP date
    date = format_datetime(datetime.fromtimestamp(time.time() + 90, UTC), usegmt=True)
    assert 85 <= limited(rate_limit({"Retry-After": date}))[2] <= 91
    # no header: "retry after N seconds" (or "try again in 6m0s") in the provider's text, kept
    # as the provider wrote it
    said = "litellm.RateLimitError: Rate limit reached, retry after 120 seconds"
    assert limited(rate_limit(), error_str=said) == (True, said, 120)
    openai = "Rate limit reached for gpt-4o on tokens per min. Please try again in 6m0s."
    assert limited(rate_limit(), error_str=openai)[2] == 360
    # no exception at all, only LiteLLM's error information: a 429 all the same
    assert limited(None)[0]


def test_a_429_that_says_nothing_blocks_for_the_cooldown() -> None:
    assert limited(rate_limit()) == (
        True,
        "litellm.RateLimitError: slow down (HTTP 429; no retry time given; retry after 5 seconds)",
        5,
    )
    assert limited(rate_limit(), cooldown=30)[2] == 30  # configurable
    for bad in ("-5", "soon", "inf"):  # an unreadable header is no hint
        assert limited(rate_limit({"retry-after": bad}))[2] == 5


def test_a_429_whose_retry_time_is_now_blocks_nothing() -> None:
    found = outcome(
        {"standard_logging_object": failure(), "exception": rate_limit({"retry-after": "0"})}, False
    )
    assert not found.limited
    assert not limits.blocks_at(
        found.event.error or "", found.event.completed_at, datetime.now(UTC)
    )


def test_the_headers_of_an_exception() -> None:
    assert headers_of(rate_limit({"Retry-After": "30"}))["retry-after"] == "30"
    assert headers_of(rate_limit()) is None  # an empty header set: none
    assert headers_of(ValueError("no headers")) is None

    class Broken(Exception):
        @property
        def headers(self) -> object:
            raise RuntimeError("no")

    assert headers_of(Broken()) is None


@pytest.mark.parametrize(
    ("exc", "limit"),
    [
        (rate_limit(), True),
        (litellm.Timeout("took too long", model="m", llm_provider="openai"), False),
        (litellm.InternalServerError("boom", llm_provider="openai", model="m"), False),
        (litellm.ServiceUnavailableError("down", llm_provider="openai", model="m"), False),
        (ValueError("plain"), False),
    ],
)
def test_timeouts_and_5xx_are_failures_not_limits(exc: Exception, limit: bool) -> None:
    failure = payload(status="failure", error_str=str(exc), error_information={})
    found = outcome({"standard_logging_object": failure, "exception": exc}, False)
    assert found.limited is limit
    assert found.event.success is False


def test_the_routers_own_no_deployment_error_is_not_a_provider_limit() -> None:
    from litellm.types.router import RouterRateLimitError

    exc = RouterRateLimitError(
        model="coder", cooldown_time=5, enable_pre_call_checks=False, cooldown_list=[]
    )
    assert exc.status_code == 429
    assert not is_limit(exc, {"error_code": "429"})


def test_supported_versions_and_the_error_naming_an_old_one() -> None:
    check_litellm_version("1.110.2")
    check_litellm_version("1.109.0")
    check_litellm_version("2.0.0rc1")
    with pytest.raises(ImportError, match=r"LiteLLM 1\.108\.14.*litellm>=1\.109\.0"):
        check_litellm_version("1.108.14")
    # at import: an old LiteLLM is named before anything of it is used
    probe = (
        "import importlib.metadata as m\n"
        "m.version = lambda name: '1.80.0'\n"
        "import redis_telemetry.integrations.litellm\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.returncode == 1
    assert "does not support LiteLLM 1.80.0" in result.stderr


def test_the_base_package_never_imports_litellm() -> None:
    probe = (
        "import sys, redis_telemetry, redis_telemetry.cli, redis_telemetry.integrations\n"
        "print('litellm' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
