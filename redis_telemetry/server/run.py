"""Running the HTTP application: ``redis-telemetry serve``'s process.

It reads the tokens (environment or files), binds the socket itself (so a port in use is one
clear line), and runs the application on uvicorn until SIGINT or SIGTERM, then closes the
stores.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import socket
import ssl
from collections.abc import Callable, Mapping
from pathlib import Path

import uvicorn

from ..aio import AsyncTelemetryStore
from ..core.tier import TierSettings
from ..core.tokens import READ_TOKEN_ENV, WRITE_TOKEN_ENV, Tokens
from ..errors import InvalidInputError
from ..exporter import SnapshotCollector
from ..store import TelemetryStore
from .app import ServerSettings, create_app

log = logging.getLogger(__name__)
#: seconds a stopping server waits for requests in flight
GRACEFUL_SECS = 5


def _token(variable: str, path: str | None, environ: Mapping[str, str]) -> str | None:
    """A token from its file (the option wins) or its environment variable; None when unset."""
    if path is None:
        return environ.get(variable, "").strip() or None
    try:
        text = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"cannot read the token file {path}: {exc}") from None
    if not text:
        raise InvalidInputError(f"the token file {path} is empty")
    return text


def read_tokens(
    read_file: str | None, write_file: str | None, environ: Mapping[str, str]
) -> Tokens:
    """The read and write tokens: from the files named, else from the environment."""
    return Tokens(
        read=_token(READ_TOKEN_ENV, read_file, environ),
        write=_token(WRITE_TOKEN_ENV, write_file, environ),
    )


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host``:``port`` (an IPv6 address too)."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except BaseException:
        sock.close()
        raise
    return sock


class _Server(uvicorn.Server):
    """uvicorn's server, telling ``ready`` once it accepts requests."""

    def __init__(self, config: uvicorn.Config, ready: Callable[[], None]) -> None:
        super().__init__(config)
        self._ready = ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if not self.should_exit:
            self._ready()


#: ``TierSettings``' fields that ``serve`` takes, by their options
TIER_OPTIONS = {
    "max_age": "--tier-max-age",
    "limits_max_age": "--tier-limits-max-age",
    "stale_after": "--tier-stale-after",
}


def tier_settings(args: argparse.Namespace) -> TierSettings | None:
    """``POST /v1/select``'s local read tier, when ``--tier`` or a ``--tier-*`` option is
    given; a combination out of range is refused naming the options."""
    given = {name: getattr(args, f"tier_{name}") for name in TIER_OPTIONS}
    given = {name: value for name, value in given.items() if value is not None}
    if not (args.tier or given):
        return None
    try:
        return TierSettings(**given).check()
    except InvalidInputError as exc:
        message = str(exc)
        for name, option in TIER_OPTIONS.items():  # whole names: max_age is not limits_max_age
            message = re.sub(rf"\b{name}\b", option, message)
        raise InvalidInputError(message) from None


def serve(
    args: argparse.Namespace, metrics_store: TelemetryStore, ready: Callable[[str], None]
) -> None:
    """Serve ``args``' application until interrupted; ``ready`` is told the base URL."""
    tokens = read_tokens(args.read_token_file, args.write_token_file, os.environ)
    if (args.tls_cert is None) != (args.tls_key is None):
        raise InvalidInputError("--tls-cert and --tls-key go together")
    store = AsyncTelemetryStore.from_url(
        args.url, window_secs=args.window, namespace=args.namespace, timeout=args.timeout
    )
    settings = ServerSettings(tokens, args.max_body_bytes, args.open_metrics, tier_settings(args))
    app = create_app(store, settings, SnapshotCollector(metrics_store, args.percentiles))
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_config=None,
        access_log=False,
        server_header=False,
        ssl_certfile=args.tls_cert,
        ssl_keyfile=args.tls_key,
        timeout_graceful_shutdown=GRACEFUL_SECS,
    )
    try:
        config.load()
    except (OSError, ssl.SSLError) as exc:
        raise InvalidInputError(f"cannot use --tls-cert/--tls-key: {exc}") from None
    sock = bind(args.host, args.port)
    scheme = "https" if args.tls_cert else "http"
    host = f"[{args.host}]" if ":" in args.host else args.host
    base = f"{scheme}://{host}:{sock.getsockname()[1]}"
    if (warning := tokens.warning()) is not None:
        log.warning("%s", warning)

    def started() -> None:
        ready(base)

    with sock:
        _Server(config, started).run(sockets=[sock])
