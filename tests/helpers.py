"""Event builders, Redis inspection helpers and a benchmark runner shared by the tests."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import redis
import redis.cluster

from redis_telemetry import CompletionEvent, TokenBreakdown
from redis_telemetry.core import codec, sketch, totals
from redis_telemetry.ingest import Parsed, parse_lines

from .servers import RedisServer


def now() -> datetime:
    return datetime.now(UTC)


def event(
    model: str = "model-a",
    success: bool = True,
    latency_ms: int | None = 100,
    *,
    session_id: str = "test-session",
    ago_secs: float = 0.0,
    error: str | None = None,
    **fields: Any,
) -> CompletionEvent:
    """Like the reference's ``test_event``: 1000 tokens, $0.01, failure = rate limit."""
    if not success and error is None:
        error = "rate limit exceeded"
    values: dict[str, Any] = {
        "model": model,
        "session_id": session_id,
        "completed_at": now() - timedelta(seconds=ago_secs),
        "latency_ms": latency_ms,
        "success": success,
        "tokens": TokenBreakdown(total=1000, input=800, output=200),
        "cost_usd": 0.01,
        "error": error,
    }
    values.update(fields)
    return CompletionEvent(**values)


def all_keys(client: Any, pattern: str = "*") -> list[bytes]:
    """Every key, sorted: on a cluster, from every primary."""
    if isinstance(client, redis.cluster.RedisCluster):
        return sorted(client.keys(pattern, target_nodes=redis.cluster.RedisCluster.PRIMARIES))
    return sorted(client.keys(pattern))


def dump_all(client: Any) -> dict[Any, Any]:
    """Every key's DUMP and whether it has a TTL: equal dicts mean Redis did not change."""
    return {k: (client.dump(k), client.pttl(k) > 0) for k in all_keys(client)}


def server_ms(client: Any) -> int:
    """The server's clock in epoch milliseconds."""
    sec, usec = client.time()
    return int(sec) * 1000 + int(usec) // 1000


class Derived(NamedTuple):
    """What ``record.lua`` keeps beside a model's members: the totals (in ``totals.FIELDS``
    order), the latency sketch (bucket -> count), the session index (id -> [events, input,
    output, total, cost_nusd]) and the id index (event id -> score)."""

    sums: list[int]
    buckets: dict[int, int]
    sessions: dict[str, list[int]]
    ids: dict[str, int]


def stored_derived(client: Any, model: str, ns: str = "telemetry") -> Derived:
    """The totals, sketch and session index as stored."""
    raw = client.hgetall(f"{ns}:{{{model}}}:totals")
    held = {k.decode(): int(v) for k, v in raw.items() if k.decode() in totals.FIELDS}
    blob = client.get(f"{ns}:{{{model}}}:latency") or b""
    buckets = {b: count for b, count in enumerate(sketch.decode(blob)) if count}
    sessions: dict[str, list[int]] = {}
    for k, v in client.hgetall(f"{ns}:{{{model}}}:sessions").items():
        session, kind = k.decode().rsplit(":", 1)
        sessions.setdefault(session, [0] * 5)["niotc".index(kind)] = int(v)
    ids = {k.decode(): int(float(v)) for k, v in client.hgetall(f"{ns}:{{{model}}}:ids").items()}
    return Derived([held.get(f, 0) for f in totals.FIELDS], buckets, sessions, ids)


def recount(client: Any, model: str, ns: str = "telemetry") -> Derived:
    """The same, recounted from the members stored (unreadable ones skipped)."""
    sums = totals.zero()
    buckets: dict[int, int] = {}
    sessions: dict[str, list[int]] = {}
    ids: dict[str, int] = {}
    for member, score in client.zrange(f"{ns}:{{{model}}}:events", 0, -1, withscores=True):
        try:
            e = codec.decode(member)
        except codec.CorruptMember:
            continue
        ids[e.event_id] = int(score)
        for i, v in enumerate(codec.stored_sums(e)):
            sums[i] += v
        if e.success and e.latency_ms is not None:
            b = sketch.bucket(e.latency_ms)
            buckets[b] = buckets.get(b, 0) + 1
        u = sessions.setdefault(e.session_id, [0, 0, 0, 0, 0])
        for j, v in enumerate((1, e.input, e.output, e.total, codec.nano_usd(e.cost_usd))):
            u[j] += v
    return Derived(sums, buckets, sessions, ids)


def wait_for_server_ms(client: Any, target_ms: int, timeout: float = 10.0) -> None:
    """Wait until the server's clock reaches ``target_ms``: for events to age out of a window
    (a condition on Redis's own clock, polled; not a guess at how long something takes)."""
    deadline = time.monotonic() + timeout
    while server_ms(client) < target_ms:
        if time.monotonic() > deadline:
            raise AssertionError(f"the server's clock did not reach {target_ms}")
        time.sleep(0.01)


BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def run_benchmark(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``benchmarks/<script>`` with ``args`` on a redis-server of its own (a benchmark
    flushes the server it uses), capturing its output."""
    server = RedisServer().start()
    try:
        return subprocess.run(
            [sys.executable, str(BENCHMARKS / script), *args, "--url", server.url],
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        server.cleanup()


#: the ingest fixtures (tests/fixtures/README.md says which tool version each models)
FIXTURES = Path(__file__).parent / "fixtures"
#: the codex and gemini fixtures' runs happen just before this time
INGEST_NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def parse_fixture(fmt: str, name: str, **kw: Any) -> Parsed:
    """A fixture parsed on a clock stopped at ``INGEST_NOW``."""
    lines = (FIXTURES / name).read_text().splitlines(keepends=True)
    return parse_lines(fmt, lines, clock=lambda: INGEST_NOW, **kw)


def json_lines(*messages: dict[str, Any]) -> list[str]:
    return [json.dumps(m) for m in messages]
