"""A quick smoke run of the benchmark command (the full run is not part of CI)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .helpers import run_benchmark


@pytest.mark.slow
def test_benchmark_quick_run(tmp_path: Path) -> None:
    result = run_benchmark("bench.py", "--quick", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    data = json.loads((tmp_path / "bench.json").read_text())
    assert data["record"]["ratio_p50"] > 0
    assert data["record_batch"]["ratio"] > 0
    assert [row["events"] for row in data["snapshots"]] == [1000, 5000]
    assert data["concurrency"]["exact"] is True
    assert "| `record()` p50 / p99 |" in result.stdout


@pytest.mark.slow
def test_upkeep_benchmark_quick_run(tmp_path: Path) -> None:
    result = run_benchmark("upkeep.py", "--quick", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    rows = json.loads((tmp_path / "upkeep.json").read_text())
    assert [row["events"] for row in rows] == [6000, 500]
    assert all(row["rebuild_calls"] >= 2 and row["trim_calls"] >= 2 for row in rows)
    assert "| case | longest rebuild call |" in result.stdout


@pytest.mark.slow
def test_providers_benchmark_quick_run(tmp_path: Path) -> None:
    result = run_benchmark("providers.py", "--quick", "--out", str(tmp_path))
    assert "| `rank_models()` of 5 candidates" in result.stdout, result.stderr
    data = json.loads((tmp_path / "providers.json").read_text())
    assert data["record"]["ratio_p50"] > 0
    assert data["record"]["exact"] is True
    assert data["routing"]["ratio_p50"] > 0
    assert data["routing"]["excluded"] == {
        "bigco/a": "provider_blocked",
        "bigco/b": "provider_blocked",
    }


@pytest.mark.slow
def test_record_cpu_benchmark_quick_run(tmp_path: Path) -> None:
    result = run_benchmark("record_cpu.py", "--quick", "--before", "HEAD", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    rows = json.loads((tmp_path / "record_cpu.json").read_text())
    assert [(row["prefill"], row["batch"]) for row in rows] == [(0, 0), (200, 0), (0, 1000)]
    assert all(row["cpu_us_before"] > 0 and row["cpu_us_after"] > 0 for row in rows)
    assert "| write (record.lua vs HEAD) |" in result.stdout


@pytest.mark.slow
def test_bench_writes_only(tmp_path: Path) -> None:
    result = run_benchmark("bench.py", "--quick", "--writes", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "one shard's ceiling" in result.stdout
    assert "all_model_performances" not in result.stdout


@pytest.mark.slow
def test_routing_benchmark_quick_run(tmp_path: Path) -> None:
    pytest.importorskip("litellm")
    out = tmp_path / "routing.json"
    result = run_benchmark("routing_bench.py", "--quick", "--out", str(out))
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    read = data["read_path"]
    cases = ("select_model", "rank_models", "all_model_performances", "select_model_cold")
    for case in (*cases, "cached_select_model"):
        assert read[case]["vs_floor_p50"] > 0  # measured; the figures are not asserted
    assert read["redis_cpu_us_per_model_snapshot"] > 0
    assert set(data["litellm"]) == {"litellm", "ours_uncached", "ours_cached"}
    load = data["load"]
    assert (load["routers"], load["writers"]) == (4, 4)
    assert load["tier"]["decisions_per_s"] > 0
    assert load["no_tier"]["writes_per_s"] > 0
    assert "| `LocalTier.select_model` (20 models, cached)" in result.stdout
