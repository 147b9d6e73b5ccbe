"""The ``redis-telemetry`` command: a thin shell over :class:`TelemetryStore`."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, NamedTuple

from pydantic import BaseModel, ValidationError
from rich.console import Console
from rich.live import Live
from rich.progress import BarColumn, Progress, TextColumn, TransferSpeedColumn

from . import render
from ._version import __version__
from .core.backup import Dump, DumpEvent, DumpHeader, DumpLimit, describe_validation, parse_line
from .core.keys import DEFAULT_NAMESPACE
from .core.urls import check_url, redact
from .errors import InvalidInputError, TelemetryError, TelemetryUnavailable
from .ingest import FORMAT_NAMES, IngestAborted, breakdown, make_parser, run_ingest
from .ingest.run import DEFAULT_RETRY_FOR, read_lines, with_retry
from .models import CompletionEvent, TelemetrySummary
from .store import TelemetryStore

log = logging.getLogger(__name__)
DEFAULT_URL = "redis://localhost:6379/0"
#: `serve`'s port: free in the Prometheus default port allocations list (9464, the old
#: default, is the OpenTelemetry Prometheus exporter's, which Claude Code may use)
DEFAULT_PORT = 10464
EXIT_ERROR, EXIT_USAGE, EXIT_UNAVAILABLE = 1, 2, 3


def default_url() -> str:
    """``REDIS_TELEMETRY_URL``, then ``REDIS_URL``, then the local default."""
    return os.environ.get("REDIS_TELEMETRY_URL") or os.environ.get("REDIS_URL") or DEFAULT_URL


class Context(NamedTuple):
    args: argparse.Namespace
    out: Console
    err: Console


def connect(args: argparse.Namespace) -> TelemetryStore:
    """A store on ``--url`` and ``--namespace``, with ``--window`` (no I/O yet)."""
    ns = args.namespace or DEFAULT_NAMESPACE
    return TelemetryStore.from_url(args.url, window_secs=args.window, namespace=ns)


def adopt_window(store: TelemetryStore) -> TelemetryStore:
    """The same connection with the window the namespace already has in Redis, if any."""
    stored = store.stored_window()
    if stored is None or stored == store.window_secs:
        return store
    return store.with_window(stored)


def open_store(args: argparse.Namespace) -> TelemetryStore:
    """A store on ``--url``, using the window the namespace already has in Redis."""
    return adopt_window(connect(args))


def print_json(ctx: Context, value: BaseModel | Sequence[BaseModel]) -> None:
    """Machine-readable JSON with the library's field names."""
    if isinstance(value, BaseModel):
        data: Any = value.model_dump(mode="json")
    else:
        data = [v.model_dump(mode="json") for v in value]
    ctx.out.print_json(json.dumps(data)) if ctx.out.is_terminal else print(json.dumps(data))


# -- read commands ------------------------------------------------------------------------------


def cmd_status(ctx: Context) -> int:
    store = open_store(ctx.args)
    snaps = store.all_model_performances()
    if ctx.args.json:
        print_json(ctx, snaps)
    elif not snaps:
        ctx.out.print(f"No models yet in namespace {store.namespace!r}: nothing recorded.")
    else:
        ctx.out.print(render.status_table(snaps, _title(store)))
    return 0


def _title(store: TelemetryStore) -> str:
    return f"{store.namespace}: last {render.duration(store.window_secs)}"


def cmd_watch(ctx: Context) -> int:
    store = open_store(ctx.args)

    def table() -> Any:
        snaps = store.all_model_performances()
        return render.status_table(snaps, _title(store) + f" (every {ctx.args.interval}s)")

    def forever() -> Iterator[int]:
        shown = 0
        while ctx.args.count is None or shown < ctx.args.count:
            time.sleep(ctx.args.interval)
            shown += 1
            yield shown

    try:
        if ctx.out.is_terminal:
            with Live(table(), console=ctx.out, auto_refresh=False) as live:
                for _ in forever():
                    live.update(table(), refresh=True)
        else:  # piped: one table per refresh, flushed, so a reader sees each as it comes
            ctx.out.print(table())
            for _ in forever():
                ctx.out.print(table())
    except KeyboardInterrupt:
        pass
    return 0


def cmd_usage(ctx: Context) -> int:
    usage = open_store(ctx.args).session_usage(ctx.args.session)
    if ctx.args.json:
        print_json(ctx, usage)
    elif not usage.by_model:
        ctx.out.print(f"No events of session {usage.id!r} in the window.")
    else:
        ctx.out.print(render.usage_table(usage))
    return 0


def cmd_events(ctx: Context) -> int:
    events = open_store(ctx.args).events(ctx.args.model, ctx.args.last)
    if ctx.args.json:
        print_json(ctx, events)
    elif not events:
        ctx.out.print(f"No events of {ctx.args.model!r} in the window.")
    else:
        ctx.out.print(render.events_table(ctx.args.model, events))
    return 0


# -- write commands -----------------------------------------------------------------------------


def cmd_limit(ctx: Context) -> int:
    store = open_store(ctx.args)
    if ctx.args.action == "set":
        store.mark_subscription_limited(ctx.args.model, ctx.args.ttl)
        ttl = ctx.args.ttl or store.subscription_limit_ttl_secs
        ctx.out.print(f"{ctx.args.model} is limited for {render.duration(ttl)}.")
    elif store.clear_subscription_limit(ctx.args.model):
        ctx.out.print(f"{ctx.args.model} is no longer limited.")
    else:
        ctx.out.print(f"{ctx.args.model} was not limited.")
    return 0


def event_from_flags(args: argparse.Namespace) -> CompletionEvent:
    """An event from ``record``'s flags."""
    tokens = breakdown(
        input=args.input_tokens, output=args.output_tokens, reasoning=args.reasoning_tokens,
        cache_read=args.cache_read_tokens, cache_write=args.cache_write_tokens,
        total=args.total_tokens,
    )  # fmt: skip
    fields: dict[str, Any] = {
        "model": args.model, "session_id": args.session, "latency_ms": args.latency_ms,
        "success": args.error is None and not args.failed, "tokens": tokens,
        "cost_usd": args.cost, "error": args.error,
    }  # fmt: skip
    if args.completed_at:
        fields["completed_at"] = args.completed_at
    return CompletionEvent(**fields)


def cmd_record(ctx: Context) -> int:
    if ctx.args.model is None:
        text = sys.stdin.read()
        try:
            event = CompletionEvent.model_validate_json(text)
        except ValidationError as exc:
            raise InvalidInputError(f"stdin: {describe_validation(exc)}") from None
    else:
        if ctx.args.latency_ms is None:
            raise InvalidInputError("--latency-ms is required with --model")
        event = event_from_flags(ctx.args)
    result = open_store(ctx.args).record(event)
    if result.stored:
        ctx.out.print(f"recorded 1 event for {event.model}")
    else:
        ctx.out.print(f"not stored: {_record_result(result)}")
    return 0


def _record_result(result: Any) -> str:
    return (
        f"{result.stored} stored, {result.duplicates} already present, "
        f"{result.outside_window} outside the window"
    )


def cmd_ingest(ctx: Context) -> int:
    try:
        parser = make_parser(ctx.args.format, ctx.args.model, ctx.args.session)
    except ValueError as exc:
        ctx.err.print(f"redis-telemetry ingest: {exc}", markup=False)
        return EXIT_USAGE

    def notify(text: str) -> None:
        ctx.err.print(f"redis-telemetry ingest: {text}", markup=False, highlight=False)

    store = with_retry(lambda: open_store(ctx.args), ctx.args.retry_for, notify)

    def run(stream: IO[str], on_line: Callable[[str], None] = lambda line: None) -> int:
        try:
            report = run_ingest(
                store, parser, read_lines(stream), retry_for=ctx.args.retry_for,
                on_line=on_line, notify=notify,
            )  # fmt: skip
        except IngestAborted as exc:
            ctx.out.print(exc.report.line(), markup=False)
            notify(f"giving up at {redact(ctx.args.url)}: {exc}")
            return EXIT_UNAVAILABLE
        ctx.out.print(report.line(), markup=False)
        return 0

    if ctx.args.file == "-":
        return run(sys.stdin)
    path = Path(ctx.args.file)
    with open_input(path) as stream, _progress(ctx, path) as advance:
        return run(stream, advance)


@contextmanager
def _progress(ctx: Context, path: Path) -> Iterator[Callable[[str], None]]:
    """A progress bar over the file's bytes (on stderr, so stdout stays clean)."""
    with Progress(
        TextColumn("[bold]ingest[/bold] {task.description}"), BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"), TransferSpeedColumn(),
        console=ctx.err, transient=True,
    ) as bar:  # fmt: skip
        task = bar.add_task(path.name, total=path.stat().st_size)
        yield lambda line: bar.advance(task, len(line.encode()))


@contextmanager
def open_input(path: Path) -> Iterator[IO[str]]:
    """A text file, with a clear error when it cannot be read."""
    try:
        with path.open(encoding="utf-8", errors="replace") as stream:
            yield stream
    except OSError as exc:
        raise InvalidInputError(f"cannot read {path}: {exc.strerror}") from None


@contextmanager
def open_output(path: str | None) -> Iterator[IO[str]]:
    """``--out FILE`` or stdout."""
    if path is None:
        yield sys.stdout
        return
    try:
        with Path(path).open("w", encoding="utf-8") as stream:
            yield stream
    except OSError as exc:
        raise InvalidInputError(f"cannot write {path}: {exc.strerror}") from None


def cmd_export(ctx: Context) -> int:
    summary = open_store(ctx.args).export_summary()
    with open_output(ctx.args.out) as out:
        out.write(summary.model_dump_json() + "\n")
    if ctx.args.out:
        ctx.err.print(f"exported {len(summary.model_performances)} models to {ctx.args.out}")
    return 0


def cmd_import(ctx: Context) -> int:
    with open_input(Path(ctx.args.file)) as stream:
        text = stream.read()
    try:
        summary = TelemetrySummary.model_validate_json(text)
    except ValidationError as exc:
        raise InvalidInputError(f"{ctx.args.file}: {describe_validation(exc)}") from None
    result = open_store(ctx.args).import_summary(summary)
    ctx.out.print(
        f"imported {len(summary.model_performances)} models: {_record_result(result)}",
        markup=False,
    )
    return 0


def cmd_dump(ctx: Context) -> int:
    dump = open_store(ctx.args).dump()
    with open_output(ctx.args.out) as out:
        for line in dump.lines():
            out.write(line + "\n")
    if ctx.args.out:
        ctx.err.print(
            f"dumped {len(dump.events)} events and {len(dump.limits)} limits to {ctx.args.out}"
        )
    return 0


def cmd_restore(ctx: Context) -> int:
    header: DumpHeader | None = None
    events: list[CompletionEvent] = []
    limits: list[DumpLimit] = []
    with open_input(Path(ctx.args.file)) as stream:
        for n, text in enumerate(stream, 1):
            if not text.strip():
                continue
            line = parse_line(text, n)
            if isinstance(line, DumpHeader):
                header = line
            elif isinstance(line, DumpEvent):
                events.append(line.event)
            else:
                limits.append(line)
    if header is None:
        raise InvalidInputError(f"{ctx.args.file}: no dump header line; is this a dump?")
    store = open_store(ctx.args)
    result = store.restore(Dump(header=header, events=events, limits=limits))
    ctx.out.print(
        f"restored {result.stored} of {len(events)} events ({result.duplicates} already present); "
        f"{len(limits)} limits",
        markup=False,
    )
    if result.outside_window:
        ctx.err.print(
            f"{result.outside_window} events were older than the window "
            f"({store.window_secs}s) and were not restored",
            markup=False,
        )
    return 0


def cmd_serve(ctx: Context) -> int:
    from .exporter import serve

    store = connect(ctx.args)
    try:
        store = adopt_window(store)
    except TelemetryUnavailable as exc:  # serve anyway: scrapes report up=0 until Redis is back
        ctx.err.print(
            f"redis-telemetry serve: Redis at {redact(ctx.args.url)} is unreachable "
            f"for now ({_cause(exc)}); serving up=0 until it answers",
            markup=False,
        )

    def ready(url: str) -> None:
        ctx.out.print(f"serving Prometheus metrics on {url} (and /healthz)", markup=False,
                      highlight=False, soft_wrap=True)  # fmt: skip
        sys.stdout.flush()

    try:
        serve(store, ctx.args.host, ctx.args.port, ready, ctx.args.percentiles)
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        raise InvalidInputError(
            f"cannot listen on {ctx.args.host}:{ctx.args.port}: {exc}"
        ) from None
    return 0


def cmd_demo(ctx: Context) -> int:
    from .demo import run_demo

    return run_demo(ctx.args, ctx.out, ctx.err)


def cmd_completion(ctx: Context) -> int:
    import shtab

    print(shtab.complete(build_parser(), shell=ctx.args.shell), end="")
    return 0


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
        "--url", default=None,
        help=f"Redis URL (default: $REDIS_TELEMETRY_URL, then $REDIS_URL, then {DEFAULT_URL})",
    )  # fmt: skip
    p.add_argument("--namespace", default=None, help="key prefix (default: telemetry)")
    p.add_argument(
        "--window", type=_SECS, default=3600, metavar="SECS",
        help="window for a namespace that has none yet (default 3600); "
        "a namespace's stored window always wins",
    )  # fmt: skip
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument(
        "-v", "--verbose", action="count", default=0,
        help="log more on stderr: -v info, -vv debug (with tracebacks behind errors)",
    )  # fmt: skip
    p.add_argument(
        "--log-level", type=str.upper, choices=LOG_LEVELS, default=None, metavar="LEVEL",
        help=f"log level of the redis_telemetry loggers, one of {', '.join(LOG_LEVELS)} "
        "(default WARNING; overrides -v)",
    )  # fmt: skip
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
        "--retry-for", type=_retry_secs, default=DEFAULT_RETRY_FOR, metavar="SECS",
        help="while Redis is unreachable, hold the lines read and retry for up to SECS "
        f"(default {DEFAULT_RETRY_FOR:g}); then exit 3 naming the line to resume from",
    )  # fmt: skip
    sp.add_argument("file", nargs="?", default="-", help="a file, or - for stdin (default)")

    sp = command("export", cmd_export, "print the TelemetrySummary JSON")
    sp.add_argument("--out", help="write to FILE instead of stdout")
    command("import", cmd_import, "import a TelemetrySummary JSON file").add_argument("file")
    sp = command("dump", cmd_dump, "lossless JSONL backup of every raw event and limit")
    sp.add_argument("--out", help="write to FILE instead of stdout")
    command("restore", cmd_restore, "restore a dump (idempotent)").add_argument("file")

    sp = command("serve", cmd_serve, "a Prometheus exporter: one snapshot per scrape")
    sp.add_argument("--host", default="127.0.0.1", help="address to listen on")
    sp.add_argument(
        "--port", type=_PORT, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})"
    )
    sp.add_argument(
        "--percentiles", action="store_true",
        help="also export p50/p95 latency (reads every event in the window per scrape)",
    )  # fmt: skip

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


def _cause(exc: BaseException) -> str:
    text = str(exc.__cause__ or exc)
    return text.removeprefix("Redis is unreachable: ").split("\n")[0]


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
