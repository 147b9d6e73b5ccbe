"""Record a LiteLLM app's calls into the shared store, and route a LiteLLM Router on it.

Install with ``pip install 'redis-telemetry[litellm]'``. Importing this module imports LiteLLM
(the base package never does) and refuses a LiteLLM it does not support, naming it::

    litellm.callbacks = [TelemetryLogger(store)]
    router.register_plugin(SharedStateRouting(router, store))

See docs/litellm.md.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

#: The oldest LiteLLM served: the first with the Router's entry points (registry(),
#: register_plugin()) this module reads deployments through.
MIN_LITELLM = (1, 109, 0)
#: The newest LiteLLM minor series this was tested with; newer ones are tried, not refused.
TESTED_LITELLM = "1.110.2"


def _release(text: str) -> tuple[int, ...]:
    """The leading numeric release of a version string ("1.110.2rc1" -> (1, 110, 2))."""
    parts: list[int] = []
    for piece in text.split("."):
        digits = ""
        for ch in piece:
            if not ch.isdigit():
                break
            digits += ch
        if not digits:
            break
        parts.append(int(digits))
        if len(digits) != len(piece):
            break
    return tuple(parts)


def check_litellm_version(installed: str) -> None:
    """Raise ImportError naming ``installed`` when it is older than ``MIN_LITELLM``."""
    floor = ".".join(map(str, MIN_LITELLM))
    if _release(installed) < MIN_LITELLM:
        raise ImportError(
            f"redis_telemetry.integrations.litellm does not support LiteLLM {installed}: it "
            f"needs litellm>={floor} (tested with {TESTED_LITELLM}). Upgrade with "
            f"pip install 'redis-telemetry[litellm]'"
        )


try:
    _installed = version("litellm")
except PackageNotFoundError:
    raise ImportError(
        "redis_telemetry.integrations.litellm needs LiteLLM: pip install 'redis-telemetry[litellm]'"
    ) from None
check_litellm_version(_installed)

from .logger import TelemetryLogger  # noqa: E402  (after the version check, on purpose)
from .routing import SharedStateRouting  # noqa: E402

__all__ = ["SharedStateRouting", "TelemetryLogger", "check_litellm_version"]
