"""The LiteLLM benchmark: LiteLLM's own Redis shared state against this integration, same run.

    python benchmarks/litellm_bench.py                  # 4 replicas x 100 calls, its own server
    python benchmarks/litellm_bench.py --url URL        # on a server you run (it is FLUSHED)
    python benchmarks/litellm_bench.py --replicas 2 --calls 5 --loop-calls 20   # a smoke run

1. **Counting.** ``--replicas`` Router processes make ``--calls`` mock completions each
   (LiteLLM's ``mock_response``: no network) into one redis-server, twice:

   a. LiteLLM's own shared state: ``routing_strategy="latency-based-routing"`` with
      ``redis_host``/``redis_port``. Its latency handler keeps one JSON map per model group
      under the Redis key ``{model_group}_map``, ``{deployment id: {"latency_normalized":
      [last 10 samples], "YYYY-MM-DD-HH-MM": {"tpm": .., "rpm": ..}}}``, read from the
      replica's own memory and SET whole after each call. What it counted is the sum of the
      ``rpm`` of every minute of every deployment in that map.
   b. This integration: ``TelemetryLogger`` and ``SharedStateRouting`` on an
      ``AsyncTelemetryStore``, counted with the store's snapshots (completions, tokens, cost).

2. **Event-loop cost.** ``--loop-calls`` mock completions through one Router in this process,
   in rounds that alternate no callback (the baseline) and a ``TelemetryLogger``: the time its
   async hook holds the event loop per call, all the loop's busy time per call over the
   baseline's (the hook and the background writes), and the wall-time ratio.

Writes benchmarks/results/litellm.json (``--out``) and prints a table; the published figures
are in benchmarks/litellm-results.json and docs/litellm.md.
"""

from __future__ import annotations

import os

# LiteLLM fetches its price list at import unless told to use its own copy: no network here.
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"

import argparse
import asyncio
import json
import multiprocessing
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path
from typing import Any

import litellm
import redis
from bench import RESULTS, flushed, pct, publish  # the same server, percentiles, report
from litellm.litellm_core_utils.logging_worker import GLOBAL_LOGGING_WORKER
from litellm.router import Router

from redis_telemetry import AsyncTelemetryStore, TelemetryStore
from redis_telemetry.integrations.litellm import SharedStateRouting, TelemetryLogger

GROUP = "coder"
MESSAGES: list[Any] = [{"role": "user", "content": "Fix the failing test."}]


def deployments() -> list[dict[str, Any]]:
    """Two deployments of one model group, both answering with a mock response."""
    return [
        {
            "model_name": GROUP,
            "litellm_params": {"model": model, "api_key": "sk-bench", "mock_response": "Done."},
            "model_info": {"id": dep},
        }
        for dep, model in (("dep-a", "openai/gpt-4o-mini"), ("dep-b", "openai/gpt-4o"))
    ]


# -- 1. counting: replica processes (module level, so that spawn can import them) -------------


async def _calls(router: Router, calls: int) -> dict[str, Any]:
    """``calls`` completions through ``router``: the cost and tokens LiteLLM reported."""
    cost, tokens = 0.0, 0
    for _ in range(calls):
        response = await router.acompletion(
            model=GROUP, messages=MESSAGES, metadata={"session_id": f"replica-{os.getpid()}"}
        )
        cost += response._hidden_params.get("response_cost") or 0.0
        usage: Any = getattr(response, "usage", None)
        tokens += usage.total_tokens if usage is not None else 0
    return {"cost": cost, "tokens": tokens}


def litellm_replica(host: str, port: int, calls: int, start: Any) -> dict[str, Any]:
    """One Router with LiteLLM's latency-based routing, its state in Redis."""

    async def run() -> dict[str, Any]:
        router = Router(
            model_list=deployments(),
            routing_strategy="latency-based-routing",
            redis_host=host,
            redis_port=port,
            num_retries=0,
        )
        start.wait()  # every replica is built: they call at the same time
        made = await _calls(router, calls)
        await GLOBAL_LOGGING_WORKER.flush()  # LiteLLM's own callbacks run in the background
        return made

    return asyncio.run(run())


def ours_replica(url: str, calls: int, start: Any) -> dict[str, Any]:
    """One Router recorded and routed on this store."""

    async def run() -> dict[str, Any]:
        store = AsyncTelemetryStore.from_url(url)
        logger = TelemetryLogger(store)
        litellm.callbacks = [logger]
        router = Router(model_list=deployments(), num_retries=0)
        router.register_plugin(SharedStateRouting(router, store))
        start.wait()
        made = await _calls(router, calls)
        deadline = time.monotonic() + 60
        while logger.stats().submitted < calls and time.monotonic() < deadline:
            await asyncio.sleep(0.01)  # LiteLLM's logging worker runs the hooks a little later
        await logger.aflush(60)
        stats = logger.stats()
        await store.aclose()
        return {**made, "written": stats.written, "dropped": stats.dropped}

    return asyncio.run(run())


Replica = Callable[..., dict[str, Any]]


def _fleet(worker: Replica, args: tuple[Any, ...], replicas: int) -> list[dict[str, Any]]:
    """Run ``worker(*args, start)`` in ``replicas`` processes that start calling together."""
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager, ProcessPoolExecutor(replicas, mp_context=ctx) as pool:
        start = manager.Barrier(replicas)
        futures = [pool.submit(worker, *args, start) for _ in range(replicas)]
        return [f.result(timeout=600) for f in futures]


def litellm_counted(client: redis.Redis) -> dict[str, Any]:
    """What LiteLLM's shared state holds: completions (the sum of its per-minute ``rpm``),
    tokens (``tpm``) and latency samples kept, per deployment."""
    raw = client.get(f"{GROUP}_map")
    state: dict[str, Any] = json.loads(raw) if raw else {}
    per_deployment = {}
    for dep, entry in state.items():
        minutes = [v for v in entry.values() if isinstance(v, dict)]
        per_deployment[dep] = {
            "completions": sum(int(m.get("rpm", 0)) for m in minutes),
            "tokens": sum(int(m.get("tpm", 0)) for m in minutes),
            "latency_samples": len(entry.get("latency_normalized", [])),
        }
    return {
        "key": f"{GROUP}_map",
        "completions": sum(d["completions"] for d in per_deployment.values()),
        "tokens": sum(d["tokens"] for d in per_deployment.values()),
        "deployments": per_deployment,
    }


async def ours_counted(url: str) -> dict[str, Any]:
    """What this store holds, from its snapshots."""
    store = AsyncTelemetryStore.from_url(url)
    try:
        perfs = await store.all_model_performances()
    finally:
        await store.aclose()
    return {
        "completions": sum(p.successful_completions + p.failed_completions for p in perfs),
        "tokens": sum(p.tokens.total for p in perfs),
        "cost_usd": sum(p.total_cost_usd for p in perfs),
        "deployments": {p.model: p.successful_completions for p in perfs},
    }


def bench_counting(url: str, replicas: int, calls: int) -> dict[str, Any]:
    """The anchor: both ways of sharing state, same workload, same server, one after the other."""
    client = redis.Redis.from_url(url)
    host = client.connection_pool.connection_kwargs.get("host", "127.0.0.1")
    port = client.connection_pool.connection_kwargs.get("port", 6379)
    expected = replicas * calls

    client.flushall()
    theirs = _fleet(litellm_replica, (host, port, calls), replicas)
    counted = litellm_counted(client)
    litellm_row = {
        **counted,
        "expected": expected,
        "expected_tokens": sum(r["tokens"] for r in theirs),
    }

    client.flushall()
    ours = _fleet(ours_replica, (url, calls), replicas)
    found = asyncio.run(ours_counted(url))
    ours_row = {
        **found,
        "expected": expected,
        "expected_tokens": sum(r["tokens"] for r in ours),
        "expected_cost_usd": sum(r["cost"] for r in ours),
        "dropped": sum(r["dropped"] for r in ours),
    }
    client.close()
    return {"replicas": replicas, "calls": calls, "litellm": litellm_row, "ours": ours_row}


# -- 2. event-loop cost -----------------------------------------------------------------------


class TimedLogger(TelemetryLogger):
    """A ``TelemetryLogger`` that times its async success hook. The hook never awaits, so its
    duration is time the event loop spent on it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.hook_secs: list[float] = []

    async def async_log_success_event(
        self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        began = time.perf_counter()
        await super().async_log_success_event(kwargs, response_obj, start_time, end_time)
        self.hook_secs.append(time.perf_counter() - began)


class LoopMeter:
    """The time an asyncio loop spends running callbacks (every ``Handle._run``, timed), and
    the part of it spent in steps of the logger's background writes."""

    def __init__(self) -> None:
        self.busy = 0.0
        self.writer = 0.0

    @contextmanager
    def installed(self) -> Iterator[None]:
        handle = asyncio.events.Handle
        original = handle._run

        def timed_run(h: asyncio.Handle) -> None:
            began = time.perf_counter()
            try:
                original(h)
            finally:
                took = time.perf_counter() - began
                self.busy += took
                task = getattr(getattr(h, "_callback", None), "__self__", None)  # a task's step
                if isinstance(task, asyncio.Task) and _is_writer(task):
                    self.writer += took

        handle._run = timed_run  # type: ignore[method-assign, assignment]
        try:
            yield
        finally:
            handle._run = original  # type: ignore[method-assign]


def _is_writer(task: asyncio.Task[Any]) -> bool:
    """A step of the logger's writer task, or of a task redis-py started for it (it sends
    each command from a task of its own)."""
    code = getattr(task.get_coro(), "cr_code", None)
    where = code.co_filename if code is not None else ""
    return any(f"{os.sep}{pkg}{os.sep}" in where for pkg in ("redis_telemetry", "redis"))


def _no_callbacks() -> None:
    """Remove every LiteLLM callback (LiteLLM also keeps them in lists of its own)."""
    litellm.logging_callback_manager._reset_all_callbacks()  # type: ignore[no-untyped-call]


class NoopLogger(TelemetryLogger):
    """The same callback, recording nothing: what LiteLLM's callback machinery costs by
    itself, so that the difference to ours is the recording alone."""

    def _record(self, kwargs: Any, success: bool) -> None:
        return None


#: no callback; a no-op one; ours on an AsyncTelemetryStore; ours on a TelemetryStore
MODES = ("base", "noop", "ours", "ours_thread")


async def _loop_rounds(url: str, calls: int, rounds: int) -> dict[str, Any]:
    store = AsyncTelemetryStore.from_url(url)
    sync_store = TelemetryStore.from_url(url)
    loggers: dict[str, TelemetryLogger | None] = {
        "base": None,
        "noop": NoopLogger(store),
        "ours": TimedLogger(store),
        "ours_thread": TimedLogger(sync_store),
    }
    router = Router(model_list=deployments(), num_retries=0)
    per_round = max(1, calls // rounds)
    totals = {m: dict.fromkeys(("wall", "busy", "cpu", "writer", "calls"), 0.0) for m in MODES}
    meter = LoopMeter()

    async def one(mode: str, n: int) -> None:
        logger = loggers[mode]
        _no_callbacks()
        litellm.callbacks = [] if logger is None else [logger]
        expected = (logger.stats().submitted if logger else 0) + n
        wall, busy, cpu, writer = time.perf_counter(), meter.busy, time.process_time(), meter.writer
        for _ in range(n):
            await router.acompletion(model=GROUP, messages=MESSAGES)
        await GLOBAL_LOGGING_WORKER.flush()  # every mode: until the calls' callbacks have run
        if isinstance(logger, TimedLogger):  # and until what they recorded is written
            deadline = time.monotonic() + 60
            while logger.stats().submitted < expected and time.monotonic() < deadline:
                await asyncio.sleep(0.001)
            await logger.aflush(60)
        t = totals[mode]
        t["wall"] += time.perf_counter() - wall
        t["busy"] += meter.busy - busy
        t["cpu"] += time.process_time() - cpu
        t["writer"] += meter.writer - writer
        t["calls"] += n
        await asyncio.sleep(0.05)  # untimed: stragglers run before the callbacks change

    for mode in MODES:  # warm up every path (imports, connections, caches)
        await one(mode, 5)
    written = {}
    for mode, logger in loggers.items():
        totals[mode] = dict.fromkeys(totals[mode], 0.0)
        if isinstance(logger, TimedLogger):
            logger.hook_secs.clear()
            written[mode] = logger.stats().written
    with meter.installed():
        for r in range(rounds):  # interleaved, so that drift on a shared machine hits all alike
            for mode in MODES[r % len(MODES) :] + MODES[: r % len(MODES)]:
                await one(mode, per_round)
    _no_callbacks()
    await store.aclose()

    def per_call(mode: str, what: str) -> float:
        return totals[mode][what] / max(1, totals[mode]["calls"]) * 1000

    res: dict[str, Any] = {"calls": int(totals["ours"]["calls"])}
    for mode in MODES:
        row = {
            "loop_ms_per_call": per_call(mode, "busy"),
            "cpu_ms_per_call": per_call(mode, "cpu"),
            "wall_ms_per_call": per_call(mode, "wall"),
        }
        logger = loggers[mode]
        if isinstance(logger, TimedLogger):
            hooks = logger.hook_secs
            row |= {
                "recorded": logger.stats().written - written[mode],
                "hook_calls": len(hooks),
                "hook_ms_mean": sum(hooks) / max(1, len(hooks)) * 1000,
                "hook_ms_p99": pct(hooks, 0.99) * 1000 if hooks else 0.0,
                "writer_ms_per_call": per_call(mode, "writer"),
                "loop_ms_added_over_base": per_call(mode, "busy") - per_call("base", "busy"),
                "loop_ms_added_over_noop": per_call(mode, "busy") - per_call("noop", "busy"),
            }
        row["wall_ratio"] = per_call(mode, "wall") / per_call("base", "wall")
        res[mode] = row
    return res


def bench_event_loop(url: str, calls: int) -> dict[str, Any]:
    """The event-loop cost of recording a LiteLLM call, against no callback, same run."""
    redis.Redis.from_url(url).flushall()
    return asyncio.run(_loop_rounds(url, calls, rounds=min(10, max(2, calls // 10))))


# -- report -----------------------------------------------------------------------------------


def _loop_rows(e: dict[str, Any]) -> list[str]:
    base, noop = e["base"], e["noop"]
    rows = [
        f"| event loop busy per call ({e['calls']} sequential calls each) | | no callback: "
        f"{base['loop_ms_per_call']:.3f} ms; a no-op callback: {noop['loop_ms_per_call']:.3f} ms "
        f"(wall {noop['wall_ratio']:.2f}x) | |"
    ]
    for mode, name in (("ours", "AsyncTelemetryStore"), ("ours_thread", "TelemetryStore")):
        o = e[mode]
        rows += [
            f"| {name}: our hook, per call | {o['hook_ms_mean']:.3f} ms mean, "
            f"{o['hook_ms_p99']:.3f} ms p99 ({o['recorded']} of {e['calls']} written) | | |",
            f"| {name}: our writes on the loop, per call | {o['writer_ms_per_call']:.3f} ms | | |",
            f"| {name}: event loop busy per call, all of it | {o['loop_ms_per_call']:.3f} ms "
            f"| +{o['loop_ms_added_over_base']:.3f} ms over none, "
            f"+{o['loop_ms_added_over_noop']:.3f} ms over a no-op | |",
            f"| {name}: CPU, wall time per call | {o['cpu_ms_per_call']:.3f} ms, "
            f"{o['wall_ms_per_call']:.3f} ms | no callback: {base['cpu_ms_per_call']:.3f} ms, "
            f"{base['wall_ms_per_call']:.3f} ms | wall {o['wall_ratio']:.2f}x |",
        ]
    return rows


def report(res: dict[str, Any]) -> str:
    c, e = res["counting"], res["event_loop"]
    theirs, ours = c["litellm"], c["ours"]
    workload = f"{c['replicas']} replicas x {c['calls']} calls"
    return "\n".join(
        [
            f"machine: {res['machine']}, LiteLLM {res['litellm']}",
            "",
            "| case | this integration | same-run baseline | ratio |",
            "| --- | --- | --- | --- |",
            f"| completions counted, {workload} | {ours['completions']} of {ours['expected']} "
            f"| LiteLLM's `{theirs['key']}`: {theirs['completions']} of {theirs['expected']} "
            f"| {ours['completions'] / max(1, theirs['completions']):.2f}x |",
            f"| tokens counted | {ours['tokens']:,} of {ours['expected_tokens']:,} | LiteLLM's "
            f"`tpm`: {theirs['tokens']:,} of {theirs['expected_tokens']:,} | |",
            f"| cost counted | ${ours['cost_usd']:.8f} of ${ours['expected_cost_usd']:.8f} "
            "| (not kept) | |",
            *_loop_rows(e),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", help="a server to use (it is FLUSHED); default: start one")
    parser.add_argument("--replicas", type=int, default=4, help="Router processes (default 4)")
    parser.add_argument("--calls", type=int, default=100, help="calls per replica (default 100)")
    parser.add_argument(
        "--loop-calls", type=int, default=1000, help="calls of the event-loop case (default 1000)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "litellm.json", help="results JSON")
    args = parser.parse_args()
    with flushed(args.url) as (url, run):
        res: dict[str, Any] = {
            "machine": run["machine"],
            "litellm": version("litellm"),
            "when": run["when"],
        }
        res["counting"] = bench_counting(url, args.replicas, args.calls)
        res["event_loop"] = bench_event_loop(url, args.loop_calls)
    publish(res, args.out, report(res))


if __name__ == "__main__":
    main()
