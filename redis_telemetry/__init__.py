"""redis-telemetry: a shared, live view of LLM model performance, stored in Redis."""

from ._shell import ConnectionSettings
from ._version import __version__
from .aio import AsyncTelemetryStore
from .buffer import BufferedWriter, BufferStats
from .core.providers import ErrorSignatures, ProviderBudget, ProviderStatus
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
    PermissionDenied,
    TelemetryError,
    TelemetryUnavailable,
    WindowMismatchError,
)
from .models import (
    CompletionEvent,
    ModelPerformanceSnapshot,
    ModelUsage,
    RecordResult,
    TelemetrySummary,
    TokenBreakdown,
    UsageSnapshot,
    is_subscription_limit_error,
)
from .store import TelemetryStore
from .tier import AsyncLocalTier, Choice, Decision, LocalTier, TierSettings

__all__ = [
    "AsyncLocalTier",
    "AsyncTelemetryStore",
    "BufferStats",
    "BufferedWriter",
    "Choice",
    "CompletionEvent",
    "ConnectionSettings",
    "Decision",
    "ErrorSignatures",
    "ExcludedModel",
    "InvalidInputError",
    "LocalTier",
    "ModelPerformanceSnapshot",
    "ModelUsage",
    "NoModelAvailable",
    "PermissionDenied",
    "ProviderBudget",
    "ProviderStatus",
    "RankedModel",
    "Ranking",
    "RecordResult",
    "Strategy",
    "TelemetryError",
    "TelemetryStore",
    "TelemetrySummary",
    "TelemetryUnavailable",
    "TierSettings",
    "TokenBreakdown",
    "UsageSnapshot",
    "Weights",
    "WindowMismatchError",
    "__version__",
    "is_subscription_limit_error",
]
