"""Public data types. Field names and JSON match the reference's serde types both ways.

Timestamps serialise as RFC 3339 UTC. A naive ``datetime`` is taken to be UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import partial
from typing import Annotated, Any, NamedTuple

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SerializerFunctionWrapHandler,
    Strict,
    StrictBool,
    model_serializer,
)

from .core import limits, rules, sketch

UtcDatetime = Annotated[datetime, AfterValidator(rules.to_utc)]
ModelName = Annotated[str, AfterValidator(rules.check_model_name)]
#: JSON types as the reference's serde reads them: a boolean is ``true``/``false`` (never
#: ``"yes"`` or 1), an integer an integer (never ``"5"``, 5.0 or ``true``), a number a number
#: (never ``"0.5"``). Times stay RFC 3339 strings, or ``datetime`` objects in Python.
Bool = StrictBool
Int = Annotated[int, Strict()]
Float = Annotated[float, Strict()]


def _u64(field: str) -> Any:
    return AfterValidator(partial(rules.check_u64, field))


def _now() -> datetime:
    return datetime.now(UTC)


def is_subscription_limit_error(error: str) -> bool:
    """True when an error message says the provider cut the model off (``core.limits`` rules:
    limit phrases, and 429 only as a status beside "too many requests" or "rate limit")."""
    return limits.is_limit_text(error)


class TokenBreakdown(BaseModel):
    """Token counts of one completion."""

    model_config = ConfigDict(validate_assignment=True)

    total: Annotated[Int, _u64("tokens.total")] = 0
    input: Annotated[Int, _u64("tokens.input")] = 0
    output: Annotated[Int, _u64("tokens.output")] = 0
    reasoning: Annotated[Int, _u64("tokens.reasoning")] = 0
    cache_read: Annotated[Int, _u64("tokens.cache_read")] = 0
    cache_write: Annotated[Int, _u64("tokens.cache_write")] = 0


class CompletionEvent(BaseModel):
    """One model completion, as an orchestrator saw it.

    ``latency_ms`` may be ``None``: the call's latency was not measured (an agent CLI's log
    read after the fact). Such an event counts for the success rate, tokens and cost, and not
    for latency (average, percentiles, ``latency_samples``).

    ``event_id`` is this package's addition. Left ``None``, each ``record`` call assigns a
    fresh id, so two identical events count twice. Set it (``dump``/``restore`` do) to make
    writing the same event again a no-op.
    """

    model_config = ConfigDict(validate_assignment=True)

    model: ModelName
    session_id: Annotated[str, AfterValidator(rules.check_session_id)] = ""
    completed_at: UtcDatetime = Field(default_factory=_now)
    latency_ms: Annotated[Int, _u64("latency_ms")] | None
    success: Bool
    tokens: TokenBreakdown = Field(default_factory=TokenBreakdown)
    cost_usd: Annotated[Float, AfterValidator(rules.check_cost)] = 0.0
    error: Annotated[str | None, AfterValidator(rules.check_error)] = None
    event_id: Annotated[str | None, AfterValidator(rules.check_event_id)] = None

    @model_serializer(mode="wrap")
    def _omit_missing_id(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        if data.get("event_id") is None:
            data.pop("event_id", None)
        return data


class ModelPerformanceSnapshot(BaseModel):
    """Live numbers for one model over the rolling window, for routing decisions.

    The first ten fields are the reference's. The cost fields after them are this package's
    additions (JSON without them still parses, and serde ignores them):

    - ``total_cost_usd``: the cost of every completion in the window, failures included;
    - ``tokens``: the window's tokens, by kind;
    - ``avg_cost_per_1k_tokens``: the reference's figure: ``total_cost_usd`` (every event)
      per 1000 output tokens (``tokens.output``); 0 without output tokens;
    - ``avg_cost_per_1k_total_tokens``: ``total_cost_usd`` per 1000 of ``tokens.total``
      (input, output, reasoning and cache tokens alike, as the providers bill them); 0
      without tokens;
    - ``is_free``: there is data in the window and none of it cost anything (an empty window
      is not free);
    - ``latency_p50_ms``, ``latency_p95_ms``, ``latency_p99_ms``: nearest-rank percentiles of
      the successful completions' latency (None without any): from the latency sketch of the
      running totals, within 0.78% of the exact value; exact, from the window's events, with
      ``percentiles=True``.
    """

    model: str
    successful_completions: Int
    failed_completions: Int
    window_secs: Int
    throughput: Float
    avg_latency_ms: Float
    success_rate: Float
    last_event_at: UtcDatetime | None = None
    subscription_limit_reached: Bool = False
    subscription_limit_expires_at: UtcDatetime | None = None
    total_cost_usd: Float = 0.0
    tokens: TokenBreakdown = Field(default_factory=TokenBreakdown)
    avg_cost_per_1k_tokens: Float = 0.0
    is_free: Bool = False
    avg_cost_per_1k_total_tokens: Float = 0.0
    latency_p50_ms: Float | None = None
    latency_p95_ms: Float | None = None
    latency_p99_ms: Float | None = None
    #: the successful completions with a measured latency, which ``avg_latency_ms`` and the
    #: percentiles are over; None (JSON without it): all of them
    latency_samples: Int | None = None
    #: cumulative counts at ``sketch.LE_MS``, set by the store (not part of the JSON)
    _latency_histogram: tuple[int, ...] | None = PrivateAttr(default=None)

    @classmethod
    def empty(cls, model: str, window_secs: int) -> ModelPerformanceSnapshot:
        """A snapshot of a model with no data."""
        return cls(
            model=model,
            successful_completions=0,
            failed_completions=0,
            window_secs=window_secs,
            throughput=0.0,
            avg_latency_ms=0.0,
            success_rate=0.0,
            latency_samples=0,
        )

    def __eq__(self, other: object) -> bool:
        """Equal when every field is: the private histogram comes with the store's reading
        (and not with the JSON), so it does not make two snapshots of the same numbers differ."""
        if not isinstance(other, ModelPerformanceSnapshot):
            return NotImplemented
        return self.__dict__ == other.__dict__

    def latency_histogram(self) -> list[tuple[float, int]] | None:
        """The latency of the window's timed successful completions as a histogram: (bound in
        ms, how many took at most that long) for each bound of ``core.sketch.LE_MS``, the last
        ``inf`` (all of them). From the latency sketch (each bucket at its representative
        value, within 0.78%), or from the events with ``percentiles=True``; None for a snapshot
        that did not come from a store (parsed from JSON, built by hand)."""
        if self._latency_histogram is None:
            return None
        return list(zip(sketch.LE_MS, self._latency_histogram, strict=True))

    def measured_latencies(self) -> int:
        """How many successful completions ``avg_latency_ms`` and the percentiles are over."""
        if self.latency_samples is None:
            return self.successful_completions
        return self.latency_samples

    def is_stale(self, max_staleness_secs: int) -> bool:
        """True when there is no event, or the newest is more than ``max_staleness_secs`` old.

        Like the reference, the age is counted in whole seconds, either side of now.
        """
        if self.last_event_at is None:
            return True
        age = abs(int((_now() - self.last_event_at).total_seconds()))
        return age > max_staleness_secs

    def is_subscription_limited(self) -> bool:
        """True while the model is blocked by a subscription limit."""
        if not self.subscription_limit_reached:
            return False
        if self.subscription_limit_expires_at is None:
            return True
        return _now() < self.subscription_limit_expires_at


class ModelUsage(BaseModel):
    """Token and cost totals for one model (or all models)."""

    input_tokens: Int = 0
    output_tokens: Int = 0
    total_tokens: Int = 0
    cost_usd: Float = 0.0
    message_count: Int = 0

    def merge(self, other: ModelUsage) -> None:
        """Add ``other``'s totals into this one, in place."""
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.total_tokens += other.total_tokens
        self.cost_usd += other.cost_usd
        self.message_count += other.message_count


class UsageSnapshot(BaseModel):
    """One session's usage within the window, per model and in total."""

    id: str
    window_start: UtcDatetime
    window_end: UtcDatetime
    by_model: dict[str, ModelUsage]
    totals: ModelUsage


class TelemetrySummary(BaseModel):
    """Aggregated state for export and import, in the reference's shape."""

    id: str = "telemetry_summary"
    model_performances: list[ModelPerformanceSnapshot]
    window_secs: Int
    exported_at: UtcDatetime


class RecordResult(NamedTuple):
    """What a write did: events newly stored, already present (same id), or too old; how
    many of the model's oldest events the per-model cap removed; and which events were the
    new ones.

    ``stored_positions`` lists, ascending, the positions (from 0, in the order given) of the
    events this write newly stored: ``(0,)`` or ``()`` for ``record``; for ``record_batch``
    and ``restore``, positions in the events given (``[events[i] for i in
    r.stored_positions]`` are the new ones); empty for ``import_summary``, whose events are
    made from the summary. Decided by Redis in the same atomic step that stores the events, so
    a retried or redelivered event is never in it twice. Positions rather than event ids: an
    id is unique per model only, and an event without one gets its id from the store."""

    stored: int = 0
    duplicates: int = 0
    outside_window: int = 0
    capped: int = 0
    stored_positions: tuple[int, ...] = ()
