"""Every store operation as an I/O-free generator: :class:`StoreCore`.

An operation yields a *batch* (a list of commands, see ``commands``) and receives the batch's
results; the sync and async stores only send each batch to Redis as one non-transactional
pipeline (on a cluster, one per node: see ``cluster``) and feed the results back. So the two
stores cannot drift apart: every decision (what to send, in what order, how to read the
replies) is made here. The one exception to the generator form is a steady-state ``record()``,
a :class:`~.commands.SingleCommand`, built and read here as well. The scripts' argument
layouts live in ``scripts``, error replies in ``replies``, dump/import planning in
``transfer``.
"""

from __future__ import annotations

import logging
import operator
import random
import time
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from typing import Any, NamedTuple

from ..errors import InvalidInputError, TelemetryError
from ..models import (
    CompletionEvent,
    ModelPerformanceSnapshot,
    RecordResult,
    TelemetrySummary,
    UsageSnapshot,
)
from . import backup, codec, routing, rules, scripts, snapshot, transfer
from .commands import Batch, Cmd, Command, Eval, Op, SingleCommand, key_of
from .keys import Keys, check_namespace
from .replies import time_ms, translate, usable
from .window import SharedWindow

log = logging.getLogger(__name__)

#: Events per ``record.lua`` call; keeps each script run short.
SCRIPT_CHUNK = 1000
#: Default cap on one model's stored events (see the README's "memory safety valve").
DEFAULT_MAX_EVENTS_PER_MODEL = 1_000_000
_SCORE = operator.itemgetter(1)  # of a codec.PreparedEvent
_LIMIT_REASON = operator.itemgetter(3)


class Reading(NamedTuple):
    """What a read found at the server's time ``now_ms``: per model, the window's decoded
    events and limit TTLs (``window`` reads) or the performance snapshot (``totals`` reads)."""

    now_ms: int
    models: list[str]
    events: dict[str, list[codec.StoredEvent]]
    limit_pttl: dict[str, int]
    performance: dict[str, ModelPerformanceSnapshot]


class StoreCore:
    """The state and logic of one store; the sync and async stores drive its operations."""

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
        #: model -> epoch ms until which this store already made the registry keep it
        self._registered: dict[str, int] = {}
        #: Models seen in the registry: their ranges ride in the first round trip of a read.
        self._models: dict[str, None] = {}
        #: model -> its (events, limit, totals) keys
        self._model_keys: dict[str, tuple[str, str, str]] = {}
        self._settings_for = -1
        self._settings_text = ""

    @property
    def namespace(self) -> str:
        return self.keys.namespace

    @property
    def _window_ms(self) -> int:
        return self.window.ms

    @property
    def _registry_slack_ms(self) -> int:
        """The registry keeps a model this long past its data, so most writes skip it."""
        return max(1000, self._window_ms // 10)

    @property
    def window_secs(self) -> int:
        """The rolling window, shared by every store of the namespace."""
        return self.window.secs

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
        yield self.window.change(window_secs)
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
        by_model, repeated = codec.by_model(prepared)
        if not by_model and not extra:
            return RecordResult()
        limit_ms = self.limit_ttl_secs * 1000
        entries = []
        for model, group in by_model.items():
            need = max(map(_SCORE, group)) + self._window_ms
            limited = any(map(_LIMIT_REASON, group))
            if limited or self._registered.get(model, -1) < need:
                entries.append((model, need + self._registry_slack_ms, limit_ms if limited else 0))
        batch: Batch = [scripts.register_call(self.keys, entries)] if entries else []
        first = len(batch)
        for model, group in by_model.items():
            for start in range(0, len(group), SCRIPT_CHUNK):
                batch.append(self._record_eval(model, group[start : start + SCRIPT_CHUNK]))
        last = len(batch)
        batch += extra
        ttl_ms = max(extra_ttl_ms, limit_ms if any(e[2] for e in entries) else 0)
        results = yield from self._write(batch, ttl_ms)
        for model, keep_until, _ in entries:
            self._registered[model] = max(self._registered.get(model, -1), keep_until)
        return self._tally(results[first:last], repeated)

    def _record_eval(self, model: str, chunk: Sequence[codec.PreparedEvent]) -> Eval:
        """One ``record.lua`` call for ``chunk``, events of ``model``."""
        keys = self._model_keys.get(model)
        if keys is None:
            if len(self._model_keys) >= 10_000:
                self._model_keys.clear()
            keys = (self.keys.events(model), self.keys.limit(model), self.keys.totals(model))
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

    def _tally(self, replies: Sequence[Any], repeated: int = 0) -> RecordResult:
        """Add up ``record.lua`` replies; say so in the log when the per-model cap trimmed."""
        result = scripts.record_counts(replies, repeated)
        if result.capped:
            log.warning(
                "the per-model cap of %d events removed %d of the oldest events",
                self.max_events_per_model,
                result.capped,
            )
        return result

    def _tally_one(self, reply: Any) -> RecordResult:
        if isinstance(reply, BaseException):
            raise translate(reply) from reply
        stored, duplicates, outside, _, capped = reply
        if capped:
            return self._tally((reply,))  # says so in the log
        return RecordResult(int(stored), int(duplicates), int(outside), 0)

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
            or self._registered.get(p.model, -1) < p.score_ms + self._window_ms
            or self.window.due(self.window.config_ttl(0), now)
        ):
            return self.record_prepared((p,))
        command = self._record_eval(p.model, (p,))
        return SingleCommand(command, self._tally_one, partial(self.record_prepared, (p,)))

    def record_batch(self, events: Iterable[CompletionEvent]) -> Op[RecordResult]:
        """Many events, one round trip, grouped per model; one bad event and none is written."""
        return (yield from self.record_prepared(self.prepare(events, indexed=True)))

    def mark_subscription_limited(self, model: str, ttl_secs: int | None = None) -> Op[None]:
        """Block ``model`` for ``ttl_secs`` (default: the store's subscription-limit TTL)."""
        model = rules.check_model_name(model)
        ttl = self.limit_ttl_secs if ttl_secs is None else ttl_secs
        ttl_ms = rules.check_positive_secs("ttl_secs", ttl) * 1000
        yield from self._write(self._limit_cmds(model, ttl_ms, "manual"), ttl_ms)

    def _limit_cmds(self, model: str, ttl_ms: int, reason: str) -> Batch:
        return [
            scripts.register_call(self.keys, [(model, 0, ttl_ms)]),
            Cmd("set", (self.keys.limit(model), reason), {"px": ttl_ms}),
        ]

    def clear_subscription_limit(self, model: str) -> Op[bool]:
        """Lift a block; True when there was one."""
        model = rules.check_model_name(model)
        (deleted,) = yield [Cmd("delete", (self.keys.limit(model),))]
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
        return (yield from self._restore(prepared, [(m, ms, "restored") for m, ms in limits]))

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

        Limits resume with the time they had left; a limit without expiry gets the store's
        subscription-limit TTL. ``RecordResult.outside_window`` counts events too old to keep.
        """
        prepared = self.prepare(dump.events, indexed=True)
        (now,) = yield [Cmd("time", route=self.keys.models)]
        limits = transfer.restore_limits(dump, time_ms(now), self.limit_ttl_secs * 1000)
        return (yield from self._restore(prepared, limits))

    def dump(self) -> Op[backup.Dump]:
        """Every raw event in the window (ids included) and every active limit."""
        r = yield from self.read(None)
        limited = [m for m in r.models if r.limit_pttl[m] != -2]
        gets: Batch = [Cmd("get", (self.keys.limit(m),), tolerant=True) for m in limited]
        reasons = (yield gets) if gets else []
        limits = [
            transfer.dump_limit(m, r.limit_pttl[m], r.now_ms, usable(got, b"", self.keys.limit(m)))
            for m, got in zip(limited, reasons, strict=True)
        ]
        events = [codec.to_completion_event(m, e) for m in r.models for e in r.events[m]]
        header = transfer.dump_header(self.namespace, self.window_secs, r.now_ms)
        return backup.Dump(header=header, events=events, limits=limits)

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

    def _fetch(self, kind: str, model: str) -> Eval:
        """One model's read script: ``window.lua`` or ``snapshot.lua`` (its node's TIME)."""
        if kind == "window":
            return scripts.window_call(self.keys, model, self._window_ms)
        return scripts.snapshot_call(self.keys, model, self._window_ms)

    def read(self, models: Sequence[str] | None, kind: str = "window") -> Op[Reading]:
        """Data of ``models`` (None: every listed model) at the server's time.

        ``kind`` is ``"window"`` (every event in the window, by ``window.lua``), ``"totals"``
        (by ``snapshot.lua``: the running sums and only the members that aged out since the
        last trim, so its cost does not depend on how many events the window holds) or
        ``"models"`` (the registry only). Each model is read by one script that takes the time
        from the model's own server, so the window is exact. One round trip when the models
        are already known to this store; a model new to it costs one more.
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
        results = yield head + [self._fetch(kind, m) for m in ask]
        self.window.check(usable(results[0], None, self.keys.config), writing=False)
        now_ms = time_ms(results[1])
        registry = usable(results[2], [], self.keys.models) if from_registry else []
        targets = self._live_models(registry, now_ms) if from_registry else list(ask)
        fetched = dict(zip(ask, results[len(head) :], strict=True))
        redo = [m for m in targets if m not in fetched] if kind != "models" else []
        if redo:  # models new to this store
            fetched.update(zip(redo, (yield [self._fetch(kind, m) for m in redo]), strict=True))
        if from_registry:
            self._models = dict.fromkeys(targets)
        reading = Reading(now_ms, targets, {}, {}, {})
        if kind == "window":
            for m in targets:
                _, reading.events[m], reading.limit_pttl[m] = self._window_of(m, fetched[m], now_ms)
        incomplete = []
        for m in targets if kind == "totals" else []:
            key = self.keys.events(m)
            at, sums, aged, newest, pttl = scripts.snapshot_reply(
                usable(fetched[m], None, key), now_ms
            )
            newest_pairs = snapshot.pairs(newest)
            if snapshot.lacks_fields(sums, newest_pairs):
                incomplete.append(m)
                continue
            reading.performance[m] = snapshot.from_totals(
                model=m,
                key=key,
                sums=sums,
                aged=snapshot.pairs(aged),
                newest=newest_pairs,
                window_secs=self.window_secs,
                now_ms=at,
                limit_pttl=pttl,
            )
        if incomplete:  # totals from before a field existed: sum the window's events instead
            replies = yield [self._fetch("window", m) for m in incomplete]
            for m, reply in zip(incomplete, replies, strict=True):
                at, events, pttl = self._window_of(m, reply, now_ms)
                reading.performance[m] = snapshot.performance(
                    m, events, self.window_secs, at, pttl, percentiles=False
                )
        return reading

    def _window_of(
        self, model: str, reply: Any, now_ms: int
    ) -> tuple[int, list[codec.StoredEvent], int]:
        """``window.lua``'s reply for ``model``: (server ms, the window's events, limit PTTL)."""
        key = self.keys.events(model)
        at, members, pttl = scripts.window_reply(usable(reply, None, key), now_ms)
        return at, snapshot.decode_window(key, snapshot.pairs(members), at - self._window_ms), pttl

    def _window_snapshots(self, r: Reading) -> dict[str, ModelPerformanceSnapshot]:
        return {
            m: snapshot.performance(m, r.events[m], self.window_secs, r.now_ms, r.limit_pttl[m])
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
        if isinstance(candidates, str) or not candidates:
            raise InvalidInputError("candidates must be a non-empty list of model names")
        models = list(dict.fromkeys(rules.check_model_name(m) for m in candidates))
        if max_staleness_secs is not None:
            rules.check_u64("max_staleness_secs", max_staleness_secs)
        r = yield from self.read(models, "totals")
        return routing.rank(
            [r.performance[m] for m in models],
            strategy,
            weights=weights,
            max_staleness_secs=max_staleness_secs,
            stale_policy=stale_policy,
            now=snapshot.ms_to_datetime(r.now_ms),
        )

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
        """Every listed model's snapshot, sorted; ``percentiles`` as in model_performance."""
        if percentiles:
            r = yield from self.read(None, "window")
            snaps = self._window_snapshots(r)
            return [snaps[m] for m in r.models]
        r = yield from self.read(None, "totals")
        return [r.performance[m] for m in r.models]

    def session_usage(self, session_id: str) -> Op[UsageSnapshot]:
        session_id = rules.check_session_id(session_id)
        r = yield from self.read(None)
        return snapshot.usage(session_id, r.events, self.window_secs, r.now_ms)

    def known_models(self) -> Op[list[str]]:
        r = yield from self.read(None, "models")
        return r.models

    def export_summary(self) -> Op[TelemetrySummary]:
        r = yield from self.read(None, "totals")
        return TelemetrySummary(
            id="telemetry_summary",
            model_performances=[r.performance[m] for m in r.models],
            window_secs=self.window_secs,
            exported_at=snapshot.ms_to_datetime(r.now_ms),
        )
