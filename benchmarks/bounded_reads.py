"""Bounded reads (issue 20, items 5 and 6): the worst read script call in the cases that
made reads slow, against the previous release's scripts on the same data, and the snapshot of
a model with a backlog of aged, untrimmed members against an active model, in the same run.

    python benchmarks/bounded_reads.py              # full run on its own redis-server
    python benchmarks/bounded_reads.py --url URL    # on a server you run (it is FLUSHED)
    python benchmarks/bounded_reads.py --quick      # small sizes: a smoke run

Writes benchmarks/results/bounded_reads.json and prints a table. Script times are Redis's
own (SLOWLOG at 0 us: every command logged), so they do not include the round trip.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import redis
from bench import RESULTS, arguments, make_events, pct, publish, server

from redis_telemetry import CompletionEvent, TelemetryStore
from redis_telemetry.core import rules, scripts, totals

WINDOW = 60
MODEL = "bench/m"
KEY = f"telemetry:{{{MODEL}}}:events"

#: The previous release's window.lua and snapshot.lua (code only; the loader renders the
#: FIELDS line and writes lua/event.lua in): the same-run baselines.
PREVIOUS_WINDOW = """local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local from = ARGV[2]
if from == '' then from = string.format('%.0f', now - tonumber(ARGV[1])) end
local page = tonumber(ARGV[3])
local members = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. from, '+inf', 'WITHSCORES',
  'LIMIT', 0, page)
local after = ''
if #members == 2 * page then
  after = members[#members]
  local kept = {}
  for j = 1, #members, 2 do
    if members[j + 1] ~= after then
      kept[#kept + 1] = members[j]
      kept[#kept + 1] = members[j + 1]
    end
  end
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], after, after, 'WITHSCORES')) do
    kept[#kept + 1] = m
  end
  members = kept
end
return {now, members, redis.call('PTTL', KEYS[2]), after}
"""
PREVIOUS_SNAPSHOT = """local FIELDS = {}

-- #include event.lua

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cutoff = now - tonumber(ARGV[1])
local probe, max_aged, layout = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local pttl = redis.call('PTTL', KEYS[3])

local newest = redis.call('ZREVRANGE', KEYS[1], 0, probe - 1, 'WITHSCORES')
if #newest == 0 or tonumber(newest[2]) <= cutoff then
  return {now, 'empty', {}, {}, {}, '', {}, pttl, 0}
end
if #newest == 2 * probe and newest[2] == newest[#newest] then
  newest = redis.call('ZREVRANGEBYSCORE', KEYS[1], newest[2], newest[2], 'WITHSCORES')
end

local held = redis.call('HMGET', KEYS[2], 'layout', unpack(FIELDS))
if tonumber(held[1]) ~= layout then
  return {now, 'rebuild', {}, {}, {}, '', newest, pttl, 0}
end
if redis.call('ZCOUNT', KEYS[1], '-inf', cutoff) > max_aged then
  return {now, 'aged', {}, {}, {}, '', newest, pttl, 0}
end

local minus, acc, aged, skipped = {}, {}, {}, 0
for i = 1, N do acc[i] = 0 end
for _, member in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', cutoff)) do
  local e = effect(member)
  if e then
    for i = 1, N do
      if acc[i] + e.c[i] >= 2 ^ 52 then
        minus[#minus + 1] = FIELDS[i]
        minus[#minus + 1] = string.format('%.0f', acc[i])
        acc[i] = 0
      end
      acc[i] = acc[i] + e.c[i]
    end
    if e.bucket then aged[#aged + 1] = e.bucket end
  else
    skipped = skipped + 1
  end
end
for i = 1, N do
  if acc[i] ~= 0 then
    minus[#minus + 1] = FIELDS[i]
    minus[#minus + 1] = string.format('%.0f', acc[i])
  end
end
table.remove(held, 1)
return {now, 'ok', held, minus, aged, redis.call('GET', KEYS[4]) or '', newest, pttl, skipped}
"""


# -- data ---------------------------------------------------------------------------------


def small(n: int, at: datetime, step_us: int = 1, session: str = "s") -> list[CompletionEvent]:
    """``n`` of bench.py's ordinary events, of MODEL, from ``at`` on, ``step_us`` apart."""
    events = make_events(n, 1)
    for i, e in enumerate(events):
        e.model = MODEL
        e.session_id = f"{session}{i % 50}"
        e.completed_at = at + timedelta(microseconds=i * step_us)
    return events


def biggest(n: int, at: datetime) -> list[CompletionEvent]:
    """``n`` events of the largest size the rules allow (a 16 KB error, a 1 KB session id, a
    128-character event id), 1 us apart."""
    return [
        CompletionEvent(
            model=MODEL,
            session_id=f"{i % 3}".ljust(rules.MAX_SESSION_LEN, "s"),
            completed_at=at + timedelta(microseconds=i),
            latency_ms=100,
            success=i % 3 != 0,
            error="e" * rules.MAX_ERROR_LEN,
            event_id=f"{at.timestamp()}-{i}".ljust(rules.MAX_EVENT_ID_LEN, "i"),
        )
        for i in range(n)
    ]


def write(store: TelemetryStore, events: list[CompletionEvent], chunk: int = 1000) -> None:
    for start in range(0, len(events), chunk):
        store.record_batch(events[start : start + chunk])


def server_ms(client: redis.Redis) -> int:
    sec, usec = client.time()
    return int(sec) * 1000 + int(usec) // 1000


def age(client: redis.Redis, events: list[CompletionEvent]) -> None:
    """Wait until the server's clock has aged every one of ``events`` out of the window."""
    newest = max(int(e.completed_at.timestamp() * 1000) for e in events)
    while server_ms(client) <= newest + WINDOW * 1000:
        time.sleep(0.05)  # a condition on Redis's clock, polled


def soon(slack_s: float) -> datetime:
    """A completion time that leaves the window ``slack_s`` seconds from now."""
    return datetime.now(UTC) - timedelta(seconds=WINDOW - slack_s)


# -- SLOWLOG ------------------------------------------------------------------------------


@contextmanager
def logged(client: redis.Redis, into: dict[str, float]) -> Iterator[None]:
    """Every command in the block logged; ``into`` gets the worst EVALSHA time (s) per
    script name."""
    names = {redis.Redis().register_script(src).sha: n for n, src in scripts.SCRIPTS.items()}
    names[redis.Redis().register_script(previous_window()).sha] = "previous window"
    names[redis.Redis().register_script(previous_snapshot()).sha] = "previous snapshot"
    client.config_set("slowlog-log-slower-than", 0)
    client.config_set("slowlog-max-len", 1_000_000)
    client.slowlog_reset()
    try:
        yield
    finally:
        for e in client.slowlog_get(-1):
            if e["command"].startswith(b"EVALSHA"):
                name = names.get(e["command"].split()[1].decode(), "other")
                into[name] = max(into.get(name, 0.0), e["duration"] / 1e6)
        client.config_set("slowlog-log-slower-than", 10_000)


def previous_window() -> str:
    return PREVIOUS_WINDOW


def previous_snapshot() -> str:
    library = (scripts._lua_dir() / "event.lua").read_text(encoding="utf-8")
    return scripts.render(PREVIOUS_SNAPSHOT, library)


def previous_reads(client: redis.Redis, window: bool, snapshot: bool) -> None:
    """The previous release's window read (every page) and snapshot script of MODEL."""
    keys = (KEY, f"telemetry:{{{MODEL}}}:limit")
    if window:
        page = client.register_script(previous_window())
        after = ""
        while True:
            _, _, _, after = page(keys=keys, args=[WINDOW * 1000, after, scripts.WINDOW_PAGE])
            if not after:
                break
    if snapshot:
        snap = client.register_script(previous_snapshot())
        skeys = (KEY, f"telemetry:{{{MODEL}}}:totals", keys[1], f"telemetry:{{{MODEL}}}:latency")
        snap(keys=skeys, args=[WINDOW * 1000, scripts.NEWEST_PROBE, 1000, totals.LAYOUT])


def worst_case(
    client: redis.Redis, name: str, fill: Callable[[], None], reads: Callable[[], Any], **old: bool
) -> dict[str, Any]:
    """The worst script call of ``reads`` (ours) and of the previous release's reads, after
    ``fill``."""
    client.flushall()
    fill()
    ours: dict[str, float] = {}
    with logged(client, ours):
        reads()
    before: dict[str, float] = {}
    with logged(client, before):
        previous_reads(client, **old)
    return {"case": name, "ours_s": ours, "previous_s": before}


def worst_cases(client: redis.Redis, quick: bool) -> list[dict[str, Any]]:
    store = TelemetryStore(client, window_secs=WINDOW)
    read_only = TelemetryStore(client, window_secs=WINDOW)
    read_only._core._read_only = True  # as a user Redis refuses every write (see the docs)
    ties, big, aged_big = (6000, 500, 200) if quick else (60_000, 5000, 1000)
    at = datetime.now(UTC) - timedelta(seconds=10)
    rows = [
        worst_case(
            client,
            f"{ties:,} events in one millisecond: snapshot and window pages",
            lambda: write(
                store, [e.model_copy(update={"completed_at": at}) for e in small(ties, at)]
            ),
            lambda: (store.model_performance(MODEL), store.events(MODEL)),
            window=True,
            snapshot=True,
        ),
        worst_case(
            client,
            f"{big:,} events of the maximum size (about 17 KB): window pages",
            lambda: write(store, biggest(big, at), 100),
            lambda: store.events(MODEL),
            window=True,
            snapshot=False,
        ),
    ]

    def aged_fill() -> None:
        aging = biggest(aged_big, soon(6 if quick else 15))
        write(store, aging, 100)
        write(store, biggest(aged_big, at), 100)
        age(client, aging)

    rows.append(
        worst_case(
            client,
            f"{aged_big:,} aged, untrimmed events of the maximum size: snapshot and "
            "session_usage() of a store that may not write",
            aged_fill,
            lambda: (
                read_only.model_performance(MODEL),
                read_only.session_usage("0".ljust(1024, "s")),
            ),
            window=False,
            snapshot=True,
        )
    )
    return rows


# -- a backlog of aged members against an active model -------------------------------------


def backlog(url: str, n: int, reads: int) -> dict[str, Any]:
    """Snapshots of model "aged" (``n`` members aged out of the window, untrimmed, and ``n``
    in it) against model "active" (``n`` in it, nothing aged), in the same run: a store that
    may write (its first read trims the backlog) and one that may not (its first read
    subtracts the backlog in bounded calls, later ones only what aged since). The one that
    may not write is a store marked so, as a store marks itself when Redis refuses it the
    upkeep (an ACL read-only user: tests/test_bounded_reads.py runs the shipped one)."""
    client = redis.Redis.from_url(url)
    client.flushall()
    store = TelemetryStore(client, window_secs=WINDOW)
    now = datetime.now(UTC)
    for model in ("aged", "active"):
        live = [e.model_copy(update={"model": model}) for e in small(n, now - timedelta(seconds=5))]
        write(store, live)
    aging = [
        e.model_copy(update={"model": "aged"})
        for e in small(n, soon(10 if n < 10_000 else 25), session="t")
    ]
    write(store, aging)
    age(client, aging)
    assert client.zcount("telemetry:{aged}:events", "-inf", server_ms(client) - WINDOW * 1000) == n
    read_only = TelemetryStore(client, window_secs=WINDOW)
    read_only._core._read_only = True
    worst: dict[str, float] = {}

    def once(fn: Callable[[], Any]) -> float:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    def steady(fn: Callable[[], Any]) -> tuple[float, float]:
        """p50 of ``fn`` and of the active model's snapshot, calls interleaved."""
        mine, active = [], []
        for _ in range(reads):
            mine.append(once(fn))
            active.append(once(partial(store.model_performance, "active")))
        return pct(mine, 0.5), pct(active, 0.5)

    window_read = [once(partial(store.model_performance, "aged", True)) for _ in range(3)]
    with logged(client, worst):
        ro_first = once(partial(read_only.model_performance, "aged"))
    ro_steady, ro_active = steady(partial(read_only.model_performance, "aged"))
    with logged(client, worst):
        w_first = once(partial(store.model_performance, "aged"))
    left = client.zcount("telemetry:{aged}:events", "-inf", server_ms(client) - WINDOW * 1000)
    w_steady, w_active = steady(partial(store.model_performance, "aged"))
    exact = store.model_performance("aged").model_dump(
        exclude={"latency_p50_ms", "latency_p95_ms", "latency_p99_ms"}
    )
    slow = store.model_performance("aged", True).model_dump(
        exclude={"latency_p50_ms", "latency_p95_ms", "latency_p99_ms"}
    )
    client.close()
    return {
        "aged": n,
        "live": n,
        "window_read_p50_s": pct(window_read, 0.5),
        "read_only_first_s": ro_first,
        "read_only_steady_p50_s": ro_steady,
        "read_only_vs_active": ro_steady / ro_active,
        "writer_first_s": w_first,
        "writer_steady_p50_s": w_steady,
        "writer_vs_active": w_steady / w_active,
        "active_p50_s": (ro_active + w_active) / 2,
        "aged_left_after_writer_read": left,
        "worst_script_s": worst,
        "exact": exact == slow,
    }


# -- report -------------------------------------------------------------------------------


def ms(x: float) -> str:
    return f"{x * 1000:.1f} ms"


def report(res: dict[str, Any]) -> str:
    lines = [
        f"machine: {res['machine']}",
        "",
        "| case | ours: worst call (Redis time) | previous release, same data | ratio |",
        "| --- | --- | --- | --- |",
    ]
    for row in res["worst"]:
        ours = max(row["ours_s"].values())
        before = max(row["previous_s"].values())
        names = ", ".join(f"{k} {ms(v)}" for k, v in sorted(row["ours_s"].items()))
        olds = ", ".join(f"{k} {ms(v)}" for k, v in sorted(row["previous_s"].items()))
        lines.append(f"| {row['case']} | {names} | {olds} | {ours / before:.2f}x |")
    b = res["backlog"]
    worst = ", ".join(f"{k} {ms(v)}" for k, v in sorted(b["worst_script_s"].items()))
    lines += [
        "",
        f"Backlog: {b['aged']:,} aged, untrimmed members and {b['live']:,} in the window, "
        f"against an active model of {b['live']:,} (no backlog), same run:",
        "",
        "| read | time | against the active model's snapshot |",
        "| --- | --- | --- |",
        f"| the whole live window, as the previous release read it (and `percentiles=True`) | "
        f"{ms(b['window_read_p50_s'])} | |",
        f"| store that may not write, first read (subtracts the backlog in bounded calls) | "
        f"{ms(b['read_only_first_s'])} | |",
        f"| store that may not write, steady p50 (only what aged since) | "
        f"{ms(b['read_only_steady_p50_s'])} | {b['read_only_vs_active']:.2f}x |",
        f"| store that may write, first read (trims the backlog: the one-time upkeep) | "
        f"{ms(b['writer_first_s'])} | |",
        f"| store that may write, steady p50 | {ms(b['writer_steady_p50_s'])} | "
        f"{b['writer_vs_active']:.2f}x |",
        f"| active model p50 | {ms(b['active_p50_s'])} | 1.00x |",
        "",
        f"Worst script call during the two first reads: {worst}. Aged members left after "
        f"the writer's read: {b['aged_left_after_writer_read']}; exact: {b['exact']}.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument(
        "--backlog", type=int, default=50_000, help="aged members of the backlog case (50,000)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    with server(args.url) as url:
        client = redis.Redis.from_url(url)
        redis_version = client.info("server")["redis_version"]
        where = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
        res = {"machine": f"{where}, redis-server {redis_version}", "quick": args.quick}
        res["when"] = datetime.now(UTC).isoformat(timespec="seconds")
        res["worst"] = worst_cases(client, args.quick)
        client.close()
        res["backlog"] = backlog(
            url, 2000 if args.quick else args.backlog, 20 if args.quick else 200
        )
    publish(res, args.out / "bounded_reads.json", report(res))


if __name__ == "__main__":
    main()
