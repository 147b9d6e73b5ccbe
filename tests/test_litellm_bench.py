"""A small run of the LiteLLM benchmark (the full 4 x 100 run is not part of CI)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .helpers import run_benchmark

pytest.importorskip("litellm")


@pytest.mark.slow
def test_litellm_benchmark_small_run(tmp_path: Path) -> None:
    out = tmp_path / "litellm.json"
    result = run_benchmark(
        "litellm_bench.py",
        *("--replicas", "2", "--calls", "5", "--loop-calls", "20", "--out", str(out)),
    )
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
    for mode in ("base", "noop", "ours", "ours_thread"):
        assert loop[mode]["wall_ms_per_call"] > 0  # measured; the figures are not asserted
    for mode in ("ours", "ours_thread"):  # the logger on each kind of store records every call
        assert loop[mode]["recorded"] >= loop["calls"]
        assert loop[mode]["hook_calls"] >= loop["calls"]
        assert loop[mode]["hook_ms_mean"] > 0
    assert "| completions counted, 2 replicas x 5 calls | 10 of 10 |" in result.stdout
    assert "| AsyncTelemetryStore: our hook, per call |" in result.stdout
