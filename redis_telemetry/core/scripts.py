"""The Lua scripts: their sources, and the Python side of each one's contract.

Each script's header (under ``lua/``, shipped inside the wheel) names its KEYS, ARGV and
reply; the builders here make those arguments, and the readers take those replies apart, so
the layout of every call is written down once on each side.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from importlib.resources import files
from pathlib import Path
from typing import Any

from ..models import RecordResult
from . import codec, totals
from .commands import Eval
from .keys import Keys

SCRIPT_NAMES = ("config", "register", "record", "snapshot", "window", "limit", "rewindow")

#: How far past the data they govern the keys' TTLs reach.
GRACE_MS = 2000
#: Newest members ``snapshot.lua`` returns, to find ``last_event_at`` to the microsecond.
NEWEST_PROBE = 32


def _lua_dir() -> Path:
    packaged = Path(str(files("redis_telemetry"))) / "lua"
    if packaged.is_dir():
        return packaged
    # A source checkout (editable install or tests run from the tree) keeps them at the top.
    return Path(__file__).resolve().parents[2] / "lua"


def _lua_list(names: Sequence[str]) -> str:
    return "{" + ", ".join(f"'{name}'" for name in names) + "}"


def render_fields(source: str) -> str:
    """``record.lua``'s source with its ``local FIELDS = {...}`` and ``local ADDED_LATER =
    {...}`` lines naming :data:`totals.FIELDS` and :data:`totals.ADDED_LATER`."""
    for name, value in (("FIELDS", totals.FIELDS), ("ADDED_LATER", totals.ADDED_LATER)):
        line = re.compile(rf"^local {name} = \{{.*\}}$", flags=re.M)
        rendered = f"local {name} = {_lua_list(value)}".replace("\\", "\\\\")
        source, found = line.subn(rendered, source)
        if found != 1:
            raise RuntimeError(f"record.lua must have one line 'local {name} = {{...}}'")
    return source


def _load() -> dict[str, str]:
    folder = _lua_dir()
    sources = {name: (folder / f"{name}.lua").read_text(encoding="utf-8") for name in SCRIPT_NAMES}
    sources["record"] = render_fields(sources["record"])
    return sources


#: name -> Lua source
SCRIPTS: dict[str, str] = _load()


# -- config.lua ----------------------------------------------------------------------------


def config_call(keys: Keys, window_secs: int, ttl_ms: int) -> Eval:
    """Claim (or confirm) the namespace's window; the reply is the stored window."""
    return Eval("config", (keys.config,), (window_secs, ttl_ms))


# -- register.lua --------------------------------------------------------------------------


def register_call(keys: Keys, entries: Iterable[tuple[str, int, int]]) -> Eval:
    """List models in the registry: (model, keep_until_ms, keep_for_ms) triples."""
    args: list[Any] = [GRACE_MS]
    for model, keep_until_ms, keep_for_ms in entries:
        args += (model, keep_until_ms, keep_for_ms)
    return Eval("register", (keys.models,), tuple(args))


# -- limit.lua -----------------------------------------------------------------------------


def limit_call(keys: Keys, model: str, until_ms: int, reason: str) -> Eval:
    """Block ``model`` until ``until_ms`` (epoch ms, by the server's clock); the reply is the
    block's ms left, 0 when that time is past."""
    return Eval("limit", (keys.limit(model),), (until_ms, reason))


# -- record.lua ----------------------------------------------------------------------------

#: ARGV[2]: count, oldest and newest score, then the sums in ``totals.FIELDS`` order
HEAD_FORMAT = " ".join(["%d"] * (3 + len(totals.FIELDS)))


def record_settings(window_ms: int, limit_ttl_ms: int, max_events: int) -> str:
    """ARGV[1]: the window, the limit TTL, the TTLs' grace and the per-model cap (0: none)."""
    return f"{window_ms} {limit_ttl_ms} {GRACE_MS} {max_events}"


def limit_triples(reasons: Sequence[str], untils: Sequence[int]) -> list[Any]:
    """ARGV[3+2n..]: (position, until_ms, reason) for the events (1..n) whose error is a
    subscription-limit error; until_ms 0 blocks for the store's limit TTL."""
    triples: list[Any] = []
    for position, (reason, until_ms) in enumerate(zip(reasons, untils, strict=True), 1):
        if reason:
            triples += (position, until_ms, reason)
    return triples


def record_call(
    keys: tuple[str, str, str], settings: str, chunk: Sequence[codec.PreparedEvent]
) -> Eval:
    """One ``record.lua`` call for ``chunk``, events of the model whose (events, limit,
    totals) keys are ``keys``."""
    if len(chunk) == 1:
        p = chunk[0]
        args: list[Any] = [settings, HEAD_FORMAT % (1, p.score_ms, p.score_ms, *p.sums)]
        args += (p.score_ms, p.member)
        if p.limit_reason:
            args += limit_triples((p.limit_reason,), (p.limit_until_ms,))
        return Eval("record", keys, tuple(args))
    _, scores, members, reasons, untils, sums = zip(*chunk, strict=True)  # columns
    pairs: list[Any] = [None] * (2 * len(chunk))
    pairs[0::2] = scores
    pairs[1::2] = members
    head = (len(chunk), min(scores), max(scores), *map(sum, zip(*sums, strict=True)))
    args = [settings, HEAD_FORMAT % head, *pairs]
    if any(reasons):
        args += limit_triples(reasons, untils)
    return Eval("record", keys, tuple(args))


def record_counts(replies: Iterable[Any], repeated: int = 0) -> RecordResult:
    """Add up ``record.lua`` replies ({stored, duplicates, outside, now, capped, created}), and the
    ``repeated`` duplicates within the batch."""
    stored = outside = capped = 0
    duplicates = repeated
    for r in replies:
        stored += int(r[0])
        duplicates += int(r[1])
        outside += int(r[2])
        capped += int(r[4])
    return RecordResult(stored, duplicates, outside, capped)


# -- window.lua and snapshot.lua -----------------------------------------------------------


def window_call(keys: Keys, model: str, window_ms: int) -> Eval:
    """Read every event of ``model`` in the window, at its server's time."""
    return Eval("window", (keys.events(model), keys.limit(model)), (window_ms,), tolerant=True)


def snapshot_call(keys: Keys, model: str, window_ms: int) -> Eval:
    """Read the running totals of ``model`` and the members that aged out since the last trim."""
    script_keys = (keys.events(model), keys.totals(model), keys.limit(model))
    args = (window_ms, NEWEST_PROBE, *totals.FIELDS)
    return Eval("snapshot", script_keys, args, tolerant=True)


def window_reply(reply: Any, now_ms: int) -> tuple[int, Sequence[Any], int]:
    """``window.lua``'s (now_ms, flat members, limit PTTL); None reads as nothing stored."""
    at, members, pttl = reply or (now_ms, [], -2)
    return int(at), members, int(pttl)


def snapshot_reply(
    reply: Any, now_ms: int
) -> tuple[int, Sequence[Any], Sequence[Any], Sequence[Any], int]:
    """``snapshot.lua``'s (now_ms, sums, aged, newest, limit PTTL); None reads as nothing."""
    at, sums, aged, newest, pttl = reply or (now_ms, [], [], [], -2)
    return int(at), sums, aged, newest, int(pttl)
