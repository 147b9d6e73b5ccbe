"""The HTTP API from a second language: Node's built-in fetch records, reads and selects
(docs/examples/client.mjs, the client docs/http.md shows)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from redis_telemetry import TelemetryStore
from redis_telemetry.core.tokens import WRITE_TOKEN_ENV

from .api import Serve
from .servers import RedisServer, require

CLIENT = Path(__file__).resolve().parents[1] / "docs" / "examples" / "client.mjs"


def require_node() -> str:
    return require(
        "node",
        "the HTTP API's second-language client test is skipped",
        "Install Node.js 18 or later (apt-get install nodejs).",
    )


@pytest.mark.parametrize("tier", [(), ("--tier",)], ids=["read-for-each", "serve-tier"])
def test_node_fetch_records_reads_and_selects(
    redis_server: RedisServer, tier: tuple[str, ...]
) -> None:
    """The same client against a server that reads Redis for each selection and against one
    that selects from its local read tier (the models are new to it: read before the first)."""
    node = require_node()
    token = "node-write-token"
    namespace = f"http-node{'-tier' if tier else ''}"
    env = {WRITE_TOKEN_ENV: token}
    with Serve(redis_server.url, "--namespace", namespace, *tier, env=env, token=token) as server:
        result = subprocess.run(
            [node, str(CLIENT)],
            capture_output=True,
            text=True,
            timeout=60,
            env={
                **os.environ,
                "REDIS_TELEMETRY_API": server.base,
                "REDIS_TELEMETRY_TOKEN": token,
            },
        )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["recorded"] == {"stored": 2, "duplicates": 0, "outside_window": 0}
    assert out["snapshot"]["model"] == "node/fast-model"
    assert out["snapshot"]["successful_completions"] == 1
    assert out["snapshot"]["avg_latency_ms"] == 800.0
    assert out["selection"]["model"] == "node/fast-model"
    assert [c["model"] for c in out["selection"]["ranking"]] == [
        "node/fast-model",
        "node/slow-model",
    ]
    assert out["selection"]["stale"] is False
    assert 0 <= out["selection"]["age_secs"] < 5
    with TelemetryStore.from_url(redis_server.url, namespace=namespace) as store:
        usage = store.session_usage("node-session")
    assert usage.totals.message_count == 2  # what Node sent is in Redis
    assert usage.totals.input_tokens == 2400


def test_without_a_token_node_sees_the_401_as_one_line(redis_server: RedisServer) -> None:
    node = require_node()
    env = {WRITE_TOKEN_ENV: "the-token"}
    with Serve(redis_server.url, "--namespace", "http-node", env=env, token="the-token") as server:
        result = subprocess.run(
            [node, str(CLIENT)],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "REDIS_TELEMETRY_API": server.base, "REDIS_TELEMETRY_TOKEN": "x"},
        )
    assert result.returncode != 0
    assert "POST /v1/events: 401 the bearer token is not valid" in result.stderr
