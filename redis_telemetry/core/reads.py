"""The read operations of a store, as I/O-free generators (see ``ops``).

Every read is one round trip of ``read()``: the namespace's window, the server's time and,
per model, one script that reads at that model's server time (``window.lua`` for the events,
``snapshot.lua`` for the running totals). :class:`~.ops.StoreCore` adds the writes.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from ..errors import InvalidInputError
from ..models import CompletionEvent, ModelPerformanceSnapshot, TelemetrySummary, UsageSnapshot
from . import codec, routing, rules, scripts, snapshot
from .commands import Batch, Cmd, Eval, Op
from .keys import Keys
from .replies import time_ms, usable
from .window import SharedWindow

log = logging.getLogger(__name__)


class Reading(NamedTuple):
    """What a read found at the server's time ``now_ms``: per model, the window's decoded
    events and limit TTLs (``window`` reads) or the performance snapshot (``totals`` reads)."""

    now_ms: int
    models: list[str]
    events: dict[str, list[codec.StoredEvent]]
    limit_pttl: dict[str, int]
    performance: dict[str, ModelPerformanceSnapshot]


class Reads:
    """The reads of one store: its keys and window, and the models it has seen."""

    keys: Keys
    window: SharedWindow
    #: Models seen in the registry: their ranges ride in the first round trip of a read.
    _models: dict[str, None]

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
        session_id = rules.check_session_id(session_id)
        r = yield from self.read(None)
        return snapshot.usage(session_id, r.events, self.window_secs, r.now_ms)

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
