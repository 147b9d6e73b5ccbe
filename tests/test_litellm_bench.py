"""A small run of the LiteLLM benchmark (the full 4 x 100 run is not part of CI)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .servers import RedisServer

pytest.importorskip("litellm")

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_litellm_benchmark_small_run(tmp_path: Path) -> None:
    server = RedisServer().start()  # its own: the benchmark flushes the server it uses
    out = tmp_path / "litellm.json"
    try:
        result = subprocess.run(
            [
                sys.executable,
                str(ROOT / "benchmarks" / "litellm_bench.py"),
                *("--replicas", "2", "--calls", "5", "--loop-calls", "20"),
                *("--url", server.url, "--out", str(out)),
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        server.cleanup()
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    counting = data["counting"]
    assert (counting["replicas"], counting["calls"]) == (2, 5)
    ours, theirs = counting["ours"], counting["litellm"]
    assert ours["completions"] == ours["expected"] == 10  # every call, exactly
    assert ours["dropped"] == 0
    assert ours["tokens"] == ours["expected_tokens"] > 0
    assert ours["cost_usd"] == pytest.approx(ours["expected_cost_usd"], rel=1e-9)
    assert ours["cost_usd"] > 0
    assert set(ours["deployments"]) <= {"dep-a", "dep-b"}
    assert theirs["key"] == "coder_map"
    assert 0 < theirs["completions"] <= theirs["expected"] == 10  # last writer wins: at most
    assert set(theirs["deployments"]) <= {"dep-a", "dep-b"}
    loop = data["event_loop"]
    assert loop["calls"] > 0
    assert loop["recorded"] >= loop["calls"]
    assert loop["hook_calls"] >= loop["calls"]
    for key in ("hook_ms_mean", "writer_ms_per_call", "wall_ratio", "loop_ms_per_call_base"):
        assert loop[key] > 0  # measured (the figures themselves are not asserted)
    assert "| completions counted, 2 replicas x 5 calls | 10 of 10 |" in result.stdout
    assert "| event loop per call: our hook |" in result.stdout
