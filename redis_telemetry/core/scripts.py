"""The Lua scripts: their sources, and the Python side of each one's contract.

Each script's header (under ``lua/``, shipped inside the wheel) names its KEYS, ARGV and
reply; the builders here make those arguments, and the readers take those replies apart, so
the layout of every call is written down once on each side.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from importlib.resources import files
from pathlib import Path
from typing import Any, NamedTuple

from ..models import RecordResult
from . import codec, sketch, totals
from .commands import Eval
from .keys import Keys
from .providers import SETTINGS_TTL_MS

SCRIPT_NAMES = (
    "config",
    "register",
    "record",
    "snapshot",
    "session",
    "window",
    "limit",
    "rewindow",
    "provider",
)
#: Scripts that read members: ``lua/event.lua`` is written into them at load.
INCLUDES_EVENT = ("record", "snapshot", "session")
#: Scripts that read members by rank in bounded steps: ``lua/steps.lua`` is written into them.
INCLUDES_STEPS = ("snapshot", "session", "window")

#: How far past the data they govern the keys' TTLs reach.
GRACE_MS = 2000
#: ``snapshot.lua`` returns the newest millisecond's members, to find ``last_event_at`` to the
#: microsecond: up to ``NEWEST_TIES`` members and ``NEWEST_BUDGET`` bytes (past that,
#: ``last_event_at`` is the newest of that sample); when none of them looks like an event of
#: this package, the next milliseconds' too, up to ``NEWEST_PROBE`` members.
NEWEST_PROBE = 32
NEWEST_TIES = 1000
NEWEST_BUDGET = 64 * 1024
#: The most aged members (and bytes of them) one ``snapshot.lua`` or ``session.lua`` call
#: subtracts (a few ms of Redis time); more take more calls (see ``reads``).
MAX_AGED = 500
AGED_BUDGET = 1024 * 1024
#: The most members (and bytes of them) in a ``window.lua`` page (a few ms of Redis time).
WINDOW_PAGE = 5000
PAGE_BUDGET = 1024 * 1024
#: The most members one ``record.lua`` call trims, removes over the cap or rebuilds, each
#: (a few ms of Redis time in all; its ``local STEP`` line is rendered from this).
UPKEEP_STEP = 500
#: The most bytes of members one ``record.lua`` call reads for its upkeep, all kinds together
#: (at least one member; its ``local BYTES`` line): members may be large (16 KB errors).
UPKEEP_BYTES = 1 << 20
#: Members ``record.lua`` fetches at a time for its upkeep (its ``local CHUNK`` line).
UPKEEP_CHUNK = 32
#: The most a TTL that ``record.lua`` extends reaches past ``GRACE_MS`` (its ``local SLACK``
#: line; a sixteenth of the window below that): the keys of a model written to every few
#: seconds are then extended once per this long, not on every write. The config key, which
#: lives ``CONFIG_RECHECK_MS`` past its data, still outlives them.
TTL_SLACK_MS = 30_000
#: The line a script names ``lua/event.lua`` with.
INCLUDE = "-- #include event.lua"
#: The line a script names ``lua/steps.lua`` with.
INCLUDE_STEPS = "-- #include steps.lua"


def _lua_dir() -> Path:
    packaged = Path(str(files("redis_telemetry"))) / "lua"
    if packaged.is_dir():
        return packaged
    # A source checkout (editable install or tests run from the tree) keeps them at the top.
    return Path(__file__).resolve().parents[2] / "lua"


def _lua_list(names: Sequence[str]) -> str:
    return "{" + ", ".join(f"'{name}'" for name in names) + "}"


def render_fields(source: str) -> str:
    """A script's source with its ``local FIELDS = {...}`` line naming :data:`totals.FIELDS`,
    and its ``local LAYOUT``, ``STEP``, ``BYTES``, ``CHUNK`` and ``SLACK`` lines (where it has
    them) :data:`totals.LAYOUT`, :data:`UPKEEP_STEP`, :data:`UPKEEP_BYTES`,
    :data:`UPKEEP_CHUNK` and :data:`TTL_SLACK_MS`."""
    line = re.compile(r"^local FIELDS = \{.*\}$", flags=re.M)
    rendered = f"local FIELDS = {_lua_list(totals.FIELDS)}".replace("\\", "\\\\")
    source, found = line.subn(rendered, source)
    if found != 1:
        raise RuntimeError("the script must have one line 'local FIELDS = {...}'")
    source = re.sub(r"^local LAYOUT = \d+$", f"local LAYOUT = {totals.LAYOUT}", source, flags=re.M)
    lines = (
        ("STEP", UPKEEP_STEP),
        ("BYTES", UPKEEP_BYTES),
        ("CHUNK", UPKEEP_CHUNK),
        ("SLACK", TTL_SLACK_MS),
    )
    for name, value in lines:
        source = re.sub(rf"^local {name} = \d+$", f"local {name} = {value}", source, flags=re.M)
    return source


def render(source: str, library: str) -> str:
    """A script as Redis runs it: its fields rendered and ``lua/event.lua`` in place of its
    include line (and ``lua/steps.lua`` in place of its own, where it has one)."""
    if source.count(INCLUDE) != 1:
        raise RuntimeError(f"the script must have one line {INCLUDE!r}")
    return with_steps(render_fields(source).replace(INCLUDE, library.rstrip("\n")))


def with_steps(source: str) -> str:
    """``source`` with ``lua/steps.lua`` in place of its include line, where it has one."""
    line = f"\n{INCLUDE_STEPS}\n"
    if line not in source:
        return source
    steps = (_lua_dir() / "steps.lua").read_text(encoding="utf-8")
    return source.replace(line, f"\n{steps.rstrip()}\n", 1)


def _load() -> dict[str, str]:
    folder = _lua_dir()
    sources = {name: (folder / f"{name}.lua").read_text(encoding="utf-8") for name in SCRIPT_NAMES}
    library = (folder / "event.lua").read_text(encoding="utf-8")
    for name in INCLUDES_EVENT:
        sources[name] = render(sources[name], library)
    for name in set(INCLUDES_STEPS) - set(INCLUDES_EVENT):
        sources[name] = with_steps(sources[name])
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


# -- provider.lua ---------------------------------------------------------------------------


def provider_call(keys: Keys, provider: str, verb: str, *args: Any) -> Eval:
    """One ``provider.lua`` call: ``verb`` (caps, exhaust, block, unblock, throttle, success)
    on ``provider``'s settings; the reply is {now_ms, block_until, backoff_level,
    backoff_until}."""
    return Eval("provider", (keys.provider(provider),), (SETTINGS_TTL_MS, verb, *args))


# -- record.lua ----------------------------------------------------------------------------

#: ARGV[2]: count, oldest and newest score, the sums in ``totals.FIELDS`` order, and how many
#: sketch buckets and session entries follow the (score, member) pairs
HEAD_FORMAT = " ".join(["%d"] * (5 + len(totals.FIELDS)))
_OK, _LATENCY, _UNTIMED, _COST, _TOTAL, _INPUT, _OUTPUT = map(
    totals.FIELDS.index, ("ok", "latency", "untimed", "cost_nusd", "total", "input", "output")
)
#: A session entry's values stay below this, so that Lua's doubles hold them exactly.
_EXACT = 2**52


def index_args(chunk: Sequence[codec.PreparedEvent]) -> tuple[int, int, list[Any]]:
    """What ``chunk``'s events add to the latency sketch and the session index, as
    ``record.lua`` takes it when every event is stored: (bucket, count) pairs, then (session,
    events, input, output, total, cost_nusd) entries; a session repeats rather than let a
    value pass 2^52. Returns (pairs, entries, arguments)."""
    buckets: dict[int, int] = {}
    entries: dict[str, list[int]] = {}
    done: list[Any] = []
    for p in chunk:
        s = p.sums
        if s[_OK] and not s[_UNTIMED]:
            b = sketch.bucket(s[_LATENCY])
            buckets[b] = buckets.get(b, 0) + 1
        add = (1, s[_INPUT], s[_OUTPUT], s[_TOTAL], s[_COST])
        u = entries.get(p.session)
        if u is not None and any(have + more >= _EXACT for have, more in zip(u, add, strict=True)):
            done += (p.session, *u)
            u = None
        if u is None:
            entries[p.session] = list(add)
        else:
            for j, more in enumerate(add):
                u[j] += more
    args: list[Any] = [x for pair in buckets.items() for x in pair]
    for session, u in entries.items():
        done += (session, *u)
    return len(buckets), len(done) // 6, args + done


def record_settings(window_ms: int, limit_ttl_ms: int, max_events: int) -> str:
    """ARGV[1]: the window, the limit TTL, the TTLs' grace and the per-model cap (0: none)."""
    return f"{window_ms} {limit_ttl_ms} {GRACE_MS} {max_events}"


def limit_triples(reasons: Sequence[str], untils: Sequence[int]) -> list[Any]:
    """ARGV[3+2n..]: (position, until_ms, reason) for the events (1..n) whose error is a
    subscription-limit error; until_ms 0 blocks for the store's limit TTL counted from the
    event's completion."""
    triples: list[Any] = []
    for position, (reason, until_ms) in enumerate(zip(reasons, untils, strict=True), 1):
        if reason:
            triples += (position, until_ms, reason)
    return triples


def spend_arg(chunk: Sequence[codec.PreparedEvent]) -> str:
    """``record.lua``'s last argument when it keeps spend (KEYS[7]): "hour nusd ..." pairs,
    the events' cost per UTC completion hour, as if every one is stored (costless hours left
    out)."""
    if len(chunk) == 1:  # the common write
        cost = chunk[0].sums[_COST]
        return f"{chunk[0].score_ms // 3_600_000} {cost}" if cost else ""
    hours: dict[int, int] = {}
    for p in chunk:
        if cost := p.sums[_COST]:
            hour = p.score_ms // 3_600_000
            hours[hour] = hours.get(hour, 0) + cost
    return " ".join(f"{h} {c}" for h, c in hours.items())


def record_call(keys: tuple[str, ...], settings: str, chunk: Sequence[codec.PreparedEvent]) -> Eval:
    """One ``record.lua`` call for ``chunk``, events of the model whose (events, limit,
    totals, sessions, latency, ids[, spend]) keys are ``keys``, ids distinct; an empty chunk
    is an upkeep call."""
    if not chunk:
        call = upkeep_call(keys, settings)
        return call if len(keys) < 7 else Eval("record", keys, (*call.args, ""))
    if len(chunk) == 1:
        return _record_one(keys, settings, chunk[0])
    args = _record_args(settings, chunk)
    if len(keys) >= 7:
        args.append(spend_arg(chunk))
    return Eval("record", keys, tuple(args))


def _record_args(settings: str, chunk: Sequence[codec.PreparedEvent]) -> list[Any]:
    """``record.lua``'s arguments for two events or more (its spend argument aside)."""
    nb, ns, index = index_args(chunk)
    _, scores, members, reasons, untils, sums, _, ids = zip(*chunk, strict=True)  # columns
    pairs: list[Any] = [None] * (2 * len(chunk))
    pairs[0::2] = scores
    pairs[1::2] = members
    head = (len(chunk), min(scores), max(scores), *map(sum, zip(*sums, strict=True)), nb, ns)
    args = [settings, HEAD_FORMAT % head, *pairs, *ids, *index]
    if any(reasons):
        args += limit_triples(reasons, untils)
    return args


def _record_one(keys: tuple[str, ...], settings: str, p: codec.PreparedEvent) -> Eval:
    """``record_call`` of one event, built directly: the common write, so it skips
    ``index_args``'s grouping (the same arguments), and its spend argument is added in place
    (not by ``_replace``, which costs as much again)."""
    s = p.sums
    session = (p.session, 1, s[_INPUT], s[_OUTPUT], s[_TOTAL], s[_COST])
    score = p.score_ms
    if s[_OK] and not s[_UNTIMED]:
        head = HEAD_FORMAT % (1, score, score, *s, 1, 1)
        args: tuple[Any, ...] = (
            settings,
            head,
            score,
            p.member,
            p.event_id,
            sketch.bucket(s[_LATENCY]),
            1,
            *session,
        )
    else:
        head = HEAD_FORMAT % (1, score, score, *s, 0, 1)
        args = (settings, head, score, p.member, p.event_id, *session)
    if p.limit_reason:
        args += tuple(limit_triples((p.limit_reason,), (p.limit_until_ms,)))
    if len(keys) >= 7:
        args += (spend_arg((p,)),)
    return Eval("record", keys, args)


def upkeep_call(keys: tuple[str, ...], settings: str) -> Eval:
    """A ``record.lua`` call that stores nothing: only its bounded upkeep (trims, rebuild)."""
    return Eval("record", keys, (settings, HEAD_FORMAT % (0, 0, 0, *totals.zero(), 0, 0)))


def record_counts(
    replies: Iterable[Any], places: Iterable[Sequence[int]], repeated: int = 0
) -> RecordResult:
    """Add up ``record.lua`` replies ({stored, duplicates, outside, now, capped, created,
    pending[, positions]}), and the ``repeated`` duplicates within the batch. ``places``
    gives, for each reply, its events' positions in the batch: the positions of the events
    stored are read from them as the reply says (all of the call's, none, or those its
    positions list)."""
    stored = outside = capped = 0
    duplicates = repeated
    new: list[int] = []
    for r, at in zip(replies, places, strict=True):
        n = int(r[0])
        stored += n
        duplicates += int(r[1])
        outside += int(r[2])
        capped += int(r[4])
        if n == len(at):
            new += at
        elif n:
            new += (at[int(k) - 1] for k in r[7])
    new.sort()  # the models' calls, back in the batch's order
    return RecordResult(stored, duplicates, outside, capped, tuple(new))


# -- window.lua, snapshot.lua and session.lua ---------------------------------------------


def window_call(
    keys: Keys, model: str, window_ms: int, after: tuple[Any, bytes] | None = None
) -> Eval:
    """Read a page of the events of ``model`` in the window, at its server's time: the first
    page, or the one after ``after``, the (score, member) of the previous page's last."""
    script_keys = (keys.events(model), keys.limit(model))
    score, member = after if after is not None else ("", b"")
    args = (window_ms, score, member, WINDOW_PAGE, PAGE_BUDGET)
    return Eval("window", script_keys, args, tolerant=True)


class Cursor(NamedTuple):
    """Where a read of a model's aged members stopped (``snapshot.lua``, ``session.lua``)."""

    #: the first call's cutoff: the aged members are those scored at or before it
    cutoff: int
    #: the rank to go on from (``aged`` when every aged member was read)
    next: int
    #: how many members were aged, and how many the set held, at the call that gave it
    aged: int
    card: int
    #: the member that was the oldest at the first call: while it is still at rank 0, no
    #: trim ran since, and the ranks below ``next`` hold the members already read
    oldest: bytes

    @property
    def left(self) -> int:
        """Aged members left to read."""
        return self.aged - self.next

    @property
    def live(self) -> int:
        """Members in the window."""
        return self.card - self.aged

    def args(self, later: bool) -> tuple[Any, ...]:
        """The arguments that make a read script go on from here: a later call of the same
        read (``later``), or a first call of a new read that reuses what this one read."""
        return (self.cutoff if later else "", self.next, self.oldest)


#: A first call's arguments that name no earlier read.
_FRESH = ("", 0, "")


def _cursor(raw: Sequence[Any], oldest: bytes = b"") -> Cursor | None:
    """A reply's cursor (None: no member aged); one that names no oldest member (the caller
    named it) gets ``oldest``."""
    if not raw:
        return None
    cutoff, nxt, aged, card, bottom = raw
    member = bottom if isinstance(bottom, bytes) else str(bottom).encode("latin-1")
    return Cursor(int(cutoff), int(nxt), int(aged), int(card), member or oldest)


def snapshot_settings(window_ms: int, known: bytes | None = None) -> str:
    """``snapshot.lua``'s ARGV[1]: its constants as one string (each argument costs the client
    an encoding and the script a string): the window, ``NEWEST_PROBE``, ``MAX_AGED``, the
    layout read, ``AGED_BUDGET``, ``NEWEST_TIES``, ``NEWEST_BUDGET`` and, when the caller
    holds an earlier reply (see ``unchanged``), its ``gen``."""
    settings = (
        f"{window_ms} {NEWEST_PROBE} {MAX_AGED} {totals.READ_LAYOUT} {AGED_BUDGET} "
        f"{NEWEST_TIES} {NEWEST_BUDGET}"
    )
    return settings if known is None else f"{settings} {known.decode()}"


def snapshot_call(
    keys: Keys,
    model: str,
    window_ms: int,
    cursor: Cursor | None = None,
    later: bool = False,
    known: bytes | None = None,
) -> Eval:
    """Read the running totals and latency sketch of ``model``, and what the members that
    aged out since the last trim add to them, from ``cursor`` on (see ``Cursor.args``);
    ``later``: only go on reading those. ``known``: the ``gen`` of the reply the caller holds
    (a first call from rank 0): the script then answers 'same' when nothing changed."""
    script_keys = (
        keys.events(model),
        keys.totals(model),
        keys.limit(model),
        keys.latency(model),
        keys.spend(model),
    )
    settings = snapshot_settings(window_ms, known)
    if cursor is None:  # a first call from rank 0 names no cursor (fewer arguments to send)
        return Eval("snapshot", script_keys, (settings,), tolerant=True)
    return Eval("snapshot", script_keys, (settings, *cursor.args(later)), tolerant=True)


def unchanged(reply: Any) -> bytes | None:
    """What a later first call names as ``known`` for a raw ``snapshot.lua`` reply (its
    ``gen`` and member count): for a whole 'ok' reply without aged members (then exact again
    for as long as the script answers 'same'); else None."""
    if (
        isinstance(reply, list)
        and len(reply) == 14
        and reply[1] == b"ok"
        and not reply[9]
        and isinstance(reply[11], bytes)
    ):
        return b"%s %d" % (reply[11], reply[13])
    return None


def same(reply: Any, held: list[Any]) -> list[Any] | None:
    """A first call's raw reply made whole: ``held`` (the reply whose ``gen`` the call named)
    with this call's time and limit PTTL when the script answered 'same'; None when it
    answered anything else."""
    if isinstance(reply, list) and len(reply) == 3 and reply[1] == b"same":
        whole = list(held)
        whole[0], whole[7] = reply[0], reply[2]
        return whole
    return None


def session_call(
    keys: Keys,
    model: str,
    window_ms: int,
    session_id: str,
    cursor: Cursor | None = None,
    later: bool = False,
) -> Eval:
    """Read one session's usage of ``model`` from its session index, and what its members
    that aged out since the last trim add to it (``cursor`` and ``later`` as above)."""
    script_keys = (keys.events(model), keys.totals(model), keys.sessions(model))
    resume = _FRESH if cursor is None else cursor.args(later)
    args = (window_ms, MAX_AGED, totals.READ_LAYOUT, session_id, AGED_BUDGET, *resume)
    return Eval("session", script_keys, args, tolerant=True)


class WindowPage(NamedTuple):
    """``window.lua``'s reply: server ms, flat members, limit PTTL, whether members are left
    after the page, and whether it restarted at its cursor's score (its cursor was gone)."""

    now_ms: int
    members: Sequence[Any]
    limit_pttl: int
    more: bool
    restarted: bool


def window_reply(reply: Any, now_ms: int) -> WindowPage:
    """``window.lua``'s reply; None reads as nothing stored."""
    at, members, pttl, more, restarted = reply or (now_ms, [], -2, 0, 0)
    return WindowPage(int(at), members, int(pttl), bool(int(more)), bool(int(restarted)))


class SnapshotReply(NamedTuple):
    """``snapshot.lua``'s reply (see its header), ``minus`` summed per field in
    ``totals.FIELDS`` order and ``aged_buckets`` counted per bucket."""

    now_ms: int
    state: str
    totals: Sequence[Any]
    minus: list[int]
    aged_buckets: Counter[int]
    sketch: bytes
    newest: Sequence[Any]
    limit_pttl: int
    skipped: int
    cursor: Cursor | None
    start: int

    def absorb(self, other: SnapshotReply) -> SnapshotReply:
        """This reply with what ``other`` subtracted (other aged members) added."""
        return self._replace(
            minus=[a + b for a, b in zip(self.minus, other.minus, strict=True)],
            aged_buckets=self.aged_buckets + other.aged_buckets,  # bucket -> count
            skipped=self.skipped + other.skipped,
        )

    def then(self, more: SnapshotReply) -> SnapshotReply:
        """This reply with a later call's ``more`` read: its state and cursor too."""
        return self.absorb(more)._replace(state=more.state, cursor=more.cursor)

    def aged_part(self) -> SnapshotReply:
        """Only what this reply subtracted, and its cursor: what a later read resumes from."""
        return self._replace(totals=(), sketch=b"", newest=())


_FIELD = {name: i for i, name in enumerate(totals.FIELDS)}


def aged_sums(flat: Sequence[Any], size: int, index: Callable[[Any], int]) -> list[int]:
    """The aged members' sums that ``snapshot.lua`` and ``session.lua`` return as a flat key,
    value list (a key may repeat, each value below 2^53), summed into ``size`` totals;
    ``index`` places a key (a field name, or a 1-based position)."""
    summed = [0] * size
    for key, value in zip(flat[::2], flat[1::2], strict=True):
        summed[index(key)] += int(value)
    return summed


def snapshot_reply(reply: Any, now_ms: int, oldest: bytes = b"") -> SnapshotReply:
    """``snapshot.lua``'s reply (``oldest``: the member the call named); None reads as
    nothing stored."""
    at, state, sums, minus, aged, blob, newest, pttl, skipped, cursor, start, *_ = reply or (
        now_ms,
        b"empty",
        [],
        [],
        [],
        b"",
        [],
        -2,
        0,
        [],
        0,
    )
    raw = blob if isinstance(blob, bytes) else str(blob).encode("latin-1")
    return SnapshotReply(
        int(at),
        text(state),
        sums,
        aged_sums(minus, len(totals.FIELDS), lambda name: _FIELD[text(name)])
        if minus
        else [0] * len(totals.FIELDS),
        Counter(int(b) for b in aged) if aged else Counter(),
        raw,
        newest,
        int(pttl),
        int(skipped),
        _cursor(cursor, oldest),
        int(start),
    )


def spend_of(reply: Any) -> dict[bytes, bytes] | None:
    """The ``spend`` hash a raw first-call ``snapshot.lua`` reply carries, as field ->
    value; None when it carries none (a later call's, or a key of another type)."""
    if isinstance(reply, list) and len(reply) >= 13 and isinstance(reply[12], list):
        flat = reply[12]
        return dict(zip(flat[::2], flat[1::2], strict=True))
    return None


class SessionReply(NamedTuple):
    """``session.lua``'s reply: the index's [events, input, output, total, cost_nusd] (empty
    when the session has none) and, summed, what the aged members read add to them."""

    now_ms: int
    state: str
    usage: list[int]
    minus: list[int]
    cursor: Cursor | None
    start: int

    @property
    def window_usage(self) -> list[int]:
        """The session's usage in the window: the index's less the aged members' (empty when
        it has none)."""
        values = [have - gone for have, gone in zip(self.usage, self.minus, strict=False)]
        return values if values and values[0] > 0 else []

    def absorb(self, other: SessionReply) -> SessionReply:
        """This reply with what ``other`` read (other aged members) added."""
        return self._replace(minus=[a + b for a, b in zip(self.minus, other.minus, strict=True)])

    def then(self, more: SessionReply) -> SessionReply:
        """This reply with a later call's ``more`` read: its state and cursor too."""
        return self.absorb(more)._replace(state=more.state, cursor=more.cursor)

    def aged_part(self) -> SessionReply:
        """Only what this reply subtracted, and its cursor: what a later read resumes from."""
        return self._replace(usage=[])


def session_reply(reply: Any, now_ms: int, oldest: bytes = b"") -> SessionReply:
    """``session.lua``'s reply (``oldest`` as for ``snapshot_reply``); None reads as nothing
    stored."""
    at, state, usage, minus, cursor, start = reply or (now_ms, b"ok", [], [], [], 0)
    summed = aged_sums(minus, 5, lambda position: int(position) - 1)
    return SessionReply(
        int(at), text(state), [int(v) for v in usage], summed, _cursor(cursor, oldest), int(start)
    )


def text(value: Any) -> str:
    """A reply's bytes (or text) as text."""
    return value.decode() if isinstance(value, bytes) else str(value)
