"""What each ``redis-telemetry`` subcommand does: thin handlers over :class:`TelemetryStore`.

``cli`` parses the command line and calls one of these with a :class:`Context`.
"""

from __future__ import annotations

import argparse
import difflib
import json
import logging
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
from .core.backup import Dump, DumpEvent, DumpHeader, DumpLimit, describe_validation, parse_line
from .core.urls import redact
from .errors import InvalidInputError, TelemetryError, TelemetryUnavailable
from .ingest import IngestAborted, IngestReport, Parser, breakdown, make_parser, run_ingest
from .ingest.run import read_lines, with_retry
from .models import CompletionEvent, TelemetrySummary
from .store import TelemetryStore

log = logging.getLogger(__name__)
DEFAULT_URL = "redis://localhost:6379/0"
#: `serve`'s port: free in the Prometheus default port allocations list (9464, the old
#: default, is the OpenTelemetry Prometheus exporter's, which Claude Code may use)
DEFAULT_PORT = 10464
EXIT_ERROR, EXIT_USAGE, EXIT_UNAVAILABLE = 1, 2, 3


class Context(NamedTuple):
    """What a handler gets: the parsed arguments, the parser (for ``completion``), stdout and
    stderr."""

    args: argparse.Namespace
    parser: argparse.ArgumentParser
    out: Console
    err: Console


def connect(args: argparse.Namespace) -> TelemetryStore:
    """A store on ``--url`` and ``--namespace``, with ``--window`` and ``--timeout`` (no I/O
    yet)."""
    return TelemetryStore.from_url(
        args.url, window_secs=args.window, namespace=args.namespace, timeout=args.timeout
    )


def adopt_window(store: TelemetryStore) -> TelemetryStore:
    """The same connection with the window the namespace already has in Redis, if any."""
    stored = store.stored_window()
    if stored is None or stored == store.window_secs:
        return store
    return store.with_window(stored)


def open_store(args: argparse.Namespace) -> TelemetryStore:
    """A store on ``--url``, using the window the namespace already has in Redis."""
    store = connect(args)
    try:
        return adopt_window(store)
    except BaseException:
        store.close()
        raise


def print_json(ctx: Context, value: BaseModel | Sequence[BaseModel]) -> None:
    """Machine-readable JSON with the library's field names."""
    if isinstance(value, BaseModel):
        data: Any = value.model_dump(mode="json")
    else:
        data = [v.model_dump(mode="json") for v in value]
    ctx.out.print_json(json.dumps(data)) if ctx.out.is_terminal else print(json.dumps(data))


def show(ctx: Context, grid: render.Grid) -> None:
    """A table on a terminal, fitted to its width; plain aligned text, never cut, elsewhere."""
    if ctx.out.is_terminal:
        ctx.out.print(grid.table(ctx.out.width))
    else:
        ctx.out.print(grid.text(), markup=False, highlight=False, soft_wrap=True)
    ctx.out.file.flush()


# -- read commands ------------------------------------------------------------------------------


def cmd_status(ctx: Context) -> int:
    with open_store(ctx.args) as store:
        snaps = store.all_model_performances()
    if ctx.args.json:
        print_json(ctx, snaps)
    elif not snaps:
        ctx.out.print(f"No models yet in namespace {store.namespace!r}: nothing recorded.")
    else:
        show(ctx, render.status_grid(snaps, _title(store)))
    return 0


def _title(store: TelemetryStore) -> str:
    return f"{store.namespace}: last {render.duration(store.window_secs)}"


def cmd_watch(ctx: Context) -> int:
    with open_store(ctx.args) as store:
        return _watch(ctx, store)


def _watch(ctx: Context, store: TelemetryStore) -> int:
    def grid() -> render.Grid:
        snaps = store.all_model_performances()
        return render.status_grid(snaps, _title(store) + f" (every {ctx.args.interval}s)")

    def forever() -> Iterator[int]:
        shown = 0
        while ctx.args.count is None or shown < ctx.args.count:
            time.sleep(ctx.args.interval)
            shown += 1
            yield shown

    try:
        if ctx.out.is_terminal:
            with Live(grid().table(ctx.out.width), console=ctx.out, auto_refresh=False) as live:
                for _ in forever():
                    live.update(grid().table(ctx.out.width), refresh=True)
        else:  # piped: one table per refresh, flushed, so a reader sees each as it comes
            show(ctx, grid())
            for _ in forever():
                show(ctx, grid())
    except KeyboardInterrupt:
        pass
    return 0


def cmd_usage(ctx: Context) -> int:
    with open_store(ctx.args) as store:
        usage = store.session_usage(ctx.args.session)
    if ctx.args.json:
        print_json(ctx, usage)
    elif not usage.by_model:
        ctx.out.print(f"No events of session {usage.id!r} in the window.")
    else:
        show(ctx, render.usage_grid(usage))
    return 0


def cmd_events(ctx: Context) -> int:
    model = ctx.args.model
    with open_store(ctx.args) as store:
        events = store.events(model, ctx.args.last)
        if not events and model not in (known := store.known_models()):
            raise TelemetryError(unknown_model(model, store.namespace, known))
    if ctx.args.json:
        print_json(ctx, events)
    elif not events:
        ctx.out.print(f"No events of {ctx.args.model!r} in the window.")
    else:
        show(ctx, render.events_grid(ctx.args.model, events))
    return 0


# -- write commands -----------------------------------------------------------------------------


def cmd_limit(ctx: Context) -> int:
    with open_store(ctx.args) as store:
        return _limit(ctx, store)


def _limit(ctx: Context, store: TelemetryStore) -> int:
    if ctx.args.action == "set":
        store.mark_subscription_limited(ctx.args.model, ctx.args.ttl)
        ttl = ctx.args.ttl or store.subscription_limit_ttl_secs
        ctx.out.print(f"{ctx.args.model} is limited for {render.duration(ttl)}.")
    elif store.clear_subscription_limit(ctx.args.model):
        ctx.out.print(f"{ctx.args.model} is no longer limited.")
    else:
        ctx.out.print(f"{ctx.args.model} was not limited.")
    return 0


def cmd_providers(ctx: Context) -> int:
    with open_store(ctx.args) as store:
        return _providers(ctx, store)


def _providers(ctx: Context, store: TelemetryStore) -> int:
    """``providers``: the table (no action), or one change, then the provider's line."""
    a = ctx.args
    action = a.action
    if action is None:
        found = store.providers()
        if a.json:
            print_json(ctx, found)
        elif not found:
            ctx.out.print(f"No providers yet in namespace {store.namespace!r}.")
        else:
            show(ctx, render.providers_grid(found))
        return 0
    if action == "of":
        ctx.out.print(store.provider_of(a.model))
        return 0
    if action == "alias":
        if a.remove == (a.into is not None):
            raise InvalidInputError("give INTO, or --remove, not both")
        store.set_alias(a.provider, a.into)
        ctx.out.print(
            f"{a.provider} is its own provider."
            if a.remove
            else f"{a.provider} is folded into {a.into}."
        )
        return 0
    if action == "budget":
        store.set_budget(a.provider, hour_usd=a.hour, day_usd=a.day)
    elif action == "block":
        store.block_provider(a.provider, a.reason, a.until)
    elif action == "unblock":
        store.unblock_provider(a.provider)
    else:
        store.exhaust(a.provider)
    status = store.provider_status(a.provider)
    if a.json:
        print_json(ctx, status)
    else:
        show(ctx, render.providers_grid([status]))
    return 0


def event_from_flags(args: argparse.Namespace) -> CompletionEvent:
    """An event from ``record``'s flags."""
    tokens = breakdown(
        input=args.input_tokens,
        output=args.output_tokens,
        reasoning=args.reasoning_tokens,
        cache_read=args.cache_read_tokens,
        cache_write=args.cache_write_tokens,
        total=args.total_tokens,
    )
    fields: dict[str, Any] = {
        "model": args.model,
        "session_id": args.session,
        "latency_ms": args.latency_ms,
        "success": args.error is None and not args.failed,
        "tokens": tokens,
        "cost_usd": args.cost,
        "error": args.error,
    }
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
    with open_store(ctx.args) as store:
        result = store.record(event)
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
        parser = make_parser(
            ctx.args.format, ctx.args.model, ctx.args.session, zone=ctx.args.timezone
        )
    except ValueError as exc:
        ctx.err.print(f"redis-telemetry ingest: {exc}", markup=False)
        return EXIT_USAGE

    def notify(text: str) -> None:
        ctx.err.print(
            f"redis-telemetry ingest: {text}", markup=False, highlight=False, soft_wrap=True
        )

    with with_retry(lambda: open_store(ctx.args), ctx.args.retry_for, notify) as store:
        return _ingest(ctx, store, parser, notify)


def _print_report(ctx: Context, report: IngestReport) -> None:
    """The closing report, one fact a line, never wrapped (rich takes a pipe for 80 columns)."""
    for line in report.lines():
        ctx.out.print(line, markup=False, highlight=False, soft_wrap=True)


def _ingest(
    ctx: Context, store: TelemetryStore, parser: Parser, notify: Callable[[str], None]
) -> int:
    def run(
        stream: IO[str], on_line: Callable[[str], None] = lambda line: None, live: bool = False
    ) -> int:
        try:
            report = run_ingest(
                store,
                parser,
                read_lines(stream, stamped=live),
                retry_for=ctx.args.retry_for,
                on_line=on_line,
                notify=notify,
            )
        except IngestAborted as exc:
            _print_report(ctx, exc.report)
            notify(f"giving up at {redact(ctx.args.url)}: {exc}")
            return EXIT_UNAVAILABLE
        _print_report(ctx, report)
        if report.hint:
            notify(report.hint)
        return report.exit_code

    if ctx.args.file == "-":
        return run(sys.stdin, live=True)
    path = Path(ctx.args.file)
    with open_input(path) as stream, _progress(ctx, path) as advance:
        return run(stream, advance)


@contextmanager
def _progress(ctx: Context, path: Path) -> Iterator[Callable[[str], None]]:
    """A progress bar over the file's bytes (on stderr, so stdout stays clean); none when
    stderr is not a terminal, where it would only leave a blank line."""
    if not ctx.err.is_terminal:
        yield lambda line: None
        return
    with Progress(
        TextColumn("[bold]ingest[/bold] {task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TransferSpeedColumn(),
        console=ctx.err,
        transient=True,
    ) as bar:
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
    with open_store(ctx.args) as store:
        summary = store.export_summary()
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
    with open_store(ctx.args) as store:
        result = store.import_summary(summary)
    ctx.out.print(
        f"imported {len(summary.model_performances)} models: {_record_result(result)}",
        markup=False,
    )
    return 0


def cmd_dump(ctx: Context) -> int:
    with open_store(ctx.args) as store:
        dump = store.dump()
    with open_output(ctx.args.out) as out:
        for line in dump.lines():
            out.write(line + "\n")
    if ctx.args.out:
        ctx.err.print(
            f"dumped {len(dump.events)} events and {len(dump.limits)} limits to {ctx.args.out}"
        )
    return 0


def cmd_reindex(ctx: Context) -> int:
    with open_store(ctx.args) as store:
        calls = store.reindex()
    ctx.err.print(f"reindexed namespace {store.namespace!r} in {calls} bounded script calls")
    return 0


def cmd_restore(ctx: Context) -> int:
    header: DumpHeader | None = None
    events: list[CompletionEvent] = []
    limits: list[DumpLimit] = []
    with open_input(Path(ctx.args.file)) as stream:
        for n, text in enumerate(stream, 1):
            if not text.strip():
                continue
            try:
                line = parse_line(text, n)
            except InvalidInputError as exc:  # "line N: why", named by its file
                raise InvalidInputError(f"{ctx.args.file}: {exc}") from None
            if isinstance(line, DumpHeader):
                header = line
            elif isinstance(line, DumpEvent):
                events.append(line.event)
            else:
                limits.append(line)
    if header is None:
        raise InvalidInputError(f"{ctx.args.file}: no dump header line; is this a dump?")
    with open_store(ctx.args) as store:
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
    with connect(ctx.args) as store:
        return _serve(ctx, store)


#: what ``serve`` says when the server extra is not installed
SERVER_EXTRA = "pip install 'redis-telemetry[server]'"


def _serve(ctx: Context, store: TelemetryStore) -> int:
    try:
        from .server.run import serve
    except ImportError as exc:
        if exc.name not in ("fastapi", "starlette", "uvicorn"):
            raise
        raise TelemetryError(
            f"serve needs the server extra, and {exc.name} is not installed: {SERVER_EXTRA}"
        ) from None
    try:
        store = adopt_window(store)
    except TelemetryUnavailable as exc:  # serve anyway: scrapes report up=0 until Redis is back
        ctx.err.print(
            f"redis-telemetry serve: Redis at {redact(ctx.args.url)} is unreachable "
            f"for now ({_cause(exc)}); serving up=0 until it answers",
            markup=False,
        )

    def ready(url: str) -> None:
        ctx.out.print(
            f"serving the HTTP API on {url} (Prometheus metrics on {url}/metrics, "
            f"the OpenAPI document on {url}/openapi.json)",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        sys.stdout.flush()

    try:
        serve(ctx.args, store, ready)
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

    print(shtab.complete(ctx.parser, shell=ctx.args.shell), end="")
    return 0


def unknown_model(model: str, namespace: str, known: Sequence[str]) -> str:
    """The error for a model the namespace does not know: the closest names, and some known."""
    if not known:
        return f"no model {model!r} in namespace {namespace!r}: it has no models in the window"
    close = difflib.get_close_matches(model, known, n=3, cutoff=0.5)
    hint = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
    shown = ", ".join(known[:10]) + (f" and {len(known) - 10} more" if len(known) > 10 else "")
    return f"no model {model!r} in namespace {namespace!r} ({hint}known: {shown})"


def _cause(exc: BaseException) -> str:
    text = str(exc.__cause__ or exc)
    return text.removeprefix("Redis is unreachable: ").split("\n")[0]
