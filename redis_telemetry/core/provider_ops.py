"""The provider operations of a store, as I/O-free generators (see ``ops``): budgets, blocks,
backoff and aliases, and the provider exclusions and penalty that routing applies.

A read of providers is one round trip in the steady state: the server's time, the alias
table, the registries (providers with settings, models that spent) and, for every model this
store saw spend before, its ``spend`` hash (a ranking leaves its candidates' to their
snapshots: ``snapshot.lua`` returns it); a model that began spending since costs one more
round trip, once. Writes go through ``lua/provider.lua`` (one provider's hash) and
``lua/register.lua`` (the registries).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from ..errors import InvalidInputError
from ..models import CompletionEvent
from . import providers as pv
from . import routing, rules, scripts
from .commands import Batch, Cmd, Eval, Op, together
from .keys import Keys
from .reads import Reads
from .replies import time_ms

log = logging.getLogger(__name__)

#: The most models a provider read keeps remembering as spenders.
_REMEMBERED = 10_000


class _Parts(NamedTuple):
    """What the first round trip of a provider read found (see ``_provider_parts``)."""

    now_ms: int
    aliases: dict[str, str]
    names: set[str]
    of: dict[str, str]
    spenders: list[str]
    spend_raw: dict[str, Any]
    settings: dict[str, Any]


class ProviderView(NamedTuple):
    """What one provider read found, at the server's time ``now_ms``."""

    now_ms: int
    aliases: dict[str, str]
    status: dict[str, pv.ProviderStatus]

    def of(self, model: str) -> pv.ProviderStatus | None:
        """The status of ``model``'s provider (None: it has nothing recorded)."""
        return self.status.get(pv.provider_of(model, self.aliases))


def _names(flat: Any, key: str) -> list[str]:
    """A sorted set's members; a key of another type (written by hand) reads as empty, logged."""
    if not isinstance(flat, list):
        _skipped(flat, key)
        return []
    return [m.decode("utf-8", "replace") if isinstance(m, bytes) else str(m) for m in flat]


def _hash(reply: Any, key: str) -> dict[str, str]:
    """A hash's fields; a key of another type (written by hand) reads as empty, logged."""
    if isinstance(reply, BaseException):
        _skipped(reply, key)
    return pv.settings_of(reply)


def _skipped(reply: Any, key: str) -> None:
    if reply is not None:
        log.warning("skipped %s: %s", key, reply)


class ProviderOps(Reads):
    """Provider operations, added to :class:`~.ops.StoreCore` (whose ``_write`` they use)."""

    keys: Keys
    _write: Callable[[Batch, int], Op[list[Any]]]
    _now_ms: Callable[[], int]
    #: models seen in the spenders registry: their spend rides in a read's first round trip
    _spenders_seen: dict[str, None]
    #: providers read before, and the aliases last read: a read guesses its providers with them
    _providers_seen: dict[str, None]
    _aliases_seen: dict[str, str]
    #: model -> the latest UTC day (days since the epoch) this store listed it as a spender
    _spending: dict[str, int]

    def _init_providers(self) -> None:
        self._spenders_seen = {}
        self._providers_seen = {}
        self._aliases_seen = {}
        self._spending = {}

    # -- the spend registry, kept by writes --------------------------------------------------

    def spender_entries(self, groups: Mapping[str, Sequence[Any]]) -> list[tuple[str, int, int]]:
        """Registry entries (model, keep_until_ms, 0) for the models whose costly events in
        ``groups`` (model -> PreparedEvent list) fall on a later UTC day than this store
        listed them for; most writes have none."""
        entries = []
        for model, group in groups.items():
            days = [p.score_ms // pv.DAY_MS for p in group if p.sums[scripts._COST]]
            if days and max(days) > self._spending.get(model, -1):
                entries.append((model, (max(days) + 1) * pv.DAY_MS, 0))
        return entries

    def spender_call(self, entries: Sequence[tuple[str, int, int]]) -> Eval:
        """The registry call for ``entries`` (see :meth:`spender_entries`)."""
        return register_eval(self.keys.spenders, entries)

    def spenders_listed(self, entries: Iterable[tuple[str, int, int]]) -> None:
        """Remember that the registry lists ``entries`` (after the write succeeded)."""
        if len(self._spending) >= _REMEMBERED:
            self._spending.clear()
        for model, keep_until, _ in entries:
            day = keep_until // pv.DAY_MS - 1
            self._spending[model] = max(self._spending.get(model, -1), day)

    def spends_new_day(self, model: str, score_ms: int, cost: int) -> bool:
        """Whether a single event must list its model as a spender first."""
        return bool(cost) and self._spending.get(model, -1) < score_ms // pv.DAY_MS

    # -- reads -------------------------------------------------------------------------------

    def provider_view(self, wanted: Iterable[str] | None = None) -> Op[ProviderView]:
        """Read the providers of ``wanted`` models (None: every provider the namespace knows:
        with settings, with spend today, or with models in the window). One round trip when
        the aliases, spenders and providers are those this store read before; a second one for
        what changed."""
        parts = yield from self._provider_parts(wanted)
        return (yield from self._finish(parts, {}))

    def _provider_parts(
        self, wanted: Iterable[str] | None, spend_elsewhere: bool = False
    ) -> Op[_Parts]:
        """The first round trip of :meth:`provider_view`; with ``spend_elsewhere``, the
        ``wanted`` models' spend is left to their snapshots (``snapshot.lua`` reads it)."""
        wanted = None if wanted is None else list(wanted)
        elsewhere = set(wanted or ()) if spend_elsewhere else set()
        seen = [m for m in self._spenders_seen if m not in elsewhere]
        if wanted is None:
            guessed = list(self._providers_seen)
        else:
            guessed = sorted({pv.provider_of(m, self._aliases_seen) for m in wanted})
        guessed = [p for p in guessed if _usable_provider(p)]
        first: Batch = [
            Cmd("time", route=self.keys.aliases),
            Cmd("hgetall", (self.keys.aliases,), tolerant=True),
            Cmd("zrange", (self.keys.spenders, 0, -1), tolerant=True),
            Cmd("zrange", (self.keys.providers, 0, -1), tolerant=True),
        ]
        if wanted is None:
            first.append(Cmd("zrange", (self.keys.models, 0, -1), tolerant=True))
        at = len(first)
        first += [Cmd("hgetall", (self.keys.spend(m),), tolerant=True) for m in seen]
        first += [Cmd("hgetall", (self.keys.provider(p),), tolerant=True) for p in guessed]
        replies = yield first
        now_ms = time_ms(replies[0])
        aliases = _hash(replies[1], self.keys.aliases)
        spenders = _names(replies[2], self.keys.spenders)
        listed = _names(replies[3], self.keys.providers)
        models = _names(replies[4], self.keys.models) if wanted is None else list(wanted)
        spend_raw = dict(zip(seen, replies[at : at + len(seen)], strict=True))
        settings = dict(zip(guessed, replies[at + len(seen) :], strict=True))
        of = {m: pv.provider_of(m, aliases) for m in {*spenders, *models}}
        names = (
            {*listed, *of.values()}
            if wanted is None
            else {pv.provider_of(m, aliases) for m in wanted}
        )
        names = {p for p in names if _usable_provider(p)}
        self._remember(spenders, names, aliases)
        return _Parts(now_ms, aliases, names, of, spenders, spend_raw, settings)

    def _finish(
        self, parts: _Parts, given: Mapping[str, Mapping[bytes, bytes]]
    ) -> Op[ProviderView]:
        """The providers' statuses from ``parts``, with the spend of the models in ``given``
        (their snapshots read it), reading in one more round trip what neither holds."""
        now_ms, aliases, names, of, spenders, spend_raw, settings = parts
        missing = [m for m in spenders if m not in spend_raw and m not in given and of[m] in names]
        unread = sorted(names - settings.keys())
        if missing or unread:
            second: Batch = [
                Cmd("hgetall", (self.keys.provider(p),), tolerant=True) for p in unread
            ]
            second += [Cmd("hgetall", (self.keys.spend(m),), tolerant=True) for m in missing]
            more = yield second
            settings.update(zip(unread, more[: len(unread)], strict=True))
            spend_raw.update(zip(missing, more[len(unread) :], strict=True))
        status: dict[str, pv.ProviderStatus] = {}
        for p in sorted(names):
            members = sorted(m for m, q in of.items() if q == p)
            hour = day = 0
            for m in members:
                if m in spenders:
                    if m in given:
                        fields = pv.settings_of(given[m])
                    else:
                        fields = _hash(spend_raw.get(m), self.keys.spend(m))
                    h, d = pv.spend_in(fields, now_ms)
                    hour, day = hour + h, day + d
            held = _hash(settings[p], self.keys.provider(p))
            status[p] = pv.status(p, members, held, (hour, day), now_ms)
        return ProviderView(now_ms, aliases, status)

    def _remember(self, spenders: list[str], names: set[str], aliases: dict[str, str]) -> None:
        """What the next read sends in its first round trip (bounded)."""
        for memory in (self._spenders_seen, self._providers_seen):
            if len(memory) >= _REMEMBERED:
                memory.clear()
        self._spenders_seen.update(dict.fromkeys(spenders))
        self._providers_seen.update(dict.fromkeys(sorted(names)))
        self._aliases_seen = aliases

    def provider_of(self, model: str) -> Op[str]:
        """``model``'s provider, with the namespace's aliases."""
        model = rules.check_model_name(model)
        (aliases,) = yield [Cmd("hgetall", (self.keys.aliases,), tolerant=True)]
        return pv.provider_of(model, _hash(aliases, self.keys.aliases))

    def providers(self) -> Op[list[pv.ProviderStatus]]:
        """Every provider the namespace knows, sorted."""
        view = yield from self.provider_view(None)
        return list(view.status.values())

    def provider_status(self, provider: str) -> Op[pv.ProviderStatus]:
        """One provider's whole state."""
        provider = pv.check_provider(provider)
        view = yield from self._view_of(provider)
        return view.status[provider]

    def _view_of(self, provider: str) -> Op[ProviderView]:
        """A read that covers ``provider`` and all its models."""
        view = yield from self.provider_view(None)
        if provider not in view.status:
            settings: Mapping[str, str] = {}
            status = pv.status(provider, [], settings, (0, 0), view.now_ms)
            view.status[provider] = status
        return view

    def budget(self, provider: str) -> Op[pv.ProviderBudget]:
        """``provider``'s spend, caps and verdict now."""
        return (yield from self.provider_status(provider)).budget

    def provider_blocked_until(self, provider: str) -> Op[datetime | None]:
        """When ``provider``'s block or backoff ends (None: not blocked)."""
        return (yield from self.provider_status(provider)).blocked_until

    # -- writes ------------------------------------------------------------------------------

    def _provider_write(self, provider: str, verb: str, *args: Any) -> Op[list[Any]]:
        provider = pv.check_provider(provider)
        batch: Batch = [
            register_eval(self.keys.providers, [(provider, 0, pv.SETTINGS_TTL_MS)]),
            scripts.provider_call(self.keys, provider, verb, *args),
        ]
        results = yield from self._write(batch, 0)
        return [int(x) for x in results[1]]

    def set_budget(
        self, provider: str, *, hour_usd: float | None = None, day_usd: float | None = None
    ) -> Op[None]:
        """Set (None: remove) ``provider``'s caps for the UTC hour and day, in USD."""
        hour = pv.usd_to_nusd("hour_usd", hour_usd)
        day = pv.usd_to_nusd("day_usd", day_usd)
        args = ("" if hour is None else hour, "" if day is None else day)
        yield from self._provider_write(provider, "caps", *args)

    def exhaust(self, provider: str) -> Op[None]:
        """Force ``provider`` exhausted until the current UTC hour and day roll (the day, for a
        provider with a day cap or no cap), whatever its spend."""
        yield from self._provider_write(provider, "exhaust")

    def block_provider(
        self, provider: str, reason: str = "manual", until: datetime | None = None
    ) -> Op[datetime | None]:
        """Block every model of ``provider`` until ``until`` (timezone-aware), else until the
        reset time ``reason`` names (:func:`pv.reset_time`), else for
        :data:`pv.DEFAULT_BLOCK_SECS`. A block already in place that ends later is
        kept. Returns when the provider's block ends (None: an ``until`` already past)."""
        reason = rules.check_reason(reason)
        if until is not None:
            until_ms = rules.ms_floor(rules.epoch_us(rules.check_aware("until", until)))
            if until_ms - self._now_ms() > rules.TEN_YEARS_SECS * 1000:
                raise InvalidInputError(f"until must be at most ten years away, got {until}")
            got = yield from self._provider_write(provider, "block", until_ms, reason)
        else:
            (now,) = yield [Cmd("time", route=self.keys.aliases)]
            now_dt = rules.from_epoch_us(time_ms(now) * 1000)
            found = pv.reset_time(reason, now_dt)
            if found is None:
                found = now_dt + timedelta(seconds=pv.DEFAULT_BLOCK_SECS)
            got = yield from self._provider_write(
                provider, "block", rules.ms_floor(rules.epoch_us(found)), reason
            )
        return _at(got[1], got[0])

    def unblock_provider(self, provider: str) -> Op[None]:
        """End ``provider``'s block and backoff (the backoff level goes back to 0)."""
        yield from self._provider_write(provider, "unblock")

    def provider_throttled(self, provider: str) -> Op[datetime]:
        """A 429 without a reset hint: escalate ``provider``'s backoff (60, 120, 240, 480,
        then 600 s), shared by every replica. Returns when the backoff ends."""
        got = yield from self._provider_write(provider, "throttle")
        end = _at(got[3], got[0])
        assert end is not None
        return end

    def provider_succeeded(self, provider: str) -> Op[None]:
        """A success: end ``provider``'s backoff and reset its level."""
        yield from self._provider_write(provider, "success")

    def provider_failed(
        self, provider: str, text: str, signatures: pv.ErrorSignatures | None = None
    ) -> Op[pv.FailureKind]:
        """Feed a provider's failure ``text``: the provider's own ``signatures`` first (a
        ``throttle`` exhausts it, a ``flake`` changes nothing), then the built-in rules: a
        reset time or a quota text blocks the provider, a 429 without one backs it off (see
        :func:`pv.classify`). Returns what it did."""
        provider = pv.check_provider(provider)
        own = signatures.kind(text) if signatures is not None else None
        if own == "throttle":
            yield from self.exhaust(provider)
            return own
        if own == "flake":
            return own
        (now,) = yield [Cmd("time", route=self.keys.aliases)]
        kind, until = pv.classify(text, rules.from_epoch_us(time_ms(now) * 1000))
        if kind == "backoff":
            yield from self.provider_throttled(provider)
        elif kind == "block" and until is not None:
            reason = rules.check_reason(text[:200] or "limit")
            yield from self.block_provider(provider, reason, until)
        return kind

    def provider_feedback(self, events: Iterable[CompletionEvent]) -> Op[int]:
        """Feed the providers from stored ``events`` (see :func:`pv.signals`): a success ends
        its provider's backoff, each 429 without a reset escalates it, a quota or reset text
        that names the account blocks the provider. Successes and 429s older than the longest
        backoff (by the server's clock) are history and change nothing; a block is kept until
        the end it names, counted from the event. Returns the provider writes sent."""
        found = pv.signals(events)
        if not found:
            return 0
        held, now = yield [
            Cmd("hgetall", (self.keys.aliases,), tolerant=True),
            Cmd("time", route=self.keys.aliases),
        ]
        aliases, now_ms = _hash(held, self.keys.aliases), time_ms(now)
        recent = now_ms - pv.BACKOFF_MAX_SECS * 1000
        writes: list[tuple[str, str, tuple[Any, ...]]] = []
        throttled: set[str] = set()
        for s in found:
            provider = pv.provider_of(s.model, aliases)
            at_ms = rules.ms_floor(rules.epoch_us(s.at))
            if not _usable_provider(provider):
                continue
            if s.kind == "block" and s.until is not None:
                until_ms = rules.ms_floor(rules.epoch_us(s.until))
                if until_ms > now_ms:
                    writes.append(
                        (provider, "block", (until_ms, rules.check_reason(s.reason[:200])))
                    )
            elif at_ms >= recent and s.kind == "throttle":
                writes.append((provider, "throttle", ()))
                throttled.add(provider)
            elif at_ms >= recent and s.kind == "success" and provider not in throttled:
                writes.append((provider, "success", ()))
        # one success a provider is enough; throttles and blocks each count
        seen: set[str] = set()
        batch: Batch = []
        for provider, verb, args in writes:
            if verb == "success":
                if provider in seen or provider in throttled:
                    continue
                seen.add(provider)
            else:
                batch.append(
                    register_eval(self.keys.providers, [(provider, 0, pv.SETTINGS_TTL_MS)])
                )
            batch.append(scripts.provider_call(self.keys, provider, verb, *args))
        if batch:
            yield from self._write(batch, 0)
        return sum(1 for c in batch if isinstance(c, Eval) and c.script == "provider")

    def block_provider_of(
        self, model: str, reason: str, until: datetime | None = None
    ) -> Op[datetime | None]:
        """A subscription limit on ``model``: its provider is blocked too when ``reason`` names
        the account (not Claude's per-model ``seven_day_opus`` / ``seven_day_sonnet``): until
        ``until``, else as :func:`pv.classify` reads ``reason`` (a 429 without a reset backs
        the provider off instead; anything else blocks it for ``DEFAULT_BLOCK_SECS``).
        Returns when the provider's block or backoff ends (None: nothing changed)."""
        model = rules.check_model_name(model)
        reason = rules.check_reason(reason)
        if not pv.account_wide(reason):
            return None
        provider = yield from self.provider_of(model)
        if not _usable_provider(provider):
            return None
        if until is None:
            (now,) = yield [Cmd("time", route=self.keys.aliases)]
            kind, until = pv.classify(reason, rules.from_epoch_us(time_ms(now) * 1000))
            if kind == "backoff":
                return (yield from self.provider_throttled(provider))
        return (yield from self.block_provider(provider, reason[:200], until))

    def set_alias(self, provider: str, into: str | None) -> Op[None]:
        """Fold ``provider`` into ``into`` for every replica (None: remove the alias)."""
        provider = pv.check_provider(provider)
        key = self.keys.aliases
        if into is None:
            yield from self._write([Cmd("hdel", (key, provider))], 0)
            return
        into = pv.check_provider(into)
        if into == provider:
            raise InvalidInputError(f"provider {provider!r} cannot be an alias of itself")
        (held,) = yield [Cmd("hgetall", (key,), tolerant=True)]
        aliases = _hash(held, self.keys.aliases)
        if into in aliases:
            raise InvalidInputError(f"{into!r} is itself an alias of {aliases[into]!r}: one hop")
        if provider not in aliases and len(aliases) >= pv.MAX_ALIASES:
            raise InvalidInputError(f"a namespace holds at most {pv.MAX_ALIASES} aliases")
        ttl = pv.SETTINGS_TTL_MS
        batch: Batch = [
            Cmd("hset", (key, provider, into)),
            Cmd("pexpire", (key, ttl), {"nx": True}),
            Cmd("pexpire", (key, ttl), {"gt": True}),
        ]
        yield from self._write(batch, 0)

    def aliases(self) -> Op[dict[str, str]]:
        """The namespace's alias table: provider -> the provider it is folded into."""
        (held,) = yield [Cmd("hgetall", (self.keys.aliases,), tolerant=True)]
        return _hash(held, self.keys.aliases)

    # -- routing -----------------------------------------------------------------------------

    def rank_models(
        self,
        candidates: Sequence[str],
        strategy: routing.Strategy | str = routing.Strategy.FASTEST,
        *,
        weights: routing.Weights | None = None,
        max_staleness_secs: int | None = None,
        stale_policy: routing.StalePolicy = "exclude",
    ) -> Op[routing.Ranking]:
        """:meth:`Reads.rank_models`, then the providers' verdicts: an exhausted or blocked
        provider's models leave the ranking, a nearly exhausted one's weighted score is
        multiplied by :data:`pv.NEAR_EXHAUSTION_PENALTY`."""
        ranked = self._ranked(
            candidates,
            strategy,
            weights=weights,
            max_staleness_secs=max_staleness_secs,
            stale_policy=stale_policy,
        )
        # the providers are read beside the snapshots (one round trip once warm), and the
        # candidates' spend with the snapshots themselves; the ranking's own read checks the
        # candidates first
        (ranking, reading), parts = yield from together(
            ranked, self._provider_parts(candidates, spend_elsewhere=True)
        )
        view = yield from self._finish(parts, reading.spend)
        models = [r.model for r in ranking.ranked] + ranking.unknown
        if not models:
            return ranking
        return routing.apply_providers(ranking, {m: view.of(m) for m in models})


def register_eval(key: str, entries: Sequence[tuple[str, int, int]]) -> Eval:
    """A ``register.lua`` call on another registry than the models' (same contract)."""
    args: list[Any] = [scripts.GRACE_MS]
    for name, keep_until_ms, keep_for_ms in entries:
        args += (name, keep_until_ms, keep_for_ms)
    return Eval("register", (key,), tuple(args))


def _usable_provider(name: str) -> bool:
    try:
        pv.check_provider(name)
    except InvalidInputError:
        return False
    return True


def _at(ms: int, now_ms: int) -> datetime | None:
    return rules.from_epoch_us(ms * 1000) if ms > now_ms else None
