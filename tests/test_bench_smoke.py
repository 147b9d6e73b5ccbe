"""A quick smoke run of the benchmark command (the full run is not part of CI)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .servers import RedisServer

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_benchmark_quick_run(tmp_path: Path) -> None:
    server = RedisServer().start()  # its own: the benchmark flushes the server it uses
    try:
        result = subprocess.run(
            [
                sys.executable,
                str(ROOT / "benchmarks" / "bench.py"),
                "--quick",
                "--url",
                server.url,
                "--out",
                str(tmp_path),
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        server.cleanup()
    assert result.returncode == 0, result.stderr
    data = json.loads((tmp_path / "bench.json").read_text())
    assert data["record"]["ratio_p50"] > 0
    assert data["record_batch"]["ratio"] > 0
    assert [row["events"] for row in data["snapshots"]] == [1000, 5000]
    assert data["concurrency"]["exact"] is True
    assert "| `record()` p50 / p99 |" in result.stdout
