"""`redis-telemetry serve`, scraped over HTTP and read with prometheus_client's parser."""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import promql_parser
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

import redis_telemetry
from redis_telemetry import CompletionEvent, TelemetryStore, TokenBreakdown
from redis_telemetry.cli import DEFAULT_PORT
from redis_telemetry.exporter import SnapshotCollector

from .api import Serve
from .helpers import event
from .servers import RedisServer, free_port


@contextmanager
def serving(url: str, *extra: str) -> Iterator[str]:
    """``serve`` on ``url``, ready; its base URL."""
    with Serve(url, *extra) as server:
        assert f"{server.base}/metrics" in server.stdout  # the line it prints once it serves
        yield server.base


def write(url: str, events: list[CompletionEvent], window_secs: int = 3600) -> None:
    """Record with a store of its own, closed afterwards."""
    store = TelemetryStore.from_url(url, window_secs=window_secs)
    with closing(store.client):
        store.record_batch(events)


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


NS = "telemetry"


def test_scrape_reports_every_model(url: str) -> None:
    store = TelemetryStore.from_url(url)
    store.record_batch(
        [
            event("a", True, 200, cost_usd=0.5),
            event("a", True, 400, cost_usd=0.25),
            event("a", False, 5, error="boom"),
            event("b", False, 9, error="429 Too Many Requests"),
        ]
    )
    with serving(url) as base:
        status, text = get(base + "/metrics")
        assert status == 200
        data = samples(text)
        ns = {"store_namespace": NS}
        a, b = {"model": "a", **ns}, {"model": "b", **ns}
        assert value(data, "redis_telemetry_up", **ns) == 1
        assert value(data, "redis_telemetry_models", **ns) == 2
        assert value(data, "redis_telemetry_window_seconds", **ns) == 3600
        assert value(data, "redis_telemetry_window_completions", **a, outcome="ok") == 2
        assert value(data, "redis_telemetry_window_completions", **a, outcome="failed") == 1
        # sums, so PromQL divides: average latency = 0.6 s / 2 successes
        assert value(data, "redis_telemetry_window_latency_sum_seconds", **a) == 0.6
        assert value(data, "redis_telemetry_window_cost_usd", **a) == 0.76
        for kind, tokens in (("input", 2400), ("output", 600), ("reasoning", 0)):
            assert value(data, "redis_telemetry_window_tokens", **a, kind=kind) == tokens
        assert value(data, "redis_telemetry_window_reported_tokens", **a) == 3000
        assert value(data, "redis_telemetry_subscription_limited", **b) == 1
        assert value(data, "redis_telemetry_subscription_limited", **a) == 0
        expiry = value(data, "redis_telemetry_subscription_limit_expiry_timestamp_seconds", **b)
        assert 3590 < expiry - time.time() <= 3600
        assert (
            "redis_telemetry_subscription_limit_expiry_timestamp_seconds",
            tuple(sorted(a.items())),
        ) not in data
        newest = value(data, "redis_telemetry_last_event_timestamp_seconds", **a)
        assert 0 <= time.time() - newest < 60
        assert value(data, "redis_telemetry_redis_errors_total", **ns) == 0
        assert value(data, "redis_telemetry_scrape_duration_seconds", **ns) > 0
        assert value(data, "redis_telemetry_build_info", version=redis_telemetry.__version__) == 1
        assert get(base + "/healthz") == (200, "ok\n")
        assert get(base + "/nope")[0] == 404
    store.client.close()


def test_scrape_reports_every_provider(url: str) -> None:
    store = TelemetryStore.from_url(url)
    store.record_batch([event("kimi/k2", cost_usd=0.5), event("zai/glm", cost_usd=0.25)])
    store.set_budget("kimi", hour_usd=0.6)
    store.provider_throttled("zai")
    with serving(url) as base:
        data = samples(get(base + "/metrics")[1])
    kimi = {"provider": "kimi", "store_namespace": NS}
    zai = {"provider": "zai", "store_namespace": NS}
    assert value(data, "redis_telemetry_provider_spend_usd", **kimi, window="hour") == 0.5
    assert value(data, "redis_telemetry_provider_spend_usd", **zai, window="day") == 0.25
    assert value(data, "redis_telemetry_provider_cap_usd", **kimi, window="hour") == 0.6
    assert (
        "redis_telemetry_provider_cap_usd",
        tuple(sorted({**kimi, "window": "day"}.items())),
    ) not in data
    assert (
        value(data, "redis_telemetry_provider_budget_info", **kimi, verdict="near_exhaustion") == 1
    )
    assert value(data, "redis_telemetry_provider_budget_info", **zai, verdict="uncapped") == 1
    assert value(data, "redis_telemetry_provider_blocked", **zai) == 1
    assert value(data, "redis_telemetry_provider_blocked", **kimi) == 0
    assert (
        0
        < value(data, "redis_telemetry_provider_block_expiry_timestamp_seconds", **zai)
        - time.time()
        <= 60
    )
    assert value(data, "redis_telemetry_provider_backoff_completions", **zai) == 1
    store.client.close()


def test_token_kinds_sum_to_the_total_without_double_counting(url: str) -> None:
    tokens = TokenBreakdown(
        total=438, input=10, output=20, reasoning=3, cache_read=400, cache_write=5
    )
    write(url, [event("t", tokens=tokens)] * 2)
    with serving(url) as base:
        data = samples(get(base + "/metrics")[1])
    kinds = {
        dict(labels)["kind"]: v
        for (name, labels), v in data.items()
        if name == "redis_telemetry_window_tokens"
    }
    assert kinds == {
        "input": 20,
        "output": 40,
        "reasoning": 6,
        "cache_read": 800,
        "cache_write": 10,
    }
    assert sum(kinds.values()) == value(
        data, "redis_telemetry_window_reported_tokens", model="t", store_namespace=NS
    )


def test_scrape_while_redis_is_down_still_answers() -> None:
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    with serving(nowhere) as base:
        for expected_errors in (1, 2):
            status, text = get(base + "/metrics")
            assert status == 200
            data = samples(text)
            assert value(data, "redis_telemetry_up", store_namespace=NS) == 0
            assert value(data, "redis_telemetry_redis_errors_total", store_namespace=NS) == (
                expected_errors
            )
            assert not any(name.startswith("redis_telemetry_window_") for name, _ in data)
        assert get(base + "/healthz") == (200, "ok\n")  # the process answers
        status, body = get(base + "/readyz")  # Redis does not
        assert status == 503
        assert json.loads(body)["error"].startswith("Redis is unreachable")


def test_serve_follows_a_window_changed_in_redis(url: str) -> None:
    write(url, [event("m")], window_secs=60)
    with serving(url) as base:
        data = samples(get(base + "/metrics")[1])
        assert value(data, "redis_telemetry_up", store_namespace=NS) == 1
        assert value(data, "redis_telemetry_window_seconds", store_namespace=NS) == 60
        store = TelemetryStore.from_url(url, window_secs=60)
        with closing(store.client):
            store.set_window(120)
        data = samples(get(base + "/metrics")[1])  # the next scrape already follows it
        assert value(data, "redis_telemetry_up", store_namespace=NS) == 1
        assert value(data, "redis_telemetry_window_seconds", store_namespace=NS) == 120


def test_shipped_dashboard_and_scrape_config_match_the_exporter(url: str) -> None:
    root = Path(__file__).resolve().parents[1] / "deploy"
    dashboard = json.loads((root / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {name for e in exprs for name in re.findall(r"redis_telemetry_\w+", e)}
    write(url, [event("m"), event("l", False, error="usage limit")])
    with serving(url, "--percentiles") as base:
        exported = {name for name, _ in samples(get(base + "/metrics")[1])}
    assert used <= exported, used - exported
    assert len(used) >= 10
    for expr in exprs:  # each one is valid PromQL
        promql_parser.parse(expr.replace("$store_namespace", NS))
    # every query selects the store's namespace by its own label, never Kubernetes' one
    assert all('store_namespace="$store_namespace"' in e for e in exprs)
    assert not any(re.search(r"[^_]namespace=", e) for e in exprs)
    (variable,) = (v for v in dashboard["templating"]["list"] if v["type"] == "query")
    assert variable["query"] == "label_values(redis_telemetry_up, store_namespace)"
    assert f'["exporter:{DEFAULT_PORT}"]' in (root / "prometheus.yml").read_text()
    alerts = (root / "alerts.yml").read_text()  # the example alert rules name exported metrics
    assert set(re.findall(r"redis_telemetry_\w+", alerts)) <= exported


def test_the_promql_in_the_metrics_page_parses_and_names_exported_metrics(url: str) -> None:
    page = (Path(__file__).resolve().parents[1] / "docs" / "metrics.md").read_text()
    queries = re.findall(r"^\| [^|]+ \| `([^`]+)` \|$", page, flags=re.M)
    assert len(queries) >= 8
    write(url, [event("m"), event("l", False, error="usage limit")])
    with serving(url, "--percentiles") as base:
        exported = {name for name, _ in samples(get(base + "/metrics")[1])}
    for query in queries:
        promql_parser.parse(query)
        assert set(re.findall(r"redis_telemetry_\w+", query)) <= exported, query


def test_percentiles_are_exported_on_every_scrape_exact_on_request(url: str) -> None:
    write(url, [event("p", True, ms) for ms in (100, 200, 900)])
    name = "redis_telemetry_window_latency_percentile_seconds"
    p = {"model": "p", "store_namespace": NS}
    with serving(url) as base:  # from the running totals' latency sketch: within 1/128
        data = samples(get(base + "/metrics")[1])
        assert value(data, name, **p, percentile="50") == pytest.approx(0.2, rel=1 / 128)
        assert value(data, name, **p, percentile="50") != 0.2
        assert value(data, name, **p, percentile="95") == pytest.approx(0.9, rel=1 / 128)
        assert value(data, name, **p, percentile="99") == pytest.approx(0.9, rel=1 / 128)
    with serving(url, "--percentiles") as base:
        data = samples(get(base + "/metrics")[1])
        assert value(data, name, **p, percentile="50") == 0.2
        assert value(data, name, **p, percentile="95") == 0.9
        assert value(data, name, **p, percentile="99") == 0.9
        bucket = "redis_telemetry_window_latency_seconds_bucket"
        assert value(data, bucket, **p, le="0.25") == 2  # exact, from the events
        assert value(data, bucket, **p, le="1.0") == 3


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Prometheus' histogram_quantile() over (le, cumulative count) pairs, ascending: linear
    interpolation within the bucket that holds rank q * count (promql/quantile.go)."""
    count = buckets[-1][1]
    rank = q * count
    lower, below = 0.0, 0.0
    for le, cumulative in buckets:
        if cumulative >= rank:
            if le == float("inf"):
                return lower
            return lower + (le - lower) * (rank - below) / (cumulative - below)
        lower, below = le, cumulative
    raise AssertionError("unreachable: the +Inf bucket holds every count")


def test_the_latency_histogram_gives_fleet_wide_percentiles(url: str) -> None:
    write(url, [event("fast", True, 100) for _ in range(90)])
    write(url, [event("slow", True, 4000) for _ in range(10)] + [event("slow", False, 9)])
    with serving(url) as base:
        data = samples(get(base + "/metrics")[1])
    name = "redis_telemetry_window_latency_seconds"
    fleet: dict[float, float] = {}
    for (sample, labels), v in data.items():
        if sample == name + "_bucket":
            le = float(dict(labels)["le"])
            fleet[le] = fleet.get(le, 0) + v  # sum by (le)
    buckets = sorted(fleet.items())
    assert [le for le, _ in buckets][-1] == float("inf")
    assert buckets[-1][1] == 100  # every timed success, no failure
    assert dict(buckets)[0.1] == 90
    assert dict(buckets)[2.5] == 90
    assert dict(buckets)[5.0] == 100
    # the fleet's p95 is a slow call (4 s): the estimate lies in its bucket, (2.5 s, 5 s]
    assert 2.5 < histogram_quantile(0.95, buckets) <= 5.0
    assert histogram_quantile(0.5, buckets) <= 0.1  # and its median a fast one
    slow = {"model": "slow", "store_namespace": NS}
    assert value(data, name + "_gcount", **slow) == 10
    assert value(data, name + "_gsum", **slow) == 40.0
    # the per-model percentile gauges stay
    p95 = value(data, "redis_telemetry_window_latency_percentile_seconds", **slow, percentile="95")
    assert p95 == pytest.approx(4.0, rel=1 / 128)


def test_the_histogram_is_a_gauge_histogram_in_openmetrics(url: str) -> None:
    write(url, [event("m", True, 300)])
    with serving(url) as base:
        request = urllib.request.Request(
            base + "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
        )
        with urllib.request.urlopen(request, timeout=30) as resp:
            text = resp.read().decode()
    families = {f.name: f for f in openmetrics_families(text)}
    histogram = families["redis_telemetry_window_latency_seconds"]
    assert histogram.type == "gaugehistogram"  # it goes down as events age out: not a counter
    assert {s.name for s in histogram.samples} == {
        "redis_telemetry_window_latency_seconds_bucket",
        "redis_telemetry_window_latency_seconds_gcount",
        "redis_telemetry_window_latency_seconds_gsum",
    }


def test_a_scrape_reads_redis_as_one_snapshot_does(redis_server: RedisServer) -> None:
    """The histogram comes from the snapshots' sketch: a scrape sends Redis the same commands
    as one all_model_performances() and one providers() call (counted by the server's
    commandstats)."""
    with redis_server.client() as raw:
        raw.flushall()
        with TelemetryStore.from_url(redis_server.url) as store:
            store.record_batch([event(m, True, 100 + i) for i, m in enumerate("abc")])
            registry = CollectorRegistry(auto_describe=False)
            registry.register(SnapshotCollector(store))

            def calls(action: Callable[[], object]) -> dict[str, int]:
                before = raw.info("commandstats")
                action()
                after = raw.info("commandstats")
                return {
                    k: after[k]["calls"] - before.get(k, {"calls": 0})["calls"]
                    for k in after
                    if k != "cmdstat_info" and after[k]["calls"] != before.get(k, {}).get("calls")
                }

            store.all_model_performances()  # the first call checks the eviction policy

            def direct_reads() -> None:
                store.all_model_performances()
                store.providers()

            direct = calls(direct_reads)
            scrape = calls(lambda: generate_latest(registry))
    assert direct
    assert scrape == direct
    assert "redis_telemetry_window_latency_seconds_bucket" in generate_latest(registry).decode()


# -- the naming conventions (prometheus.io/docs/practices/naming) ---------------------------------

BASE_UNITS = ("seconds", "bytes", "ratio", "usd", "tokens", "completions", "models", "info")
NOT_BASE_UNITS = ("milliseconds", "ms", "minutes", "hours", "percent", "kilobytes")
NO_AGES = ("age", "remaining", "ago", "elapsed", "left")


def test_every_metric_follows_the_naming_conventions(url: str) -> None:
    write(url, [event("m", True, 100), event("m", False, 5, error="usage limit")])
    with serving(url, "--percentiles") as base:
        families = list(text_string_to_metric_families(get(base + "/metrics")[1]))
    by_name = {f.name: f for f in families}
    assert len(by_name) >= 15
    histograms = {f.name for f in families if f.type == "histogram"}
    assert histograms == {"redis_telemetry_window_latency_seconds"}
    for f in families:
        if f.name.endswith(("_gsum", "_gcount")) and f.name.rsplit("_", 1)[0] in histograms:
            continue  # a gauge histogram's sum and count, as the text format writes them
        assert f.name.startswith("redis_telemetry_"), f.name
        assert f.documentation, f.name
        words = f.name.split("_")
        assert not set(words) & set(NO_AGES), f"{f.name}: export a timestamp, not an age"
        assert not set(words) & set(NOT_BASE_UNITS), f"{f.name}: use base units"
        if f.type == "gauge":
            assert not f.name.endswith(("_total", "_count", "_sum", "_bucket")), f.name
            flags = ("up", "subscription_limited", "provider_blocked")  # 0 or 1
            if f.name.removeprefix("redis_telemetry_") not in flags:
                assert f.name.endswith(BASE_UNITS), f"{f.name}: name the unit last"
        if "latency" in f.name or "duration" in f.name or "timestamp" in f.name:
            assert f.name.endswith("_seconds"), f.name
        labels = {k for s in f.samples for k in s.labels}
        assert "namespace" not in labels, f"{f.name}: collides with Kubernetes' label"
        if f.type != "summary":
            assert "quantile" not in labels, f"{f.name}: quantile belongs to summaries"
        if f.name != "redis_telemetry_build_info":
            assert all(s.labels.get("store_namespace") == NS for s in f.samples), f.name
        assert all(s.labels.get("kind") != "total" for s in f.samples), f.name
    # window values are gauges, the only counter counts the exporter's own failures
    assert {f.name for f in families if f.type == "counter"} == {"redis_telemetry_redis_errors"}
    assert all(
        f.type == "gauge" for f in families if "_window_" in f.name and f.name not in histograms
    )
