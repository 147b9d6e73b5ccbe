"""The running totals ``record.lua`` keeps per model (hash ``<ns>:{<model>}:totals``).

One schema for every side: :class:`Totals` names the fields and their order; the write path
(``codec.prepare``), the stored-sums decoder (``codec.stored_sums``), the snapshot arithmetic
(``snapshot``), ``record.lua``'s ARGV[2] and the scripts' ``FIELDS`` and ``LAYOUT`` lines
(rendered from :data:`FIELDS` and :data:`LAYOUT` when the scripts load) all follow it. See
docs/contributing.md, "How to add a snapshot field".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from ..errors import InvalidInputError


class Totals(NamedTuple):
    """The sums over every member of a model's events key."""

    #: successful completions
    ok: int = 0
    #: failed completions
    failed: int = 0
    #: latency of the successful completions whose latency was measured, ms
    latency: int = 0
    #: successful completions whose latency was not measured (``latency_ms=None``)
    untimed: int = 0
    #: cost of every completion, nano-USD (exact integers)
    cost_nusd: int = 0
    #: tokens, by kind (the fields of ``TokenBreakdown``, in its order)
    total: int = 0
    input: int = 0
    output: int = 0
    reasoning: int = 0
    cache_read: int = 0
    cache_write: int = 0


#: The hash's field names, in the order every side uses.
FIELDS: tuple[str, ...] = Totals._fields
#: The layout of a totals hash (``record.lua``'s ``LAYOUT``): the sums of :data:`FIELDS`, the
#: latency sketch and the session index. A hash of another layout (an older release's) is
#: rebuilt from its members by the writes that follow, a bounded step each, or at once by
#: ``redis-telemetry reindex``; until then readers read that model from its events.
LAYOUT = 3
#: The oldest layout readers take a hash's sums, sketch and session index from: layout 3 adds
#: only the id index, which writes use, so readers need not wait for an upgrade's rebuild.
READ_LAYOUT = 2
#: The token fields: each sums the ``TokenBreakdown`` field of the same name.
TOKEN_FIELDS: tuple[str, ...] = FIELDS[FIELDS.index("total") :]


def contribution(
    success: bool, latency_ms: int | None, cost_nusd: int, tokens: Sequence[int]
) -> tuple[int, ...]:
    """What one event adds to the totals, in :data:`FIELDS` order (``tokens`` in
    :data:`TOKEN_FIELDS` order); ``latency_ms`` None: not measured. A plain tuple: this runs
    on every write."""
    if not success:
        return (0, 1, 0, 0, cost_nusd, *tokens)
    if latency_ms is None:
        return (1, 0, 0, 1, cost_nusd, *tokens)
    return (1, 0, latency_ms, 0, cost_nusd, *tokens)


def zero() -> list[int]:
    """Totals of no event, as a list to add into."""
    return [0] * len(FIELDS)


#: The most a total may reach: HINCRBY holds up to 2^63 - 1, and ``record.lua`` compares in
#: doubles, so it refuses a call whose sums would reach this (nothing written).
CEILING = 2**63 - 2**12
#: The most one event adds to any total (counts and latency up to 10^12, cost up to
#: 10^6 USD = 10^15 nano-USD): a batch of fewer than :data:`ROOMY` events of one model
#: cannot pass the ceiling by itself.
MAX_PER_EVENT = 10**15
ROOMY = CEILING // MAX_PER_EVENT


def check_room(model: str, sums: Sequence[Sequence[int]]) -> None:
    """Refuse (InvalidInputError) a batch whose sums for ``model`` alone would pass the
    ceiling; the sums already stored are checked by ``record.lua``."""
    for name, total in zip(FIELDS, map(sum, zip(*sums, strict=True)), strict=True):
        if total >= CEILING:
            raise InvalidInputError(
                f"the events of {model!r} would take its total {name} past 2^63; nothing written"
            )
