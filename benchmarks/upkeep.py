"""The worst single script call of record.lua's upkeep in the hard cases (issue 20, item 5).

    python benchmarks/upkeep.py            # on its own redis-server (never 6379)
    python benchmarks/upkeep.py --quick    # smaller sizes: a smoke run
    python benchmarks/upkeep.py --url URL  # on a server you run (it is FLUSHED)

Cases: 60,000 events in one millisecond, and 5,000 members of 17 KB (16 KB error texts, 1 KB
session ids), each rebuilt (`reindex` of a totals hash without `layout`) and then trimmed once
aged. SLOWLOG records every command (slowlog-log-slower-than 0); the figure is the longest
EVALSHA. The baseline, measured in the same run on the same members: one ZRANGE of the whole
key, the least an unbounded script would have to do in one call.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import RESULTS, arguments, server

from redis_telemetry import CompletionEvent, TelemetryStore, TokenBreakdown

WINDOW = 60


def _events(model: str, n: int, tied: bool, big: bool) -> list[CompletionEvent]:
    at = time.time() - WINDOW + 4  # leaves the window in about 4 s
    return [
        CompletionEvent(
            model=model,
            session_id=("s" * 1024) if big else "session",
            completed_at=datetime.fromtimestamp(at if tied else at - i / 1e5, UTC),
            latency_ms=100 + i % 500,
            success=i % 4 != 0,
            tokens=TokenBreakdown(total=1000, input=800, output=200),
            cost_usd=0.001,
            error=None if i % 4 else ("x" * 16_384 if big else "boom"),
        )
        for i in range(n)
    ]


def _longest_evalsha(client: redis.Redis) -> float:
    entries = client.slowlog_get(100_000)
    durations = [e["duration"] for e in entries if e["command"][:7].upper() == b"EVALSHA"]
    return max(durations, default=0) / 1e6


def run_case(client: redis.Redis, name: str, n: int, tied: bool, big: bool) -> dict[str, Any]:
    client.flushall()
    filler = TelemetryStore(client, window_secs=3600)  # no write trims, however long it takes
    events = _events("m", n, tied, big)
    for start in range(0, n, 500 if big else 5000):
        filler.record_batch(events[start : start + (500 if big else 5000)])
    filler.set_window(WINDOW)
    store = TelemetryStore(client, window_secs=WINDOW)
    key = "telemetry:{m}:events"
    began = time.perf_counter()
    client.zrange(key, 0, -1)
    baseline = time.perf_counter() - began
    client.config_set("slowlog-max-len", 100_000)
    client.config_set("slowlog-log-slower-than", 0)
    client.slowlog_reset()
    client.hdel("telemetry:{m}:totals", "layout")
    rebuild_calls = store.reindex()
    rebuild = _longest_evalsha(client)
    deadline = time.time() + 30
    while client.zcard(key) and time.time() < deadline:
        sec, usec = client.time()
        newest = float(client.zrange(key, -1, -1, withscores=True)[0][1])
        if int(sec) * 1000 + int(usec) // 1000 > newest + WINDOW * 1000:
            break
        time.sleep(0.05)  # waiting on Redis's clock for the events to age, not on readiness
    client.slowlog_reset()
    trim_calls = store.reindex()
    trim = _longest_evalsha(client)
    client.config_set("slowlog-log-slower-than", 10_000)
    return {
        "case": name,
        "events": n,
        "rebuild_calls": rebuild_calls,
        "rebuild_longest_s": rebuild,
        "trim_calls": trim_calls,
        "trim_longest_s": trim,
        "zrange_all_s": baseline,
    }


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    ties, big = (6000, 500) if args.quick else (60_000, 5000)
    with server(args.url) as url:
        client = redis.Redis.from_url(url)
        rows = [
            run_case(client, f"{ties:,} events in one millisecond", ties, True, False),
            run_case(client, f"{big:,} members of 17 KB", big, False, True),
        ]
        client.close()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "upkeep.json").write_text(json.dumps(rows, indent=2) + "\n")
    print("| case | longest rebuild call | longest trim call | one ZRANGE of the key |")
    print("| --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['case']} | {r['rebuild_longest_s'] * 1000:.2f} ms ({r['rebuild_calls']} calls) "
            f"| {r['trim_longest_s'] * 1000:.2f} ms ({r['trim_calls']} calls) "
            f"| {r['zrange_all_s'] * 1000:.1f} ms |"
        )


if __name__ == "__main__":
    main()
