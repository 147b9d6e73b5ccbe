"""What the blocking and asyncio stores share: construction, connection settings, script shas.

Only sending a batch differs between them (``pipe.execute()`` or ``await pipe.execute()``).
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Self, cast

from redis.backoff import NoBackoff
from redis.exceptions import RedisClusterException, RedisError

from .core import rules
from .core.deadline import Guard, guard_for
from .core.keys import DEFAULT_NAMESPACE
from .core.memory import PATTERN, MemoryCheck
from .core.ops import DEFAULT_MAX_EVENTS_PER_MODEL, StoreCore
from .core.scripts import SCRIPTS
from .core.urls import check_url, redact
from .errors import InvalidInputError, TelemetryError, TelemetryUnavailable


def check_client(client: Any) -> None:
    """Refuse a client that decodes replies: members are binary msgpack."""
    get_encoder = getattr(client, "get_encoder", None)
    if get_encoder is not None and getattr(get_encoder(), "decode_responses", False):
        raise TelemetryError(
            "the Redis client has decode_responses=True; redis-telemetry stores binary msgpack "
            "members and needs a client built with decode_responses=False"
        )


@dataclass(frozen=True, slots=True)
class ConnectionSettings:
    """What ``from_url`` applies: a deadline per call, bounded waits, a few retries with
    jittered backoff, and a circuit breaker.

    A call raises ``TelemetryUnavailable`` once Redis has not answered for ``timeout`` seconds
    (each reply renews them, so a long ``reindex`` or ``dump`` that makes progress is never
    cut). One attempt waits at most ``socket_timeout`` for a reply and ``socket_connect_timeout``
    to connect, both capped at half of ``timeout``; the store retries a refused, reset or
    timed-out attempt up to ``retries`` times, only when the retry can end before the deadline
    (redis-py itself retries nothing: its handshake retries would multiply the command's).
    After a call found Redis unreachable, every call of the store fails at once for
    ``breaker_secs`` (0: never); then one call tries again.
    """

    socket_timeout: float = 5.0
    socket_connect_timeout: float = 2.0
    retries: int = 3
    backoff_base: float = 0.05
    backoff_cap: float = 0.5
    health_check_interval: float = 30.0
    timeout: float = 5.0
    breaker_secs: float = 1.0

    def attempt_secs(self) -> float:
        """The socket timeout one attempt gets: at most half the deadline, so a retry fits."""
        return min(self.socket_timeout, self.timeout / 2)

    def check(self) -> ConnectionSettings:
        """These settings, or InvalidInputError naming the first one out of range."""
        for name in ("timeout", "socket_timeout", "socket_connect_timeout"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and 0 < value < math.inf):
                raise InvalidInputError(f"{name} must be seconds above 0, got {value!r}")
        for name in ("retries", "breaker_secs", "backoff_base", "backoff_cap"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and 0 <= value < math.inf):
                raise InvalidInputError(f"{name} must be a number, at least 0, got {value!r}")
        return self


DEFAULT_CONNECTION = ConnectionSettings()


class StoreShell:
    """Base of both stores. Subclasses name their redis-py client and Retry classes."""

    _client_types: ClassVar[tuple[type, ...]]
    _redis_cls: ClassVar[Any]
    _cluster_cls: ClassVar[Any]
    _retry_cls: ClassVar[Any]
    _wrong_client: ClassVar[str]

    def __init__(
        self,
        client: Any,
        window_secs: int = 3600,
        subscription_limit_ttl_secs: int = 3600,
        namespace: str = DEFAULT_NAMESPACE,
        max_events_per_model: int | None = DEFAULT_MAX_EVENTS_PER_MODEL,
        wait_for_replicas: int = 0,
        wait_timeout_ms: int = 1000,
    ) -> None:
        if not isinstance(client, self._client_types):
            raise TelemetryError(self._wrong_client)
        check_client(client)
        self._core = StoreCore(
            namespace,
            window_secs,
            subscription_limit_ttl_secs,
            max_events_per_model=max_events_per_model,
            wait_for_replicas=wait_for_replicas,
            wait_timeout_ms=wait_timeout_ms,
        )
        #: The redis-py client, used as it was given.
        self.client: Any = cast(Any, client)
        scripts = {name: self.client.register_script(s) for name, s in SCRIPTS.items()}
        #: name -> SHA1 of each registered script (fixed by its source), for EVALSHA
        self._sha = {name: script.sha for name, script in scripts.items()}
        #: True for a Redis Cluster client: batches then go out one pipeline per node.
        self.is_cluster = isinstance(client, self._cluster_cls)
        #: From ``from_url``: the eviction policy is checked before the first operation.
        self._memory: MemoryCheck | None = None
        #: Each call's deadline, retries and breaker; a client given as it is keeps its own.
        self._guard = Guard()

    @classmethod
    def from_url(
        cls,
        url: str,
        window_secs: int = 3600,
        subscription_limit_ttl_secs: int = 3600,
        namespace: str = DEFAULT_NAMESPACE,
        connection: ConnectionSettings = DEFAULT_CONNECTION,
        max_events_per_model: int | None = DEFAULT_MAX_EVENTS_PER_MODEL,
        wait_for_replicas: int = 0,
        wait_timeout_ms: int = 1000,
        timeout: float | None = None,
        **redis_kwargs: Any,
    ) -> Self:
        """Connect with a deadline per call, bounded timeouts and retries and a circuit
        breaker (see ``ConnectionSettings``); ``timeout`` (seconds, default 5) replaces
        ``connection.timeout``: every call answers or raises ``TelemetryUnavailable`` within
        it (with ``wait_for_replicas``, within it plus ``wait_timeout_ms``: a write waits that
        long for its replicas). Keyword arguments for redis-py override the settings. A
        ``redis+cluster://host:port`` (or ``rediss+cluster://``) URL connects to a Redis
        Cluster through that seed node (the cluster client reads the slot map at once, within
        the same bounds).

        No other I/O happens here. Before its first operation, the store reads the server's
        ``maxmemory-policy`` (every primary's, on a cluster) and logs a warning when it can
        evict a model's events without its totals; a server that refuses CONFIG (an ACL user,
        a managed Redis) is not checked, logged at debug level only."""
        if timeout is not None:
            connection = replace(connection, timeout=timeout)
        connection.check()
        # a write that WAITs for replicas may wait wait_timeout_ms more for its reply
        waits = rules.check_u64("wait_for_replicas", wait_for_replicas) > 0
        wait = rules.check_positive_ms("wait_timeout_ms", wait_timeout_ms) / 1000 if waits else 0
        attempt = connection.attempt_secs() + wait
        kwargs: dict[str, Any] = {
            "socket_timeout": attempt,
            "socket_connect_timeout": min(connection.socket_connect_timeout, attempt),
            "health_check_interval": connection.health_check_interval,
            "retry": cls._retry_cls(NoBackoff(), 0),  # the store retries, within the deadline
            **redis_kwargs,
        }
        if kwargs.get("decode_responses"):
            raise TelemetryError("redis-telemetry needs decode_responses=False")
        scheme, sep, rest = check_url(url).partition("://")
        if scheme in ("redis+cluster", "rediss+cluster"):
            plain = scheme.removesuffix("+cluster") + sep + rest
            try:
                client = cls._cluster_cls.from_url(plain, **kwargs)
            except (RedisError, RedisClusterException) as exc:
                raise TelemetryUnavailable(f"cannot use {plain} as a Redis Cluster: {exc}") from exc
        else:
            try:
                client = cls._redis_cls.from_url(url, **kwargs)
            except ValueError as exc:  # what check_url cannot see: a bad query option
                raise InvalidInputError(f"malformed Redis URL {redact(url)!r}: {exc}") from None
        store = cls(
            client,
            window_secs,
            subscription_limit_ttl_secs,
            namespace,
            max_events_per_model,
            wait_for_replicas,
            wait_timeout_ms,
        )
        store._memory = MemoryCheck()
        store._guard = guard_for(
            connection.timeout + wait,
            attempt,
            connection.retries,
            connection.backoff_base,
            connection.backoff_cap,
            connection.breaker_secs,
        )
        return store

    @property
    def namespace(self) -> str:
        """The namespace's key prefix."""
        return self._core.namespace

    @property
    def window_secs(self) -> int:
        """The rolling window, shared by every store of the namespace."""
        return self._core.window_secs

    @property
    def subscription_limit_ttl_secs(self) -> int:
        """How long a subscription-limit error blocks a model."""
        return self._core.limit_ttl_secs

    def with_window(self, window_secs: int) -> Self:
        """The same store with another window: the same client, namespace, limit TTL, cap
        and WAIT settings. Use it to follow a namespace whose window was changed on purpose
        (``stored_window()``, or a ``WindowMismatchError``'s ``stored``); this store is left
        as it is."""
        core = self._core
        twin = type(self)(
            self.client,
            window_secs,
            core.limit_ttl_secs,
            core.namespace,
            core.max_events_per_model or None,
            core.wait_for_replicas,
            core.wait_timeout_ms,
        )
        twin._memory = self._memory  # one connection, checked once
        twin._guard = self._guard  # one server: one breaker
        return twin

    def _memory_probe(self) -> tuple[tuple[str], dict[str, Any]]:
        """CONFIG GET's arguments for the eviction policy check (every primary of a cluster)."""
        return (PATTERN,), {"target_nodes": self._cluster_cls.PRIMARIES} if self.is_cluster else {}

    def _locate(self, key: str, read_only: bool) -> Hashable:
        """The cluster node for ``key``: its primary, or a replica for reads when the client
        was built to read from replicas (``load_balancing_strategy``)."""
        strategy = getattr(self.client, "load_balancing_strategy", None)
        node = self.client.nodes_manager.get_node_from_slot(
            self.client.keyslot(key),
            load_balancing_strategy=strategy if read_only else None,
        )
        name: Hashable = node.name
        return name

    def _every_node(self) -> list[Hashable]:
        """Every cluster node, replicas included."""
        return [node.name for node in self.client.get_nodes()]

    def _shas(self) -> dict[str, str]:
        return self._sha
