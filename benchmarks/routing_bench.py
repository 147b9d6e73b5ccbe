"""Routing decisions (issue 22): the read path against the floor, the local read tier, LiteLLM's
own latency-based routing, and a load case, every figure next to a same-run baseline.

    python benchmarks/routing_bench.py                 # full run on its own redis-server
    python benchmarks/routing_bench.py --url URL       # on a server you run (it is FLUSHED)
    python benchmarks/routing_bench.py --quick         # a smoke run with small sizes
    python benchmarks/routing_bench.py --read-path     # the read path only (section 1)

1. **The read path.** 20 models with ``--events`` events each. Interleaved, so that drift on a
   shared machine hits all alike: a pipeline of 20 bare ``EVALSHA`` of ``return 1`` (the floor:
   the least one round trip to 20 models' slots costs; sent with ``pipe.evalsha``, as the store
   sends its scripts: a redis-py ``Script`` on a pipeline adds a ``SCRIPT EXISTS`` round trip),
   the store's own 20 ``snapshot.lua`` calls built beforehand and sent the same way (what the
   scripts alone cost, with no client work), ``select_model``, ``rank_models`` and
   ``all_model_performances`` (uncached: a round trip each), ``select_model`` with the
   client's memos emptied first (as when every model was written since the last decision:
   each model read whole and its sketch summed again), and ``select_model`` from a
   ``LocalTier`` (cached). Redis CPU per model per snapshot is ``INFO commandstats``'s
   ``EVALSHA`` time per call (the script and the commands it runs)
   over a run of snapshots only: of models unchanged since the reader's last read (the script
   answers 'same'), and of models as if each was written since (the reader's replies
   forgotten before each read: the script reads and sends everything).
2. **Against LiteLLM.** One deployment decision, ``Router.select`` (LiteLLM's pick),
   over the same 20 deployments of one model group: LiteLLM's ``latency-based-routing`` with
   its state in the same Redis (after calls that filled it), ``SharedStateRouting`` without the
   tier (``tier=None``) and with it (the default).
3. **Load.** 4 router processes decide in a loop (``select_model`` over the 20 models) while
   4 writer processes ``record()`` one event at a time, for ``--secs`` seconds, with the tier
   off and on: decisions a second, their p50/p99, writes a second, and Redis's CPU (``INFO
   cpu``, user + sys, over the wall time).

Writes benchmarks/results/routing.json (``--out``) and prints the table that
docs/performance.md carries.
"""

from __future__ import annotations

import os

os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"  # no network at import

import asyncio
import json
import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import redis
from bench import MODELS, RESULTS, arguments, flushed, interleaved, ms, pct, publish

from redis_telemetry import AsyncTelemetryStore, CompletionEvent, TelemetryStore, TokenBreakdown
from redis_telemetry.core import scripts, snapshot
from redis_telemetry.core.reads import _gen
from redis_telemetry.tier import LocalTier

WINDOW = 3600
GROUP = "coder"
MESSAGES: list[Any] = [{"role": "user", "content": "Fix the failing test."}]


def seed(url: str, per_model: int) -> None:
    """``per_model`` events for each of MODELS over the last 50 minutes."""
    client = redis.Redis.from_url(url)
    client.flushall()
    store = TelemetryStore(client, window_secs=WINDOW)
    now = datetime.now(UTC)
    total = per_model * len(MODELS)
    step = 3000 / total
    batch: list[CompletionEvent] = []
    for i in range(total):
        batch.append(
            CompletionEvent(
                model=MODELS[i % len(MODELS)],
                session_id=f"session-{i % 500}",
                completed_at=now - timedelta(seconds=3000 - i * step),
                latency_ms=800 + (i * 37) % 9000,
                success=i % 7 != 0,
                tokens=TokenBreakdown(total=12000, input=10000, output=1500, reasoning=500),
                cost_usd=0.0123,
                error=None if i % 7 else "upstream error 500",
            )
        )
        if len(batch) == 5000:
            store.record_batch(batch)
            batch = []
    if batch:
        store.record_batch(batch)
    client.close()


# -- 1. the read path -----------------------------------------------------------------------------


def bench_read_path(url: str, n: int) -> dict[str, Any]:
    client = redis.Redis.from_url(url)
    reader = TelemetryStore(client, window_secs=WINDOW)
    bare = client.script_load("return 1")
    keys = [f"telemetry:{{{m}}}:events" for m in MODELS]

    def floor() -> None:
        # EVALSHA itself, as the store sends it: a redis-py Script on a pipeline would add a
        # SCRIPT EXISTS round trip to every execute()
        pipe = client.pipeline(transaction=False)
        for k in keys:
            pipe.evalsha(bare, 1, k)
        pipe.execute()

    # the 20 calls the store's next read sends (each naming the reply it holds), built once
    # and sent with no client work around them: what the scripts alone cost a read
    reader.all_model_performances()
    held = reader._core._unchanged("totals", dict.fromkeys(MODELS))
    evals = [
        scripts.snapshot_call(reader._core.keys, m, WINDOW * 1000, known=_gen(held.get(m)))
        for m in MODELS
    ]
    sha = reader._sha["snapshot"]

    def store_calls() -> None:
        pipe = client.pipeline(transaction=False)
        for e in evals:
            pipe.evalsha(sha, len(e.keys), *e.keys, *e.args)
        pipe.execute()

    def cold() -> str:
        snapshot.forget()
        reader._core.forget()
        return reader.select_model(MODELS)

    tier = LocalTier(TelemetryStore(client, window_secs=WINDOW))
    cases: dict[str, Callable[[], Any]] = {
        "floor": floor,
        "store_calls": store_calls,
        "select_model": lambda: reader.select_model(MODELS),
        "rank_models": lambda: reader.rank_models(MODELS),
        "all_model_performances": reader.all_model_performances,
        "select_model_cold": cold,
        "cached_select_model": lambda: tier.select_model(MODELS),
    }
    assert tier.select_model(MODELS).model == reader.select_model(MODELS)  # same decision
    # each timed call after an untimed floor: the cold case's large replies slow the next
    # round trip by a few hundred µs here, which would otherwise inflate the floor after it
    times = interleaved(cases, n, settle=floor)
    cached = []  # more samples of the cached decision: it is microseconds
    for _ in range(20 * n):
        start = time.perf_counter()
        tier.select_model(MODELS)
        cached.append(time.perf_counter() - start)
    times["cached_select_model"] = cached
    client.config_resetstat()
    for _ in range(max(10, n // 5)):
        reader.all_model_performances()
    stats = client.info("commandstats")["cmdstat_evalsha"]
    client.config_resetstat()
    for _ in range(max(10, n // 5)):  # as if every model was written since the last read
        reader._core.forget()
        reader.all_model_performances()
    changed = client.info("commandstats")["cmdstat_evalsha"]
    client.config_resetstat()
    for _ in range(max(10, n // 5)):
        floor()
    bare_stats = client.info("commandstats")["cmdstat_evalsha"]
    client.close()
    floor_p50 = pct(times["floor"], 0.5)
    out: dict[str, Any] = {
        name: {
            "p50_s": pct(t, 0.5),
            "p99_s": pct(t, 0.99),
            "vs_floor_p50": pct(t, 0.5) / floor_p50,
        }
        for name, t in times.items()
    }
    per_model_us = stats["usec"] / stats["calls"]
    out["redis_cpu_us_per_model_snapshot"] = per_model_us
    out["redis_cpu_us_per_changed_model_snapshot"] = changed["usec"] / changed["calls"]
    out["redis_cpu_us_per_bare_evalsha"] = bare_stats["usec"] / bare_stats["calls"]
    out["shard_decisions_per_s"] = 1e6 / (per_model_us * len(MODELS))
    return out


# -- 2. against LiteLLM's latency-based routing ---------------------------------------------------


def deployments() -> list[dict[str, Any]]:
    """The 20 models as deployments of one group (ids = the store's model names)."""
    return [
        {
            "model_name": GROUP,
            "litellm_params": {
                "model": "openai/gpt-4o-mini",
                "api_key": "sk-bench",
                "mock_response": "Done.",
            },
            "model_info": {"id": m},
        }
        for m in MODELS
    ]


async def _decisions(router: Any, n: int) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        await router.select(GROUP, {}, messages=MESSAGES)
        out.append(time.perf_counter() - start)
    return out


async def _litellm_decisions(url: str, n: int) -> dict[str, Any]:
    import litellm
    from litellm.litellm_core_utils.logging_worker import GLOBAL_LOGGING_WORKER
    from litellm.router import Router

    from redis_telemetry.integrations.litellm import SharedStateRouting

    litellm.suppress_debug_info = True
    host, port = url.split("//")[1].split("/")[0].split(":")
    theirs = Router(
        model_list=deployments(),
        routing_strategy="latency-based-routing",
        redis_host=host,
        redis_port=int(port),
        num_retries=0,
    )
    for _ in range(5 * len(MODELS)):  # fill its latency map in Redis
        await theirs.acompletion(model=GROUP, messages=MESSAGES)
    await GLOBAL_LOGGING_WORKER.flush()
    store = AsyncTelemetryStore.from_url(url)
    uncached = Router(model_list=deployments(), num_retries=0)
    uncached.register_plugin(SharedStateRouting(uncached, store, tier=None, exploration=0.0))
    cached = Router(model_list=deployments(), num_retries=0)
    cached.register_plugin(SharedStateRouting(cached, store, exploration=0.0))
    routers = {"litellm": theirs, "ours_uncached": uncached, "ours_cached": cached}
    times: dict[str, list[float]] = {name: [] for name in routers}
    for router in routers.values():
        await _decisions(router, 3)
    for _ in range(max(1, n // 10)):  # interleaved rounds
        for name, router in routers.items():
            times[name] += await _decisions(router, 10)
    await store.aclose()
    base = pct(times["litellm"], 0.5)
    return {
        name: {"p50_s": pct(t, 0.5), "p99_s": pct(t, 0.99), "vs_litellm_p50": pct(t, 0.5) / base}
        for name, t in times.items()
    }


def bench_litellm(url: str, n: int) -> dict[str, Any]:
    return asyncio.run(_litellm_decisions(url, n))


# -- 3. load: routers deciding while writers record -----------------------------------------------


def _router(url: str, cached: bool, secs: float, start: Any) -> dict[str, Any]:
    store = TelemetryStore.from_url(url, window_secs=WINDOW)
    decide: Callable[[list[str]], Any] = (
        LocalTier(store).select_model if cached else store.select_model
    )
    decide(MODELS)
    start.wait()
    times = []
    end = time.monotonic() + secs
    while time.monotonic() < end:
        t0 = time.perf_counter()
        decide(MODELS)
        times.append(time.perf_counter() - t0)
    return {"decisions": len(times), "times": sorted(times)[:: max(1, len(times) // 20000)]}


def _writer(url: str, w: int, secs: float, start: Any) -> int:
    store = TelemetryStore.from_url(url, window_secs=WINDOW)
    start.wait()
    n = 0
    end = time.monotonic() + secs
    while time.monotonic() < end:
        store.record(
            CompletionEvent(model=MODELS[(w * 7 + n) % len(MODELS)], latency_ms=900, success=True)
        )
        n += 1
    return n


def _cpu(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def bench_load(url: str, routers: int, writers: int, secs: float) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    client = redis.Redis.from_url(url)
    out: dict[str, Any] = {"routers": routers, "writers": writers, "secs": secs}
    for cached in (False, True):
        with ctx.Manager() as manager, ProcessPoolExecutor(routers + writers, ctx) as pool:
            start = manager.Barrier(routers + writers + 1)
            rs = [pool.submit(_router, url, cached, secs, start) for _ in range(routers)]
            ws = [pool.submit(_writer, url, w, secs, start) for w in range(writers)]
            start.wait()
            cpu0, t0 = _cpu(client), time.monotonic()
            decided = [f.result(timeout=secs + 120) for f in rs]
            written = sum(f.result(timeout=secs + 120) for f in ws)
            cpu, wall = _cpu(client) - cpu0, time.monotonic() - t0
        times = sorted(t for d in decided for t in d["times"])
        out["tier" if cached else "no_tier"] = {
            "decisions_per_s": sum(d["decisions"] for d in decided) / secs,
            "p50_s": pct(times, 0.5),
            "p99_s": pct(times, 0.99),
            "writes_per_s": written / secs,
            "redis_cpu_share": cpu / wall,
        }
    client.close()
    off, on = out["no_tier"], out["tier"]
    out["decisions_ratio"] = on["decisions_per_s"] / off["decisions_per_s"]
    out["p99_ratio"] = on["p99_s"] / off["p99_s"]
    return out


# -- report ---------------------------------------------------------------------------------------


def us(x: float) -> str:
    return f"{x * 1e6:.1f} us"


def report(res: dict[str, Any]) -> str:
    r, lt, ld = res["read_path"], res["litellm"], res["load"]
    floor = r["floor"]
    rows = [
        f"machine: {res['machine']}; {res['events_per_model']:,} events per model, 20 models",
        "",
        "| case | ours | same-run baseline | ratio |",
        "| --- | --- | --- | --- |",
    ]
    c = r["store_calls"]
    rows.append(
        f"| the store's 20 `snapshot.lua` calls alone (built beforehand, sent on a pipeline, "
        f"no client work) p50 / p99 | {ms(c['p50_s'])} / {ms(c['p99_s'])} | pipeline of 20 "
        f"bare EVALSHA: {ms(floor['p50_s'])} | {c['vs_floor_p50']:.2f}x the floor |"
    )
    for name in ("select_model", "rank_models", "all_model_performances"):
        c = r[name]
        rows.append(
            f"| `{name}` (20 models, uncached) p50 / p99 | {ms(c['p50_s'])} / {ms(c['p99_s'])} "
            f"| pipeline of 20 bare EVALSHA: {ms(floor['p50_s'])} | {c['vs_floor_p50']:.2f}x "
            "the floor |"
        )
    c = r["select_model_cold"]
    rows.append(
        f"| `select_model` (20 models, uncached, every model read whole, as if each was "
        f"written since the last decision) p50 / p99 | {ms(c['p50_s'])} / {ms(c['p99_s'])} "
        f"| pipeline of 20 bare EVALSHA: {ms(floor['p50_s'])} | {c['vs_floor_p50']:.2f}x "
        "the floor |"
    )
    c = r["cached_select_model"]
    rows += [
        f"| `LocalTier.select_model` (20 models, cached) p50 / p99 | {us(c['p50_s'])} / "
        f"{us(c['p99_s'])} | the floor: {ms(floor['p50_s'])} | {c['vs_floor_p50']:.3f}x |",
        f"| Redis CPU per model per snapshot (`INFO commandstats`), model unchanged since "
        f"the reader's last read ('same') | {r['redis_cpu_us_per_model_snapshot']:.1f} us "
        f"| bare EVALSHA: {r['redis_cpu_us_per_bare_evalsha']:.1f} us "
        f"| one shard: {r['shard_decisions_per_s']:,.0f} 20-model decisions/s |",
        f"| Redis CPU per model per snapshot, model written since the reader's last read "
        f"| {r['redis_cpu_us_per_changed_model_snapshot']:.1f} us "
        f"| bare EVALSHA: {r['redis_cpu_us_per_bare_evalsha']:.1f} us "
        f"| one shard: {1e6 / (20 * r['redis_cpu_us_per_changed_model_snapshot']):,.0f} "
        "20-model decisions/s |",
    ]
    base = lt["litellm"]
    for name, what in (("ours_uncached", "tier=None"), ("ours_cached", "the tier (default)")):
        c = lt[name]
        rows.append(
            f"| one Router decision, 20 deployments, `SharedStateRouting` {what} p50 / p99 "
            f"| {ms(c['p50_s'])} / {ms(c['p99_s'])} | LiteLLM `latency-based-routing` on Redis: "
            f"{ms(base['p50_s'])} / {ms(base['p99_s'])} | {c['vs_litellm_p50']:.2f}x |"
        )
    off, on = ld["no_tier"], ld["tier"]
    load = f"{ld['routers']} router processes + {ld['writers']} writers, {ld['secs']:.0f} s"
    rows += [
        f"| load: {load}, tier on: decisions/s, p50 / p99 | {on['decisions_per_s']:,.0f}/s, "
        f"{us(on['p50_s'])} / {us(on['p99_s'])} | tier off: {off['decisions_per_s']:,.0f}/s, "
        f"{ms(off['p50_s'])} / {ms(off['p99_s'])} | {ld['decisions_ratio']:.1f}x decisions/s, "
        f"p99 {1 / ld['p99_ratio']:,.0f}x lower |",
        f"| load: writes/s, Redis CPU | tier on: {on['writes_per_s']:,.0f}/s, "
        f"{on['redis_cpu_share']:.0%} of a core | tier off: {off['writes_per_s']:,.0f}/s, "
        f"{off['redis_cpu_share']:.0%} of a core | |",
    ]
    return "\n".join(rows)


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--events", type=int, default=2000, help="events per model (2000)")
    parser.add_argument("--secs", type=float, default=5.0, help="seconds of each load run (5)")
    parser.add_argument("--out", type=Path, default=RESULTS / "routing.json", help="results")
    parser.add_argument(
        "--read-path", action="store_true", help="only the read path: print it as JSON"
    )
    args = parser.parse_args()
    events, n, secs = (50, 20, 1.0) if args.quick else (args.events, 300, args.secs)
    with flushed(args.url) as (url, run):
        res: dict[str, Any] = {**run, "events_per_model": events}
        seed(url, events)
        res["read_path"] = bench_read_path(url, n)
        if args.read_path:
            print(json.dumps(res, indent=2))
            return
        res["litellm"] = bench_litellm(url, n)
        res["load"] = bench_load(url, 4, 4, secs)
    publish(res, args.out, report(res))


if __name__ == "__main__":
    main()
