"""A quick run of the OTLP receiver's benchmark: its figures are measured, and every span the
exporters sent is stored once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .helpers import run_benchmark


@pytest.mark.slow
def test_otlp_benchmark_quick_run(tmp_path: Path) -> None:
    out = tmp_path / "otlp.json"
    result = run_benchmark("otlp_bench.py", "--quick", "--out", str(out))
    assert result.returncode == 0, result.stderr
    traces = json.loads(out.read_text())["traces"]
    assert traces["otlp_spans_per_s"] > 0
    assert traces["direct_events_per_s"] > 0
    assert traces["ratio"] > 0
    assert traces["batch"] == 512
    assert traces["clients"] == 4
    assert traces["events_stored"] == traces["spans_sent"] == 4 * 2 * 512
    assert "| `POST /v1/traces`, protobuf, 4 exporters, batches of 512 |" in result.stdout
