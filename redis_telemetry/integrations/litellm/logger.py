"""``TelemetryLogger``: a LiteLLM ``CustomLogger`` that records every call into the store."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from litellm.integrations.custom_logger import CustomLogger

from ...aio import AsyncTelemetryStore
from ...core import rules
from ...errors import InvalidInputError
from ...store import TelemetryStore
from ._payload import DEFAULT_COOLDOWN_SECS, ModelKey, outcome
from ._recorder import Announced, LoopRecorder, Recorder, RecorderStats, ThreadRecorder

log = logging.getLogger(__name__)


class TelemetryLogger(CustomLogger):
    """Records one completion per LiteLLM call, from its ``standard_logging_object``.

    Set it with ``litellm.callbacks = [TelemetryLogger(store)]``; ``store`` is a
    ``TelemetryStore`` or an ``AsyncTelemetryStore``. Its sync and async, success and failure
    hooks only queue the call; a background worker writes it (see ``_recorder``), so recording
    never blocks LiteLLM's event loop and never raises into LiteLLM.

    - ``model_key``: how calls are keyed in the store, ``"deployment"`` (the default: the
      Router deployment's id), ``"model_group"``, ``"model"``, or a function of the payload.
      ``SharedStateRouting`` ranks deployments by their id, so route on the default.
    - ``session_key``: the request ``metadata`` field that names the session (else LiteLLM's
      ``litellm_session_id``); None reads only LiteLLM's.
    - ``max_pending``, ``batch_size``: the queue's bound and the events per round trip.
    - ``cooldown_secs``: how long a provider's 429 that says nothing of when to retry blocks the
      deployment (5 s, as LiteLLM's own cooldown); a 429 that says (``retry-after-ms``,
      ``Retry-After``, a reset time or "retry after N seconds" in its text) blocks until then.
    - ``exit_timeout``: at interpreter exit, wait at most this long for the calls still queued
      to be written (None: do not wait).
    """

    def __init__(
        self,
        store: TelemetryStore | AsyncTelemetryStore,
        *,
        model_key: ModelKey = "deployment",
        session_key: str | None = "session_id",
        max_pending: int = 10_000,
        batch_size: int = 500,
        cooldown_secs: int = DEFAULT_COOLDOWN_SECS,
        exit_timeout: float | None = 5.0,
    ) -> None:
        super().__init__()
        if model_key not in ("deployment", "model_group", "model") and not callable(model_key):
            raise InvalidInputError(
                f"model_key must be 'deployment', 'model_group', 'model' or a function, "
                f"got {model_key!r}"
            )
        self.model_key = model_key
        self.session_key = session_key
        self.cooldown_secs = rules.check_positive_secs("cooldown_secs", cooldown_secs)
        if exit_timeout is not None and not exit_timeout >= 0:
            raise InvalidInputError(f"exit_timeout must be at least 0 or None, got {exit_timeout}")
        self._announced = Announced(max_pending)
        self._recorder: Recorder[Any]
        if isinstance(store, TelemetryStore):
            self._recorder = ThreadRecorder(store, max_pending, batch_size, exit_timeout)
        elif isinstance(store, AsyncTelemetryStore):
            self._recorder = LoopRecorder(store, max_pending, batch_size, exit_timeout)
        else:
            raise InvalidInputError(
                f"TelemetryLogger needs a TelemetryStore or an AsyncTelemetryStore, "
                f"got {type(store).__name__}"
            )
        self._bad_payloads = 0

    def _record(self, kwargs: Any, success: bool) -> None:
        try:
            found = outcome(
                kwargs,
                success,
                key=self.model_key,
                session_key=self.session_key,
                cooldown_secs=self.cooldown_secs,
            )
            self._recorder.submit(found)
        except Exception:  # a payload this code did not foresee: never raise into LiteLLM
            self._bad_payloads += 1
            if self._bad_payloads == 1:
                log.exception("redis-telemetry could not read a LiteLLM payload; skipping it")
        finally:
            self._announced.ended(_call_id(kwargs))

    def log_pre_api_call(self, model: Any, messages: Any, kwargs: Any) -> None:
        """LiteLLM's pre-call hook: a call starts, whose success or failure hook a flush waits
        for (LiteLLM runs those in the background, after the call returns)."""
        self._announced.started(_call_id(kwargs))

    def log_success_event(
        self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        """LiteLLM's sync success hook."""
        self._record(kwargs, True)

    def log_failure_event(
        self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        """LiteLLM's sync failure hook."""
        self._record(kwargs, False)

    async def async_log_success_event(
        self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        """LiteLLM's async success hook."""
        self._record(kwargs, True)

    async def async_log_failure_event(
        self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        """LiteLLM's async failure hook."""
        self._record(kwargs, False)

    def stats(self) -> RecorderStats:
        """Calls seen, written, limits marked, dropped and still pending."""
        return self._recorder.stats()

    def flush(self, timeout: float | None = 5.0) -> bool:
        """From sync code: wait until every call LiteLLM started so far (its pre-call hook) is
        reported by LiteLLM and written (or dropped), for ``timeout`` seconds in all; False on
        timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        reported = self._announced.wait(timeout)
        return self._recorder.flush(_left(deadline)) and reported

    async def aflush(self, timeout: float | None = 5.0) -> bool:
        """``flush`` for async code: the event loop keeps running LiteLLM's hooks meanwhile."""
        deadline = None if timeout is None else time.monotonic() + timeout
        reported = await asyncio.to_thread(self._announced.wait, timeout)
        return await self._recorder.aflush(_left(deadline)) and reported


def _call_id(kwargs: Any) -> object:
    """LiteLLM's id of a call, in the kwargs of its hooks."""
    return kwargs.get("litellm_call_id") if isinstance(kwargs, dict) else None


def _left(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())
