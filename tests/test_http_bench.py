"""A quick run of the HTTP API's benchmark: its figures are measured, and 8 HTTP writers with
retries, through a serve process killed and restarted, leave exact totals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .helpers import run_benchmark


@pytest.mark.slow
def test_http_benchmark_quick_run(tmp_path: Path) -> None:
    out = tmp_path / "http.json"
    result = run_benchmark("http_bench.py", "--quick", "--out", str(out))
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    for row in data["throughput"]["by_batch_size"].values():
        assert row["http_events_per_s"] > 0
        assert row["ratio"] > 0
    assert data["select"]["ratio_p50"] > 0
    writers = data["writers"]
    assert writers["writers"] == 8
    assert writers["in_redis"] == writers["events_sent"] == 8 * 6 * 50
    assert writers["exact"] is True
    assert writers["serve_killed"] == 1
    assert writers["retries"] > 0  # the writers did meet the outage, and retried through it
    # one 2xx per batch, counting each event once: stored now, or stored by a lost attempt
    assert writers["answered_stored"] + writers["answered_duplicates"] == writers["events_sent"]
    assert "| `POST /v1/select` p50 / p99 |" in result.stdout
