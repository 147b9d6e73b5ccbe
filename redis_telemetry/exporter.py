"""Prometheus exporter: one snapshot of every model per scrape, plus ``/healthz``.

``redis-telemetry serve`` runs it. A scrape while Redis is down still answers, with
``redis_telemetry_up 0`` and the exporter's own metrics, instead of failing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.registry import Collector

from .errors import TelemetryError, WindowMismatchError
from .models import ModelPerformanceSnapshot
from .store import TelemetryStore

log = logging.getLogger("redis_telemetry")
PREFIX = "redis_telemetry"
TOKEN_KINDS = ("total", "input", "output", "reasoning", "cache_read", "cache_write")


class SnapshotCollector(Collector):
    """Collects ``all_model_performances()`` once per scrape."""

    def __init__(self, store: TelemetryStore, percentiles: bool = False) -> None:
        self.store = store
        #: also export p50/p95 latency, read from the window's events (cost: the window)
        self.percentiles = percentiles
        self.errors = 0
        self._lock = threading.Lock()

    def _snapshots(self) -> list[ModelPerformanceSnapshot]:
        try:
            return self.store.all_model_performances(self.percentiles)
        except WindowMismatchError as exc:  # the namespace's window changed: follow it
            self.store = self.store.with_window(exc.stored)
            return self.store.all_model_performances(self.percentiles)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            start = time.perf_counter()
            ns = self.store.namespace
            try:
                snaps, up = self._snapshots(), 1
            except TelemetryError as exc:
                self.errors += 1
                log.warning("scrape failed: %s", exc)
                snaps, up = [], 0
            yield from model_metrics(snaps, ns, datetime.now(UTC))
            yield _gauge("up", "1 when the last scrape read Redis, else 0", ns, up)
            yield _gauge("models", "models with data or a limit in the window", ns, len(snaps))
            errors = CounterMetricFamily(f"{PREFIX}_redis_errors", "scrapes that failed to read "
                                         "Redis", labels=["namespace"])  # fmt: skip
            errors.add_metric([ns], self.errors)
            yield errors
            yield _gauge("scrape_duration_seconds", "time this scrape took", ns,
                         time.perf_counter() - start)  # fmt: skip


def _gauge(name: str, doc: str, namespace: str, value: float) -> GaugeMetricFamily:
    g = GaugeMetricFamily(f"{PREFIX}_{name}", doc, labels=["namespace"])
    g.add_metric([namespace], value)
    return g


def model_metrics(
    snaps: Iterable[ModelPerformanceSnapshot], namespace: str, now: datetime
) -> Iterator[Metric]:
    """Per-model gauges, labelled ``model`` and ``namespace``."""
    labels = ["model", "namespace"]

    def family(name: str, doc: str, extra: list[str] | None = None) -> GaugeMetricFamily:
        return GaugeMetricFamily(f"{PREFIX}_{name}", doc, labels=labels + (extra or []))

    completions = family("completions", "completions in the window", ["outcome"])
    success = family("success_ratio", "successful / all completions in the window")
    latency = family("latency_avg_seconds", "average latency of successful completions")
    quantiles = family("latency_seconds", "latency percentiles of successful completions "
                       "(exact, nearest rank; with serve --percentiles)", ["quantile"])  # fmt: skip
    throughput = family("throughput_per_second", "successful completions per second of window")
    cost = family("cost_usd", "cost of the window's completions, USD")
    tokens = family("tokens", "tokens in the window", ["kind"])
    limited = family("subscription_limited", "1 while the model is subscription-limited")
    left = family("subscription_limit_remaining_seconds", "time left on the limit (0: none)")
    age = family("last_event_age_seconds", "age of the newest event in the window")
    for s in snaps:
        ids = [s.model, namespace]
        completions.add_metric([*ids, "ok"], s.successful_completions)
        completions.add_metric([*ids, "failed"], s.failed_completions)
        success.add_metric(ids, s.success_rate)
        latency.add_metric(ids, s.avg_latency_ms / 1000)
        for q, value in (("0.5", s.latency_p50_ms), ("0.95", s.latency_p95_ms)):
            if value is not None:
                quantiles.add_metric([*ids, q], value / 1000)
        throughput.add_metric(ids, s.throughput)
        cost.add_metric(ids, s.total_cost_usd)
        for kind in TOKEN_KINDS:
            tokens.add_metric([*ids, kind], getattr(s.tokens, kind))
        is_limited = s.is_subscription_limited()
        limited.add_metric(ids, 1 if is_limited else 0)
        expires = s.subscription_limit_expires_at
        remaining = (expires - now).total_seconds() if is_limited and expires else 0.0
        left.add_metric(ids, max(0.0, remaining))
        if s.last_event_at is not None:
            age.add_metric(ids, max(0.0, (now - s.last_event_at).total_seconds()))
    yield from (completions, success, latency, quantiles, throughput, cost, tokens, limited,
                left, age)  # fmt: skip


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)


def make_app(collector: SnapshotCollector) -> Callable[..., Iterable[bytes]]:
    """The WSGI app: ``/metrics`` (and ``/``) for Prometheus, ``/healthz`` for probes."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    metrics = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path == "/healthz":
            try:
                collector.store.client.ping()
            except Exception as exc:  # any failure to reach Redis is "unhealthy"
                start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
                return [f"redis unreachable: {exc}\n".encode()]
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"ok\n"]
        if path in ("/", "/metrics"):
            result: Iterable[bytes] = metrics(environ, start_response)
            return result
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found: try /metrics or /healthz\n"]

    return app


def serve(
    store: TelemetryStore,
    host: str,
    port: int,
    ready: Callable[[str], None],
    percentiles: bool = False,
) -> None:
    """Serve until interrupted; ``ready`` is told the URL once the socket listens."""
    app = make_app(SnapshotCollector(store, percentiles))
    server = make_server(host, port, app, ThreadingWSGIServer, handler_class=_QuietHandler)
    ready(f"http://{host}:{server.server_port}/metrics")
    try:
        server.serve_forever()
    finally:
        server.server_close()
