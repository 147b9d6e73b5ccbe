"""The ``redis-telemetry`` command: a thin shell over :class:`TelemetryStore`."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import IO, Any

from pydantic import ValidationError
from rich.console import Console

from ._shell import ConnectionSettings
from ._version import __version__
from .cli_commands import (
    DEFAULT_PORT,
    DEFAULT_URL,
    EXIT_ERROR,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    Context,
    _cause,
    cmd_completion,
    cmd_demo,
    cmd_dump,
    cmd_events,
    cmd_export,
    cmd_import,
    cmd_ingest,
    cmd_limit,
    cmd_record,
    cmd_reindex,
    cmd_restore,
    cmd_serve,
    cmd_status,
    cmd_usage,
    cmd_watch,
    default_url,
)
from .core.backup import describe_validation
from .core.urls import check_url, redact
from .errors import InvalidInputError, TelemetryError, TelemetryUnavailable
from .ingest import FORMAT_NAMES
from .ingest.run import DEFAULT_RETRY_FOR

log = logging.getLogger(__name__)


# -- the parser ---------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error in one line (and exit code 2)."""

    def error(self, message: str) -> Any:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _number(kind: type[int] | type[float], low: float, high: float, what: str) -> Any:
    """An argparse type: a ``kind`` between ``low`` and ``high``, named ``what`` in errors."""

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or value != value or not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


_PORT = _number(int, 1, 65535, "a port between 1 and 65535")
_SECS = _number(int, 1, 10 * 365 * 86400, "a whole number of seconds, at least 1")
_COUNT = _number(int, 1, 10**9, "a count, at least 1")
_INTERVAL = _number(float, 0.05, 86400, "seconds between 0.05 and 86400")
_DURATION = _number(float, 0, 86400 * 7, "seconds between 0 and 604800")
_TIMEOUT = _number(float, 0.1, 3600, "seconds between 0.1 and 3600")
#: the environment variable behind --timeout
TIMEOUT_ENV = "REDIS_TELEMETRY_TIMEOUT"
DEFAULT_TIMEOUT = ConnectionSettings().timeout


def _timeout_from_env(parser: argparse.ArgumentParser) -> float:
    """``$REDIS_TELEMETRY_TIMEOUT``, else the library's default; a bad value is a usage error."""
    text = os.environ.get(TIMEOUT_ENV, "").strip()
    if not text:
        return DEFAULT_TIMEOUT
    try:
        secs: float = _TIMEOUT(text)
    except argparse.ArgumentTypeError as exc:
        parser.error(f"${TIMEOUT_ENV}: {exc}")
    return secs


def _retry_secs(text: str) -> float:
    try:
        secs = float(text)
    except ValueError:
        secs = -1.0
    if not 0 <= secs <= 86400 * 7:
        raise argparse.ArgumentTypeError(f"expected seconds between 0 and 604800, got {text!r}")
    return secs


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="redis-telemetry",
        description="Shared, live LLM model telemetry in Redis: inspect, ingest, operate.",
    )
    p.add_argument(
        "--url",
        default=None,
        help=f"Redis URL (default: $REDIS_TELEMETRY_URL, then $REDIS_URL, then {DEFAULT_URL})",
    )
    p.add_argument("--namespace", default=None, help="key prefix (default: telemetry)")
    p.add_argument(
        "--window",
        type=_SECS,
        default=3600,
        metavar="SECS",
        help="window for a namespace that has none yet (default 3600); "
        "a namespace's stored window always wins",
    )
    p.add_argument(
        "--timeout",
        type=_TIMEOUT,
        default=None,
        metavar="SECS",
        help="give up on a Redis that has not answered for SECS, per call: exit 3 "
        f"(default: ${TIMEOUT_ENV}, then {DEFAULT_TIMEOUT:g})",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="log more on stderr: -v info, -vv debug (with tracebacks behind errors)",
    )
    p.add_argument(
        "--log-level",
        type=str.upper,
        choices=LOG_LEVELS,
        default=None,
        metavar="LEVEL",
        help=f"log level of the redis_telemetry loggers, one of {', '.join(LOG_LEVELS)} "
        "(default WARNING; overrides -v)",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler: Callable[[Context], int], help: str) -> Any:
        sp = sub.add_parser(name, help=help, description=help)
        sp.set_defaults(handler=handler)
        return sp

    def json_flag(sp: Any) -> None:
        sp.add_argument("--json", action="store_true", help="print JSON instead of a table")

    json_flag(command("status", cmd_status, "one row per model: the fleet at a glance"))
    sp = command("watch", cmd_watch, "the status table, refreshed live until Ctrl-C")
    sp.add_argument("--interval", type=_INTERVAL, default=2.0, help="seconds between refreshes")
    sp.add_argument("--count", type=_COUNT, default=None, help="stop after N refreshes")
    sp = command("usage", cmd_usage, "tokens and cost per model for one session")
    sp.add_argument("session")
    json_flag(sp)
    sp = command("events", cmd_events, "one model's raw events in the window, newest first")
    sp.add_argument("model")
    sp.add_argument("--last", type=_COUNT, default=20, help="how many (default 20)")
    json_flag(sp)

    sp = command("limit", cmd_limit, "block or unblock a model")
    lim = sp.add_subparsers(dest="action", required=True, metavar="ACTION")
    lset = lim.add_parser("set", help="block MODEL for --ttl seconds")
    lset.add_argument("model")
    lset.add_argument("--ttl", type=_SECS, default=None, help="seconds (default 3600)")
    lim.add_parser("clear", help="lift MODEL's block").add_argument("model")

    sp = command("record", cmd_record, "record one event, from flags or serde JSON on stdin")
    sp.add_argument("--model", help="without it, one JSON event is read from stdin")
    sp.add_argument("--session", default="")
    sp.add_argument("--latency-ms", type=int)
    sp.add_argument("--failed", action="store_true", help="the call failed")
    sp.add_argument("--error", help="error message (implies --failed)")
    sp.add_argument("--cost", type=float, default=0.0, help="USD")
    for kind in ("input", "output", "reasoning", "cache-read", "cache-write"):
        sp.add_argument(f"--{kind}-tokens", type=int, default=0)
    sp.add_argument("--total-tokens", type=int, default=None, help="default: sum of the parts")
    sp.add_argument("--completed-at", help="RFC 3339 time (default: now)")

    sp = command("ingest", cmd_ingest, "turn agent CLI output into events and record them")
    sp.add_argument("--format", choices=FORMAT_NAMES, required=True)
    sp.add_argument("--model", help="model name (required for opencode; overrides the stream)")
    sp.add_argument("--session", help="session id (overrides the stream)")
    sp.add_argument(
        "--retry-for",
        type=_retry_secs,
        default=DEFAULT_RETRY_FOR,
        metavar="SECS",
        help="while Redis is unreachable, hold the lines read and retry for up to SECS "
        f"(default {DEFAULT_RETRY_FOR:g}); then exit 3 naming the line to resume from",
    )
    sp.add_argument("file", nargs="?", default="-", help="a file, or - for stdin (default)")

    sp = command("export", cmd_export, "print the TelemetrySummary JSON")
    sp.add_argument("--out", help="write to FILE instead of stdout")
    command("import", cmd_import, "import a TelemetrySummary JSON file").add_argument("file")
    sp = command("dump", cmd_dump, "lossless JSONL backup of every raw event and limit")
    sp.add_argument("--out", help="write to FILE instead of stdout")
    command("restore", cmd_restore, "restore a dump (idempotent)").add_argument("file")
    command(
        "reindex",
        cmd_reindex,
        "rebuild totals an older release wrote and trim what aged, now, in bounded steps",
    )

    sp = command("serve", cmd_serve, "a Prometheus exporter: one snapshot per scrape")
    sp.add_argument("--host", default="127.0.0.1", help="address to listen on")
    sp.add_argument(
        "--port", type=_PORT, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})"
    )
    sp.add_argument(
        "--percentiles",
        action="store_true",
        help="export exact p50/p95/p99 latency instead of the sketch's (reads every event "
        "in the window per scrape)",
    )

    sp = command("demo", cmd_demo, "a simulated fleet with a live table and a router")
    sp.add_argument("--seconds", type=_DURATION, default=20.0, help="how long to run (default 20)")

    sp = command("completion", cmd_completion, "print a shell completion script")
    sp.add_argument("shell", choices=("bash", "zsh"))
    return p


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a record comes, not when it was built."""

    @property
    def stream(self) -> IO[str]:
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass


def configure_logging(verbose: int, level: str | None) -> None:
    """Send the package's log records to stderr at ``level``, else by ``-v`` count.

    Every module logs to a child of the ``redis_telemetry`` logger (``redis_telemetry.store``,
    ``redis_telemetry.exporter``, ...); one handler on the parent serves them all. Calling it
    again replaces the handler instead of adding a second one.
    """
    if level is None:
        level = LOG_LEVELS[max(0, 2 - verbose)]
    package = logging.getLogger("redis_telemetry")
    for old in [h for h in package.handlers if isinstance(h, _StderrHandler)]:
        package.removeHandler(old)
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    package.addHandler(handler)
    package.setLevel(level)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit code (0 ok, 1 error, 2 usage, 3 Redis unreachable)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.url_given = args.url is not None
    args.url = args.url or default_url()
    try:
        check_url(args.url)
    except InvalidInputError as exc:
        where = "--url" if args.url_given else "$REDIS_TELEMETRY_URL/$REDIS_URL"
        parser.error(f"{where}: {exc}")
    if args.timeout is None:
        args.timeout = _timeout_from_env(parser)
    configure_logging(args.verbose, args.log_level)
    log.debug("%s on %s", args.command, redact(args.url))
    ctx = Context(args, Console(), Console(stderr=True, soft_wrap=True))
    try:
        code: int = args.handler(ctx)
        return code
    except (TelemetryError, ValidationError) as exc:
        log.debug("%s failed", args.command, exc_info=exc)
        return _report(ctx, exc)
    except BrokenPipeError:
        return 0


def _report(ctx: Context, exc: TelemetryError | ValidationError) -> int:
    """One line on stderr for a failure, and its exit code."""
    args = ctx.args
    if isinstance(exc, TelemetryUnavailable):
        ctx.err.print(
            f"redis-telemetry: cannot reach Redis at {redact(args.url)} ({_cause(exc)}). "
            "Start one with `docker compose up -d`, or install redis-server, "
            "or pass --url.",
            markup=False,
            highlight=False,
        )
        return EXIT_UNAVAILABLE
    if isinstance(exc, TelemetryError):
        ctx.err.print(f"redis-telemetry: {exc}", markup=False, highlight=False)
    else:
        ctx.err.print(f"redis-telemetry: {describe_validation(exc)}", markup=False)
    return EXIT_ERROR


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
