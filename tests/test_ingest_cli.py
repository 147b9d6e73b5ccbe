"""Ingest into a store: re-runs add nothing, limits block until their end, outages are survived."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any, cast

import fakeredis
import pytest
import redis

from redis_telemetry import AsyncTelemetryStore, TelemetryStore, TelemetryUnavailable
from redis_telemetry.cli import main
from redis_telemetry.errors import InvalidInputError
from redis_telemetry.ingest import (
    IngestAborted,
    Limit,
    aingest_lines,
    apply_limit,
    ingest_file,
    ingest_lines,
    make_parser,
    parse_lines,
    run_ingest,
)
from redis_telemetry.ingest.events import Completion
from redis_telemetry.ingest.run import (
    BATCH,
    IngestReport,
    RetryExhausted,
    adrive,
    awith_retry,
    drive,
    read_lines,
    with_retry,
    write_batch,
)
from redis_telemetry.models import RecordResult

from .helpers import event
from .servers import RedisServer

FIXTURES = Path(__file__).parent / "fixtures"
#: the fixtures' calls happen around this time; ``recent`` moves them to just now
FIXTURE_TIME_MS = 1795176000000


def recent(name: str, base_ms: int = FIXTURE_TIME_MS, lag_ms: int = 60_000) -> list[str]:
    """A fixture with its timestamps (epoch ms, ISO-8601) moved to ``lag_ms`` ago,
    ``completed_at`` to five minutes ago."""
    offset = int(time.time() * 1000) - base_ms - lag_ms
    out = []
    for line in (FIXTURES / name).read_text().splitlines():
        try:
            data = json.loads(line)
        except json.JSONDecodeError:
            out.append(line)
            continue
        if isinstance(data, dict):
            _shift(data, offset)
        out.append(json.dumps(data))
    return out


def _shift(value: Any, offset: int) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "timestamp" and isinstance(item, int):
                value[key] = item + offset
            elif key == "timestamp" and isinstance(item, str) and item[:1].isdigit():
                moved = datetime.fromisoformat(item) + timedelta(milliseconds=offset)
                value[key] = moved.isoformat()  # ISO-8601, as Claude Code writes
            elif key == "completed_at" and isinstance(item, str):
                value[key] = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
            else:
                _shift(item, offset)
    elif isinstance(value, list):
        for item in value:
            _shift(item, offset)


RUNS = {
    "claude": ("claude-2.1-stream-json.jsonl", None, FIXTURE_TIME_MS),
    "claude-older": ("claude-stream.jsonl", None, FIXTURE_TIME_MS),
    "claude-timestamps": ("claude-2.1.240-stream-json.jsonl", None, 1795181460000),
    "opencode": ("opencode-run-json-errors.jsonl", "openai/gpt-5.1-codex", FIXTURE_TIME_MS),
    "opencode-older": ("opencode-run.jsonl", "oc/m", 1795900010000),
    "opencode-1.18": ("opencode-1.18-run-json.jsonl", "oc/m", 1795176610000),
    "pi": ("pi.jsonl", None, FIXTURE_TIME_MS),
    "codex": ("codex-0.171-exec-json.jsonl", "gpt-5.1-codex", FIXTURE_TIME_MS),
    "gemini": ("gemini-0.56-stream-json.jsonl", None, FIXTURE_TIME_MS),
    "gemini-json": ("gemini-0.56-json.json", "gemini-2.5-pro", FIXTURE_TIME_MS),
    "jsonl": ("rust-completion-events.jsonl", None, FIXTURE_TIME_MS),
}


@pytest.mark.parametrize("run", sorted(RUNS))
def test_ingesting_the_same_log_twice_adds_nothing(store: TelemetryStore, run: str) -> None:
    name, model, base = RUNS[run]
    fmt = run.split("-")[0]
    lines = recent(name, base)
    first = ingest_lines(store, fmt, lines, model=model)
    assert first.recorded > 0
    assert first.outside == 0
    before = store.dump().events
    again = ingest_lines(store, fmt, lines, model=model)
    assert again.recorded == 0
    assert again.duplicates == first.recorded
    assert store.dump().events == before


def pi_live(lines: list[str]) -> Iterator[tuple[int, str, datetime]]:
    """pi's lines as they arrive live: a message_start when its call began, the message_end
    2.5 s later, the rest right after the line before."""
    at = datetime.now(UTC)
    for n, line in enumerate(lines, 1):
        data = json.loads(line)
        message = data.get("message") or {}
        if isinstance(message.get("timestamp"), int):
            began = datetime.fromtimestamp(message["timestamp"] / 1000, UTC)
            at = began if data["type"] == "message_start" else began + timedelta(seconds=2.5)
        else:
            at += timedelta(milliseconds=1)
        yield n, line, at


def test_pi_followed_live_twice_adds_nothing(store: TelemetryStore) -> None:
    lines = recent("pi-0.58-mode-json.jsonl", lag_ms=0)
    first = run_ingest(store, make_parser("pi"), pi_live(lines))
    assert (first.recorded, first.unmeasured) == (3, 0)
    again = run_ingest(store, make_parser("pi"), pi_live(lines))
    assert (again.recorded, again.duplicates) == (0, 3)


@pytest.mark.parametrize("run", sorted(RUNS))
def test_a_rerun_reads_no_window(
    store: TelemetryStore, run: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Re-runs are told apart by event id in the store: ingest reads no model's events, so a
    model holding many costs a re-run nothing more."""
    name, model, base = RUNS[run]
    fmt = run.split("-")[0]
    lines = recent(name, base)
    first = ingest_lines(store, fmt, lines, model=model)

    def no_window(*args: object, **kwargs: object) -> None:
        raise AssertionError("ingest read a window")

    monkeypatch.setattr(TelemetryStore, "events", no_window)
    monkeypatch.setattr(TelemetryStore, "dump", no_window)
    again = ingest_lines(store, fmt, lines, model=model)
    assert (again.recorded, again.duplicates) == (0, first.recorded)


def test_the_library_gives_what_the_command_gives(tmp_path: Path, url: str) -> None:
    path = tmp_path / "run.jsonl"
    path.write_text("\n".join(recent("claude-2.1-stream-json.jsonl")) + "\n")
    assert (
        main(["--url", url, "--namespace", "cli", "ingest", "--format", "claude", str(path)]) == 0
    )
    library = TelemetryStore.from_url(url, namespace="lib")
    report = ingest_file(library, "claude", path)
    cli = TelemetryStore.from_url(url, namespace="cli")
    assert report.recorded == 6
    clock_fields = {"last_event_at", "subscription_limit_expires_at"}  # each run's own clock
    for a, b in zip(cli.all_model_performances(), library.all_model_performances(), strict=True):
        assert a.model_dump(exclude=clock_fields) == b.model_dump(exclude=clock_fields)
    cli.client.close()
    library.client.close()


# -- limits ---------------------------------------------------------------------------------------


def test_a_weekly_limit_blocks_until_its_reset(store: TelemetryStore) -> None:
    resets = datetime.now(UTC).replace(microsecond=0) + timedelta(days=6, hours=3)
    lines = [
        {"type": "system", "subtype": "init", "session_id": "s", "model": "claude-opus-4-6[1m]"},
        {
            "type": "rate_limit_event",
            "session_id": "s",
            "uuid": "r1",
            "rate_limit_info": {
                "status": "rejected",
                "resetsAt": int(resets.timestamp()),
                "rateLimitType": "seven_day",
            },
        },
        {
            "type": "result",
            "subtype": "success",
            "is_error": True,
            "duration_ms": 700,
            "session_id": "s",
            "uuid": "u1",
            "result": "Weekly limit reached · resets 5pm (UTC)",
            "modelUsage": {},
        },
    ]
    report = ingest_lines(store, "claude", map(json.dumps, lines))
    assert (report.recorded, report.limits) == (1, 1)
    expires = store.model_performance("claude-opus-4-6").subscription_limit_expires_at
    assert expires is not None
    assert abs((expires - resets).total_seconds()) <= 2  # a week, not the default hour


def test_opencode_retry_after_blocks_for_the_servers_time(store: TelemetryStore) -> None:
    lines = recent("opencode-run-json-errors.jsonl")
    ingest_lines(store, "opencode", lines, model="openai/gpt-5.1-codex")
    error_at = datetime.fromtimestamp(json.loads(lines[12])["timestamp"] / 1000, UTC)
    expires = store.model_performance("openai/gpt-5.1-codex").subscription_limit_expires_at
    assert expires is not None
    assert abs((expires - (error_at + timedelta(seconds=120))).total_seconds()) <= 2


def test_an_old_opencode_429_blocks_nothing(store: TelemetryStore) -> None:
    """Its Retry-After date is long past; the error text alone must not block either."""
    lines = recent("opencode-run-json-errors.jsonl", lag_ms=600_000)[6:8]  # Retry-After: a date
    report = ingest_lines(store, "opencode", lines, model="m")
    assert (report.recorded, report.limits) == (1, 0)
    assert not store.model_performance("m").subscription_limit_reached


def test_a_429_whose_retry_after_ran_out_blocks_nothing(store: TelemetryStore) -> None:
    at = int(time.time() * 1000) - 600_000  # ten minutes ago, for 120 s
    lines = [
        {
            "type": "step_start",
            "timestamp": at - 500,
            "sessionID": "s",
            "part": {"id": "p1", "messageID": "m1"},
        },
        {
            "type": "error",
            "timestamp": at,
            "sessionID": "s",
            "error": {
                "name": "APIError",
                "data": {
                    "message": "Too Many Requests",
                    "statusCode": 429,
                    "responseHeaders": {"retry-after": "120"},
                },
            },
        },
    ]
    report = ingest_lines(store, "opencode", map(json.dumps, lines), model="m")
    assert (report.recorded, report.limits) == (1, 0)
    assert store.events("m")[0].error == "Too Many Requests (HTTP 429; retry after 120 seconds)"
    assert not store.model_performance("m").subscription_limit_reached


def test_a_longer_block_in_place_is_not_shortened(store: TelemetryStore) -> None:
    store.mark_subscription_limited("openai/gpt-5.1-codex", ttl_secs=86400)
    lines = recent("opencode-run-json-errors.jsonl", lag_ms=0)
    report = ingest_lines(store, "opencode", lines, model="openai/gpt-5.1-codex")
    assert report.limits == 0
    perf = store.model_performance("openai/gpt-5.1-codex")
    assert perf.subscription_limit_expires_at is not None
    left = perf.subscription_limit_expires_at - datetime.now(UTC)
    assert left > timedelta(hours=23)


def test_a_reset_already_past_blocks_nothing() -> None:
    store = TelemetryStore(fakeredis.FakeRedis())
    now = datetime.now(UTC)
    assert not apply_limit(store, Limit("m", now - timedelta(seconds=1), "old"), now)
    assert not store.model_performance("m").subscription_limit_reached
    assert apply_limit(store, Limit("m", now + timedelta(seconds=30), "soon"), now)
    assert store.model_performance("m").subscription_limit_reached
    assert apply_limit(store, Limit("n", None, "no end"), now)
    perf = store.model_performance("n")
    assert perf.subscription_limit_expires_at is not None
    left = (perf.subscription_limit_expires_at - now).total_seconds()
    assert 3590 <= left <= 3601  # the store's default TTL


@pytest.mark.parametrize(
    ("fmt", "name", "model", "base"),
    [
        ("claude", "claude-2.1.240-tool-errors.jsonl", None, 1795183200000),
        ("opencode", "opencode-1.18-not-the-providers.jsonl", "oc/m", 1795180000000),
        ("pi", "pi-0.58-tool-errors.jsonl", None, 1795180000000),
    ],
)
def test_a_tools_rate_limit_blocks_no_model_in_the_store(
    store: TelemetryStore, fmt: str, name: str, model: str | None, base: int
) -> None:
    """GitHub's rate limit, hit by a tool: recorded (as a failure where the run failed), and no
    model is blocked, neither by ingest nor by the store's own rule on the stored text."""
    lines = recent(name, base)
    if fmt == "claude":
        lines = lines[:4]  # run A only: the tool's failure (run B is the provider's)
    elif fmt == "opencode":
        lines = lines[:3]  # the plugin's error only
    report = ingest_lines(store, fmt, lines, model=model)
    assert report.recorded > 0
    assert report.limits == 0
    for perf in store.all_model_performances():
        assert not perf.subscription_limit_reached, perf.model


def test_a_retried_pi_429_blocks_nothing(store: TelemetryStore) -> None:
    lines = recent("pi-0.58-mode-json.jsonl", lag_ms=0)
    report = run_ingest(store, make_parser("pi"), pi_live(lines))
    perf = store.model_performance("anthropic/claude-sonnet-4-5")
    assert (perf.successful_completions, perf.failed_completions) == (2, 1)
    assert not perf.subscription_limit_reached
    assert report.limits == 0


# -- codex and gemini -----------------------------------------------------------------------------


def test_codex_followed_live_records_the_runs_latency(store: TelemetryStore) -> None:
    lines = (FIXTURES / "codex-0.171-exec-json.jsonl").read_text().splitlines()[:14]
    start = datetime.now(UTC) - timedelta(minutes=1)
    live = ((n, line, start + timedelta(seconds=n * 0.5)) for n, line in enumerate(lines, 1))
    report = run_ingest(store, make_parser("codex", model="gpt-5.1-codex"), live)
    assert (report.recorded, report.unmeasured) == (2, 0)
    # from turn.started (lines 2 and 10) to turn.completed (lines 8 and 14), 0.5 s a line
    assert sorted(e.latency_ms for e in store.events("gpt-5.1-codex")) == [2000, 3000]


def test_codex_reset_clock_in_a_zone_east_of_utc_blocks_until_that_time(
    store: TelemetryStore, tmp_path: Path
) -> None:
    """2:05 AM in Tokyo is 17:05 UTC the day before. record() reads the stored text in UTC:
    without the end stated in it, it would block until 2:05 UTC, nine hours too long (the store
    keeps the longer of two blocks)."""
    limit = "You've hit your usage limit. Try again at Jan 2nd, 2035 2:05 AM."
    lines = [
        json.dumps({"type": "thread.started", "thread_id": "t"}),
        json.dumps({"type": "turn.failed", "error": {"message": limit}}),
    ]
    report = ingest_lines(store, "codex", lines, model="gpt-5.1-codex", zone="Asia/Tokyo")
    assert (report.recorded, report.limits) == (1, 1)
    path = tmp_path / "codex.jsonl"
    path.write_text("\n".join(lines) + "\n")
    other = TelemetryStore(fakeredis.FakeRedis())
    assert ingest_file(other, "codex", path, model="gpt-5.1-codex", zone="Asia/Tokyo").limits == 1
    for where in (store, other):
        expires = where.model_performance("gpt-5.1-codex").subscription_limit_expires_at
        assert expires is not None
        assert abs(expires - datetime(2035, 1, 1, 17, 5, tzinfo=UTC)) < timedelta(seconds=1)


def test_gemini_json_quota_blocks_until_the_reset_it_states(store: TelemetryStore) -> None:
    report = ingest_file(store, "gemini", FIXTURES / "gemini-0.56-json.json", model="m")
    assert (report.recorded, report.limits, [n for n, _ in report.unparseable]) == (6, 1, [138])
    expires = store.model_performance("m").subscription_limit_expires_at
    assert expires is not None
    reset = datetime.now(UTC) + timedelta(hours=19, minutes=14, seconds=47)
    assert abs((expires - reset).total_seconds()) <= 5
    assert not store.model_performance("gemini-3.1-pro-preview").subscription_limit_reached


def test_gemini_stream_quota_blocks_from_the_results_own_time(store: TelemetryStore) -> None:
    lines = recent("gemini-0.56-stream-json.jsonl", lag_ms=-3_600_000)  # an hour from now
    report = ingest_lines(store, "gemini", lines)
    assert report.limits == 2
    minute = json.loads(lines[14])  # "Please retry in 45.2s"
    expires = store.model_performance("gemini-2.5-flash").subscription_limit_expires_at
    assert expires is not None
    reset = datetime.fromisoformat(minute["timestamp"]) + timedelta(seconds=45.2)
    assert abs((expires - reset).total_seconds()) <= 0.01
    # the daily quota names no end: the default TTL from the result's own time
    daily = datetime.fromisoformat(json.loads(lines[11])["timestamp"])
    expires = store.model_performance("gemini-2.5-pro").subscription_limit_expires_at
    assert expires is not None
    assert abs((expires - (daily + timedelta(hours=1))).total_seconds()) <= 1


def test_an_old_logs_limit_without_an_end_blocks_nothing_from_now(store: TelemetryStore) -> None:
    """The daily quota of a log two weeks old: the default TTL runs from the error's own time,
    long past (it ran from now before)."""
    report = ingest_file(store, "gemini", FIXTURES / "gemini-0.56-stream-json.jsonl")
    assert (report.outside, report.limits_found, report.limits) == (5, 2, 0)
    for perf in store.all_model_performances():
        assert not perf.subscription_limit_reached, perf.model


def test_a_tools_rate_limit_in_codex_and_gemini_blocks_nothing(store: TelemetryStore) -> None:
    codex = (FIXTURES / "codex-0.171-exec-json.jsonl").read_text().splitlines()[:14]
    gemini = recent("gemini-0.56-stream-json.jsonl", lag_ms=0)[:8]
    assert ingest_lines(store, "codex", codex, model="gpt-5.1-codex").recorded == 2
    assert ingest_lines(store, "gemini", gemini).recorded == 1
    for perf in store.all_model_performances():
        assert perf.failed_completions == 0
        assert not perf.subscription_limit_reached, perf.model


@pytest.mark.parametrize(("given", "live"), [("file", False), ("-", True)])
def test_the_command_stamps_lines_only_when_it_follows_stdin(
    tmp_path: Path, url: str, monkeypatch: pytest.MonkeyPatch, given: str, live: bool
) -> None:
    """A file is read at once: the time between its lines is no call's, so they carry no
    arrival time (and no latency is made of them); stdin is followed as it arrives."""
    import redis_telemetry.cli_commands as commands

    seen: list[bool] = []

    def spy(stream: IO[str], stamped: bool = True) -> Iterator[Any]:
        seen.append(stamped)
        return read_lines(stream, stamped)

    monkeypatch.setattr(commands, "read_lines", spy)
    path = tmp_path / "codex.jsonl"
    path.write_text((FIXTURES / "codex-0.171-exec-json.jsonl").read_text())
    args = ["--url", url, "ingest", "--format", "codex", "--model", "m", "--timezone", "UTC"]
    with path.open() as stdin:
        monkeypatch.setattr(sys, "stdin", stdin)
        assert main([*args, str(path) if given == "file" else "-"]) == 0
    assert seen == [live]
    with path.open("rb") as stream:
        assert {item[2] for item in read_lines(stream, stamped=False) if item} == {None}


def test_a_bad_timezone_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["ingest", "--format", "codex", "--model", "m", "--timezone", "Mars/Olympus_Mons", "-"]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "unknown time zone 'Mars/Olympus_Mons'" in err
    assert "Traceback" not in err


def test_help_lists_every_format(capsys: pytest.CaptureFixture[str]) -> None:
    from redis_telemetry.ingest import FORMATS

    with pytest.raises(SystemExit):
        main(["ingest", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    unwrapped = "".join(shown.split())  # argparse may wrap a name at its hyphen
    for cls in FORMATS:
        assert "".join(f"{cls.name}: {cls.source.replace('`', '')}".split()) in unwrapped
    assert "--timezone ZONE" in shown


# -- outages --------------------------------------------------------------------------------------


class FlakyStore:
    """A store that is unreachable for its first ``down`` calls."""

    def __init__(self, down: int) -> None:
        self.real = TelemetryStore(fakeredis.FakeRedis())
        self.down = down

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.real, name)

        def call(*args: Any, **kw: Any) -> Any:
            if self.down > 0:
                self.down -= 1
                raise TelemetryUnavailable("Redis is unreachable: connection refused")
            return attr(*args, **kw)

        return call


def test_an_outage_holds_the_batch_and_reads_no_further() -> None:
    store = FlakyStore(down=5)
    lines = [event(f"m{n}").model_dump_json() for n in range(BATCH + 3)]
    pulled: list[int] = []
    pulled_at_failure: list[int] = []

    def items() -> Iterator[tuple[int, str, None]]:
        for n, line in enumerate(lines, 1):
            pulled.append(n)
            yield n, line, None

    sleeps: list[float] = []

    def sleep(secs: float) -> None:
        pulled_at_failure.append(len(pulled))
        sleeps.append(secs)

    notices: list[str] = []
    report = run_ingest(store, make_parser("jsonl"), items(), notify=notices.append, sleep=sleep)
    assert report.recorded == BATCH + 3
    assert sleeps == [0.05, 0.1, 0.2, 0.4, 0.8]  # backoff, doubling
    assert set(pulled_at_failure) == {BATCH}  # no line read while Redis was down
    assert len(notices) == 2
    assert "unreachable" in notices[0]
    assert "reachable again" in notices[1]


def test_an_outage_longer_than_retry_for_names_the_line_to_resume_from() -> None:
    store = FlakyStore(down=10**9)
    clock = [0.0]  # time passes only in the backoff sleeps

    def sleep(secs: float) -> None:
        clock[0] += secs

    lines = ["not an event"] + [event("m").model_dump_json() for _ in range(3)]
    numbered = ((n, s, None) for n, s in enumerate(lines, 1))
    with pytest.raises(IngestAborted) as caught:
        run_ingest(
            store,
            make_parser("jsonl"),
            numbered,
            retry_for=5,
            sleep=sleep,
            monotonic=lambda: clock[0],
        )
    assert clock[0] == 5  # the last sleep ends exactly at retry_for
    assert (caught.value.resume_line, caught.value.not_stored) == (2, 3)
    assert "3 lines were not stored; resume from line 2" in str(caught.value)


def test_with_retry_gives_up_after_retry_for() -> None:
    clock = iter([0.0, 1.0, 2.5])

    def down() -> None:
        raise TelemetryUnavailable("down")

    with pytest.raises(RetryExhausted, match="unreachable for 2s"):
        with_retry(down, 2, lambda text: None, lambda s: None, lambda: next(clock))


def _lines_of(stream: IO[str]) -> queue.Queue[str]:
    got: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        with stream:  # closed at its end, by the one reader it has
            for line in stream:
                got.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return got


def _wait_for(check: Any, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)  # poll interval of a readiness check


def _ingest_process(url: str, *flags: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "redis_telemetry",
            "--url",
            url,
            "ingest",
            "--format",
            "jsonl",
            *flags,
            "-",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _send(proc: subprocess.Popen[str], *models: str) -> None:
    assert proc.stdin is not None
    for m in models:
        proc.stdin.write(event(m).model_dump_json() + "\n")
    proc.stdin.flush()


def test_ingest_survives_a_redis_restart(tmp_path: Path) -> None:
    server = RedisServer(workdir=tmp_path).start()
    proc = _ingest_process(server.url, "--retry-for", "60")
    try:
        assert proc.stderr is not None
        errors = _lines_of(proc.stderr)
        store = TelemetryStore.from_url(server.url)
        _send(proc, "before")
        _wait_for(
            lambda: store.model_performance("before").successful_completions == 1,
            "the first line was not stored",
        )
        server.stop()
        _send(proc, "during", "during")
        notice = errors.get(timeout=30)
        assert "Redis is unreachable" in notice
        server.start()  # the same port; nothing persisted across the restart
        _send(proc, "after")
        _wait_for(
            lambda: store.model_performance("during").successful_completions == 2,
            "the held lines were not stored after Redis came back",
        )
        # stderr is the pump's alone: communicate() would race it for the last lines
        assert proc.stdin is not None
        assert proc.stdout is not None
        proc.stdin.close()
        assert proc.wait(timeout=60) == 0
        with proc.stdout:
            out = proc.stdout.read()
        assert "4 events recorded\n" in out
        assert store.model_performance("after").successful_completions == 1
        rest = [errors.get(timeout=30)]
        while not errors.empty():
            rest.append(errors.get())
        assert sum("unreachable" in line for line in [notice, *rest]) == 1  # said once
        store.client.close()
    finally:
        proc.kill()
        server.cleanup()


def test_ingest_gives_up_after_retry_for_with_exit_3(tmp_path: Path) -> None:
    server = RedisServer(workdir=tmp_path).start()
    proc = _ingest_process(server.url, "--retry-for", "1")
    try:
        store = TelemetryStore.from_url(server.url)
        _send(proc, "first")
        _wait_for(
            lambda: store.model_performance("first").successful_completions == 1,
            "the first line was not stored",
        )
        store.client.close()
        server.stop()
        _send(proc, "lost", "lost")
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        server.cleanup()
    assert proc.returncode == 3
    assert "1 event recorded\n" in out
    assert "2 lines were not stored; resume from line 2" in err
    assert "Traceback" not in err


def test_bad_retry_for_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["ingest", "--format", "jsonl", "--retry-for", "soon", "-"])
    assert caught.value.code == 2
    assert "--retry-for" in capsys.readouterr().err


def test_parse_lines_reports_every_bad_line_with_its_number() -> None:
    p = parse_lines("jsonl", ["{", event("m").model_dump_json(), "[]", ""])
    assert [n for n, _ in p.unparseable] == [1, 3]
    assert len(p.events) == 1


@pytest.mark.parametrize("run", ["claude-timestamps", "opencode-1.18"])
async def test_the_async_entry_records_what_the_sync_one_records(
    r: redis.Redis, astore: AsyncTelemetryStore, run: str
) -> None:
    name, model, base = RUNS[run]
    fmt = run.split("-")[0]
    lines = recent(name, base, lag_ms=0)  # the 429's 45 s are not over yet

    async def agent_stdout() -> AsyncIterator[str]:  # lines as an asyncio reader yields them
        for line in lines:
            yield line

    sync = TelemetryStore(r, window_secs=3600, namespace="sync-twin")
    expected = ingest_lines(sync, fmt, lines, model=model)
    got = await aingest_lines(astore, fmt, agent_stdout(), model=model)
    assert got.line() == expected.line()
    assert expected.recorded > 0
    assert expected.limits == 1
    assert (await astore.dump()).events == sync.dump().events
    again = await aingest_lines(astore, fmt, lines, model=model)  # a plain iterable too
    assert (again.recorded, again.duplicates) == (0, expected.recorded)


async def test_the_async_entry_reads_a_codex_clock_in_the_zone_named(
    astore: AsyncTelemetryStore,
) -> None:
    limit = "You've hit your usage limit. Try again at Jan 2nd, 2035 2:05 AM."
    lines = [json.dumps({"type": "turn.failed", "error": {"message": limit}})]
    report = await aingest_lines(astore, "codex", lines, model="m", zone="Asia/Tokyo")
    assert report.limits == 1
    (stored,) = (await astore.dump()).events
    assert stored.error == limit + " (resets at 2035-01-01T17:05:00Z)"


async def test_the_async_retry_waits_out_an_outage() -> None:
    attempts: list[int] = []
    notices: list[str] = []

    async def flaky() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise TelemetryUnavailable("connection refused")
        return "stored"

    assert await awith_retry(flaky, 60, notices.append) == "stored"
    assert len(attempts) == 3
    assert [n.split(" ")[2] for n in notices] == ["unreachable", "reachable"]
    clock = iter(range(0, 100, 5))

    async def down() -> None:
        raise TelemetryUnavailable("connection refused")

    with pytest.raises(RetryExhausted):
        await awith_retry(down, 2, lambda text: None, lambda: next(clock))


class Refusing:
    """A store that refuses a batch holding the event of model ``bad``, and that event alone."""

    def __init__(self) -> None:
        self.stored: list[str] = []

    def record_batch(self, events: list[Any]) -> RecordResult:
        if any(e.model == "bad" for e in events):
            raise InvalidInputError("the store refuses this event")
        return RecordResult(stored=len(events), stored_positions=tuple(range(len(events))))

    def record(self, e: Any) -> RecordResult:
        self.record_batch([e])
        self.stored.append(e.model)
        return RecordResult(stored=1, stored_positions=(0,))

    def provider_feedback(self, events: list[Any]) -> int:
        self.fed = [e.model for e in events]
        return 0


async def test_a_refused_event_is_reported_and_the_rest_stored_sync_and_async() -> None:
    pending = [(n, Completion(event(m, True, 10))) for n, m in enumerate(["a", "bad", "c"], 1)]
    for asynchronous in (False, True):
        store, report = Refusing(), IngestReport()
        if asynchronous:
            await adrive(write_batch(pending, report), cast(Any, AsyncWrap(store)))
        else:
            drive(write_batch(pending, report), cast(Any, store))
        assert store.stored == ["a", "c"]
        assert store.fed == ["a", "c"]  # the providers hear only of the events stored
        assert report.recorded == 2
        assert report.unparseable == [(2, "the store refuses this event")]


def test_a_rerun_does_not_end_a_backoff_that_began_after_its_lines(
    store: TelemetryStore, tmp_path: Path
) -> None:
    """The providers hear only of the events a run newly stored: a second run over the same
    lines (their ids stored by the first) leaves a 429 backoff that began in between."""
    path = tmp_path / "run.jsonl"
    path.write_text(event("zai/glm-4.6", id="e-1", ago_secs=5).model_dump_json() + "\n")
    assert ingest_file(store, "jsonl", path).recorded == 1
    store.provider_throttled("zai")  # a 429 after the run's success
    again = ingest_file(store, "jsonl", path)
    assert (again.recorded, again.duplicates) == (0, 1)
    assert store.provider_status("zai").backoff_level == 1
    path.write_text(event("zai/glm-4.6", id="e-2").model_dump_json() + "\n")
    assert ingest_file(store, "jsonl", path).recorded == 1  # a new success ends it
    assert store.provider_status("zai").backoff_level == 0


class AsyncWrap:
    """The same store, awaited."""

    def __init__(self, store: Refusing) -> None:
        self.store = store

    async def record_batch(self, events: list[Any]) -> RecordResult:
        return self.store.record_batch(events)

    async def record(self, e: Any) -> RecordResult:
        return self.store.record(e)

    async def provider_feedback(self, events: list[Any]) -> int:
        return self.store.provider_feedback(events)


# -- input ----------------------------------------------------------------------------------------


def test_stdin_with_invalid_utf8_is_read_to_its_end(redis_server: RedisServer) -> None:
    """A line of invalid UTF-8 is a line like another (here unparseable), and the command ends:
    before, the reader thread died on the decode error and the command waited forever."""
    model = f"utf8-{time.monotonic_ns()}"
    good = event(model).model_dump_json().encode()
    data = b'{"model": "\xff\xfe broken"}\n' + good + b"\n\xc3(\n"
    command = ["--url", redis_server.url, "ingest", "--format", "jsonl", "-"]
    proc = subprocess.run(
        [sys.executable, "-m", "redis_telemetry", *command],
        input=data,
        capture_output=True,
        timeout=60,  # does not hang
        env={**os.environ, "PYTHONIOENCODING": "utf-8:strict"},  # stdin as a UTF-8 locale has it
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.decode()
    assert "1 event recorded\n" in out
    assert "2 lines unparseable\n" in out
    store = TelemetryStore.from_url(redis_server.url)
    assert store.model_performance(model).successful_completions == 1
    store.client.close()


def test_a_file_with_invalid_utf8_is_read(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    path.write_bytes(b"\xff\xfe\n" + event("m").model_dump_json().encode() + b"\n")
    store = TelemetryStore(fakeredis.FakeRedis())
    report = ingest_file(store, "jsonl", path)
    assert (report.recorded, [n for n, _ in report.unparseable]) == (1, [1])


class FailingStream:
    """A stream that gives its lines, then fails to read (an I/O error)."""

    def __init__(self, *lines: bytes) -> None:
        self.lines = lines

    def __iter__(self) -> Iterator[bytes]:
        yield from self.lines
        raise OSError(5, "Input/output error")


def test_a_read_error_ends_the_run_after_storing_what_was_read() -> None:
    store = TelemetryStore(fakeredis.FakeRedis())
    stream = FailingStream(event("m").model_dump_json().encode() + b"\n")
    with pytest.raises(
        InvalidInputError, match=r"cannot read the input after line 1: .*Input/output"
    ):
        run_ingest(store, make_parser("jsonl"), read_lines(cast(IO[bytes], stream)))
    assert store.model_performance("m").successful_completions == 1


# -- the closing report ---------------------------------------------------------------------------


def test_the_report_is_a_fact_a_line_with_counts_that_agree_with_their_nouns() -> None:
    one = IngestReport("jsonl")
    one.recorded = one.duplicates = one.outside = one.unmeasured = one.limits = one.ignored = 1
    one.unparseable = [(7, "not JSON: Expecting value")]
    assert one.lines() == [
        "1 event recorded",
        "1 event already present",
        "1 event outside the window",
        "1 call without a measured latency",
        "1 limit applied",
        "1 line ignored",
        "1 line unparseable",
        "line 7: not JSON: Expecting value",
    ]
    many = IngestReport("jsonl")
    many.recorded, many.limits, many.ignored = 3, 2, 5
    many.unparseable = [(n, "not JSON: Expecting value") for n in range(1, 13)]
    assert many.lines()[:5] == [
        "3 events recorded",
        "2 limits applied",
        "5 lines ignored",
        "12 lines unparseable",
        "line 1: not JSON: Expecting value",
    ]
    assert many.lines()[-2:] == [
        "line 10: not JSON: Expecting value",
        "and 2 more unparseable lines",
    ]
    assert many.line() == "\n".join(many.lines())
    assert all("\n" not in line for line in many.lines())
    assert IngestReport().lines() == ["0 events recorded"]  # nothing else to say


@pytest.mark.parametrize(
    ("fmt", "name", "hint"),
    [
        (
            "claude",
            "opencode-1.18-run-json.jsonl",
            "these lines look like opencode output (`opencode run --format json`); "
            "try --format opencode --model MODEL",
        ),
        (
            "opencode",
            "claude-2.1-stream-json.jsonl",
            "these lines look like claude output "
            "(`claude -p --output-format stream-json --verbose`); try --format claude",
        ),
        (
            "jsonl",
            "pi-0.58-mode-json.jsonl",
            "these lines look like pi output (`pi --mode json`); try --format pi",
        ),
        (
            "pi",
            "rust-completion-events.jsonl",
            "these lines look like jsonl output (one CompletionEvent per line); try --format jsonl",
        ),
        (
            "claude",
            "codex-0.171-exec-json.jsonl",
            "these lines look like codex output (`codex exec --json`); "
            "try --format codex --model MODEL",
        ),
        (
            "claude",
            "gemini-0.56-stream-json.jsonl",
            "these lines look like gemini output (`gemini --output-format stream-json` or "
            "`--output-format json`); try --format gemini",
        ),
        (
            "jsonl",
            "gemini-0.56-json.json",
            "these lines look like JSON objects printed over many lines; --format gemini reads "
            "them (`gemini --output-format stream-json` or `--output-format json`); "
            "try --format gemini",
        ),
    ],
)
def test_a_run_that_finds_nothing_says_which_format_the_lines_look_like(
    fmt: str, name: str, hint: str
) -> None:
    store = TelemetryStore(fakeredis.FakeRedis())
    report = ingest_file(store, fmt, FIXTURES / name, model="m" if fmt == "opencode" else None)
    assert report.nothing_recorded
    assert (report.exit_code, report.hint) == (1, hint)
    assert store.known_models() == []


def test_a_run_of_lines_that_are_no_json_at_all_says_so(tmp_path: Path) -> None:
    path = tmp_path / "ls"
    path.write_bytes(bytes(range(256)) * 20 + b"\n\x7fELF\x02\x01\n")
    report = ingest_file(TelemetryStore(fakeredis.FakeRedis()), "claude", path)
    assert report.exit_code == 1
    assert report.hint == (
        "no line is JSON; --format claude reads `claude -p --output-format stream-json --verbose`"
    )


def test_a_run_of_its_format_without_a_completed_call_says_so() -> None:
    init = {"type": "system", "subtype": "init", "session_id": "s", "model": "claude-x"}
    report = ingest_lines(TelemetryStore(fakeredis.FakeRedis()), "claude", [json.dumps(init)])
    assert report.exit_code == 1
    assert report.hint == "these lines are claude output, but none is a run's result line"


def test_a_run_that_finds_events_or_limits_exits_0_even_storing_nothing_new(
    store: TelemetryStore,
) -> None:
    lines = recent("opencode-1.18-run-json.jsonl", 1795176610000)
    first = ingest_lines(store, "opencode", lines, model="oc/m")
    again = ingest_lines(store, "opencode", lines, model="oc/m")  # every event already present
    old = ingest_lines(
        store, "opencode", recent("opencode-1.18-run-json.jsonl", lag_ms=10**9), model="o/m"
    )
    assert (first.recorded, again.recorded, old.recorded) == (4, 0, 0)
    assert old.outside == 4  # read, but outside the window
    limit_only = [{"type": "system", "subtype": "init", "session_id": "s", "model": "claude-x"}]
    limit_only.append(
        {
            "type": "rate_limit_event",
            "session_id": "s",
            "rate_limit_info": {"status": "rejected", "resetsAt": 1000},  # long past
        }
    )
    limited = ingest_lines(store, "claude", map(json.dumps, limit_only))
    for report in (first, again, old, limited, ingest_lines(store, "jsonl", [])):
        assert not report.nothing_recorded
        assert (report.exit_code, report.hint) == (0, None)


def _ingest_cli(
    url: str, *args: str, data: bytes | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "redis_telemetry", "--url", url, "ingest", *args],
        input=data.decode() if data is not None else None,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "80"},
    )


def test_the_command_exits_1_with_a_hint_when_it_records_nothing(
    redis_server: RedisServer,
) -> None:
    wrong = _ingest_cli(
        redis_server.url, "--format", "claude", str(FIXTURES / "opencode-1.18-run-json.jsonl")
    )
    assert wrong.returncode == 1
    assert wrong.stdout == "0 events recorded\n12 lines ignored\n"
    (hint,) = wrong.stderr.splitlines()
    assert hint.startswith("redis-telemetry ingest: these lines look like opencode output")
    assert hint.endswith("try --format opencode --model MODEL")
    binary = _ingest_cli(redis_server.url, "--format", "claude", "/bin/ls")
    assert binary.returncode == 1
    assert binary.stderr.splitlines()[-1].startswith("redis-telemetry ingest: no line is JSON")


def test_the_report_is_never_wrapped_when_piped(redis_server: RedisServer) -> None:
    model = f"wrap-{time.monotonic_ns()}"
    long_reason = "x" * 220
    line = event(model, False, error=long_reason).model_dump_json()
    done = _ingest_cli(redis_server.url, "--format", "jsonl", "-", data=(line + "\n").encode())
    assert done.returncode == 0, done.stderr
    assert all(len(row) < 80 for row in done.stdout.splitlines())
    assert done.stdout.splitlines() == ["1 event recorded"]
