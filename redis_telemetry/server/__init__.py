"""The HTTP server of ``redis-telemetry serve``: the JSON API over the async store, the
Prometheus metrics and the health probes, as one ASGI application (FastAPI).

It needs the ``server`` extra (``pip install 'redis-telemetry[server]'``); ``import
redis_telemetry`` does not import it.
"""

from __future__ import annotations

from typing import Any

from ..core.tokens import Tokens
from .app import ServerSettings, create_app

__all__ = ["ServerSettings", "Tokens", "create_app", "openapi_document"]


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document the server serves at ``/openapi.json`` (no store needed)."""
    from ..aio import AsyncTelemetryStore

    placeholder = AsyncTelemetryStore.from_url("redis://localhost:6379/0")  # never used: no I/O
    return create_app(placeholder).openapi()
