"""The msgpack member format of one stored event, and its write-time preparation.

A member is a msgpack array::

    [1, event_id, session_id, completed_at_us, latency_ms, success,
     total, input, output, reasoning, cache_read, cache_write, cost_usd, error]

``latency_ms`` is nil when the latency was not measured.

The model is not repeated: the key names it. ``1`` is the format version.
"""

from __future__ import annotations

import itertools
import math
import operator
import os
import threading
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import msgpack

from ..errors import InvalidInputError, TelemetryError
from ..models import CompletionEvent, TokenBreakdown
from . import limits, rules, totals

FORMAT_VERSION = 1
#: The running totals ``record.lua`` keeps per model (see ``totals``).
TOTALS_FIELDS = totals.FIELDS
_FIELDS = 14
#: The limit key's value is informational (the TTL is what counts); keep it short.
MAX_LIMIT_REASON = 200


class StoredEvent(NamedTuple):
    """One decoded member."""

    event_id: str
    session_id: str
    completed_at_us: int
    latency_ms: int | None
    success: bool
    total: int
    input: int
    output: int
    reasoning: int
    cache_read: int
    cache_write: int
    cost_usd: float
    error: str | None


class PreparedEvent(NamedTuple):
    """An event checked and encoded, ready for ``record.lua``. (``ops`` reads batches of them
    column by column, by position.)"""

    model: str
    score_ms: int
    member: bytes
    limit_reason: str
    #: When the block that ``limit_reason`` starts ends, in epoch ms; 0: the store's TTL.
    limit_until_ms: int
    #: What the event adds to the model's running totals, in ``totals.FIELDS`` order.
    sums: tuple[int, ...]
    #: The session it counts for in the session index.
    session: str
    #: Its id: the model stores one event per id.
    event_id: str


#: ``PreparedEvent(...)`` without the keyword handling: twice as fast, and prepare() is hot
_new_prepared = tuple.__new__


class CorruptMember(TelemetryError, ValueError):
    """A member that is not a valid stored event (readers skip it and log why)."""


class _Ids(threading.local):
    """Event ids: a random 64-bit prefix per process and thread, then a counter.

    As unique as a UUID4 for this purpose and ten times cheaper; a forked child draws a new
    prefix, so parent and child never share one.
    """

    def __init__(self) -> None:
        self.packer = msgpack.Packer()
        self.renew()

    def renew(self) -> None:
        """A new prefix, and the ids that follow it (``next(self.ids)``: one C-level call)."""
        self.ids = map("{}{:016x}".format, itertools.repeat(os.urandom(8).hex()), itertools.count())


_ids = _Ids()
os.register_at_fork(after_in_child=lambda: _ids.renew())


def new_event_id() -> str:
    """A fresh unique event id: 32 hex characters."""
    return next(_ids.ids)


_MAX_COUNT = rules.MAX_STORED_COUNT
_MAX_COST = rules.MAX_STORED_COST
_MAX_FUTURE_MS = rules.MAX_FUTURE_MS
_COUNT_FIELDS = totals.TOKEN_FIELDS
#: a StoredEvent's token counts, in ``totals.TOKEN_FIELDS`` order
_tokens_of = operator.attrgetter(*totals.TOKEN_FIELDS)
_valid_models: set[str] = set()
_valid_sessions: set[str] = set()


def _model(name: object) -> str:
    if isinstance(name, str) and name in _valid_models:
        return name
    checked = rules.check_model_name(name)
    if len(_valid_models) < 10_000:
        _valid_models.add(checked)
    return checked


def prepare(event: object, now_ms: int) -> PreparedEvent:
    """Re-check every invariant of ``event`` and encode it.

    Runs on every write, because ``model_construct``/``model_copy`` bypass pydantic. It is
    the hot path of every write, hence the plain code: validated names are remembered, and
    ``rules`` checks the common case (ASCII text, a UTC datetime) first.
    ``now_ms`` is the writer's clock: it refuses timestamps far in the future, and an error
    naming a limit blocks until the reset time it gives (read against ``completed_at``), and
    one whose reset time is already past blocks nothing.
    """
    if not isinstance(event, CompletionEvent):
        raise InvalidInputError(f"expected a CompletionEvent, got {type(event).__name__}")
    # pydantic keeps the fields in __dict__; a field that model_construct() left out is None
    fields: Any = event.__dict__
    model = fields.get("model")
    if type(model) is not str or model not in _valid_models:
        model = _model(model)
    session_id = fields.get("session_id")
    if type(session_id) is not str or session_id not in _valid_sessions:
        session_id = rules.check_session_id(session_id)
        if len(_valid_sessions) < 10_000:
            _valid_sessions.add(session_id)
    at = fields.get("completed_at")
    completed_us = rules.epoch_us(at)
    score_ms = completed_us // 1000
    if score_ms > now_ms + _MAX_FUTURE_MS:
        raise InvalidInputError(f"completed_at {at.isoformat()} is more than a day in the future")
    success = fields.get("success")
    if success is not True and success is not False:
        raise InvalidInputError("success must be a bool")
    tokens = fields.get("tokens")
    if type(tokens) is not TokenBreakdown and not isinstance(tokens, TokenBreakdown):
        raise InvalidInputError("tokens must be a TokenBreakdown")
    latency = fields.get("latency_ms")
    counted: Any = tokens.__dict__
    # the member format's order (version 1), which is also totals.TOKEN_FIELDS
    get = counted.get
    counts = (
        get("total"),
        get("input"),
        get("output"),
        get("reasoning"),
        get("cache_read"),
        get("cache_write"),
    )
    if latency is not None and (type(latency) is not int or not 0 <= latency <= _MAX_COUNT):
        _refuse_counts(latency, tokens)
    for count in counts:
        if type(count) is not int or not 0 <= count <= _MAX_COUNT:
            _refuse_counts(latency, tokens)
    cost = fields.get("cost_usd")
    if type(cost) is not float or not 0.0 <= cost <= _MAX_COST:
        cost = rules.check_stored_cost(cost)
    error = fields.get("error")
    reason = ""
    until_ms = 0
    if error is not None:
        error = rules.check_error(error)
        found = limits.from_text(error, rules.from_epoch_us(completed_us)) if error else None
        if error and found is not None:
            until_ms = 0 if found.until is None else int(found.until.timestamp() * 1000)
            if until_ms == 0 or until_ms > now_ms:
                reason = error[:MAX_LIMIT_REASON]
    event_id = fields.get("event_id")
    ids = _ids
    event_id = next(ids.ids) if event_id is None else rules.check_event_id(event_id)
    member = ids.packer.pack(
        [FORMAT_VERSION, event_id, session_id, completed_us, latency, success, *counts, cost, error]
    )
    cost_nusd = int(cost * 1e9 + 0.5)  # nano_usd(): floor, as the cost is not negative
    sums = totals.contribution(success, latency, cost_nusd, counts)
    return _new_prepared(
        PreparedEvent, (model, score_ms, member, reason, until_ms, sums, session_id, event_id)
    )


def by_model(
    prepared: Iterable[PreparedEvent],
) -> tuple[dict[str, list[PreparedEvent]], int]:
    """Events grouped per model, in order, each event id once (the first); and how many
    repeated an id already in the batch for their model (not stored: they count as
    duplicates)."""
    groups, _, repeated = by_model_at(list(prepared))
    return groups, repeated


def by_model_at(
    prepared: Sequence[PreparedEvent],
) -> tuple[dict[str, list[PreparedEvent]], dict[str, list[int]] | None, int]:
    """:func:`by_model`, and each group's positions in ``prepared`` (None when they are
    0, 1, ... in order: one model, no id repeated)."""
    groups: dict[str, dict[str, int]] = {}
    repeated = 0
    for i, p in enumerate(prepared):
        group = groups.get(p.model)
        if group is None:
            group = groups[p.model] = {}
        if p.event_id in group:
            repeated += 1
        else:
            group[p.event_id] = i
    if len(groups) == 1 and not repeated:
        return {p.model: list(prepared) for p in prepared[:1]}, None, 0
    at = {model: list(group.values()) for model, group in groups.items()}
    return {m: [prepared[i] for i in places] for m, places in at.items()}, at, repeated


def _refuse_counts(latency: object, tokens: TokenBreakdown) -> None:
    """Raise the error that names the first bad count."""
    rules.check_stored_count("latency_ms", latency)
    for name in _COUNT_FIELDS:
        rules.check_stored_count(f"tokens.{name}", getattr(tokens, name))


def stored_sums(e: StoredEvent) -> tuple[int, ...]:
    """What a decoded member adds to its model's running totals (``totals.FIELDS`` order).

    The same as ``PreparedEvent.sums`` at write time, and as ``record.lua`` computes when it
    subtracts a trimmed member.
    """
    return totals.contribution(e.success, e.latency_ms, nano_usd(e.cost_usd), _tokens_of(e))


def nano_usd(cost: float) -> int:
    """A (non-negative) cost as whole nano-USD, rounded as ``record.lua`` rounds it."""
    return math.floor(cost * 1e9 + 0.5)


def _u64(value: object) -> int:
    if type(value) is not int or not 0 <= value <= rules.U64_MAX:
        raise CorruptMember(f"expected an unsigned integer, got {value!r}")
    return value


def decode(raw: bytes) -> StoredEvent:
    """Decode one member, or raise :class:`CorruptMember` saying why not."""
    try:
        data = msgpack.unpackb(raw, raw=False)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise CorruptMember(f"not msgpack ({type(exc).__name__})") from None
    if not isinstance(data, list) or len(data) != _FIELDS or data[0] != FORMAT_VERSION:
        raise CorruptMember("not a version-1 event array")
    _, event_id, session_id, completed_us, *rest = data
    latency, success, *counts = rest[:8]
    cost, error = rest[8], rest[9]
    if not isinstance(event_id, str) or not isinstance(session_id, str):
        raise CorruptMember("event_id and session_id must be strings")
    if type(completed_us) is not int:
        raise CorruptMember("completed_at must be an integer")
    if not isinstance(success, bool):
        raise CorruptMember("success must be a bool")
    if type(cost) not in (int, float) or not math.isfinite(cost) or cost < 0:
        raise CorruptMember(f"bad cost {cost!r}")
    if error is not None and not isinstance(error, str):
        raise CorruptMember("error must be a string or nil")
    total, inp, out, reasoning, cache_read, cache_write = (_u64(c) for c in counts)
    return StoredEvent(
        event_id,
        session_id,
        completed_us,
        None if latency is None else _u64(latency),
        success,
        total,
        inp,
        out,
        reasoning,
        cache_read,
        cache_write,
        float(cost),
        error,
    )


def to_completion_event(model: str, stored: StoredEvent) -> CompletionEvent:
    """Rebuild the public event (with its id) from a decoded member."""
    return CompletionEvent(
        model=model,
        session_id=stored.session_id,
        completed_at=rules.from_epoch_us(stored.completed_at_us),
        latency_ms=stored.latency_ms,
        success=stored.success,
        tokens=TokenBreakdown(
            total=stored.total,
            input=stored.input,
            output=stored.output,
            reasoning=stored.reasoning,
            cache_read=stored.cache_read,
            cache_write=stored.cache_write,
        ),
        cost_usd=stored.cost_usd,
        error=stored.error,
        event_id=stored.event_id,
    )
