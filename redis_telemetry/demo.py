"""``redis-telemetry demo``: a small simulated fleet, a router, and the live table.

Three orchestrator replicas (threads, each with its own store and connection) record realistic
completions for four models: one is slow, one fails often, and one hits a subscription limit
partway through. Meanwhile a router reads snapshots and says which model it would pick and why.
With no ``--url`` and nothing reachable at the default URL, it runs on an embedded fakeredis
server (in-process, TCP, with Lua).

It writes to a namespace of its own (``demo``, or ``--namespace`` given on the command line; never
the one ``$REDIS_TELEMETRY_NAMESPACE`` names for real data), says which server it writes to before
the first write, and its limits last no longer than its window, so that nothing of it outlives
five minutes.
"""

from __future__ import annotations

import argparse
import logging
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import redis
from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from . import render
from ._shell import ConnectionSettings
from .core.urls import redact
from .errors import TelemetryError, TelemetryUnavailable
from .models import CompletionEvent, ModelPerformanceSnapshot, TokenBreakdown
from .store import TelemetryStore

log = logging.getLogger(__name__)
DEMO_NAMESPACE = "demo"
DEMO_WINDOW_SECS = 300
REPLICAS = 3


@dataclass(frozen=True)
class Profile:
    """How a simulated model behaves."""

    model: str
    latency_ms: int
    success: float
    cost_per_1k: float
    errors: tuple[str, ...] = ("upstream error 500",)


PROFILES = (
    Profile("fastco/coder-mini", 900, 0.97, 0.0006),
    Profile("bigco/reasoner-max", 14000, 0.95, 0.0150),
    Profile("cheapco/flaky-7b", 1500, 0.55, 0.0001, ("connection reset by peer", "HTTP 502")),
    Profile("premco/sonnet-x", 4000, 0.98, 0.0060),
)
LIMITED = "premco/sonnet-x"


def simulate(
    profile: Profile, rng: random.Random, session: str, limit_hit: bool
) -> CompletionEvent:
    """One plausible completion of ``profile``'s model."""
    if limit_hit:
        return CompletionEvent(
            model=profile.model,
            session_id=session,
            latency_ms=350,
            success=False,
            error="weekly session limit reached",
        )
    ok = rng.random() < profile.success
    inp, out = rng.randint(2_000, 40_000), rng.randint(50, 2_000)
    tokens = TokenBreakdown(input=inp, output=out, total=inp + out)
    return CompletionEvent(
        model=profile.model,
        session_id=session,
        latency_ms=max(50, int(rng.gauss(profile.latency_ms, profile.latency_ms * 0.2))),
        success=ok,
        tokens=tokens if ok else TokenBreakdown(),
        cost_usd=round(profile.cost_per_1k * (inp + out) / 1000, 6) if ok else 0.0,
        error=None if ok else rng.choice(profile.errors),
    )


def demo_store(url: str, namespace: str) -> TelemetryStore:
    """A store of the demo: its window, and limits that last no longer."""
    return TelemetryStore.from_url(
        url,
        window_secs=DEMO_WINDOW_SECS,
        subscription_limit_ttl_secs=DEMO_WINDOW_SECS,
        namespace=namespace,
    )


def replica(
    url: str, namespace: str, n: int, stop: threading.Event, limit_at: float, errors: list[str]
) -> None:
    """One orchestrator replica: records completions until ``stop`` (or an error, reported)."""
    store = demo_store(url, namespace)
    rng = random.Random(n)
    sent = 0
    try:
        while not stop.is_set():
            profile = rng.choice(PROFILES)
            limit_hit = profile.model == LIMITED and time.monotonic() >= limit_at
            if limit_hit and store.model_performance(LIMITED).is_subscription_limited():
                continue  # a real orchestrator would not call a blocked model
            store.record(simulate(profile, rng, f"replica-{n}-task-{sent // 5}", limit_hit))
            sent += 1
            stop.wait(rng.uniform(0.02, 0.08))
    except TelemetryError as exc:
        log.debug("replica %d stopped", n, exc_info=exc)
        errors.append(f"replica {n} stopped: {exc}")
    finally:
        store.close()


def pick(snaps: list[ModelPerformanceSnapshot]) -> tuple[str, str]:
    """The router's choice and why, as (decision key, sentence); limited models never win."""
    usable = [s for s in snaps if not s.is_subscription_limited() and s.successful_completions]
    skipped = [s.model for s in snaps if s.is_subscription_limited()]
    note = f"; skipped {', '.join(skipped)} (subscription limit)" if skipped else ""
    if not usable:
        return "none" + note, "router: no usable model yet" + note
    best = max(usable, key=lambda s: (round(s.success_rate, 1), -s.avg_latency_ms, s.model))
    return best.model + note, (
        f"router → {best.model}: {best.success_rate:.0%} ok, {best.avg_latency_ms:,.0f} ms avg "
        f"(best success rate, then lowest latency){note}"
    )


@contextmanager
def embedded_server(err: Console) -> Iterator[str]:
    """An in-process fakeredis TCP server (with Lua) on a free port."""
    try:
        from fakeredis import TcpFakeServer
    except ImportError:
        raise SystemExit(
            "redis-telemetry demo: no Redis reachable and fakeredis is not installed; "
            "run `pip install 'redis-telemetry[demo]'` or pass --url"
        ) from None
    server = TcpFakeServer(("127.0.0.1", 0), server_type="redis")
    thread = threading.Thread(target=server.serve_forever, daemon=True, name="embedded-redis")
    thread.start()
    try:
        yield f"redis://127.0.0.1:{server.server_address[1]}/0"
    finally:
        server.shutdown()
        server.server_close()


def reachable(url: str) -> bool:
    """True when a Redis (or, for ``redis+cluster://``, a cluster) answers at ``url``."""
    quick = ConnectionSettings(socket_timeout=1, socket_connect_timeout=1, retries=0)
    try:
        store = TelemetryStore.from_url(url, connection=quick)
    except TelemetryError as exc:
        log.debug("cannot use the URL: %s", exc)
        return False
    try:
        return bool(store.client.ping())
    except redis.RedisError as exc:
        log.debug("no Redis answers: %s", exc)
        return False
    finally:
        store.close()


@contextmanager
def demo_url(args: argparse.Namespace, err: Console) -> Iterator[str]:
    """``--url`` as given; else the default if it answers; else an embedded server."""
    if "url" in args.given:
        if not reachable(args.url):
            raise TelemetryUnavailable("no answer to PING")
        yield args.url
        return
    if reachable(args.url):
        yield args.url
        return
    with embedded_server(err) as url:
        err.print(
            f"No Redis at {args.url}: running on an embedded fakeredis server at {url} "
            "(in-process, with Lua; gone when the demo ends).",
            markup=False,
            highlight=False,
        )
        yield url


def run_demo(args: argparse.Namespace, out: Console, err: Console) -> int:
    """Run the simulated fleet for ``args.seconds`` and show it live."""
    namespace = args.namespace if "namespace" in args.given else DEMO_NAMESPACE
    with demo_url(args, err) as url:
        err.print(
            f"demo: writing to {redact(url)}, namespace {namespace!r} (the demo's own; its data "
            f"and limits age out within {render.duration(DEMO_WINDOW_SECS)})",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        router = demo_store(url, namespace)
        stop = threading.Event()
        start = time.monotonic()
        limit_at = start + args.seconds * 0.4
        errors: list[str] = []
        threads = [
            threading.Thread(
                target=replica, args=(url, namespace, n, stop, limit_at, errors), daemon=True
            )
            for n in range(REPLICAS)
        ]
        for t in threads:
            t.start()
        decisions: list[str] = []
        title = f"demo fleet: namespace {namespace!r}, window {DEMO_WINDOW_SECS}s"

        def view() -> Group:
            snaps = router.all_model_performances()
            key, decision = pick(snaps)
            if not decisions or decisions[-1] != key:
                decisions.append(key)
                if not out.is_terminal:  # a log of changes when the output is not a screen
                    out.print(decision, markup=False, highlight=False, soft_wrap=True)
            return Group(render.status_table(snaps, title, width=out.width), Text(decision))

        try:
            with Live(view(), console=out, auto_refresh=False) as live:
                while time.monotonic() - start < args.seconds:
                    stop.wait(min(0.5, max(0.0, args.seconds - (time.monotonic() - start))))
                    live.update(view(), refresh=True)
        except KeyboardInterrupt:
            pass
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=10)
        out.line()
        snaps = router.all_model_performances()
        total = sum(s.successful_completions + s.failed_completions for s in snaps)
        out.print(
            f"demo done: {total} completions recorded by {REPLICAS} replicas in "
            f"{time.monotonic() - start:.1f}s; {len(decisions)} distinct routing decisions.",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        for line in errors:
            err.print(line, markup=False, highlight=False)
        router.close()
    return 0
