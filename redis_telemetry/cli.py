"""The ``redis-telemetry`` command: a thin shell over :class:`TelemetryStore`."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import IO, Any, NamedTuple

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
    cmd_providers,
    cmd_record,
    cmd_reindex,
    cmd_restore,
    cmd_serve,
    cmd_status,
    cmd_usage,
    cmd_watch,
)
from .core.backup import describe_validation
from .core.bodies import DEFAULT_BODY_LIMIT
from .core.keys import DEFAULT_NAMESPACE, check_namespace
from .core.limits import named_zone
from .core.providers import check_provider, usd_to_nusd
from .core.rules import check_model_name
from .core.tier import DEFAULT_TIER
from .core.urls import check_url, redact
from .errors import InvalidInputError, TelemetryError, TelemetryUnavailable
from .ingest import FORMAT_NAMES, FORMATS
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


def _retry_secs(text: str) -> float:
    try:
        secs = float(text)
    except ValueError:
        secs = -1.0
    if not 0 <= secs <= 86400 * 7:
        raise argparse.ArgumentTypeError(f"expected seconds between 0 and 604800, got {text!r}")
    return secs


def _checked(check: Callable[[str], object]) -> Callable[[str], str]:
    """An argparse type from one of the package's checks: its InvalidInputError, in one line."""

    def parse(text: str) -> str:
        try:
            check(text)
        except InvalidInputError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return text

    return parse


def _not_empty(what: str) -> Callable[[str], str]:
    def check(text: str) -> None:
        if not text.strip():
            raise InvalidInputError(f"expected {what}, got {text!r}")

    return _checked(check)


_URL = _checked(check_url)
_NAMESPACE = _checked(check_namespace)
_MODEL = _checked(check_model_name)
_PROVIDER = _checked(check_provider)


def _USD(text: str) -> float | None:
    """A cap in USD, or ``none`` for uncapped."""
    if text.strip().lower() == "none":
        return None
    try:
        value = float(text)
        usd_to_nusd("cap", value)
    except (ValueError, InvalidInputError):
        raise argparse.ArgumentTypeError(
            f"expected USD between 0 and 1e9, or none, got {text!r}"
        ) from None
    return value


def _WHEN(text: str) -> datetime:
    """An RFC 3339 time with a zone."""
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an RFC 3339 time, got {text!r}") from None
    if when.tzinfo is None:
        raise argparse.ArgumentTypeError(f"the time needs a zone (such as Z), got {text!r}")
    return when


_HOST = _not_empty("an address to listen on, such as 127.0.0.1 or 0.0.0.0")
_FILE = _not_empty("a file name")
_ZONE = _checked(named_zone)


class Env(NamedTuple):
    """An option that may come from the environment: the variables, first set wins (an empty
    one counts as unset); how a value is parsed; the default when none is set."""

    variables: tuple[str, ...]
    parse: Callable[[str], Any]
    default: Any
    applies_to: str = "every command"


#: Options the environment may set, by destination. An option on the command line wins.
ENVIRONMENT = {
    "url": Env(("REDIS_TELEMETRY_URL", "REDIS_URL"), _URL, DEFAULT_URL),
    "namespace": Env(("REDIS_TELEMETRY_NAMESPACE",), _NAMESPACE, DEFAULT_NAMESPACE),
    "window": Env(("REDIS_TELEMETRY_WINDOW",), _SECS, 3600),
    "host": Env(("REDIS_TELEMETRY_HOST",), _HOST, "127.0.0.1", "serve"),
    "port": Env(("REDIS_TELEMETRY_PORT",), _PORT, DEFAULT_PORT, "serve"),
    "timeout": Env((TIMEOUT_ENV,), _TIMEOUT, DEFAULT_TIMEOUT),
}


def _env_help(dest: str) -> str:
    env = ENVIRONMENT[dest]
    return ", then ".join([*(f"${v}" for v in env.variables), str(env.default)])


def _environment_epilog() -> str:
    rows = [
        f"  {', '.join(env.variables):<38} --{dest} ({env.applies_to})"
        for dest, env in ENVIRONMENT.items()
    ]
    return "\n".join(
        [
            "environment variables (an option on the command line wins over its variable;",
            "an empty variable counts as unset):",
            *rows,
        ]
    )


def _global_options(p: argparse.ArgumentParser, default: Callable[[Any], Any]) -> None:
    """The options every command takes, before or after its name. ``default`` gives each
    option's default: the values on the top-level parser, SUPPRESS on a command's, so that an
    option after the command overrides one before it and an absent one changes nothing."""
    p.add_argument(
        "--url",
        type=_URL,
        default=default(None),
        help=f"Redis URL (default: {_env_help('url')})",
    )
    p.add_argument(
        "--namespace",
        type=_NAMESPACE,
        default=default(None),
        help=f"key prefix (default: {_env_help('namespace')})",
    )
    p.add_argument(
        "--window",
        type=_SECS,
        default=default(None),
        metavar="SECS",
        help=f"window for a namespace that has none yet (default: {_env_help('window')}); "
        "a namespace's stored window always wins",
    )
    p.add_argument(
        "--timeout",
        type=_TIMEOUT,
        default=default(None),
        metavar="SECS",
        help="give up on a Redis that has not answered for SECS, per call: exit 3 "
        f"(default: {_env_help('timeout')})",
    )
    p.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=default(0),
        help="log more on stderr: -v info, -vv debug (with tracebacks behind errors)",
    )
    p.add_argument(
        "--log-level",
        type=str.upper,
        choices=LOG_LEVELS,
        default=default(None),
        metavar="LEVEL",
        help=f"log level of the redis_telemetry loggers, one of {', '.join(LOG_LEVELS)} "
        "(default WARNING; overrides -v)",
    )


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="redis-telemetry",
        description="Shared, live LLM model telemetry in Redis: inspect, ingest, operate.\n"
        "The options below work before or after the command.",
        epilog=_environment_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _global_options(p, lambda value: value)
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    globals_after = _Parser(add_help=False)
    _global_options(globals_after, lambda _: argparse.SUPPRESS)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler: Callable[[Context], int], help: str) -> Any:
        sp = sub.add_parser(name, help=help, description=help, parents=[globals_after])
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
    sp.add_argument("model", type=_MODEL)
    sp.add_argument("--last", type=_COUNT, default=20, help="how many (default 20)")
    json_flag(sp)

    sp = command("limit", cmd_limit, "block or unblock a model")
    lim = sp.add_subparsers(dest="action", required=True, metavar="ACTION")
    lset = lim.add_parser("set", help="block MODEL for --ttl seconds", parents=[globals_after])
    lset.add_argument("model", type=_MODEL)
    lset.add_argument("--ttl", type=_SECS, default=None, help="seconds (default 3600)")
    lclear = lim.add_parser("clear", help="lift MODEL's block", parents=[globals_after])
    lclear.add_argument("model", type=_MODEL)

    sp = command(
        "providers",
        cmd_providers,
        "providers: spend, caps, verdict, block and backoff; set budgets, blocks, aliases",
    )
    json_flag(sp)
    prov = sp.add_subparsers(dest="action", required=False, metavar="ACTION")
    pb = prov.add_parser(
        "budget", help="set PROVIDER's caps in USD (none: uncapped)", parents=[globals_after]
    )
    pb.add_argument("provider", type=_PROVIDER)
    pb.add_argument("--hour", type=_USD, default=None, metavar="USD", help="UTC hour cap")
    pb.add_argument("--day", type=_USD, default=None, metavar="USD", help="UTC day cap")
    pk = prov.add_parser(
        "block",
        help="block PROVIDER until --until or the reset --reason names (else 900 s)",
        parents=[globals_after],
    )
    pk.add_argument("provider", type=_PROVIDER)
    pk.add_argument("--reason", default="manual", help='e.g. "usage limit, resets in 2 hours"')
    pk.add_argument("--until", type=_WHEN, default=None, help="RFC 3339 time with a zone")
    for name, help in (
        ("unblock", "end PROVIDER's block and 429 backoff"),
        ("exhaust", "force PROVIDER exhausted until its windows roll"),
    ):
        prov.add_parser(name, help=help, parents=[globals_after]).add_argument(
            "provider", type=_PROVIDER
        )
    pa = prov.add_parser(
        "alias", help="fold PROVIDER into INTO for every replica", parents=[globals_after]
    )
    pa.add_argument("provider", type=_PROVIDER)
    pa.add_argument("into", type=_PROVIDER, nargs="?", help="omit with --remove")
    pa.add_argument("--remove", action="store_true", help="remove PROVIDER's alias")
    prov.add_parser("of", help="the provider of MODEL", parents=[globals_after]).add_argument(
        "model", type=_MODEL
    )

    sp = command("record", cmd_record, "record one event, from flags or serde JSON on stdin")
    sp.add_argument("--model", type=_MODEL, help="without it, one JSON event is read from stdin")
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
    sp.add_argument(
        "--format",
        choices=FORMAT_NAMES,
        required=True,
        help="; ".join(f"{p.name}: {p.source.replace('`', '')}" for p in FORMATS),
    )
    sp.add_argument(
        "--model",
        type=_MODEL,
        help="model name (required for opencode and codex; overrides the stream, except a "
        "model a gemini run or an opencode step names)",
    )
    sp.add_argument(
        "--timezone",
        type=_ZONE,
        metavar="ZONE",
        help="IANA zone of reset times codex prints without one (default: this machine's)",
    )
    sp.add_argument("--session", help="session id (overrides the stream)")
    sp.add_argument(
        "--retry-for",
        type=_retry_secs,
        default=DEFAULT_RETRY_FOR,
        metavar="SECS",
        help="while Redis is unreachable, hold the lines read and retry for up to SECS "
        f"(default {DEFAULT_RETRY_FOR:g}); then exit 3 naming the line to resume from",
    )
    sp.add_argument(
        "file", nargs="?", default="-", type=_FILE, help="a file, or - for stdin (default)"
    )

    sp = command("export", cmd_export, "print the TelemetrySummary JSON")
    sp.add_argument("--out", type=_FILE, help="write to FILE instead of stdout")
    command("import", cmd_import, "import a TelemetrySummary JSON file").add_argument(
        "file", type=_FILE
    )
    sp = command("dump", cmd_dump, "lossless JSONL backup of every raw event and limit")
    sp.add_argument("--out", type=_FILE, help="write to FILE instead of stdout")
    command("restore", cmd_restore, "restore a dump (idempotent)").add_argument("file", type=_FILE)
    command(
        "reindex",
        cmd_reindex,
        "rebuild totals an older release wrote and trim what aged, now, in bounded steps",
    )

    sp = command(
        "serve",
        cmd_serve,
        "the HTTP API (record, read, route), Prometheus metrics and health probes "
        "(needs the server extra)",
    )
    sp.add_argument(
        "--host",
        type=_HOST,
        default=None,
        help=f"address to listen on (default: {_env_help('host')})",
    )
    sp.add_argument("--port", type=_PORT, default=None, help=f"port (default: {_env_help('port')})")
    sp.add_argument(
        "--percentiles",
        action="store_true",
        help="export exact p50/p95/p99 latency instead of the sketch's (reads every event "
        "in the window per scrape)",
    )
    sp.add_argument(
        "--read-token-file",
        type=_FILE,
        metavar="FILE",
        help="the bearer token that reads, from FILE (default: $REDIS_TELEMETRY_READ_TOKEN)",
    )
    sp.add_argument(
        "--write-token-file",
        type=_FILE,
        metavar="FILE",
        help="the bearer token that writes and reads, from FILE "
        "(default: $REDIS_TELEMETRY_WRITE_TOKEN); with no token at all, the API is open",
    )
    sp.add_argument(
        "--open-metrics",
        action="store_true",
        help="/metrics, /healthz and /readyz answer without a token",
    )
    sp.add_argument(
        "--max-body-bytes",
        type=_number(int, 1, 2**40, "a number of bytes, at least 1"),
        default=DEFAULT_BODY_LIMIT,
        metavar="N",
        help="the largest request body, counted after decompression "
        f"(default {DEFAULT_BODY_LIMIT}: 16 MiB)",
    )
    sp.add_argument("--tls-cert", type=_FILE, metavar="FILE", help="serve HTTPS: the certificate")
    sp.add_argument("--tls-key", type=_FILE, metavar="FILE", help="the certificate's private key")
    sp.add_argument(
        "--tier",
        action="store_true",
        help="answer POST /v1/select from a local read tier: from memory, refreshed off the "
        "request's path; this server's own limit writes show at once (see the --tier-* options)",
    )
    for flag, name, what in (
        ("--tier-max-age", "max_age", "performance numbers are read again once this old"),
        ("--tier-limits-max-age", "limits_max_age", "limits are read again once this old"),
        ("--tier-stale-after", "stale_after", "data is served, stale, up to this old"),
    ):
        sp.add_argument(
            flag,
            dest=f"tier_{name}",
            type=_INTERVAL,
            default=None,
            metavar="SECS",
            help=f"the tier's {what} (default {getattr(DEFAULT_TIER, name)}; implies --tier)",
        )

    sp = command(
        "demo",
        cmd_demo,
        "a simulated fleet with a live table and a router, in namespace 'demo' "
        "(or --namespace, when given on the command line)",
    )
    sp.add_argument("--seconds", type=_DURATION, default=20.0, help="how long to run (default 20)")

    sp = command("completion", cmd_completion, "print a shell completion script")
    sp.add_argument("shell", choices=("bash", "zsh"))
    return p


def apply_environment(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Fill each option of :data:`ENVIRONMENT` the command line left out from its variable,
    else its default; ``args.given`` names the ones the command line set. A bad value in a
    variable is a usage error naming the variable."""
    given = set()
    for dest, env in ENVIRONMENT.items():
        if dest not in vars(args):
            continue  # an option of another command
        if getattr(args, dest) is not None:
            given.add(dest)
            continue
        value = env.default
        for variable in env.variables:
            if text := os.environ.get(variable, ""):
                try:
                    value = env.parse(text)
                except argparse.ArgumentTypeError as exc:
                    parser.error(f"${variable}: {exc}")
                break
        setattr(args, dest, value)
    args.given = frozenset(given)


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
    apply_environment(parser, args)
    configure_logging(args.verbose, args.log_level)
    log.debug("%s on %s", args.command, redact(args.url))
    ctx = Context(args, parser, Console(), Console(stderr=True, soft_wrap=True))
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
