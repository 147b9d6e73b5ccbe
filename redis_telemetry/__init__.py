"""redis-telemetry: a shared, live view of LLM model performance, stored in Redis."""

from ._version import __version__
from .aio import AsyncTelemetryStore
from .buffer import BufferedWriter, BufferStats
from .core.ops import ConnectionSettings, RecordResult
from .core.routing import (
    ExcludedModel,
    NoModelAvailable,
    RankedModel,
    Ranking,
    Strategy,
    Weights,
)
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
    "BufferStats",
    "BufferedWriter",
    "CompletionEvent",
    "ConnectionSettings",
    "ExcludedModel",
    "InvalidInputError",
    "ModelPerformanceSnapshot",
    "ModelUsage",
    "NoModelAvailable",
    "RankedModel",
    "Ranking",
    "RecordResult",
    "Strategy",
    "TelemetryError",
    "TelemetryStore",
    "TelemetrySummary",
    "TelemetryUnavailable",
    "TokenBreakdown",
    "UsageSnapshot",
    "Weights",
    "WindowMismatchError",
    "__version__",
    "is_subscription_limit_error",
]
