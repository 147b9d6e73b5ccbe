"""Every store operation as an I/O-free generator.

An operation yields a *batch* (a list of commands) and receives the batch's results; the
sync and async stores only send each batch to Redis as one non-transactional pipeline (on a
cluster, one per node: see ``cluster.py``) and feed the results back. So the two stores
cannot drift apart: every decision (what to send, in what order, how to read the replies) is
made here. The one exception to the generator form is :class:`Quick`, a steady-state
``record()`` that is a single command, built and read here as well.
"""

from __future__ import annotations

import hashlib
import logging
import math
import operator
import random
import time
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from typing import Any, Generic, NamedTuple, TypeVar

from redis.exceptions import AuthenticationError, NoPermissionError, NoScriptError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..errors import InvalidInputError, TelemetryError, TelemetryUnavailable, WindowMismatchError
from ..models import (
    CompletionEvent,
    ModelPerformanceSnapshot,
    TelemetrySummary,
    TokenBreakdown,
    UsageSnapshot,
)
from . import backup, codec, routing, rules, snapshot
from .keys import Keys, check_namespace
from .scripts import SCRIPTS

log = logging.getLogger("redis_telemetry")
T = TypeVar("T")

#: How far past the data they govern the keys' TTLs reach.
GRACE_MS = 2000
#: Events per ``record.lua`` call; keeps each script run short.
SCRIPT_CHUNK = 1000
#: Newest members read to find ``last_event_at`` to the microsecond (ties within one ms).
NEWEST_PROBE = 32
#: Default cap on one model's stored events (see the README's "memory safety valve").
DEFAULT_MAX_EVENTS_PER_MODEL = 1_000_000
#: A writer re-confirms the namespace's window (and refreshes the config's TTL) this often.
CONFIG_RECHECK_MS = 60_000
_SCORE = operator.itemgetter(1)  # of a codec.PreparedEvent
_LIMIT_REASON = operator.itemgetter(3)
#: ``record.lua``'s second argument: count, oldest and newest score, sums (see its header)
_HEAD_FORMAT = " ".join(["%d"] * (3 + len(codec.TOTALS_FIELDS)))
#: How often a batch is retried after NOSCRIPT (the script cache was flushed) before giving up.
NOSCRIPT_RETRIES = 3


@dataclass(frozen=True, slots=True)
class Cmd:
    """A redis-py client method and its arguments. An error reply to a ``tolerant`` command
    (a key of the wrong type, written by hand) reaches the operation instead of raising."""

    method: str
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    tolerant: bool = False
    #: for a command without a key (TIME, SCRIPT LOAD): the key whose cluster node runs it
    route: str | None = None


class Eval(NamedTuple):
    """A call of one of the package's Lua scripts, by name (sent as EVALSHA)."""

    script: str
    keys: tuple[str, ...]
    args: tuple[Any, ...]
    tolerant: bool = False


Command = Cmd | Eval
Batch = list[Command]
Op = Generator[Batch, list[Any], T]


class Quick(NamedTuple, Generic[T]):
    """An operation that is one command in its common case, sent without the batch machinery:
    the shell sends ``command`` alone and hands its reply to ``finish``. On a cluster client,
    or after a NOSCRIPT reply (the script did not run), the shell runs ``fallback()`` as an
    ordinary operation instead."""

    command: Eval
    finish: Callable[[Any], T]
    fallback: Callable[[], Op[T]]


class RecordResult(NamedTuple):
    """What a write did: events newly stored, already present (same id), or too old; and how
    many of the model's oldest events the per-model cap removed."""

    stored: int = 0
    duplicates: int = 0
    outside_window: int = 0
    capped: int = 0


class Reading(NamedTuple):
    """What a read found at the server's time ``now_ms``: per model, the window's decoded
    events and limit TTLs (``window`` reads) or the performance snapshot (``totals`` reads)."""

    now_ms: int
    models: list[str]
    events: dict[str, list[codec.StoredEvent]]
    limit_pttl: dict[str, int]
    performance: dict[str, ModelPerformanceSnapshot]


def key_of(c: Command) -> str:
    """The key a command is about (its route, for one without a key): on a cluster, the key
    whose node runs it."""
    if isinstance(c, Eval):
        return c.keys[0]
    if c.route is not None:
        return c.route
    return str(c.args[0])


def call(target: Any, c: Command, shas: Mapping[str, str]) -> Any:
    """Send (or, on a pipeline, queue) one command with redis-py."""
    if isinstance(c, Eval):
        return target.evalsha(shas[c.script], len(c.keys), *c.keys, *c.args)
    return getattr(target, c.method)(*c.args, **c.kwargs)


def queue(pipe: Any, batch: Batch, shas: Mapping[str, str]) -> None:
    """Put ``batch`` on a redis-py pipeline (sync or async: queueing is the same)."""
    for c in batch:
        call(pipe, c, shas)


def single(batch: Batch) -> Command | None:
    """The one command of a batch that needs no pipeline (a pipeline costs more)."""
    return batch[0] if len(batch) == 1 else None


def time_ms(reply: Sequence[Any]) -> int:
    """A TIME reply in epoch milliseconds."""
    return int(reply[0]) * 1000 + int(reply[1]) // 1000


def translate(exc: BaseException) -> TelemetryError:
    """A redis-py error as the package's exception, naming what went wrong."""
    if isinstance(exc, TelemetryError):
        return exc
    if isinstance(exc, RedisConnectionError | RedisTimeoutError) and not isinstance(
        exc, AuthenticationError
    ):
        return TelemetryUnavailable(f"Redis is unreachable: {exc}")
    denied = ("NOPERM", "no permissions", "can't run this command")
    if isinstance(exc, NoPermissionError) or any(d in str(exc) for d in denied):
        return TelemetryError(f"Redis refused the command (permission denied): {exc}")
    return TelemetryError(f"Redis error: {type(exc).__name__}: {exc}")


def raise_errors(results: Sequence[Any], batch: Sequence[Command] = ()) -> None:
    """Raise the first error reply of a batch as a :class:`TelemetryError` (replies to
    tolerant commands excepted)."""
    for i, r in enumerate(results):
        if isinstance(r, BaseException):
            c = batch[i] if i < len(batch) else None
            if c is not None and c.tolerant and is_bad_data(r):
                continue
            raise translate(r) from r


def is_bad_data(error: BaseException) -> bool:
    """An error caused by a key of the wrong type (written by hand), not by the connection,
    a permission or a missing script."""
    return "WRONGTYPE" in str(error)


def usable(reply: Any, default: Any, what: str) -> Any:
    """A tolerant command's reply, or ``default`` (logged) when Redis answered an error."""
    if isinstance(reply, BaseException):
        log.warning("skipped unreadable %s: %s", what, reply)
        return default
    return reply


def recovering(op: Op[T]) -> Op[T]:
    """Wrap ``op`` so that a flushed script cache (NOSCRIPT) is reloaded and retried.

    Only the failed EVALSHAs are re-sent. That is safe: a script that got NOSCRIPT did not
    run, and a re-sent event keeps its id, so it can never be counted twice.
    """
    try:
        batch = next(op)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    while True:
        results = list((yield batch))
        for _ in range(NOSCRIPT_RETRIES):
            missing = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
            if not missing:
                break
            # one SCRIPT LOAD per missing script; on a cluster it goes to every node
            loads = {c.script: c.keys[0] for i in missing if isinstance(c := batch[i], Eval)}
            raise_errors(
                (yield [Cmd("script_load", (SCRIPTS[n],), route=k) for n, k in loads.items()])
            )
            retried = yield [batch[i] for i in missing]
            for i, r in zip(missing, retried, strict=True):
                results[i] = r
        raise_errors(results, batch)
        try:
            batch = op.send(results)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]


def _register(keys: Keys, entries: Iterable[tuple[str, int, int]]) -> Eval:
    args: list[Any] = [GRACE_MS]
    for model, keep_until_ms, keep_for_ms in entries:
        args += (model, keep_until_ms, keep_for_ms)
    return Eval("register", (keys.models,), tuple(args))


def _event_id(*parts: object) -> str:
    return hashlib.sha1("|".join(map(str, parts)).encode()).hexdigest()[:32]


def _as_u64(value: float) -> int:
    """Rust's saturating ``f64 as u64``."""
    if math.isnan(value) or value <= 0:
        return 0
    if value >= rules.U64_MAX:
        return rules.U64_MAX
    return int(value)


def plan_import(
    summary: TelemetrySummary, now_ms: int, window_secs: int
) -> tuple[list[CompletionEvent], list[tuple[str, int]]]:
    """The reference's import: synthetic events and (model, limit ms left) to restore.

    Up to 10 successes spread back over the window at the snapshot's average latency, and up to
    3 failures at its last event, for snapshots whose last event is still in the window. Ids
    derive from the summary, so importing the same summary twice adds nothing.
    """
    now = snapshot.ms_to_datetime(now_ms)
    cutoff = now - timedelta(seconds=window_secs)
    events: list[CompletionEvent] = []
    limits: list[tuple[str, int]] = []
    stamp = summary.exported_at.isoformat()
    for perf in summary.model_performances:
        model = rules.check_model_name(perf.model)
        expires = perf.subscription_limit_expires_at
        if expires is not None and now < expires:
            limits.append((model, rules.ms_floor(rules.epoch_us(expires)) - now_ms))
        last = perf.last_event_at
        if last is None or last < cutoff:
            continue
        n_ok = min(perf.successful_completions, 10)
        for i in range(n_ok):
            spread = timedelta(seconds=(window_secs * i) // n_ok)
            events.append(
                CompletionEvent.model_construct(
                    model=model, session_id="", completed_at=last - spread,
                    latency_ms=_as_u64(perf.avg_latency_ms), success=True,
                    tokens=TokenBreakdown(), cost_usd=0.0, error=None,
                    event_id=_event_id("import", stamp, model, "ok", i),
                )
            )  # fmt: skip
        for j in range(min(perf.failed_completions, 3)):
            events.append(
                CompletionEvent.model_construct(
                    model=model, session_id="", completed_at=last, latency_ms=0,
                    success=False, tokens=TokenBreakdown(), cost_usd=0.0,
                    error="recovered failure",
                    event_id=_event_id("import", stamp, model, "failed", j),
                )
            )  # fmt: skip
    return events, limits


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
        self.wait_timeout_ms = rules.check_positive_secs("wait_timeout_ms", wait_timeout_ms)
        self.max_events_per_model = (
            0 if max_events_per_model is None
            else rules.check_positive_secs("max_events_per_model", max_events_per_model)
        )  # fmt: skip
        self.window_secs = rules.check_positive_secs("window_secs", window_secs)
        self.limit_ttl_secs = rules.check_positive_secs(
            "subscription_limit_ttl_secs", subscription_limit_ttl_secs
        )
        self._clock = clock
        self._window_confirmed = False
        self._config_at = 0
        self._config_ttl_ms = 0
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
        return self.window_secs * 1000

    @property
    def _registry_slack_ms(self) -> int:
        """The registry keeps a model this long past its data, so most writes skip it."""
        return max(1000, self._window_ms // 10)

    # -- the namespace's shared window ------------------------------------------------------

    def _check_window(self, raw: Any, writing: bool) -> None:
        if raw is None:
            return  # nothing claimed yet (reads only: a write's config.lua always returns one)
        try:
            stored = int(raw)
            if stored <= 0:
                raise ValueError
        except (TypeError, ValueError):
            msg = f"{self.keys.config} holds window_secs={raw!r}, which is not a positive integer"
            if writing:
                raise TelemetryError(
                    f"{msg}; refusing to write. Repair it with set_window()"
                ) from None
            log.warning("%s; reading with window_secs=%d", msg, self.window_secs)
            return
        if stored != self.window_secs:
            raise WindowMismatchError(self.namespace, stored, self.window_secs)
        self._window_confirmed = True

    def _claim(self, ttl_ms: int) -> Eval:
        return Eval("config", (self.keys.config,), (self.window_secs, ttl_ms))

    def _config_ttl(self, ttl_ms: int) -> int:
        """The config key's TTL for a write whose data lives ``ttl_ms``."""
        return max(ttl_ms, self._window_ms) + CONFIG_RECHECK_MS + GRACE_MS

    def _config_due(self, config_ttl_ms: int, now: int) -> bool:
        """Whether a write must (re)confirm the window and refresh the config's TTL."""
        return (
            not self._window_confirmed
            or now - self._config_at >= CONFIG_RECHECK_MS
            or config_ttl_ms > self._config_ttl_ms
        )

    def _write(self, batch: Batch, ttl_ms: int) -> Op[list[Any]]:
        """Send a write batch, never before this store's window is confirmed for the namespace.

        The window is confirmed (and the config's TTL refreshed) before the first write, then
        before one write every ``CONFIG_RECHECK_MS``: a window changed on purpose elsewhere
        is noticed within that time, and the refused write changes nothing.
        """
        ttl_ms = self._config_ttl(ttl_ms)
        now = self._now_ms()
        if self._config_due(ttl_ms, now):  # its own round trip: a refusal then writes nothing
            self._check_window((yield [self._claim(ttl_ms)])[0], writing=True)
            self._config_at = now
            self._config_ttl_ms = ttl_ms
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
        window_secs = rules.check_positive_secs("window_secs", window_secs)
        yield [
            Cmd("hset", (self.keys.config, "window_secs", window_secs)),
            Cmd("pexpire", (self.keys.config, window_secs * 1000 + GRACE_MS)),
        ]
        self.window_secs = window_secs
        self._window_confirmed = True
        self._config_at = self._now_ms()
        self._config_ttl_ms = 0  # the next write sets the config's full TTL
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
        by_model: dict[str, dict[bytes, codec.PreparedEvent]] = {}
        repeated = 0  # the same member twice in this batch: stored once
        for p in prepared:
            group = by_model.get(p.model)
            if group is None:
                group = by_model[p.model] = {}
            if p.member in group:
                repeated += 1
            else:
                group[p.member] = p
        if not by_model and not extra:
            return RecordResult()
        limit_ms = self.limit_ttl_secs * 1000
        entries = []
        for model, group in by_model.items():
            need = max(map(_SCORE, group.values())) + self._window_ms
            limited = any(map(_LIMIT_REASON, group.values()))
            if limited or self._registered.get(model, -1) < need:
                entries.append((model, need + self._registry_slack_ms, limit_ms if limited else 0))
        batch: Batch = [_register(self.keys, entries)] if entries else []
        first = len(batch)
        for model, group in by_model.items():
            events = list(group.values())
            for start in range(0, len(events), SCRIPT_CHUNK):
                batch.append(self._record_eval(model, events[start : start + SCRIPT_CHUNK]))
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
            keys = self._model_keys[model] = (
                self.keys.events(model), self.keys.limit(model), self.keys.totals(model)
            )  # fmt: skip
        if len(chunk) == 1:
            p = chunk[0]
            args: list[Any] = [
                self._settings,
                _HEAD_FORMAT % (1, p.score_ms, p.score_ms, *p.sums),
                p.score_ms,
                p.member,
            ]
            if p.limit_reason:
                args += (1, p.limit_reason)
            return Eval("record", keys, tuple(args))
        _, scores, members, reasons, sums = zip(*chunk, strict=True)  # columns
        pairs: list[Any] = [None] * (2 * len(chunk))
        pairs[0::2] = scores
        pairs[1::2] = members
        head = (len(chunk), min(scores), max(scores), *map(sum, zip(*sums, strict=True)))
        args = [self._settings, _HEAD_FORMAT % head, *pairs]
        if any(reasons):
            for position, reason in enumerate(reasons, 1):
                if reason:
                    args += (position, reason)
        return Eval("record", keys, tuple(args))

    @property
    def _settings(self) -> str:
        """``record.lua``'s first argument (see its header)."""
        window_ms = self._window_ms
        if self._settings_for != window_ms:
            self._settings_text = (
                f"{window_ms} {self.limit_ttl_secs * 1000} {GRACE_MS} {self.max_events_per_model}"
            )
            self._settings_for = window_ms
        return self._settings_text

    def _tally(self, counts: Sequence[Any], repeated: int = 0) -> RecordResult:
        """Add up ``record.lua`` replies (and the ``repeated`` duplicates within the batch)."""
        stored = outside = capped = 0
        duplicates = repeated
        for r in counts:
            stored += int(r[0])
            duplicates += int(r[1])
            outside += int(r[2])
            capped += int(r[4])
        if capped:
            log.warning("the per-model cap of %d events removed %d of the oldest events",
                        self.max_events_per_model, capped)  # fmt: skip
        return RecordResult(stored, duplicates, outside, capped)

    def _tally_one(self, reply: Any) -> RecordResult:
        if isinstance(reply, BaseException):
            raise translate(reply) from reply
        stored, duplicates, outside, _, capped = reply
        if capped:
            return self._tally((reply,))  # says so in the log
        return RecordResult(int(stored), int(duplicates), int(outside), 0)

    def record(self, event: CompletionEvent) -> Quick[RecordResult] | Op[RecordResult]:
        """One event, one round trip.

        In the steady state (window confirmed and not due for a recheck, model registered
        for this event, no subscription limit, no WAIT) that round trip is one EVALSHA, sent
        as a :class:`Quick` operation.
        """
        now = self._now_ms()
        p = codec.prepare(event, now)
        if (
            self.wait_for_replicas
            or p.limit_reason
            or self._registered.get(p.model, -1) < p.score_ms + self._window_ms
            or self._config_due(self._config_ttl(0), now)
        ):
            return self.record_prepared((p,))
        return Quick(
            self._record_eval(p.model, (p,)), self._tally_one, partial(self.record_prepared, (p,))
        )

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
            _register(self.keys, [(model, 0, ttl_ms)]),
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
        events, limits = plan_import(summary, now_ms, self.window_secs)
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
        now_dt = snapshot.ms_to_datetime(time_ms(now))
        default_ms = self.limit_ttl_secs * 1000
        limits = [
            (lim.model, backup.limit_ms_left(lim, now_dt, default_ms), lim.reason[:200])
            for lim in dump.limits
        ]
        return (yield from self._restore(prepared, limits))

    def dump(self) -> Op[backup.Dump]:
        """Every raw event in the window (ids included) and every active limit."""
        r = yield from self.read(None)
        limited = [m for m in r.models if r.limit_pttl[m] != -2]
        gets: Batch = [Cmd("get", (self.keys.limit(m),), tolerant=True) for m in limited]
        reasons = (yield gets) if gets else []
        limits = []
        for model, reason in zip(limited, reasons, strict=True):
            _, expires = snapshot.limit_state(r.limit_pttl[model], r.now_ms)
            reason = usable(reason, b"", self.keys.limit(model))
            text = reason.decode("utf-8", "replace") if isinstance(reason, bytes) else ""
            limits.append(backup.DumpLimit(model=model, expires_at=expires, reason=text))
        events = [codec.to_completion_event(m, e) for m in r.models for e in r.events[m]]
        header = backup.DumpHeader(
            namespace=self.namespace,
            window_secs=self.window_secs,
            dumped_at=snapshot.ms_to_datetime(r.now_ms),
        )
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
        events, limit = self.keys.events(model), self.keys.limit(model)
        if kind == "window":
            return Eval("window", (events, limit), (self._window_ms,), tolerant=True)
        keys = (events, self.keys.totals(model), limit)
        args = (self._window_ms, NEWEST_PROBE, *codec.TOTALS_FIELDS)
        return Eval("snapshot", keys, args, tolerant=True)

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
        self._check_window(usable(results[0], None, self.keys.config), writing=False)
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
        for m in targets if kind != "models" else []:
            key = self.keys.events(m)
            reply = usable(fetched[m], None, key)
            if kind == "window":
                at, members, pttl = reply or (now_ms, [], -2)
                cutoff = int(at) - self._window_ms
                pairs = snapshot.pairs(members)
                reading.events[m] = snapshot.decode_window(key, pairs, cutoff)
                reading.limit_pttl[m] = int(pttl)
            else:
                at, sums, aged, newest, pttl = reply or (now_ms, [], [], [], -2)
                reading.performance[m] = snapshot.from_totals(
                    model=m,
                    key=key,
                    sums=sums,
                    aged=snapshot.pairs(aged),
                    newest=snapshot.pairs(newest),
                    window_secs=self.window_secs,
                    now_ms=int(at),
                    limit_pttl=int(pttl),
                )
        return reading

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
        strategy: routing.Strategy | str,
        *,
        exploration: float,
        rng: random.Random | None,
        **filters: Any,
    ) -> Op[str]:
        """The model to use now (see ``routing.choose``)."""
        ranking = yield from self.rank_models(candidates, strategy, **filters)
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


def check_client(client: Any) -> None:
    """Refuse a client that decodes replies: members are binary msgpack."""
    get_encoder = getattr(client, "get_encoder", None)
    if get_encoder is not None and getattr(get_encoder(), "decode_responses", False):
        raise TelemetryError(
            "the Redis client has decode_responses=True; redis-telemetry stores binary msgpack "
            "members and needs a client built with decode_responses=False"
        )


@dataclass(frozen=True, slots=True)
class ConnectionSettings:
    """Defaults ``from_url`` applies: bounded waits and a few retries with jittered backoff."""

    socket_timeout: float = 5.0
    socket_connect_timeout: float = 2.0
    retries: int = 3
    backoff_base: float = 0.05
    backoff_cap: float = 0.5
    health_check_interval: float = 30.0


DEFAULT_CONNECTION = ConnectionSettings()
