"""Every store operation as an I/O-free generator: :class:`StoreCore`.

An operation yields a *batch* (a list of commands, see ``commands``) and receives the batch's
results; the sync and async stores only send each batch to Redis as one non-transactional
pipeline (on a cluster, one per node: see ``cluster``) and feed the results back. So the two
stores cannot drift apart: every decision (what to send, in what order, how to read the
replies) is made here. The one exception to the generator form is a steady-state ``record()``,
a :class:`~.commands.SingleCommand`, built and read here as well. The reads live in
``reads`` (StoreCore's base class), the scripts' argument layouts in ``scripts``, error
replies in ``replies``, the shared window in ``window``, dump/import planning in
``transfer``.
"""

from __future__ import annotations

import logging
import operator
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from functools import partial
from typing import Any

from ..errors import InvalidInputError, TelemetryError
from ..models import (
    CompletionEvent,
    RecordResult,
    TelemetrySummary,
)
from . import backup, codec, notes, rules, scripts, totals, transfer
from .commands import Batch, Cmd, Command, Eval, Op, SingleCommand, key_of
from .keys import Keys, check_namespace
from .provider_ops import ProviderOps
from .replies import time_ms, translate, usable
from .window import SharedWindow

log = logging.getLogger(__name__)

#: Events per ``record.lua`` call; keeps each script run short.
SCRIPT_CHUNK = 1000
#: Default cap on one model's stored events (see the README's "memory safety valve").
DEFAULT_MAX_EVENTS_PER_MODEL = 1_000_000
#: The cap's warning is logged for the first write it trims, then for every this-many-th.
CAP_WARNING_EVERY = 1000
_SCORE = operator.itemgetter(1)  # of a codec.PreparedEvent
_LIMIT_REASON = operator.itemgetter(3)
#: A single event's positions in its batch, and the positions stored when it was stored
_ONE, _FIRST = range(1), (0,)


class StoreCore(ProviderOps):
    """The state and logic of one store; the sync and async stores drive its operations.

    The writes are here; the reads come from :class:`~.reads.Reads`."""

    def __init__(
        self,
        namespace: str,
        window_secs: int,
        subscription_limit_ttl_secs: int,
        clock: Callable[[], float] = time.time,
        max_events_per_model: int | None = DEFAULT_MAX_EVENTS_PER_MODEL,
        wait_for_replicas: int = 0,
        wait_timeout_ms: int = 1000,
    ) -> None:
        self.keys = Keys(check_namespace(namespace))
        #: WAIT for this many replicas after every write (0: don't); see ``_durably``
        self.wait_for_replicas = rules.check_u64("wait_for_replicas", wait_for_replicas)
        self.wait_timeout_ms = rules.check_positive_ms("wait_timeout_ms", wait_timeout_ms)
        self.max_events_per_model = (
            0
            if max_events_per_model is None
            else rules.check_positive_count("max_events_per_model", max_events_per_model)
        )
        self.window = SharedWindow(self.keys, window_secs)
        self.limit_ttl_secs = rules.check_positive_secs(
            "subscription_limit_ttl_secs", subscription_limit_ttl_secs
        )
        self._clock = clock
        #: writes the per-model cap trimmed (its warning is logged for the 1st and every
        #: CAP_WARNING_EVERY-th, not for each write)
        self._capped_writes = 0
        #: model -> epoch ms until which this store already made the registry keep it
        self._registered: dict[str, int] = {}
        #: Models seen in the registry: their ranges ride in the first round trip of a read.
        self._models: dict[str, None] = {}
        #: model -> its (events, limit, totals) keys
        self._model_keys: dict[str, tuple[str, ...]] = {}
        self._settings_for = -1
        self._settings_text = ""
        #: who is told of this store's limit writes (the local read tier)
        self.notes = notes.Notes()
        self._init_providers()

    @property
    def _registry_slack_ms(self) -> int:
        """The registry keeps a model this long past its data, so most writes skip it."""
        return max(1000, self._window_ms // 10)

    def _write(self, batch: Batch, ttl_ms: int) -> Op[list[Any]]:
        """Send a write batch, never before this store's window is confirmed for the namespace.

        The window is confirmed (and the config's TTL refreshed) before the first write, then
        before one write every ``CONFIG_RECHECK_MS``: a window changed on purpose elsewhere
        is noticed within that time, and the refused write changes nothing.
        """
        ttl_ms = self.window.config_ttl(ttl_ms)
        now = self._now_ms()
        if self.window.due(ttl_ms, now):  # its own round trip: a refusal then writes nothing
            (reply,) = yield [self.window.claim(ttl_ms)]
            self.window.claimed(reply, ttl_ms, now)
        return (yield from self._durably(batch)) if batch else []

    def _durably(self, batch: Batch) -> Op[list[Any]]:
        """Send ``batch``; with ``wait_for_replicas``, end it with WAIT on every written key's
        server and refuse to report success until that many replicas have the writes."""
        if not self.wait_for_replicas:
            return (yield batch)
        routes = dict.fromkeys(key_of(c) for c in batch)
        waits: Batch = [
            Cmd("wait", (self.wait_for_replicas, self.wait_timeout_ms), route=key) for key in routes
        ]
        results = yield [*batch, *waits]
        acked = min(int(r) for r in results[len(batch) :])
        if acked < self.wait_for_replicas:
            raise TelemetryError(
                f"only {acked} of {self.wait_for_replicas} replicas acknowledged the write "
                f"within {self.wait_timeout_ms} ms: it is on the primary, but a failover may "
                "lose it"
            )
        return results[: len(batch)]

    def set_window(self, window_secs: int) -> Op[None]:
        """Change the namespace's window on purpose; other stores then refuse until rebuilt."""
        yield from self.window.change(window_secs)
        self.window.changed(window_secs, self._now_ms())
        self._registered.clear()

    # -- writes -----------------------------------------------------------------------------

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def prepare(self, events: Iterable[object], indexed: bool) -> list[codec.PreparedEvent]:
        """Check and encode every event first, so a bad one means nothing is written."""
        now_ms = self._now_ms()
        prepared: list[codec.PreparedEvent] = []
        try:  # extending keeps the events before a bad one: its index is len(prepared)
            prepared += (codec.prepare(event, now_ms) for event in events)
        except InvalidInputError as exc:
            if not indexed:
                raise
            raise InvalidInputError(f"event {len(prepared)}: {exc}") from None
        return prepared

    def record_prepared(
        self,
        prepared: Sequence[codec.PreparedEvent],
        extra: Sequence[Command] = (),
        extra_ttl_ms: int = 0,
    ) -> Op[RecordResult]:
        """Register the models, then insert each model's events with ``record.lua``.

        The registry call comes first in the pipeline: a stored event then always belongs to
        a model that ``known_models()`` lists, even if the client dies in between.
        """
        self.notes.recorded(prepared, self.limit_ttl_secs * 1000)
        by_model, at, repeated = codec.by_model_at(prepared)
        if not by_model and not extra:
            return RecordResult()
        for model, group in by_model.items():
            if len(group) >= totals.ROOMY:  # else it cannot pass the ceiling by itself
                totals.check_room(model, [p.sums for p in group])
        entries = []
        now_ms = self._now_ms()
        for model, group in by_model.items():
            newest = max(map(_SCORE, group))
            need = newest + self._window_ms
            extra_ttl_ms = max(extra_ttl_ms, self.window.governs(newest, now_ms))
            block_ms = self._block_ms(group) if any(map(_LIMIT_REASON, group)) else 0
            if block_ms or self._registered.get(model, -1) < need:
                entries.append((model, need + self._registry_slack_ms, block_ms))
        batch: Batch = [scripts.register_call(self.keys, entries)] if entries else []
        spenders = self.spender_entries(by_model)  # listed before their spend, as models are
        if spenders:
            batch.append(self.spender_call(spenders))
        first = len(batch)
        chunks: list[tuple[str, int]] = []  # each record.lua call's model and newest score
        places: list[Sequence[int]] = []  # and its events' positions in ``prepared``
        for model, group in by_model.items():
            for start in range(0, len(group), SCRIPT_CHUNK):
                chunk = group[start : start + SCRIPT_CHUNK]
                batch.append(self._record_eval(model, chunk))
                chunks.append((model, max(map(_SCORE, chunk))))
                end = start + len(chunk)
                places.append(range(start, end) if at is None else at[model][start:end])
        last = len(batch)
        batch += extra
        ttl_ms = max([extra_ttl_ms, *(e[2] for e in entries)])
        results = yield from self._write(batch, ttl_ms)
        for model, keep_until, _ in entries:
            self._registered[model] = max(self._registered.get(model, -1), keep_until)
        self.spenders_listed(spenders)
        result = self._tally(results[first:last], places, repeated)
        just_listed = {e[0] for e in entries}
        lost: dict[str, int] = {}
        for (m, score), reply in zip(chunks, results[first:last], strict=True):
            if m not in just_listed and int(reply[5]):
                lost[m] = max(score, lost.get(m, score))
        if lost:
            return (yield from self._relist(sorted(lost.items()), result))
        return result

    def _block_ms(self, group: Sequence[codec.PreparedEvent]) -> int:
        """How long the longest block that ``group``'s limit errors start lasts, by this
        writer's clock (the registry keeps the model listed that long). A block without an
        end of its own lasts the limit TTL from the event's completion."""
        now_ms = self._now_ms()
        limit_ms = self.limit_ttl_secs * 1000
        ends = [
            (p.limit_until_ms or p.score_ms + limit_ms) - now_ms for p in group if p.limit_reason
        ]
        return max([1, *ends])

    def _record_eval(self, model: str, chunk: Sequence[codec.PreparedEvent]) -> Eval:
        """One ``record.lua`` call for ``chunk``, events of ``model``."""
        keys = self._model_keys.get(model)
        if keys is None:
            if len(self._model_keys) >= 10_000:
                self._model_keys.clear()
            keys = (
                self.keys.events(model),
                self.keys.limit(model),
                self.keys.totals(model),
                self.keys.sessions(model),
                self.keys.latency(model),
                self.keys.ids(model),
                self.keys.spend(model),
            )
            self._model_keys[model] = keys
        return scripts.record_call(keys, self._settings, chunk)

    @property
    def _settings(self) -> str:
        """``record.lua``'s first argument (see its header)."""
        window_ms = self._window_ms
        if self._settings_for != window_ms:
            self._settings_text = scripts.record_settings(
                window_ms, self.limit_ttl_secs * 1000, self.max_events_per_model
            )
            self._settings_for = window_ms
        return self._settings_text

    def _tally(
        self, replies: Sequence[Any], places: Sequence[Sequence[int]], repeated: int = 0
    ) -> RecordResult:
        """Add up ``record.lua`` replies (``places``: each one's events' positions in the
        batch); say so in the log when the per-model cap trimmed."""
        result = scripts.record_counts(replies, places, repeated)
        if result.capped:
            self._capped_writes += 1
            if self._capped_writes == 1 or self._capped_writes % CAP_WARNING_EVERY == 0:
                log.warning(
                    "the per-model cap of %d events removed %d of the oldest events "
                    "(%d writes trimmed by the cap so far; this warning repeats every %dth)",
                    self.max_events_per_model,
                    result.capped,
                    self._capped_writes,
                    CAP_WARNING_EVERY,
                )
        return result

    def _tally_one(self, reply: Any) -> RecordResult:
        if isinstance(reply, BaseException):
            raise translate(reply) from reply
        stored, duplicates, outside, _, capped, *_ = reply
        if capped:
            return self._tally((reply,), (_ONE,))  # says so in the log
        if stored:
            return RecordResult(int(stored), int(duplicates), int(outside), 0, _FIRST)
        return RecordResult(0, int(duplicates), int(outside), 0)

    def record(self, event: CompletionEvent) -> SingleCommand[RecordResult] | Op[RecordResult]:
        """One event, one round trip.

        In the steady state (window confirmed and not due for a recheck, model registered
        for this event, no subscription limit, no WAIT) that round trip is one EVALSHA, sent
        as a :class:`SingleCommand` operation.
        """
        now = self._now_ms()
        p = codec.prepare(event, now)
        if (
            self.wait_for_replicas
            or p.limit_reason
            or self.spends_new_day(p.model, p.score_ms, p.sums[scripts._COST])
            or self._registered.get(p.model, -1) < p.score_ms + self._window_ms
            or self.window.due(self.window.config_ttl(self.window.governs(p.score_ms, now)), now)
        ):
            return self.record_prepared((p,))
        command = self._record_eval(p.model, (p,))
        return SingleCommand(
            command,
            self._tally_one,
            partial(self.record_prepared, (p,)),
            partial(self._relist_after_one, p),
        )

    def _relist_after_one(self, p: codec.PreparedEvent, reply: Any) -> Op[RecordResult] | None:
        """After a steady-state write that found its events key empty (Redis lost its data
        under this store): list the model again before reporting, else nothing to do."""
        if isinstance(reply, BaseException) or not int(reply[5]):
            return None
        return self._relist([(p.model, p.score_ms)], self._tally_one(reply))

    def _relist(self, lost: Sequence[tuple[str, int]], result: RecordResult) -> Op[RecordResult]:
        """Register again ``lost`` (model, newest score) pairs whose events key was found
        empty although this store had registered them, then return ``result``."""
        entries = [(m, score + self._window_ms + self._registry_slack_ms, 0) for m, score in lost]
        yield [scripts.register_call(self.keys, entries)]
        for model, keep_until, _ in entries:
            self._registered[model] = keep_until
        return result

    def reindex(self) -> Op[int]:
        """Do now, for every listed model, the upkeep that writes otherwise spread over later
        calls: rebuild a totals hash of an older layout, remove aged members and those over
        the cap. Each ``record.lua`` call does a bounded step; returns how many it took."""
        r = yield from self.read(None, "models")
        pending, calls = list(r.models), 0
        while pending:
            evals: Batch = [self._record_eval(m, ()) for m in pending]
            replies = yield from self._write(evals, self._window_ms)
            calls += len(evals)
            pending = [m for m, reply in zip(pending, replies, strict=True) if int(reply[6])]
        return calls

    def record_batch(self, events: Iterable[CompletionEvent]) -> Op[RecordResult]:
        """Many events, one round trip, grouped per model; one bad event and none is written."""
        return (yield from self.record_prepared(self.prepare(events, indexed=True)))

    def mark_subscription_limited(
        self,
        model: str,
        ttl_secs: int | None = None,
        *,
        until: datetime | None = None,
        reason: str = "manual",
    ) -> Op[None]:
        """Block ``model`` for ``ttl_secs`` (default: the store's subscription-limit TTL), or
        ``until`` a timezone-aware time, by the server's clock. A block until a past time is
        no block; one until a time sooner than a block in place leaves that block as it is.
        ``reason`` is kept with the block (a dump shows it)."""
        model = rules.check_model_name(model)
        reason = rules.check_reason(reason)
        if until is not None:
            if ttl_secs is not None:
                raise InvalidInputError("give ttl_secs or until, not both")
            until_ms = rules.ms_floor(rules.epoch_us(rules.check_aware("until", until)))
            about_ms = until_ms - self._now_ms()  # this clock's guess, for the TTLs around it
            if about_ms > rules.TEN_YEARS_SECS * 1000:
                raise InvalidInputError(f"until must be at most ten years away, got {until}")
            block: Batch = [
                scripts.register_call(self.keys, [(model, until_ms, 0)]),
                scripts.limit_call(self.keys, model, until_ms, reason),
            ]
            yield from self._write(block, max(0, about_ms))
            self.notes.limited(model, until_ms)
            return
        ttl = self.limit_ttl_secs if ttl_secs is None else ttl_secs
        ttl_ms = rules.check_positive_secs("ttl_secs", ttl) * 1000
        yield from self._write(self._limit_cmds(model, ttl_ms, reason), ttl_ms)
        self.notes.limited(model, self._now_ms() + ttl_ms)

    def _limit_cmds(self, model: str, ttl_ms: int, reason: str) -> Batch:
        return [
            scripts.register_call(self.keys, [(model, 0, ttl_ms)]),
            Cmd("set", (self.keys.limit(model), reason), {"px": ttl_ms}),
        ]

    def clear_subscription_limit(self, model: str) -> Op[bool]:
        """Lift a block; True when there was one."""
        model = rules.check_model_name(model)
        (deleted,) = yield [Cmd("delete", (self.keys.limit(model),))]
        self.notes.limited(model, 0)
        return bool(deleted)

    def import_summary(self, summary: TelemetrySummary) -> Op[RecordResult]:
        """Restore limits and synthesise events from a summary, as the reference does."""
        if not isinstance(summary, TelemetrySummary):
            raise InvalidInputError(f"expected a TelemetrySummary, got {type(summary).__name__}")
        for perf in summary.model_performances:
            rules.check_model_name(perf.model)
        (now,) = yield [Cmd("time", route=self.keys.models)]
        now_ms = time_ms(now)
        events, limits = transfer.plan_import(summary, now_ms, self.window_secs)
        prepared = self.prepare(events, indexed=False)
        result = yield from self._restore(prepared, [(m, ms, "restored") for m, ms in limits])
        return result._replace(stored_positions=())  # positions of events made here: none

    def _restore(
        self, prepared: Sequence[codec.PreparedEvent], limits: Sequence[tuple[str, int, str]]
    ) -> Op[RecordResult]:
        """Write events and (model, ms left, reason) limits in one batch."""
        extra: Batch = []
        for model, left_ms, reason in limits:
            if left_ms > 0:
                extra += self._limit_cmds(model, left_ms, reason)
        longest = max((ms for _, ms, _ in limits), default=0)
        return (yield from self.record_prepared(prepared, extra, longest))

    def restore(self, dump: backup.Dump) -> Op[RecordResult]:
        """Write back a dump: events keep their ids, so restoring twice adds nothing.

        Limits come only from the dump's limit lines, each until the end it names by the
        server's clock (a longer block in place is kept): a limit error among the events
        starts no block, so a limit lifted or ended before the dump stays lifted. A limit
        without expiry gets the store's subscription-limit TTL unless the key is already set.
        ``RecordResult.outside_window`` counts events too old to keep.
        """
        prepared = [
            p._replace(limit_reason="", limit_until_ms=0)
            for p in self.prepare(dump.events, indexed=True)
        ]
        (now,) = yield [Cmd("time", route=self.keys.models)]
        now_ms = time_ms(now)
        default_ms = self.limit_ttl_secs * 1000
        extra: Batch = []
        longest = 0
        for model, until_ms, reason in transfer.restore_limits(dump, now_ms):
            if until_ms is None:
                extra += [
                    scripts.register_call(self.keys, [(model, 0, default_ms)]),
                    Cmd("set", (self.keys.limit(model), reason), {"px": default_ms, "nx": True}),
                ]
                longest = max(longest, default_ms)
            else:
                extra += [
                    scripts.register_call(self.keys, [(model, until_ms, 0)]),
                    scripts.limit_call(self.keys, model, until_ms, reason),
                ]
                longest = max(longest, until_ms - now_ms)
        return (yield from self.record_prepared(prepared, extra, longest))

    def dump(self) -> Op[backup.Dump]:
        """Every raw event in the window (ids included) and every active limit."""
        r = yield from self.read(None)
        limited = [m for m in r.models if r.limit_pttl[m] != -2]
        gets: Batch = [Cmd("get", (self.keys.limit(m),), tolerant=True) for m in limited]
        reasons = (yield gets) if gets else []
        limits = [
            transfer.dump_limit(
                m, r.limit_pttl[m], r.read_at[m], usable(got, b"", self.keys.limit(m))
            )
            for m, got in zip(limited, reasons, strict=True)
        ]
        events = [codec.to_completion_event(m, e) for m in r.models for e in r.events[m]]
        header = transfer.dump_header(self.namespace, self.window_secs, r.now_ms)
        return backup.Dump(header=header, events=events, limits=limits)
