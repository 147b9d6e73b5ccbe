"""The read operations of a store, as I/O-free generators (see ``ops``).

Every read is one round trip of ``read()``: the namespace's window, the server's time and,
per model, one script that reads at that model's server time (``window.lua`` for the events,
``snapshot.lua`` for the running totals). :class:`~.ops.StoreCore` adds the writes.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple, TypeVar

from redis.exceptions import ReadOnlyError

from ..errors import InvalidInputError, PermissionDenied, TelemetryError
from ..models import (
    CompletionEvent,
    ModelPerformanceSnapshot,
    ModelUsage,
    TelemetrySummary,
    UsageSnapshot,
)
from . import codec, routing, rules, scripts, snapshot
from .commands import Batch, Cmd, Eval, Op
from .keys import Keys
from .replies import time_ms, usable
from .scripts import Cursor, SessionReply, SnapshotReply
from .window import SharedWindow

log = logging.getLogger(__name__)

#: A store that may write trims a model's aged members itself when a read finds at least
#: ``UPKEEP_AT`` (fewer are read on in a few calls, and writes trim them soon anyway), with
#: ``record.lua``'s upkeep calls, ``UPKEEP_BURST`` a model a round trip, up to
#: ``UPKEEP_CALLS`` a model a read (``UPKEEP_CALLS`` x ``scripts.UPKEEP_STEP`` members).
UPKEEP_AT = 5000
UPKEEP_BURST = 10
UPKEEP_CALLS = 200
#: What is left aged after that (or for a store that may not write) is read on from the
#: first call's cursor, up to this many calls a model a read, or the model is read from its
#: window's events when that is less to read; a read that keeps meeting trims (a writer at
#: work) starts again at most this often.
READ_STEPS = 100
RESTARTS = 2
#: Models (and sessions) whose aged part a read remembers, to go on from it next time.
REMEMBERED = 1000

#: A snapshot.lua or a session.lua reply.
R = TypeVar("R", SnapshotReply, SessionReply)


class Reading(NamedTuple):
    """What a read found at the server's time ``now_ms``: per model, the window's decoded
    events and limit TTLs (``window`` reads), the performance snapshot (``totals`` reads) or
    one session's usage (``session`` reads; models without any left out)."""

    now_ms: int
    models: list[str]
    events: dict[str, list[codec.StoredEvent]]
    limit_pttl: dict[str, int]
    performance: dict[str, ModelPerformanceSnapshot]
    usage: dict[str, ModelUsage]
    #: the server ms at which each model's window was read (``window`` reads): its limit
    #: PTTL was measured then
    read_at: dict[str, int]
    #: each model's ``spend`` hash, as its snapshot read it (``totals`` reads; a model left
    #: out was not read: its key is of another type, or the reply was not a first call's)
    spend: dict[str, dict[bytes, bytes]]


class Held(NamedTuple):
    """What a read holds of a model for the next: the raw ``snapshot.lua`` reply (whole, no
    aged member) and, when the model had no limit, a copy of the snapshot built from it."""

    reply: list[Any]
    snapshot: ModelPerformanceSnapshot | None


class Reads:
    """The reads of one store: its keys and window, and the models it has seen."""

    keys: Keys
    window: SharedWindow
    #: Models seen in the registry: their ranges ride in the first round trip of a read.
    _models: dict[str, None]
    #: StoreCore's: one ``record.lua`` call (no events: its upkeep), and sending a write.
    _record_eval: Callable[..., Eval]
    _write: Callable[[Batch, int], Op[list[Any]]]
    #: Set once Redis refused this store a write (an ACL's read-only user, a replica): its
    #: reads then never try the upkeep again.
    _read_only: bool = False

    @property
    def namespace(self) -> str:
        return self.keys.namespace

    @property
    def window_secs(self) -> int:
        """The rolling window, shared by every store of the namespace."""
        return self.window.secs

    @property
    def _window_ms(self) -> int:
        return self.window.ms

    def events(self, model: str, last: int | None = None) -> Op[list[CompletionEvent]]:
        """The window's raw events of one model, newest first (at most ``last``)."""
        model = rules.check_model_name(model)
        if last is not None and (isinstance(last, bool) or not isinstance(last, int) or last < 1):
            raise InvalidInputError(f"last must be a positive integer, got {last!r}")
        r = yield from self.read([model])
        newest_first = sorted(r.events[model], key=lambda e: e.completed_at_us, reverse=True)
        return [codec.to_completion_event(model, e) for e in newest_first[:last]]

    def stored_window(self) -> Op[int | None]:
        """The namespace's window as stored in Redis, or None when unset or unreadable."""
        (raw,) = yield [Cmd("hget", (self.keys.config, "window_secs"))]
        try:
            value = int(raw)
        except (TypeError, ValueError):
            return None
        return value if value > 0 else None

    # -- reads ------------------------------------------------------------------------------

    def _live_models(self, entries: Sequence[tuple[Any, float]], now_ms: int) -> list[str]:
        live = []
        for raw, score in entries:
            if score <= now_ms:
                continue
            try:
                live.append(rules.check_model_name(bytes(raw).decode("utf-8")))
            except (UnicodeDecodeError, InvalidInputError) as exc:
                log.warning("skipped unreadable model %r in %s: %s", raw, self.keys.models, exc)
        return sorted(live)

    def _fetch(
        self,
        kind: str,
        model: str,
        session_id: str = "",
        cursor: Cursor | None = None,
        later: bool = False,
        known: bytes | None = None,
    ) -> Eval:
        """One model's read script (each takes the time from the model's own server): a first
        call, resuming from ``cursor`` (what an earlier read subtracted), or (``later``) a
        later call of this read that goes on from ``cursor``; ``known`` as for
        ``scripts.snapshot_call``."""
        if kind == "window":
            return scripts.window_call(self.keys, model, self._window_ms)
        if kind == "session":
            return scripts.session_call(
                self.keys, model, self._window_ms, session_id, cursor, later
            )
        return scripts.snapshot_call(self.keys, model, self._window_ms, cursor, later, known)

    def read(
        self, models: Sequence[str] | None, kind: str = "window", session_id: str = ""
    ) -> Op[Reading]:
        """Data of ``models`` (None: every listed model) at the server's time.

        ``kind`` is ``"window"`` (every event in the window, by ``window.lua``, a page at a
        time), ``"totals"`` (by ``snapshot.lua``: the running sums less the members that aged
        out since the last trim, so its cost does not depend on how many events the window
        holds), ``"session"`` (``session_id``'s usage, by ``session.lua``) or ``"models"``
        (the registry only). One round trip when the models are already known to this store;
        a model new to it costs one more, and so do a model read from its events instead of
        its totals (an older layout) and one with many members aged since its last write (see
        ``_aged``).
        """
        from_registry = models is None
        ask = [] if kind == "models" else list(self._models if models is None else models)
        head: Batch = [
            Cmd("hget", (self.keys.config, "window_secs"), tolerant=True),
            Cmd("time", route=self.keys.models),
        ]
        if from_registry:
            head.append(
                Cmd("zrange", (self.keys.models, 0, -1), {"withscores": True}, tolerant=True)
            )
        remembered = self._remembered(kind, session_id)
        parts = {m: remembered.get(m) for m in ask}  # what each first call resumes from
        held = self._unchanged(kind, parts)
        results = yield head + [
            self._fetch(kind, m, session_id, _at(parts[m]), known=_gen(held.get(m))) for m in ask
        ]
        self.window.check(usable(results[0], None, self.keys.config), writing=False)
        now_ms = time_ms(results[1])
        registry = usable(results[2], [], self.keys.models) if from_registry else []
        targets = self._live_models(registry, now_ms) if from_registry else list(ask)
        fetched = dict(zip(ask, results[len(head) :], strict=True))
        quick = self._same(held, fetched)
        redo = [m for m in targets if m not in fetched] if kind != "models" else []
        if redo:  # models new to this store
            parts.update((m, remembered.get(m)) for m in redo)
            replies = yield [self._fetch(kind, m, session_id, _at(parts[m])) for m in redo]
            fetched.update(zip(redo, replies, strict=True))
        if from_registry:
            self._models = dict.fromkeys(targets)
        reading = Reading(now_ms, targets, {}, {}, {}, {}, {}, {})
        fallback: list[str] = []
        if kind == "window":
            fallback = targets
        elif kind == "totals":
            first = {m: (fetched[m], parts[m]) for m in targets if m not in quick}
            snaps = yield from self._aged(kind, first, session_id, self._snapshot_reply)
            fallback = [m for m in first if not self._from_totals(m, snaps[m], reading)]
            reading.performance.update((m, quick[m]) for m in targets if m in quick)
            for m in targets:
                if (spend := scripts.spend_of(fetched[m])) is not None:
                    reading.spend[m] = spend
            # a model answered 'same' whose snapshot was reused is held as it was
            whole = {m: fetched[m] for m in targets if parts[m] is None and m not in quick}
            self._hold(whole, reading.performance)
        elif kind == "session":
            first = {m: (fetched[m], parts[m]) for m in targets}
            uses = yield from self._aged(kind, first, session_id, self._session_reply)
            fallback = [m for m in targets if not self._from_index(m, uses[m], reading)]
        if not fallback:
            return reading
        if kind != "window":  # read these from their events
            pages = yield [self._fetch("window", m) for m in fallback]
            fetched.update(zip(fallback, pages, strict=True))
        windows = yield from self._windows({m: fetched[m] for m in fallback}, now_ms)
        for m, (at, events, pttl) in windows.items():
            if kind == "window":
                reading.events[m], reading.limit_pttl[m], reading.read_at[m] = events, pttl, at
            elif kind == "totals":
                reading.performance[m] = snapshot.performance(m, events, self.window_secs, at, pttl)
            elif usage := snapshot.usage_of(session_id, events):
                reading.usage[m] = usage
        return reading

    # -- models with aged members left to subtract -------------------------------------------

    def _remembered(self, kind: str, session_id: str) -> dict[str, Any]:
        """model -> what an earlier read of ``kind`` (and ``session_id``) subtracted of the
        model's aged members, as a reply whose cursor says up to which rank: a later read goes
        on from there while no trim ran (see ``steps.lua``'s walk_aged)."""
        every: dict[tuple[str, str], dict[str, Any]] = self.__dict__.setdefault("_aged_parts", {})
        if len(every) > REMEMBERED:
            every.clear()
        found = every.setdefault((kind, session_id), {})
        return found

    def _unchanged(self, kind: str, parts: Mapping[str, Any]) -> dict[str, Held]:
        """model -> what an earlier read held of it (see ``Held``), which a first call of a
        ``totals`` read names by its ``gen``: while nothing of the model changed, the script
        answers 'same' and sends none of it again (a model with an aged part remembered
        resumes from it instead)."""
        if kind != "totals":
            return {}
        held: dict[str, Held] = self.__dict__.setdefault("_held", {})
        return {m: held[m] for m, part in parts.items() if part is None and m in held}

    def _same(
        self, held: Mapping[str, Held], fetched: dict[str, Any]
    ) -> dict[str, ModelPerformanceSnapshot]:
        """Make the replies answered 'same' whole in ``fetched``; returns the snapshots that
        need no building: a copy of the one held, when the model had no limit then and has
        none now and the window is the same (nothing else of a snapshot depends on the time)."""
        quick = {}
        for m, whole in held.items():
            got = scripts.same(fetched[m], whole.reply)
            if got is None:
                continue
            fetched[m] = got
            snap = whole.snapshot
            if snap is not None and snap.window_secs == self.window_secs and got[7] < 0:
                quick[m] = snapshot.copied(snap)
        return quick

    def _hold(
        self, replies: Mapping[str, Any], built: Mapping[str, ModelPerformanceSnapshot]
    ) -> None:
        """Remember the raw first-call replies that ``scripts.unchanged`` finds whole, and a
        copy of the snapshot built from each when the model had no limit and building it
        logged nothing (at most ``REMEMBERED`` models); forget the models whose reply was not
        whole."""
        held: dict[str, Held] = self.__dict__.setdefault("_held", {})
        for m, reply in replies.items():
            if scripts.unchanged(reply) is None:
                held.pop(m, None)
                continue
            if len(held) >= REMEMBERED and m not in held:
                held.clear()
            snap = built.get(m)
            if snap is None or int(reply[7]) >= 0 or not snapshot.quiet(self.keys.events(m), reply):
                held[m] = Held(reply, None)
            else:
                held[m] = Held(reply, snapshot.copied(snap))

    def forget(self) -> None:
        """Forget the replies and aged parts of earlier reads: the next read of each model
        reads it whole (a benchmark's cold case: every model written since the last read)."""
        self.__dict__.pop("_held", None)
        self.__dict__.pop("_aged_parts", None)

    def _snapshot_reply(self, model: str, reply: Any, cursor: Cursor | None) -> SnapshotReply:
        """``snapshot.lua``'s reply for ``model``, from a call that named ``cursor``."""
        raw = usable(reply, None, self.keys.events(model))
        return scripts.snapshot_reply(raw, 0, b"" if cursor is None else cursor.oldest)

    def _session_reply(self, model: str, reply: Any, cursor: Cursor | None) -> SessionReply:
        """``session.lua``'s reply for ``model``, as above."""
        raw = usable(reply, None, self.keys.events(model))
        return scripts.session_reply(raw, 0, b"" if cursor is None else cursor.oldest)

    def _aged(
        self,
        kind: str,
        first: dict[str, tuple[Any, R | None]],
        session_id: str,
        parse: Callable[[str, Any, Cursor | None], R],
    ) -> Op[dict[str, R]]:
        """Each model's reply from its first call's (``first``: the reply, and the earlier
        read's part the call resumed from), finished when the model has aged members left to
        subtract (state ``aged``: one call subtracts a bounded part); one still ``aged`` is
        read from its events instead.

        A store that may write trims them first when they are many (``UPKEEP_AT``), with
        ``record.lua``'s bounded upkeep (so every later read, anyone's, is one call again),
        and reads those models again. What is still left is read on from each reply's
        cursor, one bounded call at a time, when that is less to read than the window's
        events and takes at most ``READ_STEPS`` calls; a read that meets a trim (the oldest
        member changed) starts again. What a read subtracted is remembered, so the next one
        only reads the members aged since.
        """
        remembered = self._remembered(kind, session_id)
        replies = {m: _resumed(parse(m, raw, _at(part)), part) for m, (raw, part) in first.items()}
        kept = [m for m, (_, part) in first.items() if part is not None]
        aged = [m for m, reply in replies.items() if reply.state == "aged"]
        many = [m for m in aged if _aged_count(replies[m]) >= UPKEEP_AT]
        if many and not self._read_only and (yield from self._upkeep(many)):
            again = yield [self._fetch(kind, m, session_id) for m in many]
            replies.update((m, parse(m, raw, None)) for m, raw in zip(many, again, strict=True))
        events: list[str] = []
        steps = dict.fromkeys(aged, 0)
        restarts = dict.fromkeys(aged, 0)
        while todo := [m for m in aged if replies[m].state == "aged" and m not in events]:
            go = []
            for m in todo:
                cursor = replies[m].cursor
                assert cursor is not None  # an 'aged' reply has one
                if steps[m] >= READ_STEPS or cursor.left > cursor.live:
                    events.append(m)
                else:
                    go.append(m)
            if not go:
                break
            more = yield [self._fetch(kind, m, session_id, replies[m].cursor, True) for m in go]
            moved = []
            for m, raw in zip(go, more, strict=True):
                steps[m] += 1
                cursor = replies[m].cursor
                got = parse(m, raw, cursor)
                if got.state in ("aged", "ok") and cursor is not None and got.start == cursor.next:
                    replies[m] = replies[m].then(got)
                else:  # a trim ran since the first call: start again
                    moved.append(m)
                    restarts[m] += 1
            if moved:
                again = yield [self._fetch(kind, m, session_id) for m in moved]
                for m, raw in zip(moved, again, strict=True):
                    replies[m] = parse(m, raw, None)
                    if restarts[m] > RESTARTS and replies[m].state == "aged":
                        events.append(m)
        for m in dict.fromkeys(kept + aged):
            reply = replies[m]
            if reply.cursor is not None and reply.state in ("aged", "ok"):
                remembered[m] = reply.aged_part()
            else:
                remembered.pop(m, None)
        return replies

    def _upkeep(self, models: Sequence[str]) -> Op[bool]:
        """Trim the aged members of ``models`` with ``record.lua``'s upkeep (a bounded step a
        call, ``UPKEEP_BURST`` calls a model a round trip) until none is left or
        ``UPKEEP_CALLS`` calls each were sent. False when Redis refuses this store the write
        (an ACL user that may only read, a replica): remembered, its reads then subtract
        those members themselves."""
        pending = list(models)
        try:
            for _ in range(0, UPKEEP_CALLS, UPKEEP_BURST):
                if not pending:
                    break
                batch: Batch = [
                    self._record_eval(m, ()) for m in pending for _ in range(UPKEEP_BURST)
                ]
                done = yield from self._write(batch, self._window_ms)
                last = done[UPKEEP_BURST - 1 :: UPKEEP_BURST]  # each model's last reply
                pending = [m for m, reply in zip(pending, last, strict=True) if int(reply[6])]
        except TelemetryError as exc:
            if not _refused_write(exc):
                raise
            log.info("this store may not write (%s): its reads subtract aged members", exc)
            self._read_only = True
            return False
        return True

    def _from_totals(self, model: str, rep: SnapshotReply, reading: Reading) -> bool:
        """Put ``snapshot.lua``'s snapshot of ``model`` into ``reading``; False when the model
        must be read from its events instead."""
        if rep.state == "rebuild":
            self._older_layout(model)
        if rep.state not in ("ok", "empty"):
            return False
        reading.performance[model] = snapshot.from_totals(
            model=model, key=self.keys.events(model), reply=rep, window_secs=self.window_secs
        )
        return True

    def _from_index(self, model: str, rep: SessionReply, reading: Reading) -> bool:
        """Put ``session.lua``'s usage of ``model`` into ``reading``; False as above."""
        if rep.state == "rebuild":
            self._older_layout(model)
        if rep.state != "ok":
            return False
        if usage := rep.window_usage:
            reading.usage[model] = snapshot.usage_from_index(usage)
        return True

    def _older_layout(self, model: str) -> None:
        warned: set[str] = self.__dict__.setdefault("_warned_layout", set())
        if model not in warned:
            warned.add(model)
            log.warning(
                "the totals of %r are of an older release's layout: it is read from its events "
                "until its next writes rebuild them (or run `redis-telemetry reindex`)",
                model,
            )

    def _windows(
        self, first: Mapping[str, Any], now_ms: int
    ) -> Op[dict[str, tuple[int, list[codec.StoredEvent], int]]]:
        """Each model's window from ``window.lua``'s first page (``first``), reading the
        further pages, all models' at once: (server ms, decoded events, limit PTTL). A page
        goes on after the (score, member) of the one before; one that restarted at that
        score (its member was trimmed meanwhile) may repeat members, dropped here."""
        pages = {
            m: scripts.window_reply(usable(reply, None, self.keys.events(m)), now_ms)
            for m, reply in first.items()
        }
        members = {m: snapshot.pairs(page.members) for m, page in pages.items()}
        after = {m: _last(page.members) for m, page in pages.items() if page.more}
        while after:
            replies = yield [
                scripts.window_call(self.keys, m, self._window_ms, cursor)
                for m, cursor in after.items()
            ]
            more = {}
            for m, reply in zip(after, replies, strict=True):
                page = scripts.window_reply(usable(reply, None, self.keys.events(m)), now_ms)
                got = snapshot.pairs(page.members)
                members[m] += _unseen(members[m], got) if page.restarted else got
                if page.more:
                    more[m] = _last(page.members)
            after = more
        out = {}
        for m, page in pages.items():
            key = self.keys.events(m)
            cutoff = page.now_ms - self._window_ms
            events = snapshot.decode_window(key, members[m], cutoff)
            out[m] = (page.now_ms, events, page.limit_pttl)
        return out

    def _window_snapshots(self, r: Reading) -> dict[str, ModelPerformanceSnapshot]:
        return {
            # the limit's time left was read at the model's own server time, not the read's
            m: snapshot.performance(m, r.events[m], self.window_secs, r.read_at[m], r.limit_pttl[m])
            for m in r.models
        }

    def model_performance(
        self, model: str, percentiles: bool = False
    ) -> Op[ModelPerformanceSnapshot]:
        """One model's snapshot; with ``percentiles``, from its events (cost: the window)."""
        model = rules.check_model_name(model)
        if percentiles:
            r = yield from self.read([model], "window")
            return self._window_snapshots(r)[model]
        r = yield from self.read([model], "totals")
        return r.performance[model]

    def rank_models(
        self,
        candidates: Sequence[str],
        strategy: routing.Strategy | str = routing.Strategy.FASTEST,
        *,
        weights: routing.Weights | None = None,
        max_staleness_secs: int | None = None,
        stale_policy: routing.StalePolicy = "exclude",
    ) -> Op[routing.Ranking]:
        """Rank ``candidates`` from one consistent read (one round trip)."""
        ranking, _ = yield from self._ranked(
            candidates,
            strategy,
            weights=weights,
            max_staleness_secs=max_staleness_secs,
            stale_policy=stale_policy,
        )
        return ranking

    def _ranked(
        self,
        candidates: Sequence[str],
        strategy: routing.Strategy | str,
        *,
        weights: routing.Weights | None,
        max_staleness_secs: int | None,
        stale_policy: routing.StalePolicy,
    ) -> Op[tuple[routing.Ranking, Reading]]:
        """:meth:`rank_models`, and the read it ranked from."""
        if isinstance(candidates, str) or not candidates:
            raise InvalidInputError("candidates must be a non-empty list of model names")
        models = list(dict.fromkeys(rules.check_model_name(m) for m in candidates))
        if max_staleness_secs is not None:
            rules.check_u64("max_staleness_secs", max_staleness_secs)
        r = yield from self.read(models, "totals")
        ranking = routing.rank(
            [r.performance[m] for m in models],
            strategy,
            weights=weights,
            max_staleness_secs=max_staleness_secs,
            stale_policy=stale_policy,
            now=snapshot.ms_to_datetime(r.now_ms),
        )
        return ranking, r

    def select_model(
        self,
        candidates: Sequence[str],
        strategy: routing.Strategy | str = routing.Strategy.FASTEST,
        *,
        weights: routing.Weights | None = None,
        max_staleness_secs: int | None = None,
        stale_policy: routing.StalePolicy = "exclude",
        exploration: float = 0.0,
        rng: random.Random | None = None,
    ) -> Op[str]:
        """The model to use now (see ``routing.choose``)."""
        ranking = yield from self.rank_models(
            candidates,
            strategy,
            weights=weights,
            max_staleness_secs=max_staleness_secs,
            stale_policy=stale_policy,
        )
        return routing.choose(ranking, exploration, rng)

    def all_model_performances(
        self, percentiles: bool = False
    ) -> Op[list[ModelPerformanceSnapshot]]:
        """Every listed model's snapshot, sorted; ``percentiles`` as in model_performance. A
        model whose data is unreadable is listed too (with what could be read), so an operator
        sees it."""
        if percentiles:
            r = yield from self.read(None, "window")
            snaps = self._window_snapshots(r)
            return [snaps[m] for m in r.models]
        r = yield from self.read(None, "totals")
        return [r.performance[m] for m in r.models]

    def session_usage(self, session_id: str) -> Op[UsageSnapshot]:
        """One session's usage per model within the window, from each model's session index:
        one hash field per model, whatever the window holds."""
        session_id = rules.check_session_id(session_id)
        r = yield from self.read(None, "session", session_id)
        return snapshot.usage(session_id, r.usage, self.window_secs, r.now_ms)

    def known_models(self) -> Op[list[str]]:
        """The models with events in the window or an active limit, sorted: the registry
        keeps a model a while after its limit is cleared, so each listed one is checked."""
        r = yield from self.read(None, "totals")
        return [p.model for p in _known(r.performance, r.models)]

    def export_summary(self) -> Op[TelemetrySummary]:
        r = yield from self.read(None, "totals")
        return TelemetrySummary(
            id="telemetry_summary",
            model_performances=[r.performance[m] for m in r.models],
            window_secs=self.window_secs,
            exported_at=snapshot.ms_to_datetime(r.now_ms),
        )


def _known(
    snapshots: Mapping[str, ModelPerformanceSnapshot], models: Sequence[str]
) -> list[ModelPerformanceSnapshot]:
    """The snapshots of ``models`` with events in the window or an active limit: the registry
    keeps a model a while after its limit is cleared or its events aged out."""
    return [
        p
        for m in models
        if (p := snapshots[m]).successful_completions + p.failed_completions
        or p.subscription_limit_reached
    ]


def _gen(held: Held | None) -> bytes | None:
    """What a first call names as ``known`` for what a read holds of a model (None: nothing)."""
    return None if held is None else scripts.unchanged(held.reply)


def _refused_write(exc: TelemetryError) -> bool:
    """Whether Redis refused a write to this store for good: an ACL without the command, or a
    read-only replica."""
    return isinstance(exc, PermissionDenied) or isinstance(exc.__cause__, ReadOnlyError)


def _at(part: SnapshotReply | SessionReply | None) -> Cursor | None:
    """The cursor of an earlier read's part (None: no part, a first call from rank 0)."""
    return None if part is None else part.cursor


def _aged_count(reply: SnapshotReply | SessionReply) -> int:
    """How many members a reply found aged."""
    return 0 if reply.cursor is None else reply.cursor.aged


def _resumed(reply: R, part: R | None) -> R:
    """A first call's reply, with the earlier read's ``part`` it resumed from added (a call
    that could not resume, a trim having run since, started from rank 0)."""
    if part is not None and part.cursor is not None and reply.start == part.cursor.next:
        return reply.absorb(part)
    return reply


def _last(flat: Sequence[Any]) -> tuple[Any, bytes]:
    """A page's cursor: the (score, member) of its last member (a page of a set with members
    left after it is never empty)."""
    return flat[-1], flat[-2]


def _unseen(
    held: Sequence[tuple[bytes, float]], page: list[tuple[bytes, float]]
) -> list[tuple[bytes, float]]:
    """``page``'s members that ``held`` (oldest first) does not hold yet: a page that
    restarted at its cursor's score starts with members of that score the reader may have."""
    if not held or not page:
        return page
    score = held[-1][1]
    seen = set()
    for member, at in reversed(held):
        if at != score:
            break
        seen.add(member)
    return [(m, sc) for m, sc in page if m not in seen]
