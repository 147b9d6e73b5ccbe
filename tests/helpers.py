"""Event builders, Redis inspection helpers and a benchmark runner shared by the tests."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import redis
import redis.cluster

from redis_telemetry import CompletionEvent, TokenBreakdown

from .servers import RedisServer


def now() -> datetime:
    return datetime.now(UTC)


def event(
    model: str = "model-a",
    success: bool = True,
    latency_ms: int = 100,
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
