"""Key names: the public layout of a namespace in Redis.

``<ns>:{<model>}:events``, ``:totals``, ``:sessions``, ``:latency``, ``:ids`` and ``:limit``
share the ``{<model>}`` hash tag, so one model's keys always sit in one cluster slot.
``<ns>:models`` and ``<ns>:config`` sit apart.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InvalidInputError

DEFAULT_NAMESPACE = "telemetry"
MAX_NAMESPACE_LEN = 128


def check_namespace(namespace: object) -> str:
    """A namespace: 1..128 printable characters without braces."""
    if not isinstance(namespace, str) or not namespace:
        raise InvalidInputError("namespace must be a non-empty string")
    if len(namespace) > MAX_NAMESPACE_LEN:
        raise InvalidInputError(f"namespace is longer than {MAX_NAMESPACE_LEN} characters")
    if "{" in namespace or "}" in namespace:
        raise InvalidInputError(f"namespace {namespace!r} must not contain '{{' or '}}'")
    if not namespace.isprintable():
        raise InvalidInputError(f"namespace {namespace!r} contains non-printable characters")
    return namespace


@dataclass(frozen=True, slots=True)
class Keys:
    """Builds every key name of one namespace."""

    namespace: str = DEFAULT_NAMESPACE

    def __post_init__(self) -> None:
        check_namespace(self.namespace)

    def events(self, model: str) -> str:
        """Sorted set of one model's events, scored by completed_at (epoch ms)."""
        return f"{self.namespace}:{{{model}}}:events"

    def limit(self, model: str) -> str:
        """String present while the model is subscription-limited; its TTL is the time left."""
        return f"{self.namespace}:{{{model}}}:limit"

    def totals(self, model: str) -> str:
        """Hash of running sums over the events key's members, kept by ``record.lua``."""
        return f"{self.namespace}:{{{model}}}:totals"

    def sessions(self, model: str) -> str:
        """Hash: each session's usage summed over the events key, kept by ``record.lua``, in
        fields ``<id>:n`` (events), ``<id>:i``, ``<id>:o``, ``<id>:t`` (input, output and
        total tokens) and ``<id>:c`` (cost, nano-USD)."""
        return f"{self.namespace}:{{{model}}}:sessions"

    def latency(self, model: str) -> str:
        """String of the latency sketch's counters, kept by ``record.lua``: a big-endian signed
        32-bit count of successful completions per bucket (``BITFIELD ... GET i32 #<bucket>``)."""
        return f"{self.namespace}:{{{model}}}:latency"

    def ids(self, model: str) -> str:
        """Hash of the event ids the events key holds, each with its member's score, kept by
        ``record.lua``: one event id is one event per model."""
        return f"{self.namespace}:{{{model}}}:ids"

    def spend(self, model: str) -> str:
        """Hash of the model's spend in nano-USD per UTC hour (``h:<hours since the epoch>``)
        and day (``d:<days>``), kept by ``record.lua``: the current ones and later."""
        return f"{self.namespace}:{{{model}}}:spend"

    def provider(self, provider: str) -> str:
        """Hash of one provider's shared settings: caps, forced exhaustion, block, backoff
        (``lua/provider.lua``)."""
        return f"{self.namespace}:{{{provider}}}:provider"

    @property
    def providers(self) -> str:
        """Sorted set registry: provider -> epoch ms until which its settings are kept."""
        return f"{self.namespace}:providers"

    @property
    def spenders(self) -> str:
        """Sorted set registry: model -> epoch ms until which its ``spend`` hash may count
        (the end of the latest UTC day it spent in)."""
        return f"{self.namespace}:spenders"

    @property
    def aliases(self) -> str:
        """Hash: provider -> the provider it is folded into (one hop)."""
        return f"{self.namespace}:aliases"

    @property
    def models(self) -> str:
        """Sorted set registry: model -> epoch ms until which it has data or a limit."""
        return f"{self.namespace}:models"

    @property
    def config(self) -> str:
        """Hash of the namespace's shared settings (``window_secs``)."""
        return f"{self.namespace}:config"
