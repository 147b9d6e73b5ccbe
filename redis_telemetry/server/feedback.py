"""The server's writes of completion events (``POST /v1/events`` and the OTLP receiver): the
events are recorded, then the providers are fed from the events newly stored, as the ingest
and LiteLLM paths feed them (a 429 escalates its provider's backoff, a quota text blocks it, a
success ends the backoff).

Only the events this write stored are fed (``RecordResult.stored_positions``, decided by
Redis with the write): an exporter that sends a batch again, or a client that retries a
request, stores nothing the second time and so escalates nothing twice. The feedback is a
second call of the store, after the write: when it fails, the write has succeeded all the
same, so the answer stays the write's and the failure is logged (answering an error would
only make the client send again, and a resent batch stores nothing new to feed).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, TypeVar

from ..aio import AsyncTelemetryStore
from ..errors import TelemetryError
from ..models import CompletionEvent, RecordResult

log = logging.getLogger(__name__)
T = TypeVar("T")


class Stores(Protocol):
    """How the routes call the store (the app's window-following wrapper)."""

    async def __call__(self, call: Callable[[AsyncTelemetryStore], Awaitable[T]]) -> T: ...


async def record_and_feed(
    stores: Stores, events: Sequence[CompletionEvent], single: bool = False
) -> RecordResult:
    """Record ``events`` (``single``: the one event, with ``record``), then feed the providers
    from those newly stored. A failure of the feedback is logged, never raised."""
    if single:
        result = await stores(lambda s: s.record(events[0]))
    else:
        result = await stores(lambda s: s.record_batch(events))
    new = [events[i] for i in result.stored_positions]
    if new:
        try:
            await stores(lambda s: s.provider_feedback(new))
        except Exception as exc:  # the write stands: say so, and answer it
            log.warning(
                "stored %d events, but feeding their providers failed: %s",
                len(new),
                exc,
                exc_info=not isinstance(exc, TelemetryError),
            )
    return result
