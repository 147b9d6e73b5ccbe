"""The HTTP API's own request and answer bodies (the data types are those of ``models``).

Request bodies refuse unknown fields, so a misspelt option is an error instead of a default.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..core.routing import Ranking, StalePolicy, Strategy, Weights
from ..models import Float, Int, ModelName, RecordResult, UtcDatetime


class RecordCounts(BaseModel):
    """What a write did, as ``RecordResult`` counts it."""

    #: events newly stored
    stored: Int
    #: events whose ``event_id`` the model already had: not stored again
    duplicates: Int
    #: events older than the window: not stored
    outside_window: Int

    @classmethod
    def of(cls, result: RecordResult) -> RecordCounts:
        """The counts of a store's ``RecordResult``."""
        return cls(
            stored=result.stored, duplicates=result.duplicates, outside_window=result.outside_window
        )


class SelectRequest(BaseModel):
    """``POST /v1/select``: the candidates and the options of ``select_model``."""

    model_config = ConfigDict(extra="forbid")

    candidates: Annotated[list[ModelName], Field(min_length=1)]
    strategy: Strategy = Strategy.FASTEST
    weights: Weights | None = None
    max_staleness_secs: Annotated[Int, Field(ge=0)] | None = None
    stale_policy: StalePolicy = "exclude"
    #: the chance of choosing a candidate without data instead, so that it gets traffic
    exploration: Annotated[Float, Field(ge=0, le=1)] = 0.0


class Candidate(BaseModel):
    """One candidate of a selection, and why it stands where it does."""

    model: str
    #: True when it may be chosen by the strategy (it has fresh data and no limit)
    usable: bool
    #: its place among the usable candidates, 1 = best; None when excluded
    rank: int | None
    #: its score under the strategy (None when excluded, or when it has no value to score)
    score: float | None
    #: ``ranked``, or why it was excluded: ``subscription_limited``, ``stale``, ``unknown``,
    #: ``provider_blocked`` (a block or a 429 backoff), ``budget_exhausted``
    reason: Literal[
        "ranked",
        "subscription_limited",
        "stale",
        "unknown",
        "provider_blocked",
        "budget_exhausted",
    ]
    #: the reason in words, with the numbers behind it
    explanation: str
    #: when a subscription-limited candidate (or a blocked provider's) comes back
    available_at: datetime | None = None


def candidates(ranking: Ranking) -> list[Candidate]:
    """The ranked candidates, best first, then the excluded ones."""
    ranked = [
        Candidate(
            usable=True,
            reason="ranked",
            score=r.score if math.isfinite(r.score) else None,  # JSON has no infinity
            **r.model_dump(include={"model", "rank", "explanation"}),
        )
        for r in ranking.ranked
    ]
    return ranked + [
        Candidate(usable=False, rank=None, score=None, **e.model_dump()) for e in ranking.excluded
    ]


class Selection(BaseModel):
    """``POST /v1/select``'s answer: the model to use, every candidate with its reasons, and
    how old the data it was chosen on is: 0 and not stale when read from Redis for this
    request; from the server's local read tier (``serve --tier``), the age of the read it
    comes from, stale while Redis does not answer a refresh."""

    model: str
    ranking: list[Candidate]
    age_secs: float = 0.0
    stale: bool = False


class LimitRequest(BaseModel):
    """``PUT /v1/limits/{model}``: block for ``ttl_secs``, or ``until`` a time (neither: the
    server's default TTL)."""

    model_config = ConfigDict(extra="forbid")

    ttl_secs: Int | None = None
    #: an RFC 3339 time; one without an offset is UTC
    until: UtcDatetime | None = None
    #: why, kept with the block (a dump shows it)
    reason: str = "manual"


class Lifted(BaseModel):
    """``DELETE /v1/limits/{model}``'s answer."""

    #: True when the model was limited
    lifted: bool


class ErrorBody(BaseModel):
    """Every error's body: one line a client can log as it is."""

    error: str


class NoModelBody(ErrorBody):
    """The 409 of ``POST /v1/select`` when no candidate is usable: why, for each one."""

    ranking: list[Candidate]
