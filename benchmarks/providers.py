"""What provider budgets cost: record() and a routing decision, with and without them, in one run.

    python benchmarks/providers.py              # full run on its own redis-server
    python benchmarks/providers.py --url URL    # on a server you run (it is FLUSHED)
    python benchmarks/providers.py --quick      # a smoke run with small sizes (CI)

Each pair of cases is interleaved call by call, so drift on a shared machine hits both alike:

- ``record()`` of a costly event, its spend kept by ``record.lua`` (KEYS[7]), against the same
  ``record()`` with the spend key left out (the script then skips its spend block: what
  ``record()`` cost before budgets), and against the simplest thing a user would otherwise do:
  ``record()`` and then an ``HINCRBYFLOAT`` of the provider's spend (a second round trip, and
  not exact: a retried event counts twice).
- ``rank_models()`` of 5 candidates over 3 providers (one capped, one blocked) with the providers'
  verdicts applied, against the same ranking without them (``Reads.rank_models``).

Writes benchmarks/results/providers.json and prints a table for docs/performance.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import redis
from bench import RESULTS, arguments, flushed, interleaved, ms, pct, publish

from redis_telemetry import CompletionEvent, TelemetryStore, TokenBreakdown
from redis_telemetry.core.commands import Eval
from redis_telemetry.core.reads import Reads

CANDIDATES = ["acme/a", "acme/b", "bigco/a", "bigco/b", "capco/a"]


def event(model: str, cost: float) -> CompletionEvent:
    return CompletionEvent(
        model=model,
        session_id="bench",
        latency_ms=900,
        success=True,
        tokens=TokenBreakdown(total=12000, input=10000, output=1500, reasoning=500),
        cost_usd=cost,
    )


def without_spend(store: TelemetryStore) -> TelemetryStore:
    """A store whose ``record.lua`` calls leave out the spend key and its argument."""
    core = store._core
    build = core._record_eval

    def six_keys(model: str, chunk: Any) -> Eval:
        call = build(model, chunk)
        return call._replace(keys=call.keys[:6], args=call.args[:-1])

    core._record_eval = six_keys  # type: ignore[method-assign]
    return store


def summary(times: dict[str, list[float]], n: int, ours: str) -> dict[str, Any]:
    """p50 and p99 of each case, and ours against the case named ``without`` (p50)."""
    p50 = {k: pct(v, 0.5) for k, v in times.items()}
    p99 = {k: pct(v, 0.99) for k, v in times.items()}
    return {"n": n, "p50": p50, "p99": p99, "ratio_p50": p50[ours] / p50["without"]}


def bench_record(url: str, n: int) -> dict[str, Any]:
    client = redis.Redis.from_url(url)
    with_budgets = TelemetryStore(client, window_secs=3600)
    before = without_spend(TelemetryStore(client, window_secs=3600, namespace="before"))
    by_hand = TelemetryStore(client, window_secs=3600, namespace="byhand")
    with_budgets.set_budget("acme", hour_usd=1e6, day_usd=1e6)

    def hand() -> None:
        by_hand.record(event("acme/a", 0.0123))
        client.hincrbyfloat("byhand:spend:acme", "day", 0.0123)

    times = interleaved(
        {
            "with_budgets": lambda: with_budgets.record(event("acme/a", 0.0123)),
            "without": lambda: before.record(event("acme/a", 0.0123)),
            "by_hand": hand,
        },
        n,
    )
    spent = with_budgets.budget("acme").day_spend_usd
    client.close()
    res = summary(times, n, "with_budgets")
    res["by_hand_ratio_p50"] = res["p50"]["by_hand"] / res["p50"]["with_budgets"]
    res["exact"] = abs(spent - round((n + 2) * 0.0123, 9)) < 1e-9
    return res


def bench_routing(url: str, n: int) -> dict[str, Any]:
    client = redis.Redis.from_url(url)
    store = TelemetryStore(client, window_secs=3600, namespace="route")
    store.record_batch([event(m, 0.01) for m in CANDIDATES for _ in range(20)])
    store.set_budget("capco", hour_usd=0.25)
    store.block_provider("bigco", reason="usage limit, resets in 2 hours")
    core = store._core
    times = interleaved(
        {
            "with_providers": lambda: store.rank_models(CANDIDATES, "weighted"),
            "without": lambda: store._run(Reads.rank_models(core, CANDIDATES, "weighted")),
        },
        n,
    )
    ranking = store.rank_models(CANDIDATES, "weighted")
    client.close()
    res = summary(times, n, "with_providers")
    res["ranked"] = [r.model for r in ranking.ranked]
    res["excluded"] = {e.model: e.reason for e in ranking.excluded}
    return res


def report(res: dict[str, Any]) -> str:
    r, q = res["record"], res["routing"]
    return "\n".join(
        [
            f"machine: {res['machine']}",
            "",
            "| case | ours (p50 / p99) | same-run baseline (p50 / p99) | ratio (p50) |",
            "| --- | --- | --- | --- |",
            f"| `record()` of a costly event, spend kept exactly | "
            f"{ms(r['p50']['with_budgets'])} / {ms(r['p99']['with_budgets'])} | "
            f"`record()` without the spend key: {ms(r['p50']['without'])} / "
            f"{ms(r['p99']['without'])} | {r['ratio_p50']:.2f}x |",
            f"| (what a user would otherwise do) | | `record()` + `HINCRBYFLOAT` of the "
            f"provider's spend: {ms(r['p50']['by_hand'])} / {ms(r['p99']['by_hand'])} | "
            f"{r['by_hand_ratio_p50']:.2f}x ours |",
            f"| `rank_models()` of 5 candidates, 3 providers (one capped, one blocked) | "
            f"{ms(q['p50']['with_providers'])} / {ms(q['p99']['with_providers'])} | "
            f"the same ranking without providers: {ms(q['p50']['without'])} / "
            f"{ms(q['p99']['without'])} | {q['ratio_p50']:.2f}x |",
        ]
    )


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    n = 50 if args.quick else 2000
    with flushed(args.url) as (url, run):
        res: dict[str, Any] = {**run, "quick": args.quick}
        res["record"] = bench_record(url, n)
        res["routing"] = bench_routing(url, n)
    publish(res, args.out / "providers.json", report(res))


if __name__ == "__main__":
    main()
