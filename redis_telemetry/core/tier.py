"""The local read tier's state and rules, without I/O: decisions from memory, bounded staleness.

A router asks before every call; the tier answers from the snapshots it last read and has them
refreshed, off the caller's path, at most every ``max_age`` seconds (performance numbers) and
``limits_max_age`` seconds (subscription limits, a cheap ``PTTL`` a model). One refresh is in
flight at a time; the shells (``tier.py``, ``aio_tier.py``) run it in a thread or a task.

While Redis does not answer, the tier keeps serving what it last read, marked stale, up to
``stale_after`` seconds old; past that it raises ``TelemetryUnavailable`` (a router then falls
back as it would without the tier). It tries Redis again at most once per ``retry_secs``: a
circuit breaker, not a timeout per call. Writes of the same store (a limit set or cleared, a
limit error recorded) are applied to the state at once, so the next decision sees them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, NamedTuple, TypedDict, TypeVar

from ..errors import InvalidInputError, TelemetryUnavailable
from ..models import ModelPerformanceSnapshot
from . import routing, rules, snapshot
from .commands import Batch, Cmd, Op
from .provider_ops import ProviderOps
from .providers import ProviderStatus
from .reads import Reads
from .replies import time_ms

#: Kinds of refresh: every snapshot (running totals, sketch, newest member, limit), or the
#: limits only.
PERFORMANCE = "performance"
LIMITS = "limits"
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class TierSettings:
    """How old the tier lets its data get (seconds).

    ``max_age``: performance numbers are read again once this old (default 5 s: a routing
    signal over a window of minutes moves slowly). ``limits_max_age``: subscription limits are
    read again once this old (default 1 s). ``stale_after``: while Redis does not answer, data
    up to this old is served, marked stale; older, a decision raises ``TelemetryUnavailable``
    (default 30 s). ``retry_secs``: after a refresh failed, the next is tried no sooner
    (default 1 s). ``first_read_secs``: how long a decision about a model never read yet
    waits for the read (there is nothing to serve before it; default 5 s)."""

    max_age: float = 5.0
    limits_max_age: float = 1.0
    stale_after: float = 30.0
    retry_secs: float = 1.0
    first_read_secs: float = 5.0

    def check(self) -> TierSettings:
        """These settings, or InvalidInputError naming the first one out of range."""
        for name in ("max_age", "limits_max_age", "stale_after", "retry_secs", "first_read_secs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise InvalidInputError(f"{name} must be seconds, got {value!r}")
            if not 0 < value < math.inf:
                raise InvalidInputError(f"{name} must be seconds above 0, got {value!r}")
        if self.stale_after < max(self.max_age, self.limits_max_age):
            raise InvalidInputError(
                f"stale_after ({self.stale_after}) must be at least max_age and limits_max_age"
            )
        return self


DEFAULT_TIER = TierSettings()


class Decision(NamedTuple):
    """A ranking from the tier, with how old its data is: ``age_secs`` since the read it
    comes from started (the older of the performance and the limits read), ``stale`` when
    that is past ``max_age`` or ``limits_max_age`` (Redis did not answer a refresh)."""

    ranking: routing.Ranking
    age_secs: float
    stale: bool


class Choice(NamedTuple):
    """``select_model`` from the tier: the model, and the age of the data it was chosen on."""

    model: str
    age_secs: float
    stale: bool


class Refreshed(NamedTuple):
    """What one refresh read: ``kind``, the snapshots (performance) or the limit states
    (limits: model -> (limited, expires_at)), and when the read started by the tier's clock;
    with every refresh, each model's provider status (None: nothing recorded)."""

    kind: str
    started: float
    snapshots: dict[str, ModelPerformanceSnapshot]
    limits: dict[str, tuple[bool, datetime | None]]
    providers: Mapping[str, ProviderStatus | None] = MappingProxyType({})


def with_providers(
    core: ProviderOps, op: Op[T], models: Sequence[str]
) -> Op[tuple[T, dict[str, ProviderStatus | None]]]:
    """``op``'s reading, then the providers of ``models`` (budgets, blocks, backoff): one more
    round trip once warm, off the caller's path like the rest of a refresh."""
    got = yield from op
    view = yield from core.provider_view(models)
    return got, {m: view.of(m) for m in models}


def performance_op(reads: Reads, models: Sequence[str]) -> Op[dict[str, ModelPerformanceSnapshot]]:
    """The snapshots of ``models`` (one round trip, as ``rank_models`` reads them)."""
    r = yield from reads.read(list(models), "totals")
    return {m: r.performance[m] for m in models}


def limits_op(reads: Reads, models: Sequence[str]) -> Op[dict[str, tuple[bool, datetime | None]]]:
    """Each model's limit state at the server's time: one ``PTTL`` a model, one round trip."""
    keys = reads.keys
    batch: Batch = [Cmd("time", route=keys.models)]
    replies = yield batch + [Cmd("pttl", (keys.limit(m),)) for m in models]
    now_ms = time_ms(replies[0])
    return {
        m: snapshot.limit_state(int(p), now_ms) for m, p in zip(models, replies[1:], strict=True)
    }


class TierState:
    """The tier's data and bookkeeping; every method is given the time (``clock()``), so the
    shells and the tests drive it alike."""

    def __init__(
        self, settings: TierSettings = DEFAULT_TIER, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.settings = settings.check()
        self.clock = clock
        #: every model a caller asked about: each refresh reads them all
        self.models: dict[str, None] = {}
        self.snapshots: dict[str, ModelPerformanceSnapshot] = {}
        #: each model's provider status, as the last refresh read it (see ``with_providers``)
        self.providers: dict[str, ProviderStatus | None] = {}
        #: when the data's reads started (None: never read)
        self.performance_at: float | None = None
        self.limits_at: float | None = None
        #: models asked about that no performance read has answered yet: read at once
        self._unread: set[str] = set()
        #: this store's own limit writes: model -> (block end in epoch ms, 0: cleared; when)
        self._own: dict[str, tuple[int, float]] = {}
        #: the last failed refresh: when, and why
        self.failed_at: float | None = None
        self.error: BaseException | None = None
        #: refreshes started, and those that failed (for tests and stats)
        self.refreshes = 0
        self.failures = 0
        self._version = 0
        self._rankings: dict[Hashable, tuple[int, routing.Ranking]] = {}

    # -- what callers ask ---------------------------------------------------------------------

    def want(self, models: Sequence[str]) -> bool:
        """Note ``models`` as asked about; True when one of them has never been read (the
        caller must wait for a refresh: there is nothing to serve)."""
        cold = False
        for m in models:
            if m not in self.snapshots:
                cold = True
                if m not in self.models:
                    self.models[m] = None
                    self._unread.add(m)
        return cold

    def unread(self, models: Sequence[str]) -> bool:
        """Whether one of ``models`` has no data yet."""
        return any(m not in self.snapshots for m in models)

    def age(self, now: float) -> float:
        """Seconds since the older of the reads the data comes from started (inf: none)."""
        if self.performance_at is None or self.limits_at is None:
            return math.inf
        return now - min(self.performance_at, self.limits_at)

    def stale(self, now: float) -> bool:
        """Whether the data is past its max age (a refresh is due or failed)."""
        if self.performance_at is None or self.limits_at is None:
            return True
        return (
            now - self.performance_at > self.settings.max_age
            or now - self.limits_at > self.settings.limits_max_age
        )

    def due(self, now: float) -> str | None:
        """The refresh to start now, if any: performance when its data (or a model's) is
        missing or older than ``max_age``, else limits when older than ``limits_max_age``;
        none while the breaker holds (a refresh failed less than ``retry_secs`` ago)."""
        if not self.models:
            return None
        if self.failed_at is not None and now - self.failed_at < self.settings.retry_secs:
            return None
        if (
            self._unread
            or self.performance_at is None
            or now - self.performance_at > self.settings.max_age
        ):
            return PERFORMANCE
        if self.limits_at is None or now - self.limits_at > self.settings.limits_max_age:
            return LIMITS
        return None

    def check_usable(self, now: float) -> None:
        """Raise ``TelemetryUnavailable`` when the data is older than ``stale_after``."""
        age = self.age(now)
        if age > self.settings.stale_after:
            why = f"{self.error}" if self.error is not None else "no refresh has completed"
            raise TelemetryUnavailable(
                f"the local read tier's data is {age:.1f}s old, past stale_after "
                f"({self.settings.stale_after}s): {why}"
            )

    # -- refreshes ------------------------------------------------------------------------------

    def started(self, kind: str, now: float) -> tuple[str, float, list[str]]:
        """A refresh of ``kind`` starts now: (kind, start time, the models it reads)."""
        self.refreshes += 1
        return kind, now, list(self.models)

    def done(self, got: Refreshed) -> None:
        """Apply a refresh's reading: the breaker closes, and this store's own limit writes
        made before the read started are now in Redis's answer."""
        self.failed_at = self.error = None
        self.providers.update(got.providers)
        if got.kind == PERFORMANCE:
            self.snapshots.update(got.snapshots)
            self._unread.difference_update(got.snapshots)
            self.performance_at = max(self.performance_at or got.started, got.started)
            self.limits_at = max(self.limits_at or got.started, got.started)
        else:
            for m, (limited, until) in got.limits.items():
                if (held := self.snapshots.get(m)) is not None:
                    self.snapshots[m] = _limited(held, limited, until)
            self.limits_at = max(self.limits_at or got.started, got.started)
        for m, (_, at) in list(self._own.items()):
            if at <= got.started:
                del self._own[m]
        self._version += 1

    def failed(self, error: BaseException, now: float) -> None:
        """A refresh failed: retry no sooner than ``retry_secs`` from now."""
        self.failures += 1
        self.failed_at, self.error = now, error

    # -- this store's own writes -----------------------------------------------------------------

    def own_limit(self, model: str, until_ms: int | None, now: float) -> None:
        """This store blocked ``model`` until ``until_ms`` (epoch ms; 0: lifted the block):
        decisions see it at once, until a read that started afterwards has Redis's word.
        ``None``: it recorded events of ``model``; one the tier holds without any data is
        read again before the next decision about it (so a warm-up ends at once), others at
        the next refresh."""
        if until_ms is None:
            held = self.snapshots.get(model)
            if held is not None and not held.successful_completions + held.failed_completions:
                del self.snapshots[model]
                self._unread.add(model)
            return
        self._own[model] = (until_ms, now)
        self._version += 1

    # -- decisions -------------------------------------------------------------------------------

    def decision(self, request: Request, now: float) -> Decision:
        """The ranking of the request's candidates on the data held (computed once per data
        version and request), with the data's age."""
        cached = self._rankings.get(request.key)
        if cached is not None and cached[0] == self._version:
            ranking = cached[1]
        else:
            snaps = [self._with_own(self.snapshots[m]) for m in request.models]
            ranking = routing.rank(
                snaps, request.strategy, now=datetime.now(UTC), **request.options
            )
            by_model = {m: self.providers.get(m) for m in request.models}
            ranking = routing.apply_providers(ranking, by_model)
            if len(self._rankings) > 1000:
                self._rankings.clear()
            self._rankings[request.key] = (self._version, ranking)
        return Decision(ranking, self.age(now), self.stale(now))

    def _with_own(self, snap: ModelPerformanceSnapshot) -> ModelPerformanceSnapshot:
        own = self._own.get(snap.model)
        if own is None:
            return snap
        until_ms = own[0]
        if until_ms == 0:
            return _limited(snap, False, None)
        until = snapshot.ms_to_datetime(until_ms)
        held = snap.subscription_limit_expires_at
        if snap.subscription_limit_reached and (held is None or held > until):
            return snap  # a longer block is in place
        return _limited(snap, True, until)


def _limited(
    snap: ModelPerformanceSnapshot, limited: bool, until: datetime | None
) -> ModelPerformanceSnapshot:
    """``snap`` with another limit state."""
    if snap.subscription_limit_reached == limited and snap.subscription_limit_expires_at == until:
        return snap
    return snap.model_copy(
        update={"subscription_limit_reached": limited, "subscription_limit_expires_at": until}
    )


class RankOptions(TypedDict, total=False):
    """``rank_models``'s keyword options (see ``core.routing.rank``)."""

    weights: routing.Weights | None
    max_staleness_secs: int | None
    stale_policy: routing.StalePolicy


class Request(NamedTuple):
    """A decision's question, checked once: the key its ranking is cached under, the
    candidates (checked names, first of each), the strategy and ``rank``'s options."""

    key: Hashable
    models: list[str]
    strategy: routing.Strategy
    options: dict[str, Any]


class Requests:
    """Questions already checked, by what the caller passed: a router asks the same ones."""

    def __init__(self) -> None:
        self._seen: dict[Hashable, Request] = {}

    def get(
        self,
        candidates: Sequence[str],
        strategy: routing.Strategy | str,
        given: RankOptions,
    ) -> Request:
        """The checked request (InvalidInputError as ``rank_models`` raises it)."""
        weights = given.get("weights")
        max_staleness_secs = given.get("max_staleness_secs")
        stale_policy = given.get("stale_policy", "exclude")
        if isinstance(candidates, str) or not candidates:
            raise InvalidInputError("candidates must be a non-empty list of model names")
        held = None if weights is None else tuple(weights.model_dump().values())
        key = (tuple(candidates), strategy, held, max_staleness_secs, stale_policy)
        found = self._seen.get(key)
        if found is not None:
            return found
        models = list(dict.fromkeys(rules.check_model_name(m) for m in candidates))
        if max_staleness_secs is not None:
            rules.check_u64("max_staleness_secs", max_staleness_secs)
        try:
            chosen = routing.Strategy(strategy)
        except ValueError:
            choices = ", ".join(s.value for s in routing.Strategy)
            raise InvalidInputError(
                f"unknown strategy {strategy!r}; choose one of {choices}"
            ) from None
        options = {
            "weights": weights,
            "max_staleness_secs": max_staleness_secs,
            "stale_policy": stale_policy,
        }
        found = Request(key, models, chosen, options)
        if len(self._seen) > 1000:
            self._seen.clear()
        self._seen[key] = found
        return found
