"""Providers: the rule that names a model's provider, budgets, blocks and 429 backoff (no I/O).

The rules follow the orchestrator this package grew from (``provider_budget.rs``,
``rate_limiter.rs`` and ``parse_reset_time``), kept in Redis so that every replica shares them:

- **Provider of a model**: the part before the first ``/`` (``anthropic/claude-sonnet-4-5`` is
  ``anthropic``); a bare ``sonnet``, ``opus``, ``haiku`` or ``anthropic`` is ``claude-code``;
  any other bare name is its own provider. Then the namespace's alias table (one hop) may fold
  a provider into another (``anthropic`` -> ``claude-code`` is one alias away).
- **Spend** counts each stored event's ``cost_usd`` once, in the UTC hour and the UTC day of
  its completion (``record.lua`` adds it atomically with the insertion, in nano-USD, to the
  model's ``spend`` hash); a provider's spend is the sum over its models, read at the hour
  and day of the server's clock.
- **Verdict**: ``uncapped`` without caps; ``exhausted`` at or past a cap (a cap of 0 is always
  exhausted); ``near_exhaustion`` at :data:`NEAR_EXHAUSTION` of a cap or more; else ``ok``.
  The worse of the hour and the day wins. :func:`verdict` also honours a forced exhaustion
  (``exhaust()``): it holds until the forced window rolls.
- **Blocks**: until a reset time read from the provider's text (:func:`reset_time`), or
  :data:`DEFAULT_BLOCK_SECS` when the text gives none.
- **Backoff**: each 429 without a reset hint escalates 60 -> 120 -> 240 -> 480 -> 600 s
  (:func:`backoff_secs`); a success ends it and resets the level.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel

from ..errors import InvalidInputError
from ..models import CompletionEvent
from . import limits, rules

#: Bare model names that belong to the ``claude-code`` subscription (upstream's rule).
CLAUDE_CODE = "claude-code"
BARE_CLAUDE_CODE = frozenset({"sonnet", "opus", "haiku", "anthropic"})
#: Share of a cap at which a provider is near exhaustion, and the weighted score's penalty then.
NEAR_EXHAUSTION = 0.8
NEAR_EXHAUSTION_PENALTY = 0.6
#: How long a quota or usage-limit text without a reset time blocks its provider.
DEFAULT_BLOCK_SECS = 900
#: How long a "resets ..." text whose time cannot be read blocks (upstream's fallback).
UNREAD_RESET_SECS = 3600
#: 429 backoff: the first step, the cap, and the level at which the cap is reached.
BACKOFF_BASE_SECS = 60
BACKOFF_MAX_SECS = 600
BACKOFF_MAX_LEVEL = 5
#: The block reason a running 429 backoff gives.
BACKOFF = "429 backoff"
#: How long a provider's settings (caps, aliases, blocks, backoff level) live after their last
#: change: renewed by every change, never shortened.
SETTINGS_TTL_MS = 400 * 86_400_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000
NANO = 1_000_000_000
#: The most aliases a namespace holds (they are read by every routing decision).
MAX_ALIASES = 1000

Verdict = Literal["uncapped", "ok", "near_exhaustion", "exhausted"]
_RANK: dict[str, int] = {"uncapped": 0, "ok": 1, "near_exhaustion": 2, "exhausted": 3}


def check_provider(value: object) -> str:
    """A provider name: a model name without ``/``."""
    name = rules.check_model_name(value)
    if "/" in name:
        raise InvalidInputError(f"provider {name!r} must not contain '/'")
    return name


def raw_provider(model: str) -> str:
    """The provider a model's name gives, before aliases (upstream's rule)."""
    head, slash, _ = model.partition("/")
    if slash:
        return head
    return CLAUDE_CODE if model in BARE_CLAUDE_CODE else model


def provider_of(model: str, aliases: Mapping[str, str]) -> str:
    """A model's provider: :func:`raw_provider`, then one hop through ``aliases``."""
    raw = raw_provider(model)
    return aliases.get(raw, raw)


def usd_to_nusd(name: str, value: object) -> int | None:
    """A cap in USD (None: uncapped) as nano-USD; a clear error for anything else."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInputError(f"{name} must be a number of USD or None, got {value!r}")
    if not math.isfinite(value) or value < 0 or value > 1e9:
        raise InvalidInputError(f"{name} must be between 0 and 1e9 USD, got {value!r}")
    return round(value * NANO)


def window_verdict(spend_nusd: int, cap_nusd: int | None) -> Verdict:
    """One window's verdict (integers: no rounding at the thresholds)."""
    if cap_nusd is None:
        return "uncapped"
    if spend_nusd >= cap_nusd:
        return "exhausted"
    if spend_nusd * 5 >= cap_nusd * 4:  # NEAR_EXHAUSTION, exactly
        return "near_exhaustion"
    return "ok"


def worse(a: Verdict, b: Verdict) -> Verdict:
    """The more urgent of two verdicts."""
    return a if _RANK[a] >= _RANK[b] else b


class ProviderBudget(BaseModel):
    """A provider's spend in the current UTC hour and day (by the server's clock), its caps
    (None: uncapped) and the verdict that routing reads."""

    provider: str
    hour_spend_usd: float
    day_spend_usd: float
    hour_cap_usd: float | None
    day_cap_usd: float | None
    verdict: Verdict
    #: True while ``exhaust()`` forces the verdict (until the forced windows roll)
    forced: bool = False


class ProviderStatus(BaseModel):
    """Everything the namespace keeps about one provider."""

    provider: str
    models: list[str]
    budget: ProviderBudget
    #: when routing may use the provider again (a block or a backoff); None: not blocked
    blocked_until: datetime | None
    block_reason: str | None
    #: consecutive 429s (0 after a success), and when the running backoff ends
    backoff_level: int
    backoff_until: datetime | None


def _int(raw: Mapping[str, str], name: str) -> int | None:
    value = raw.get(name)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def hour_of(ms: int) -> int:
    """The UTC hour index (hours since the epoch) of epoch ``ms``."""
    return ms // HOUR_MS


def spend_in(fields: Mapping[str, str], now_ms: int) -> tuple[int, int]:
    """(hour, day) spend in nano-USD that one model's ``spend`` hash holds for the hour and
    day of ``now_ms``; a corrupt field counts nothing."""
    hour = _int(fields, f"h:{now_ms // HOUR_MS}") or 0
    day = _int(fields, f"d:{now_ms // DAY_MS}") or 0
    return max(0, hour), max(0, day)


def budget(
    provider: str, settings: Mapping[str, str], spend: tuple[int, int], now_ms: int
) -> ProviderBudget:
    """The budget of ``provider`` from its settings hash and its models' summed spend."""
    hour, day = spend
    hour_cap, day_cap = _int(settings, "hour_cap"), _int(settings, "day_cap")
    v = worse(window_verdict(hour, hour_cap), window_verdict(day, day_cap))
    # exhaust(): a forced window counts while it is current, capped or not
    forced_hour = _int(settings, "xh") == now_ms // HOUR_MS
    forced_day = _int(settings, "xd") == now_ms // DAY_MS
    uncapped = hour_cap is None and day_cap is None
    forced = (forced_hour and (hour_cap is not None or uncapped)) or (
        forced_day and (day_cap is not None or uncapped)
    )
    return ProviderBudget(
        provider=provider,
        hour_spend_usd=hour / NANO,
        day_spend_usd=day / NANO,
        hour_cap_usd=None if hour_cap is None else hour_cap / NANO,
        day_cap_usd=None if day_cap is None else day_cap / NANO,
        verdict="exhausted" if forced else v,
        forced=forced,
    )


def status(
    provider: str,
    models: Sequence[str],
    settings: Mapping[str, str],
    spend: tuple[int, int],
    now_ms: int,
) -> ProviderStatus:
    """A provider's whole state at ``now_ms`` (the server's clock)."""
    block = _int(settings, "block_until") or 0
    backoff = _int(settings, "backoff_until") or 0
    ends = max(block, backoff)
    reason = None  # the reason of the block that ends last
    if ends > now_ms:
        reason = settings.get("block_reason") or "blocked" if block >= backoff else BACKOFF
    return ProviderStatus(
        provider=provider,
        models=sorted(models),
        budget=budget(provider, settings, spend, now_ms),
        blocked_until=_when(ends) if ends > now_ms else None,
        block_reason=reason,
        backoff_level=_int(settings, "backoff_level") or 0,
        backoff_until=_when(backoff) if backoff > now_ms else None,
    )


def _when(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def backoff_secs(level: int) -> int:
    """The backoff the ``level``-th consecutive 429 starts: 60, 120, 240, 480, then 600 s."""
    level = max(1, min(level, BACKOFF_MAX_LEVEL))
    return int(min(BACKOFF_BASE_SECS * 2 ** (level - 1), BACKOFF_MAX_SECS))


# -- reset times (upstream's forms, after the ingest rules') --------------------------------

_RESETS_IN = re.compile(
    r"\bresets in\s+(?P<n>\d{1,6})\s*(?P<unit>hours?|hrs?|h|minutes?|mins?|m)\b", re.IGNORECASE
)
_RESETS_AT_UTC = re.compile(r"\bresets at\s+(?P<h>\d{1,2}):(?P<m>\d{2})\s*UTC\b\.?", re.IGNORECASE)
_RESETS_ANY = re.compile(r"\bresets\s", re.IGNORECASE)


def reset_time(text: str, now: datetime) -> datetime | None:
    """When the limit a provider's ``text`` names resets, or None when it names no reset.

    The ingest rules' forms first (``core.limits``: "resets 4pm (Europe/Berlin)", "retry after
    30s", ...), then upstream's: "resets in 2 hours" / "resets in 30m", "resets at 14:00 UTC"
    (its next occurrence), and any other "resets ..." as an hour from ``now``."""
    found = limits.reset_from_text(text, now)
    if found is not None:
        return found
    if m := _RESETS_IN.search(text):
        per = 3600 if m.group("unit").lower().startswith("h") else 60
        return now + timedelta(seconds=int(m.group("n")) * per)
    if m := _RESETS_AT_UTC.search(text):
        hour, minute = int(m.group("h")), int(m.group("m"))
        if hour < 24 and minute < 60:
            at = now.astimezone(UTC).replace(hour=hour, minute=minute, second=0, microsecond=0)
            return at if at > now else at + timedelta(days=1)
    if _RESETS_ANY.search(text):
        return now + timedelta(seconds=UNREAD_RESET_SECS)
    return None


FailureKind = Literal["block", "backoff", "throttle", "flake", "none"]


class ErrorSignatures(BaseModel):
    """A provider's own error texts, as regular expressions (matched case-insensitively, as
    the reference's ``error_signatures.rs``): a ``throttle`` match exhausts the provider until
    its windows roll (its quota is spent even if its bill has not arrived), a ``flake`` match
    changes nothing (retry elsewhere). Checked before the built-in rules, throttle first."""

    throttle: list[str] = []
    flake: list[str] = []

    def model_post_init(self, _: Any) -> None:
        for kind in ("throttle", "flake"):
            for pattern in getattr(self, kind):
                try:
                    re.compile(pattern)
                except re.error as exc:
                    raise InvalidInputError(
                        f"invalid {kind} error signature {pattern!r}: {exc}"
                    ) from None

    def kind(self, text: str) -> Literal["throttle", "flake"] | None:
        """``throttle``, ``flake`` or None for ``text``."""
        for kind in ("throttle", "flake"):
            if any(re.search(p, text, re.IGNORECASE) for p in getattr(self, kind)):
                return "throttle" if kind == "throttle" else "flake"
        return None


def classify(text: str, now: datetime) -> tuple[FailureKind, datetime | None]:
    """What a provider's failure ``text`` does to the provider: ``block`` until a reset time
    (read from the text, else :data:`DEFAULT_BLOCK_SECS` for a quota or usage-limit text),
    ``backoff`` for a 429 or rate-limit text without a reset, or ``none``."""
    if not limits.is_limit_text(text):  # the ingest rules: "429" alone is no limit
        return "none", None
    if _NO_RETRY_TIME in text:  # a 429 the LiteLLM logger stated its own cooldown for
        return "backoff", None
    until = reset_time(text, now)
    if until is not None:
        return "block", until
    if _THROTTLE.search(text):
        return "backoff", None
    return "block", now + timedelta(seconds=DEFAULT_BLOCK_SECS)


#: How ``limits.answer_429`` states a 429 that gave no retry time (its cooldown is the
#: logger's, not the provider's).
_NO_RETRY_TIME = f"({limits.HTTP_429}; no retry time given"
_THROTTLE = re.compile(
    r"(?<![\w.])429(?!\w|\.\d)|too many requests|rate[ _-]?limit(?:ed|_error)?\b", re.IGNORECASE
)

#: Claude's per-model weekly limits: they block the models they name, not the provider.
PER_MODEL_LIMITS = {"seven_day_opus": "opus", "seven_day_sonnet": "sonnet"}


def account_wide(reason: str) -> bool:
    """Whether a subscription-limit ``reason`` names the account (so the whole provider is
    blocked) rather than one model family (Claude's ``seven_day_opus`` / ``seven_day_sonnet``)."""
    lowered = reason.lower()
    return not any(kind in lowered for kind in PER_MODEL_LIMITS)


def settings_of(raw: Mapping[Any, Any] | None) -> dict[str, str]:
    """A hash reply (bytes or text) as text; a wrong-typed reply reads as empty."""
    if not isinstance(raw, Mapping):
        return {}
    out: dict[str, str] = {}
    for k, v in raw.items():
        key = k.decode("utf-8", "replace") if isinstance(k, bytes) else str(k)
        out[key] = v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
    return out


class Signal(NamedTuple):
    """What one event says of its provider: ``success``, ``throttle`` (a 429 without a reset)
    or ``block`` (until ``until``); ``at`` is its completion, ``reason`` its error text."""

    model: str
    kind: Literal["success", "throttle", "block"]
    at: datetime
    until: datetime | None = None
    reason: str = ""


def signals(events: Iterable[CompletionEvent]) -> list[Signal]:
    """The provider signals of ``events`` (upstream's rules, read at each event's completion):
    a success; a 429 without a reset backs off; a limit with a reset time, or a quota text,
    blocks the provider when it names the account (:func:`account_wide`)."""
    out: list[Signal] = []
    for e in events:
        if e.success:
            out.append(Signal(e.model, "success", e.completed_at))
            continue
        text = e.error or ""
        if text.startswith(limits.NOT_AN_API_ERROR):
            continue  # a tool's failure, not the provider's
        kind, until = classify(text, e.completed_at)
        if kind == "backoff":
            out.append(Signal(e.model, "throttle", e.completed_at, reason=text))
        elif kind == "block" and account_wide(text):
            out.append(Signal(e.model, "block", e.completed_at, until, text))
    return out
