"""``TelemetryLogger``: a LiteLLM ``CustomLogger`` that records every call into the store."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from litellm.integrations.custom_logger import CustomLogger
from litellm.litellm_core_utils.logging_worker import GLOBAL_LOGGING_WORKER

from ...aio import AsyncTelemetryStore
from ...errors import InvalidInputError
from ...store import TelemetryStore
from ._payload import ModelKey, outcome
from ._recorder import LoopRecorder, Recorder, RecorderStats, ThreadRecorder

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
    """

    def __init__(
        self,
        store: TelemetryStore | AsyncTelemetryStore,
        *,
        model_key: ModelKey = "deployment",
        session_key: str | None = "session_id",
        max_pending: int = 10_000,
        batch_size: int = 500,
    ) -> None:
        super().__init__()
        if model_key not in ("deployment", "model_group", "model") and not callable(model_key):
            raise InvalidInputError(
                f"model_key must be 'deployment', 'model_group', 'model' or a function, "
                f"got {model_key!r}"
            )
        self.model_key = model_key
        self.session_key = session_key
        self._recorder: Recorder
        if isinstance(store, TelemetryStore):
            self._recorder = ThreadRecorder(store, max_pending, batch_size)
        elif isinstance(store, AsyncTelemetryStore):
            self._recorder = LoopRecorder(store, max_pending, batch_size)
        else:
            raise InvalidInputError(
                f"TelemetryLogger needs a TelemetryStore or an AsyncTelemetryStore, "
                f"got {type(store).__name__}"
            )
        self._bad_payloads = 0

    def _record(self, kwargs: Any, success: bool) -> None:
        try:
            found = outcome(kwargs, success, key=self.model_key, session_key=self.session_key)
            self._recorder.submit(found)
        except Exception:  # a payload this code did not foresee: never raise into LiteLLM
            self._bad_payloads += 1
            if self._bad_payloads == 1:
                log.exception("redis-telemetry could not read a LiteLLM payload; skipping it")

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
        """Wait until every call seen so far is written (or dropped); False on timeout."""
        return self._recorder.flush(timeout)

    async def aflush(self, timeout: float | None = 5.0) -> bool:
        """``flush`` for async code. It first lets LiteLLM's logging worker run the hooks of
        the calls already made (LiteLLM runs them in the background, after the call returns)."""
        try:
            async with asyncio.timeout(timeout):
                await GLOBAL_LOGGING_WORKER.flush()
        except TimeoutError:
            return False
        return await self._recorder.aflush(timeout)
