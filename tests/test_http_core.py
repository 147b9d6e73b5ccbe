"""The HTTP API's I/O-free parts, in process: request bodies, statuses and tokens."""

from __future__ import annotations

import gzip
import hmac
import json

import pytest

from redis_telemetry import InvalidInputError, TelemetryUnavailable, WindowMismatchError
from redis_telemetry.core import tokens
from redis_telemetry.core.bodies import BodyError, Decoder, content_type, parse_events
from redis_telemetry.core.routing import NoModelAvailable, Ranking
from redis_telemetry.core.statuses import failure
from redis_telemetry.core.tokens import Denied, Scope, Tokens

EVENT = {"model": "m", "latency_ms": 5, "success": True}


def test_gzip_members_and_chunks_are_inflated_in_any_split() -> None:
    body = b"[" + json.dumps(EVENT).encode() + b"]"
    data = gzip.compress(body[:10]) + gzip.compress(body[10:])  # two gzip members
    for split in range(1, len(data)):
        decoder = Decoder("GZIP", limit=1000)
        out = decoder.feed(data[:split]) + decoder.feed(data[split:])
        decoder.finish()
        assert out == body


def test_the_limit_counts_what_a_body_inflates_to_and_what_arrives() -> None:
    bomb = gzip.compress(b" " * 10_000)
    with pytest.raises(BodyError) as inflated:
        Decoder("gzip", limit=9_999).feed(bomb)
    assert inflated.value.status == 413
    exactly = Decoder("gzip", limit=10_000)
    assert len(exactly.feed(bomb)) == 10_000
    plain = Decoder(None, limit=10)
    plain.feed(b"12345")
    with pytest.raises(BodyError):
        plain.feed(b"678901")
    with pytest.raises(BodyError):
        Decoder("identity", limit=10).check_declared("11")
    Decoder("identity", limit=10).check_declared("10")


def test_content_types_read_as_json_lines() -> None:
    assert content_type("Application/X-NDJSON; charset=utf-8") == "application/x-ndjson"
    lines = (json.dumps(EVENT) + "\n") * 2
    assert len(parse_events(lines.encode(), "application/jsonl")[0]) == 2
    with pytest.raises(BodyError):  # the same body read as JSON is not one value
        parse_events(lines.encode(), "application/json")


def test_each_failure_has_its_status() -> None:
    assert failure(BodyError(413, "big")).status == 413
    assert failure(InvalidInputError("bad")).status == 422
    unavailable = failure(TelemetryUnavailable("Redis is unreachable: refused\n(detail)"))
    assert unavailable == (503, "Redis is unreachable: refused (detail)", {"Retry-After": "1"})
    assert failure(WindowMismatchError("ns", 60, 120)).status == 503
    none = failure(NoModelAvailable(Ranking(strategy="fastest", ranked=[], excluded=[])))
    assert none.status == 409
    assert failure(Denied(401, "no")).headers == {"WWW-Authenticate": "Bearer"}
    assert failure(Denied(403, "no")).headers == {}
    crash = failure(ZeroDivisionError("secret detail"))
    assert crash.status == 500
    assert "secret" not in crash.message  # an unexpected error's text stays in the log


def test_a_token_is_compared_with_both_tokens_in_constant_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    compared: list[tuple[bytes, bytes]] = []
    original = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return original(a, b)

    monkeypatch.setattr(tokens.hmac, "compare_digest", spy)
    both = Tokens(read="r-token", write="w-token")
    both.check("Bearer w-token", Scope.READ)
    assert compared == [(b"w-token", b"w-token"), (b"w-token", b"r-token")]  # even on a match
    compared.clear()
    with pytest.raises(Denied) as wrong:
        both.check("Bearer r-tokeX", Scope.READ)
    assert wrong.value.status == 401
    assert compared == [(b"r-tokeX", b"w-token"), (b"r-tokeX", b"r-token")]


def test_which_token_allows_what() -> None:
    both = Tokens(read="r", write="w")
    both.check("Bearer r", Scope.READ)
    both.check("bearer  w ", Scope.WRITE)
    for header, scope, status in (
        (None, Scope.READ, 401),
        ("Basic r", Scope.READ, 401),
        ("Bearer", Scope.READ, 401),
        ("Bearer r", Scope.WRITE, 403),
    ):
        with pytest.raises(Denied) as denied:
            both.check(header, scope)
        assert denied.value.status == status
    Tokens().check(None, Scope.WRITE)  # open
    Tokens(write="w").check(None, Scope.READ)  # reads open with a write token alone
    with pytest.raises(Denied) as read_only:
        Tokens(read="r").check("Bearer r", Scope.WRITE)
    assert read_only.value.status == 403
    with pytest.raises(ValueError, match="empty read token"):
        Tokens(read="")
    assert Tokens().warning() is not None
    assert Tokens(read="r", write="w").warning() is None
