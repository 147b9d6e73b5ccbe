"""Snapshot arithmetic over decoded events: no I/O, shared by every front end."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

from pydantic import BaseModel

from ..models import ModelPerformanceSnapshot, ModelUsage, TokenBreakdown, UsageSnapshot
from . import codec, rules, scripts, sketch, totals
from .codec import nano_usd
from .totals import Totals

log = logging.getLogger(__name__)

#: (member bytes, score) pairs as ZRANGEBYSCORE ... WITHSCORES returns them.
Members = Sequence[tuple[bytes, float]]
#: A sketch's percentiles (``sketch.PERCENTILES`` order) and histogram (``sketch.LE_MS``).
Summary = tuple[tuple[float | None, ...], tuple[int, ...]]
M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


def ms_to_datetime(ms: int) -> datetime:
    """Epoch milliseconds to a UTC datetime."""
    return rules.from_epoch_us(ms * 1000)


def pairs(flat: Sequence[Any]) -> list[tuple[bytes, float]]:
    """A script's flat member, score, member, score... list as (member, score) pairs."""
    return [(m, float(sc)) for m, sc in zip(flat[::2], flat[1::2], strict=True)]


def decode_window(key: str, members: Members, cutoff_ms: float) -> list[codec.StoredEvent]:
    """Decode the members scored after ``cutoff_ms``; skip and log the ones that are corrupt."""
    events: list[codec.StoredEvent] = []
    bad: list[str] = []
    for raw, score in members:
        if score <= cutoff_ms:
            continue
        try:
            events.append(codec.decode(raw))
        except codec.CorruptMember as exc:
            bad.append(str(exc))
    if bad:
        log.warning("skipped %d unreadable member(s) of %s: %s", len(bad), key, bad[0])
    return events


def limit_state(pttl: int, now_ms: int) -> tuple[bool, datetime | None]:
    """(limited, expires_at) from the limit key's PTTL: -2 absent, -1 no expiry."""
    if pttl == -2:
        return False, None
    if pttl == -1:
        return True, None
    return True, ms_to_datetime(now_ms + pttl)


def performance(
    model: str,
    events: Iterable[codec.StoredEvent],
    window_secs: int,
    now_ms: int,
    limit_pttl: int,
    percentiles: bool = True,
) -> ModelPerformanceSnapshot:
    """The reference's snapshot, over events already limited to the window, with (unless not
    asked for) the latency percentiles of its successful completions (exact, nearest rank)."""
    sums = totals.zero()
    newest: int | None = None
    latencies = []
    for e in events:
        for i, v in enumerate(codec.stored_sums(e)):
            sums[i] += v
        if newest is None or e.completed_at_us > newest:
            newest = e.completed_at_us
        if e.success and e.latency_ms is not None:
            latencies.append(e.latency_ms)
    exact: list[float | None] | None = None
    if latencies and percentiles:
        latencies.sort()
        exact = [float(nearest_rank(latencies, p)) for p in sketch.PERCENTILES]
    histogram = sketch.histogram((x, 1) for x in latencies)
    return _snapshot(
        model, Totals._make(sums), newest, window_secs, now_ms, limit_pttl, exact, histogram
    )


def nearest_rank(ordered: Sequence[int], pct: int) -> int:
    """The smallest value with at least ``pct`` percent of ``ordered`` at or below it."""
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


#: The fields a snapshot always sets, and with them the percentiles (set when there is a
#: successful completion: see ``_snapshot``), as ``model_fields_set`` names them.
_PERCENTILE_FIELDS = ("latency_p50_ms", "latency_p95_ms", "latency_p99_ms")
_SNAPSHOT_FIELDS = frozenset(ModelPerformanceSnapshot.model_fields)
_ALWAYS_SET = _SNAPSHOT_FIELDS - frozenset(_PERCENTILE_FIELDS)
_TOKEN_FIELDS = frozenset(TokenBreakdown.model_fields)
_new = object.__setattr__


def constructed(cls: type[M], values: dict[str, Any], fields_set: Iterable[str], private: Any) -> M:
    """The model that ``cls.model_construct(**values)`` builds (then ``fields_set`` set and
    the private attributes ``private``), when ``values`` holds every field in declaration
    order: the same four attributes pydantic keeps, without its per-field loop over aliases
    and defaults (it is on every routing decision's path, twice a model). ``test_read_path``
    checks the result against ``model_construct``'s."""
    m = cls.__new__(cls)
    _new(m, "__dict__", values)
    _new(m, "__pydantic_fields_set__", set(fields_set))
    _new(m, "__pydantic_extra__", None)
    _new(m, "__pydantic_private__", private)
    return m


def copied(p: ModelPerformanceSnapshot) -> ModelPerformanceSnapshot:
    """A copy of ``p`` (its tokens too) that shares nothing mutable with it, as
    ``model_copy`` makes, without its per-call overhead."""
    tokens = p.tokens
    values = dict(p.__dict__)
    values["tokens"] = constructed(
        TokenBreakdown, dict(tokens.__dict__), tokens.model_fields_set, None
    )
    return constructed(
        ModelPerformanceSnapshot, values, p.model_fields_set, dict(p.__pydantic_private__ or {})
    )


def _snapshot(
    model: str,
    t: Totals,
    newest_us: int | None,
    window_secs: int,
    now_ms: int,
    limit_pttl: int,
    percentiles: Sequence[float | None] | None = None,
    histogram: tuple[int, ...] | None = None,
) -> ModelPerformanceSnapshot:
    """The snapshot of the totals ``t``: one formula for both paths, with the latency
    ``percentiles`` (in ``sketch.PERCENTILES`` order; None: left unset) and the histogram
    (None: none, as for a snapshot not read from a store).
    Built without pydantic's validation (it is on every routing decision's path): every
    value here is already of its field's type, as ``test_read_path`` checks against a
    validated copy."""
    ok, latency, cost_nusd = t.ok, t.latency, t.cost_nusd
    timed = ok - t.untimed
    total = ok + t.failed
    cost = cost_nusd / 1e9
    tokens = constructed(
        TokenBreakdown,
        {
            "total": t.total,
            "input": t.input,
            "output": t.output,
            "reasoning": t.reasoning,
            "cache_read": t.cache_read,
            "cache_write": t.cache_write,
        },
        _TOKEN_FIELDS,
        None,
    )
    limited, expires = limit_state(limit_pttl, now_ms)
    p50, p95, p99 = (None, None, None) if percentiles is None else percentiles
    values = {
        "model": model,
        "successful_completions": ok,
        "failed_completions": t.failed,
        "window_secs": window_secs,
        "throughput": ok / window_secs,
        "avg_latency_ms": latency / timed if timed > 0 else 0.0,
        "success_rate": ok / total if total else 0.0,
        "last_event_at": None if newest_us is None else rules.from_epoch_us(newest_us),
        "subscription_limit_reached": limited,
        "subscription_limit_expires_at": expires,
        "total_cost_usd": cost,
        "tokens": tokens,
        "avg_cost_per_1k_tokens": cost / t.output * 1000 if t.output else 0.0,
        "is_free": total > 0 and cost_nusd == 0,
        "avg_cost_per_1k_total_tokens": cost / t.total * 1000 if t.total else 0.0,
        "latency_p50_ms": p50,
        "latency_p95_ms": p95,
        "latency_p99_ms": p99,
        "latency_samples": max(0, timed),
    }
    fields_set = _ALWAYS_SET if percentiles is None else _SNAPSHOT_FIELDS
    private = {"_latency_histogram": histogram}
    return constructed(ModelPerformanceSnapshot, values, fields_set, private)


def from_totals(
    *, model: str, key: str, reply: scripts.SnapshotReply, window_secs: int
) -> ModelPerformanceSnapshot:
    """A snapshot from ``snapshot.lua``'s reply, without reading the window's events: the
    running totals less the members that aged out since the last trim, the percentiles from
    the latency sketch, and ``last_event_at`` from the newest members."""
    cutoff = reply.now_ms - window_secs * 1000
    held = _parse_sums(key, reply.totals)
    minus = reply.minus
    left = [have - gone for have, gone in zip(held, minus, strict=True)] if any(minus) else held
    if reply.skipped:
        log.warning("skipped %d unreadable aged member(s) of %s", reply.skipped, key)
    if min(left) < 0:
        log.warning(
            "running totals of %s went negative (%s); members were written by hand?", key, left
        )
        left = [max(0, v) for v in left]
    last = _newest_memo(key, reply.newest, cutoff)
    percentiles, histogram = _summary_memo(key, reply.sketch, reply.aged_buckets)
    return _snapshot(
        model,
        Totals._make(left),
        last,
        window_secs,
        reply.now_ms,
        reply.limit_pttl,
        percentiles if left[_INDEX["ok"]] else None,
        histogram,
    )


_INDEX = {name: i for i, name in enumerate(totals.FIELDS)}

#: How many models' last sketch summary and newest member the memos below hold (past it,
#: they start again): at most about 9 KB a sketch, so a few MB in all.
MEMO = 1024
#: The most members of a newest millisecond the newest memo holds (a model's newest is one
#: member in the common case; a larger tie is decoded again at each read).
MEMO_NEWEST = 8
#: events key -> (sketch bytes, aged buckets, their summary)
_SUMMARIES: dict[str, tuple[bytes, Mapping[int, int], Summary]] = {}
#: events key -> (the newest members, as the reply gave them, the newest time they give, and
#: their lowest score)
_NEWEST: dict[str, tuple[list[Any], int | None, float]] = {}


def forget() -> None:
    """Empty the memos of sketch summaries and newest times: the next read of every model
    computes them again (a benchmark's cold case)."""
    _SUMMARIES.clear()
    _NEWEST.clear()


def _remember(memo: dict[str, T], key: str, value: T) -> None:
    if len(memo) >= MEMO and key not in memo:
        memo.clear()
    memo[key] = value


def _summary_memo(key: str, blob: bytes, aged: Mapping[int, int]) -> Summary:
    """``sketch.summary`` of the sketch ``blob`` less the ``aged`` buckets' counts: the last
    one of ``key`` again when its sketch and aged buckets are the same bytes and counts (a
    pure function of them, so the memo is exact): a model without writes since the last
    decision costs a comparison of bytes, not a prefix sum over its buckets."""
    held = _SUMMARIES.get(key)
    if held is not None and held[0] == blob and held[1] == aged:
        return held[2]
    counts = sketch.counts(blob, aged)  # aged buckets only lower counts: zeros stay zeros
    percentiles, histogram = sketch.summary(counts, zeros=sketch.leading_zeros(blob))
    got = (tuple(percentiles), histogram)
    _remember(_SUMMARIES, key, (blob, aged, got))
    return got


def _newest_memo(key: str, newest: Sequence[Any], cutoff: float) -> int | None:
    """``newest_us`` of a reply's newest members (flat member, score list): the last one of
    ``key`` again when the members and scores are the same and all of them are still in the
    window (a pure function of them then, so the memo is exact). Only a clean decode is
    remembered, so an unreadable member is logged at every read, as before."""
    flat = list(newest)
    held = _NEWEST.get(key)
    if held is not None and held[0] == flat and held[2] > cutoff:
        return held[1]
    members = pairs(flat)
    found, clean = _newest(key, members, cutoff)
    lowest = min((sc for _, sc in members), default=math.inf)
    if clean and lowest > cutoff and len(members) <= MEMO_NEWEST:
        _remember(_NEWEST, key, (flat, found, lowest))
    return found


def quiet(key: str, reply: Sequence[Any]) -> bool:
    """Whether building a snapshot from the raw whole ``snapshot.lua`` reply again logs
    nothing: its sums are all readable and not negative, and its newest members decoded
    cleanly (the newest memo holds them). A read may then reuse the snapshot it built; else
    it builds it again, so that what is wrong is logged at every read."""
    held = _NEWEST.get(key)
    return (
        held is not None
        and held[0] == list(reply[6])
        and all(v is None or (isinstance(v, bytes) and v.isdigit()) for v in reply[2])
    )


def newest_us(key: str, newest: Members, cutoff: float) -> int | None:
    """The newest readable event's completion time among ``newest`` (newest first): the
    latest of the newest millisecond that holds a readable member; corrupt ones are skipped."""
    return _newest(key, newest, cutoff)[0]


def _newest(key: str, newest: Members, cutoff: float) -> tuple[int | None, bool]:
    """``newest_us``, and whether every member it decoded was readable."""
    clean = True
    for score in dict.fromkeys(sc for _, sc in newest if sc > cutoff):
        tied = [m for m in newest if m[1] == score]
        events = decode_window(key, tied, -math.inf)
        clean = clean and len(events) == len(tied)
        if events:
            return max(e.completed_at_us for e in events), clean
    return None, clean


def _parse_sums(key: str, sums: Sequence[Any]) -> list[int]:
    if len(sums) == len(totals.FIELDS) and None not in sums:
        try:
            return list(map(int, sums))
        except ValueError:
            pass  # one is unreadable: find it below
    out = []
    for raw in list(sums) + [None] * (len(totals.FIELDS) - len(sums)):
        try:
            out.append(0 if raw is None else int(raw))
        except ValueError:
            log.warning("skipped an unreadable running total of %s: %r", key, raw)
            out.append(0)
    return out


def usage_of(session_id: str, events: Iterable[codec.StoredEvent]) -> ModelUsage | None:
    """One session's usage among ``events`` (None when it has none): the brute-force scan,
    for models read from their events."""
    n = inp = out = total = cost_nusd = 0
    for e in events:
        if e.session_id == session_id:
            n += 1
            inp += e.input
            out += e.output
            total += e.total
            cost_nusd += nano_usd(e.cost_usd)
    return usage_from_index([n, inp, out, total, cost_nusd]) if n else None


def usage_from_index(values: Sequence[int]) -> ModelUsage:
    """A session's usage from its index entry: events, input, output, total, cost_nusd."""
    n, inp, out, total, cost_nusd = values
    return ModelUsage(
        input_tokens=inp,
        output_tokens=out,
        total_tokens=total,
        cost_usd=cost_nusd / 1e9,
        message_count=n,
    )


def usage(
    session_id: str, by_model: Mapping[str, ModelUsage], window_secs: int, now_ms: int
) -> UsageSnapshot:
    """One session's usage per model within the window, plus totals."""
    models = {m: by_model[m].model_copy() for m in sorted(by_model)}
    sums = ModelUsage()
    for u in models.values():
        sums.merge(u)
    return UsageSnapshot(
        id=session_id,
        window_start=ms_to_datetime(now_ms - window_secs * 1000),
        window_end=ms_to_datetime(now_ms),
        by_model=models,
        totals=sums,
    )
