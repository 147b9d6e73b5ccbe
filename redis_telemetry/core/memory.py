"""Memory eviction as a contract: which ``maxmemory-policy`` values the store supports.

Every key the store writes has a TTL, and a model's events and its running totals are two
keys, so any evicting policy (``allkeys-*`` and ``volatile-*`` alike) can drop one without the
other, and the snapshots are then wrong (see docs/reliability.md). Only ``noeviction`` keeps
them whole: at the limit Redis refuses writes instead. A store made by ``from_url`` reads the
policy once, before its first operation, and logs a warning when it can evict; this module
holds that decision, without I/O.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger(__name__)

#: The one policy under which a model's events and totals are never separated.
SUPPORTED_POLICY = "noeviction"
#: Errors that say Redis (or a cluster node) could not be reached, not that CONFIG was refused.
_UNREACHABLE = (RedisConnectionError, RedisTimeoutError, RedisClusterException)
#: The CONFIG GET pattern the probe sends: maxmemory and maxmemory-policy among others.
PATTERN = "maxmemory*"


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def settings(reply: Any) -> dict[str, dict[str, str]]:
    """CONFIG GET's reply as node -> {name: value}: one node (``""``) from a plain client, one
    entry per node from a cluster client asked for several nodes."""
    if not isinstance(reply, Mapping):
        return {}
    if reply and all(isinstance(v, Mapping) for v in reply.values()):
        return {_text(node): _flat(values) for node, values in reply.items()}
    return {"": _flat(reply)}


def _flat(values: Mapping[Any, Any]) -> dict[str, str]:
    return {_text(k): _text(v) for k, v in values.items()}


def verdict(node: str, config: Mapping[str, str]) -> str | None:
    """The warning for one node's settings, or None when its policy never evicts."""
    policy = config.get("maxmemory-policy")
    if policy is None or policy == SUPPORTED_POLICY:
        return None
    where = f"Redis at {node}" if node else "Redis"
    limit = config.get("maxmemory", "")
    limit_note = " (maxmemory is 0 for now)" if limit == "0" else ""
    return (
        f"{where} has maxmemory-policy {policy}{limit_note}: under memory pressure it can evict "
        "a model's events without its running totals (or the reverse), and the model's "
        "snapshots are then wrong until its keys expire; redis-telemetry supports "
        f"{SUPPORTED_POLICY} only (docs/reliability.md, 'Memory eviction')"
    )


class MemoryCheck:
    """One store's check of the eviction policy: run once, before its first operation."""

    def __init__(self) -> None:
        #: True until the policy was read (or could not be, for a reason other than the network)
        self.pending = True

    def read(self, reply: Any) -> None:
        """Log CONFIG GET's reply: one warning line when a node's policy can evict."""
        self.pending = False
        warnings = [w for node, c in settings(reply).items() if (w := verdict(node, c))]
        if warnings:
            log.warning("%s", warnings[0] if len(warnings) == 1 else "; ".join(warnings))
        else:
            log.debug("maxmemory-policy checked: %s", reply)

    def check(self, reply: Any) -> None:
        """CONFIG GET's reply, or the exception it raised: read it, or note the failure."""
        if isinstance(reply, BaseException):
            self.failed(reply)
        else:
            self.read(reply)

    def failed(self, error: BaseException) -> None:
        """CONFIG GET did not answer: stay silent (debug). An ACL user or a managed Redis
        may not run CONFIG. When Redis was unreachable, the next operation checks again (a
        single server's shell fails the call at once: the operation would fail too)."""
        self.pending = isinstance(error, _UNREACHABLE)
        log.debug("cannot read maxmemory-policy (%s); eviction not checked", error)
