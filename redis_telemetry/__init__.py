"""redis-telemetry: a shared, live view of LLM model performance, stored in Redis."""

from .aio import AsyncTelemetryStore
from .core.ops import ConnectionSettings, RecordResult
from .errors import (
    InvalidInputError,
    TelemetryError,
    TelemetryUnavailable,
    WindowMismatchError,
)
from .models import (
    CompletionEvent,
    ModelPerformanceSnapshot,
    ModelUsage,
    TelemetrySummary,
    TokenBreakdown,
    UsageSnapshot,
    is_subscription_limit_error,
)
from .store import TelemetryStore

__all__ = [
    "AsyncTelemetryStore",
    "CompletionEvent",
    "ConnectionSettings",
    "InvalidInputError",
    "ModelPerformanceSnapshot",
    "ModelUsage",
    "RecordResult",
    "TelemetryError",
    "TelemetryStore",
    "TelemetrySummary",
    "TelemetryUnavailable",
    "TokenBreakdown",
    "UsageSnapshot",
    "WindowMismatchError",
    "is_subscription_limit_error",
]
