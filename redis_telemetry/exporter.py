"""Prometheus exporter: one snapshot of every model per scrape.

``redis-telemetry serve`` serves it at ``/metrics`` (``server.app``). A scrape while Redis is
down or hung still answers within the store's deadline (``--timeout``), with
``redis_telemetry_up 0`` and the exporter's own metrics, instead of failing.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterable, Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeHistogramMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from ._version import __version__
from .core.providers import ProviderStatus
from .errors import TelemetryError, WindowMismatchError
from .models import ModelPerformanceSnapshot
from .store import TelemetryStore

log = logging.getLogger(__name__)
PREFIX = "redis_telemetry"
#: the per-kind token counts; ``tokens.total`` is exported on its own, so summing over
#: ``kind`` never counts a token twice
TOKEN_KINDS = ("input", "output", "reasoning", "cache_read", "cache_write")
#: the label naming the store's namespace (not ``namespace``: Kubernetes service discovery
#: attaches that one, and Prometheus would rename ours to ``exported_namespace``)
NS_LABEL = "store_namespace"


class SnapshotCollector(Collector):
    """Collects ``all_model_performances()`` once per scrape.

    Every per-model value covers the namespace's rolling window, so it is a gauge: it goes
    down as events age out. They are sums and counts, which PromQL can add across models and
    divide; ``redis_telemetry_window_seconds`` gives the window's length once.
    """

    def __init__(self, store: TelemetryStore, percentiles: bool = False) -> None:
        self.store = store
        #: export exact p50/p95/p99 latency, read from the window's events (cost: the
        #: window), instead of the running totals' sketch (within 0.78%, at no extra cost)
        self.percentiles = percentiles
        self.errors = 0
        self._lock = threading.Lock()

    def _snapshots(self) -> list[ModelPerformanceSnapshot]:
        try:
            return self.store.all_model_performances(self.percentiles)
        except WindowMismatchError as exc:  # the namespace's window changed: follow it
            self.store = self.store.with_window(exc.stored)
            return self.store.all_model_performances(self.percentiles)

    def describe(self) -> Iterator[Metric]:
        """Every family this collector yields, without samples (no Redis read)."""
        yield from model_metrics([], "")
        yield from provider_metrics([], "")
        yield from _scrape_metrics("", up=0, models=0, errors=0, window=0, duration=0.0)

    def unanswered(self, duration: float) -> Iterator[Metric]:
        """What a scrape answers when Redis did not answer within Prometheus's scrape timeout:
        no model, ``up`` 0 (the read goes on in its thread until the store's deadline)."""
        yield from model_metrics([], self.store.namespace)
        yield from provider_metrics([], self.store.namespace)
        yield from _scrape_metrics(self.store.namespace, 0, 0, self.errors, None, duration)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            start = time.perf_counter()
            ns = self.store.namespace
            try:
                snaps, up = self._snapshots(), 1
                found = self.store.providers()
            except TelemetryError as exc:
                self.errors += 1
                log.warning("scrape failed: %s", exc)
                snaps, found, up = [], [], 0
            yield from model_metrics(snaps, ns)
            yield from provider_metrics(found, ns)
            window = self.store.window_secs if up else None
            yield from _scrape_metrics(
                ns, up, len(snaps), self.errors, window, time.perf_counter() - start
            )


#: Seconds a scrape keeps of Prometheus's scrape timeout for encoding and the network.
SCRAPE_MARGIN = 0.25


def scrape_budget(header: str | None) -> float | None:
    """How long a scrape may wait for Redis, from Prometheus's
    ``X-Prometheus-Scrape-Timeout-Seconds`` header (None: no header, or not a positive
    number): the timeout less :data:`SCRAPE_MARGIN`, at least 0.05 s."""
    try:
        secs = float(header) if header is not None else math.nan
    except ValueError:
        return None
    if not math.isfinite(secs) or secs <= 0:
        return None
    return max(0.05, secs - SCRAPE_MARGIN)


def _gauge(name: str, doc: str, labels: list[str], unit: str = "") -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}_{name}", doc, labels=labels, unit=unit)


def _scrape_metrics(
    ns: str, up: int, models: int, errors: int, window: int | None, duration: float
) -> Iterator[Metric]:
    """The exporter's own metrics, and the window's length (only once Redis answered)."""
    info = InfoMetricFamily(f"{PREFIX}_build", "the exporter's version", labels=["version"])
    info.add_metric([__version__], {})
    yield info
    for name, doc, unit, value in (
        ("up", "1 when this scrape read Redis, else 0", "", up),
        ("models", "models with data or a limit in the window", "", models),
        (
            "window_seconds",
            "length of the rolling window every window_* metric covers",
            "seconds",
            window,
        ),
        ("scrape_duration_seconds", "time this scrape took", "seconds", duration),
    ):
        g = _gauge(name, doc, [NS_LABEL], unit)
        if value is not None:
            g.add_metric([ns], value)
        yield g
    failed = CounterMetricFamily(
        f"{PREFIX}_redis_errors", "scrapes that failed to read Redis", labels=[NS_LABEL]
    )
    failed.add_metric([ns], errors)
    yield failed


def provider_metrics(found: Iterable[ProviderStatus], namespace: str) -> Iterator[Metric]:
    """Per-provider gauges, labelled ``provider`` and ``store_namespace``: spend and caps per
    UTC window (``window`` is ``hour`` or ``day``; no cap, no sample), the budget verdict (an
    info sample naming it), whether routing skips the provider for a block or a 429 backoff,
    and until when, and the consecutive 429s behind its backoff."""
    labels = ["provider", NS_LABEL]
    spend = _gauge(
        "provider_spend_usd",
        "the provider's spend in the current UTC hour or day (its models' events, each once)",
        [*labels, "window"],
    )
    cap = _gauge(
        "provider_cap_usd", "the provider's cap for the UTC hour or day", [*labels, "window"]
    )
    verdict = _gauge(
        "provider_budget_info",
        "the provider's budget verdict: uncapped, ok, near_exhaustion or exhausted",
        [*labels, "verdict"],
    )
    blocked = _gauge(
        "provider_blocked", "1 while the provider is blocked or backed off after a 429", labels
    )
    until = _gauge(
        "provider_block_expiry_timestamp_seconds",
        "when the provider's block or 429 backoff ends (only while there is one)",
        labels,
        "seconds",
    )
    backoff = _gauge(
        "provider_backoff_completions",
        "the consecutive 429 completions behind the provider's backoff (0: none)",
        labels,
    )
    for p in found:
        b, at = p.budget, [p.provider, namespace]
        for window, used, most in (
            ("hour", b.hour_spend_usd, b.hour_cap_usd),
            ("day", b.day_spend_usd, b.day_cap_usd),
        ):
            spend.add_metric([*at, window], used)
            if most is not None:
                cap.add_metric([*at, window], most)
        verdict.add_metric([*at, b.verdict], 1.0)
        blocked.add_metric(at, 0.0 if p.blocked_until is None else 1.0)
        if p.blocked_until is not None:
            until.add_metric(at, p.blocked_until.timestamp())
        backoff.add_metric(at, p.backoff_level)
    yield from (spend, cap, verdict, blocked, until, backoff)


def model_metrics(snaps: Iterable[ModelPerformanceSnapshot], namespace: str) -> Iterator[Metric]:
    """Per-model gauges over the window, labelled ``model`` and ``store_namespace``.

    The latency percentiles have samples where the snapshots carry them: whenever the window
    holds a successful completion.
    """
    labels = ["model", NS_LABEL]

    def family(
        name: str, doc: str, extra: list[str] | None = None, unit: str = ""
    ) -> GaugeMetricFamily:
        return _gauge(f"window_{name}", doc, labels + (extra or []), unit)

    completions = family(
        "completions", "completions in the window, by outcome (ok, failed)", ["outcome"]
    )
    latency = family(
        "latency_sum_seconds",
        "sum of the measured latency of the window's successful "
        "completions; divide by window_timed_completions",
        unit="seconds",
    )
    measured = family(
        "timed_completions",
        "the window's successful completions with a measured latency (a log read after the "
        "fact may not tell it): the count latency_sum_seconds and the percentiles are over",
    )
    percentile = family(
        "latency_percentile_seconds",
        "nearest-rank latency percentile of the window's successful completions "
        "(within 0.78% from the latency sketch; exact with serve --percentiles)",
        ["percentile"],
        "seconds",
    )
    histogram = GaugeHistogramMetricFamily(
        f"{PREFIX}_window_latency_seconds",
        "latency of the window's timed successful completions, in coarse le buckets from the "
        "latency sketch (no extra read): histogram_quantile() over sum by (le) gives fleet-wide "
        "percentiles",
        labels=labels,
        unit="seconds",
    )
    cost = family("cost_usd", "cost of the window's completions, failures included", unit="usd")
    tokens = family(
        "tokens", "tokens in the window, by kind (no total: see reported_tokens)", ["kind"]
    )
    reported = family(
        "reported_tokens",
        "tokens.total summed over the window: the tool's own "
        "total where it reports one, else the sum of the kinds",
    )
    limited = _gauge("subscription_limited", "1 while the model is subscription-limited", labels)
    expires = _gauge(
        "subscription_limit_expiry_timestamp_seconds",
        "Unix time the subscription limit ends (absent without a limit or its TTL)",
        labels,
        "seconds",
    )
    last = _gauge(
        "last_event_timestamp_seconds",
        "Unix time of the newest event in the window",
        labels,
        "seconds",
    )
    for s in snaps:
        ids = [s.model, namespace]
        completions.add_metric([*ids, "ok"], s.successful_completions)
        completions.add_metric([*ids, "failed"], s.failed_completions)
        latency.add_metric(ids, round(s.avg_latency_ms * s.measured_latencies()) / 1000)
        measured.add_metric(ids, s.measured_latencies())
        for p, value in (
            ("50", s.latency_p50_ms),
            ("95", s.latency_p95_ms),
            ("99", s.latency_p99_ms),
        ):
            if value is not None:
                percentile.add_metric([*ids, p], value / 1000)
        if (buckets := s.latency_histogram()) is not None:
            histogram.add_metric(
                ids,
                [(_le_seconds(le), n) for le, n in buckets],
                round(s.avg_latency_ms * s.measured_latencies()) / 1000,
            )
        cost.add_metric(ids, s.total_cost_usd)
        for kind in TOKEN_KINDS:
            tokens.add_metric([*ids, kind], getattr(s.tokens, kind))
        reported.add_metric(ids, s.tokens.total)
        is_limited = s.is_subscription_limited()
        limited.add_metric(ids, 1 if is_limited else 0)
        if is_limited and s.subscription_limit_expires_at is not None:
            expires.add_metric(ids, s.subscription_limit_expires_at.timestamp())
        if s.last_event_at is not None:
            last.add_metric(ids, s.last_event_at.timestamp())
    yield from (completions, latency, measured, percentile, histogram, cost, tokens, reported)
    yield from (limited, expires, last)


def _le_seconds(le_ms: float) -> str:
    """A bucket bound in ms as the ``le`` label, in seconds as Prometheus' clients write it."""
    return "+Inf" if math.isinf(le_ms) else repr(le_ms / 1000)
