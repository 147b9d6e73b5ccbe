"""Redis CPU of record.lua, this tree's against an earlier commit's, on one server in one run.

    python benchmarks/record_cpu.py                  # against main's lua/record.lua
    python benchmarks/record_cpu.py --before REF     # against another commit's
    python benchmarks/record_cpu.py --url URL        # on a server you run (it is FLUSHED)

Both scripts run the same calls (arguments built beforehand, so no Python work is measured),
in alternating rounds so that drift on a shared machine hits both alike; INFO commandstats
gives each one's CPU time (a script's count includes the commands it calls) and the commands
it calls. Cases: one event into 20 small models (a few hundred events each), the same into
20 models of 2,000 events each, and record_batch(1000) over 20 models and 500 sessions. A
shard's ceiling is what its Redis CPU allows: 10^6 µs over the CPU of one write.
Writes benchmarks/results/record_cpu.json.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import redis
from bench import RESETSTAT, RESULTS, arguments, make_events, server

from redis_telemetry import TelemetryStore
from redis_telemetry.core import codec, scripts
from redis_telemetry.core.commands import Eval

ROOT = Path(__file__).resolve().parents[1]


def source_at(ref: str) -> str:
    """record.lua as ``ref`` rendered it (its event.lua written in, this tree's fields)."""

    def show(path: str) -> str:
        return subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{ref}:{path}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    return scripts.render(show("lua/record.lua"), show("lua/event.lua"))


def measure(
    client: redis.Redis, shas: dict[str, str], plans: dict[str, list[list[Eval]]], events: int
) -> dict[str, dict[str, float]]:
    """Run round k of every script's plan in turn (the order alternating each round), and
    sum each script's CPU and the commands it called; per event."""
    usec = dict.fromkeys(shas, 0)
    calls = dict.fromkeys(shas, 0)
    for k in range(len(next(iter(plans.values())))):
        for name in list(shas) if k % 2 else list(reversed(shas)):
            client.config_resetstat()
            for c in plans[name][k]:
                client.evalsha(shas[name], len(c.keys), *c.keys, *c.args)
            stats = client.info("commandstats")
            usec[name] += stats["cmdstat_evalsha"]["usec"]
            calls[name] += sum(
                v["calls"] for key, v in stats.items() if key not in ("cmdstat_evalsha", RESETSTAT)
            )
    return {
        name: {"cpu_us": usec[name] / events, "commands": calls[name] / events} for name in shas
    }


def _as_for(source: str, c: Eval) -> Eval:
    """``c`` as a script from before provider spend takes it: without KEYS[7] (the model's
    spend hash) and its last argument."""
    if "KEYS[7]" in source or len(c.keys) < 7:
        return c
    return c._replace(keys=c.keys[:6], args=c.args[:-1])


def case(
    url: str, sources: dict[str, str], prefill: int, batch: int, rounds: int, per: int
) -> dict[str, Any]:
    """One case on a flushed server: ``prefill`` events first, then ``rounds`` rounds of
    ``per`` new events for each script (its own events, into the same models), sent one a
    call (``batch`` 0) or ``batch`` a record_batch."""
    client = redis.Redis.from_url(url)
    client.flushall()
    store = TelemetryStore(client, window_secs=3600)
    for start in range(0, prefill, 5000):
        store.record_batch(make_events(min(5000, prefill - start), 3000, seed=10**6 + start))
    store.record(make_events(1, 1)[0])  # the window confirmed, the models listed
    shas = {name: client.script_load(src) for name, src in sources.items()}
    now_ms = int(time.time() * 1000)
    core = store._core
    plans: dict[str, list[list[Eval]]] = {}
    for i, name in enumerate(sources):
        plans[name] = []
        for k in range(rounds):
            fresh = make_events(per, 60, seed=per * (2 * k + i))
            prepared = [codec.prepare(e, now_ms) for e in fresh]
            if batch:
                groups, _ = codec.by_model(prepared)
                evals = [core._record_eval(m, g) for m, g in groups.items()]
            else:
                evals = [core._record_eval(p.model, [p]) for p in prepared]
            plans[name].append([_as_for(sources[name], c) for c in evals])
    out = measure(client, shas, plans, per * rounds)
    client.close()
    before, after = out["before"], out["after"]
    return {
        "prefill": prefill,
        "batch": batch,
        **{f"{m}_{k}": v for k, row in out.items() for m, v in row.items()},
        "ratio": after["cpu_us"] / before["cpu_us"],
        "ceiling_before_per_s": 1e6 / before["cpu_us"],
        "ceiling_after_per_s": 1e6 / after["cpu_us"],
    }


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--before", default="main", help="the commit to compare with")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    sources = {"before": source_at(args.before), "after": scripts.SCRIPTS["record"]}
    rounds, per = (2, 100) if args.quick else (8, 500)
    with server(args.url) as url:
        rows = [
            case(url, sources, 0, 0, rounds, per),
            case(url, sources, 200 if args.quick else 40_000, 0, rounds, per),
            case(url, sources, 0, 1000, rounds, 1000),
        ]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "record_cpu.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(f"| write (record.lua vs {args.before}) | before | after | ratio |")
    print("| --- | --- | --- | --- |")
    names = {0: "`record()`, small models", 1: "`record()`, 2,000 events a model", 2: "batch"}
    for i, row in enumerate(rows):
        unit = "an event" if row["batch"] else "a call"
        print(
            f"| {names[i]} | {row['cpu_us_before']:.1f} µs {unit}, "
            f"{row['commands_before']:.1f} commands ({row['ceiling_before_per_s']:,.0f}/s a "
            f"shard) | {row['cpu_us_after']:.1f} µs, {row['commands_after']:.1f} commands "
            f"({row['ceiling_after_per_s']:,.0f}/s) | {row['ratio']:.2f}x |"
        )


if __name__ == "__main__":
    main()
