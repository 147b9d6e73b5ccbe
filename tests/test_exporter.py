"""`redis-telemetry serve`, scraped over HTTP and read with prometheus_client's parser."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from redis_telemetry import TelemetryStore

from .helpers import event
from .servers import free_port


@contextmanager
def serving(url: str, *extra: str) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "redis_telemetry", "--url", url, "serve", "--port", str(port),
         *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        line = proc.stdout.readline()  # printed once the socket listens
        assert f"http://127.0.0.1:{port}/metrics" in line, proc.stderr.read() if proc.stderr else ""
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(data: dict, name: str, **labels: str) -> float:  # type: ignore[type-arg]
    return data[(name, tuple(sorted(labels.items())))]


def test_scrape_reports_every_model(url: str) -> None:
    store = TelemetryStore.from_url(url)
    store.record_batch(
        [event("a", True, 200, cost_usd=0.5), event("a", True, 400, cost_usd=0.25),
         event("a", False, 5, error="boom"), event("b", False, 9, error="429 Too Many Requests")]
    )  # fmt: skip
    with serving(url) as base:
        status, text = get(base + "/metrics")
        assert status == 200
        data = samples(text)
        ns = "telemetry"
        assert value(data, "redis_telemetry_up", namespace=ns) == 1
        assert value(data, "redis_telemetry_models", namespace=ns) == 2
        assert (
            value(data, "redis_telemetry_completions", model="a", namespace=ns, outcome="ok") == 2
        )
        assert value(data, "redis_telemetry_completions", model="a", namespace=ns,
                     outcome="failed") == 1  # fmt: skip
        assert value(data, "redis_telemetry_success_ratio", model="a", namespace=ns) == (
            pytest.approx(2 / 3)
        )
        assert value(data, "redis_telemetry_latency_avg_seconds", model="a", namespace=ns) == 0.3
        assert value(data, "redis_telemetry_throughput_per_second", model="a", namespace=ns) == (
            pytest.approx(2 / 3600)
        )
        assert value(data, "redis_telemetry_cost_usd", model="a", namespace=ns) == 0.76
        assert value(data, "redis_telemetry_tokens", model="a", namespace=ns, kind="total") == 3000
        assert value(data, "redis_telemetry_subscription_limited", model="b", namespace=ns) == 1
        assert value(data, "redis_telemetry_subscription_limited", model="a", namespace=ns) == 0
        left = value(data, "redis_telemetry_subscription_limit_remaining_seconds", model="b",
                     namespace=ns)  # fmt: skip
        assert 3590 < left <= 3600
        assert 0 <= value(data, "redis_telemetry_last_event_age_seconds", model="a",
                          namespace=ns) < 60  # fmt: skip
        assert value(data, "redis_telemetry_redis_errors_total", namespace=ns) == 0
        assert value(data, "redis_telemetry_scrape_duration_seconds", namespace=ns) > 0
        assert get(base + "/healthz") == (200, "ok\n")
        assert get(base + "/nope")[0] == 404
    store.client.close()


def test_scrape_while_redis_is_down_still_answers() -> None:
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    with serving(nowhere) as base:
        for expected_errors in (1, 2):
            status, text = get(base + "/metrics")
            assert status == 200
            data = samples(text)
            assert value(data, "redis_telemetry_up", namespace="telemetry") == 0
            assert value(data, "redis_telemetry_redis_errors_total", namespace="telemetry") == (
                expected_errors
            )
            assert not any(name == "redis_telemetry_completions" for name, _ in data)
        status, body = get(base + "/healthz")
        assert status == 503
        assert "redis unreachable" in body


def test_serve_follows_a_window_changed_in_redis(url: str) -> None:
    TelemetryStore.from_url(url, window_secs=60).record(event("m"))
    with serving(url) as base:
        data = samples(get(base + "/metrics")[1])
        assert value(data, "redis_telemetry_up", namespace="telemetry") == 1
        TelemetryStore.from_url(url, window_secs=60).set_window(120)
        data = samples(get(base + "/metrics")[1])  # the next scrape already follows it
        assert value(data, "redis_telemetry_up", namespace="telemetry") == 1
        assert value(data, "redis_telemetry_throughput_per_second", model="m",
                     namespace="telemetry") == pytest.approx(1 / 120)  # fmt: skip


def test_shipped_dashboard_and_scrape_config_match_the_exporter(url: str) -> None:
    root = Path(__file__).resolve().parents[1] / "deploy"
    dashboard = json.loads((root / "grafana-dashboard.json").read_text())
    used = {
        name
        for p in dashboard["panels"]
        for t in p["targets"]
        for name in re.findall(r"redis_telemetry_\w+", t["expr"])
    }
    TelemetryStore.from_url(url).record(event("m"))
    with serving(url) as base:
        exported = {name for name, _ in samples(get(base + "/metrics")[1])}
    assert used <= exported, used - exported
    assert "localhost:9464" in (root / "prometheus.yml").read_text()


def test_percentiles_are_exported_on_request(url: str) -> None:
    TelemetryStore.from_url(url).record_batch([event("p", True, ms) for ms in (100, 200, 900)])
    with serving(url) as base:
        assert not any(n == "redis_telemetry_latency_seconds" for n, _ in samples(get(base)[1]))
    with serving(url, "--percentiles") as base:
        data = samples(get(base + "/metrics")[1])
        assert value(data, "redis_telemetry_latency_seconds", model="p", namespace="telemetry",
                     quantile="0.5") == 0.2  # fmt: skip
        assert value(data, "redis_telemetry_latency_seconds", model="p", namespace="telemetry",
                     quantile="0.95") == 0.9  # fmt: skip
