"""The redis-telemetry command, on fakeredis (TCP) and on a real redis-server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis

from redis_telemetry import AsyncTelemetryStore, InvalidInputError, TelemetryStore, TelemetrySummary
from redis_telemetry.cli import main
from redis_telemetry.core.urls import redact

from .helpers import event
from .servers import RedisServer, free_port

FIXTURES = Path(__file__).parent / "fixtures"


class Cli:
    """Runs the command in-process against one URL and captures what it prints."""

    def __init__(self, url: str, capsys: pytest.CaptureFixture[str]) -> None:
        self.url = url
        self.capsys = capsys

    def __call__(self, *args: str, stdin: str | None = None) -> tuple[int, str, str]:
        self.capsys.readouterr()
        if stdin is not None:
            import io

            old, sys.stdin = sys.stdin, io.StringIO(stdin)
        try:
            code = main(["--url", self.url, *args])
        finally:
            if stdin is not None:
                sys.stdin = old
        out, err = self.capsys.readouterr()
        return code, out, err

    def json(self, *args: str) -> Any:
        code, out, err = self(*args, "--json")
        assert code == 0, err
        return json.loads(out)


@pytest.fixture
def cli(url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Cli:
    monkeypatch.setenv("COLUMNS", "160")  # rich wraps tables at 80 columns when not a terminal
    return Cli(url, capsys)


@pytest.fixture
def store(url: str) -> Iterator[TelemetryStore]:
    s = TelemetryStore.from_url(url)
    yield s
    s.client.close()


def subprocess_cli(*args: str, env: dict[str, str] | None = None, **kw: Any) -> Any:
    return subprocess.run(
        [sys.executable, "-m", "redis_telemetry", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        **kw,
    )


def test_status_on_an_empty_store(cli: Cli) -> None:
    assert cli.json("status") == []
    code, out, _ = cli("status")
    assert code == 0
    assert "No models yet in namespace 'telemetry'" in out


def test_status_table_and_json(cli: Cli, store: TelemetryStore) -> None:
    store.record_batch(
        [event("alpha", True, 100), event("alpha", False, 5, error="429 rate limit")]
    )
    store.record(event("beta", True, 300, ago_secs=90))
    data = cli.json("status")
    assert [d["model"] for d in data] == ["alpha", "beta"]
    assert data[0]["successful_completions"] == 1
    assert data[0]["failed_completions"] == 1
    assert data[0]["subscription_limit_reached"] is True
    assert set(data[0]) >= {"success_rate", "avg_latency_ms", "throughput", "last_event_at"}


def test_status_piped_is_plain_text_with_every_column_at_any_width(
    cli: Cli, store: TelemetryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    LONG = "anthropic/claude-sonnet-4-5-with-a-long-deployment-name"
    store.record_batch([event(LONG, True, 100), event(LONG, False, 5, error="429 rate limit")])
    store.record(event("beta", True, 300, ago_secs=90))
    monkeypatch.setenv("COLUMNS", "80")
    code, out, _ = cli("status")
    assert code == 0
    title, header, alpha, beta = out.splitlines()
    assert title == "telemetry: last 1h00m"
    names = ["model", "ok", "failed", "success", "avg ms", "p95 ms", "per min", "last event"]
    assert [n for n in names if n in header] == names
    assert header.rstrip().endswith("limited")
    assert len(alpha) > 80  # not cut, not wrapped: a pipe has no width
    assert alpha.split()[:4] == [LONG, "1", "1", "50%"]
    assert alpha.split()[-1].startswith("59m")  # the limit's time left
    assert "1m30s ago" in beta or "1m31s ago" in beta  # age of beta's last event


def test_namespace_and_stored_window(cli: Cli, url: str) -> None:
    other = TelemetryStore.from_url(url, window_secs=600, namespace="fleet")
    other.record(event("m"))
    code, out, err = cli("--namespace", "fleet", "status", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data[0]["window_secs"] == 600  # read from Redis, not the default 3600
    assert cli.json("status") == []  # the default namespace is empty
    other.client.close()


def test_usage(cli: Cli, store: TelemetryStore) -> None:
    store.record_batch([event("a", session_id="s1", cost_usd=0.5), event("b", session_id="s1")])
    data = cli.json("usage", "s1")
    assert data["id"] == "s1"
    assert data["totals"]["message_count"] == 2
    assert data["totals"]["total_tokens"] == 2000
    assert sorted(data["by_model"]) == ["a", "b"]
    code, out, _ = cli("usage", "s1")
    assert code == 0
    assert "total" in out
    assert "0.5100" in out
    assert "No events of session 'nobody'" in cli("usage", "nobody")[1]


def test_events_newest_first(cli: Cli, store: TelemetryStore) -> None:
    for ago in (30, 10, 20):
        store.record(event("m", latency_ms=ago, ago_secs=ago))
    data = cli.json("events", "m", "--last", "2")
    assert [d["latency_ms"] for d in data] == [10, 20]
    assert all(len(d["event_id"]) == 32 for d in data)
    code, out, _ = cli("events", "m")
    assert code == 0
    assert out.index("10 ms") < out.index("20 ms") < out.index("30 ms")


def test_events_of_an_unknown_model_is_an_error_suggesting_known_ones(
    cli: Cli, store: TelemetryStore
) -> None:
    code, _, err = cli("events", "no/such-model")
    assert code == 1
    assert err.strip() == (
        "redis-telemetry: no model 'no/such-model' in namespace 'telemetry': "
        "it has no models in the window"
    )
    store.record_batch([event("openai/gpt-5"), event("anthropic/sonnet")])
    store.mark_subscription_limited("limited/only")  # known without events: not an error
    code, _, err = cli("events", "openai/gpt5")
    assert code == 1
    (line,) = err.splitlines()
    assert "no model 'openai/gpt5' in namespace 'telemetry'" in line
    assert "did you mean 'openai/gpt-5'?" in line
    assert "known: anthropic/sonnet, limited/only, openai/gpt-5" in line
    code, out, _ = cli("events", "limited/only")
    assert (code, "No events of 'limited/only' in the window." in out) == (0, True)


def test_the_command_closes_its_connection(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[TelemetryStore] = []  # held here, so that no garbage collector closes them
    from_url = TelemetryStore.from_url.__func__  # type: ignore[attr-defined]

    def keep(cls: type[TelemetryStore], *args: Any, **kwargs: Any) -> TelemetryStore:
        opened.append(from_url(cls, *args, **kwargs))
        return opened[-1]

    monkeypatch.setattr(TelemetryStore, "from_url", classmethod(keep))
    url = f"{redis_server.url}?client_name=one-command"
    for argv in (["status", "--json"], ["events", "nothing/here"], ["limit", "clear", "m"]):
        main(["--url", url, *argv])
    assert len(opened) == 3
    with redis_server.client() as c:
        assert [e for e in c.client_list() if e["name"] == "one-command"] == []


def test_limit_set_and_clear(cli: Cli, url: str, store: TelemetryStore) -> None:
    assert cli("limit", "set", "m", "--ttl", "120")[0] == 0
    raw = redis.Redis.from_url(url)
    assert 115 <= raw.ttl("telemetry:{m}:limit") <= 120
    assert cli.json("status")[0]["subscription_limit_reached"] is True
    code, out, _ = cli("limit", "clear", "m")
    assert (code, "no longer limited" in out) == (0, True)
    assert raw.exists("telemetry:{m}:limit") == 0
    assert "was not limited" in cli("limit", "clear", "m")[1]
    raw.close()


def test_providers_show_and_set(cli: Cli, store: TelemetryStore) -> None:
    assert "No providers yet" in cli("providers")[1]
    store.record(event("kimi/k2", cost_usd=0.5))
    code, out, _ = cli("providers", "budget", "kimi", "--hour", "0.6", "--day", "none")
    assert code == 0
    assert "near_exhaustion" in out
    assert "$0.5000 / $0.6000" in out
    rows = cli.json("providers")
    assert [(p["provider"], p["models"]) for p in rows] == [("kimi", ["kimi/k2"])]
    assert rows[0]["budget"]["verdict"] == "near_exhaustion"
    code, out, _ = cli("providers", "block", "kimi", "--reason", "usage limit, resets in 2h")
    assert code == 0
    assert "usage limit, resets in 2h" in out
    assert cli.json("providers")[0]["blocked_until"] is not None
    assert "exhausted (forced)" in cli("providers", "exhaust", "kimi")[1]
    assert cli("providers", "unblock", "kimi")[0] == 0
    assert cli.json("providers")[0]["blocked_until"] is None
    assert cli("providers", "alias", "anthropic", "claude-code")[1].startswith("anthropic is")
    assert cli("providers", "of", "anthropic/claude-opus")[1].strip() == "claude-code"
    assert cli("providers", "alias", "anthropic", "--remove")[0] == 0
    assert cli("providers", "of", "anthropic/claude-opus")[1].strip() == "anthropic"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("budget", "kimi", "--hour", "-1"), "expected USD between 0 and 1e9"),
        (("budget", "a/b"), "must not contain '/'"),
        (("block", "kimi", "--until", "2026-01-01T00:00:00"), "needs a zone"),
        (("alias", "anthropic"), "give INTO, or --remove"),
    ],
)
def test_providers_bad_options_are_one_line(cli: Cli, args: tuple[str, ...], message: str) -> None:
    try:
        code, _, err = cli("providers", *args)
    except SystemExit as exc:  # argparse's usage error: one line, exit 2
        code, err = int(str(exc.code)), cli.capsys.readouterr().err
    assert code != 0
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_reindex_rebuilds_totals_an_older_release_wrote(
    cli: Cli, url: str, store: TelemetryStore
) -> None:
    store.record_batch([event("m", True, 100 + i, session_id="s") for i in range(5)])
    raw = redis.Redis.from_url(url)
    raw.hdel("telemetry:{m}:totals", "layout")  # as the previous release left it
    raw.delete("telemetry:{m}:sessions", "telemetry:{m}:latency")
    code, _, err = cli("reindex")
    assert code == 0
    assert "reindexed namespace 'telemetry' in 1 bounded script calls" in err
    assert raw.hget("telemetry:{m}:totals", "layout") == b"3"
    assert raw.hget("telemetry:{m}:sessions", "s:n") == b"5"
    (row,) = cli.json("status")
    assert (row["successful_completions"], row["latency_samples"]) == (5, 5)
    raw.close()


def test_record_from_flags_and_stdin(cli: Cli, store: TelemetryStore) -> None:
    code, out, err = cli(
        "record",
        "--model",
        "m",
        "--latency-ms",
        "250",
        "--input-tokens",
        "10",
        "--output-tokens",
        "5",
        "--cost",
        "0.01",
        "--session",
        "s",
    )
    assert code == 0, err
    assert "recorded 1 event for m" in out
    line = (FIXTURES / "rust-completion-events.jsonl").read_text().splitlines()[0]
    fresh = json.loads(line) | {"completed_at": event("x").completed_at.isoformat()}
    assert cli("record", stdin=json.dumps(fresh))[0] == 0
    assert store.model_performance("m").successful_completions == 1
    assert store.model_performance("acme-plan/coder-7").successful_completions == 1
    e = store.events("m")[0]
    assert (e.tokens.total, e.session_id, e.latency_ms) == (15, "s", 250)


def test_record_refuses_a_boolean_that_is_not_one(cli: Cli, store: TelemetryStore) -> None:
    code, _, err = cli("record", stdin='{"model": "m", "latency_ms": 5, "success": "yes"}')
    assert code == 1
    assert err.strip() == "redis-telemetry: stdin: success: Input should be a valid boolean"
    assert store.known_models() == []


def test_record_refuses_bad_json_naming_the_field(cli: Cli, store: TelemetryStore) -> None:
    code, _, err = cli("record", stdin='{"model": "m", "latency_ms": -5, "success": true}')
    assert code == 1
    assert "latency_ms" in err
    code, _, err = cli("record", stdin="{not json")
    assert code == 1
    assert "stdin" in err
    assert store.known_models() == []


def _shift_opencode(tmp_path: Path) -> Path:
    """The opencode fixture with its timestamps moved to just now (they are absolute)."""
    lines = (FIXTURES / "opencode-run.jsonl").read_text().splitlines()
    offset = int(time.time() * 1000) - 1795900010000
    out = []
    for line in lines:
        data = json.loads(line)
        if isinstance(data.get("timestamp"), int):
            data["timestamp"] += offset
        out.append(json.dumps(data))
    path = tmp_path / "opencode.jsonl"
    path.write_text("\n".join(out) + "\n")
    return path


def test_ingest_every_format(cli: Cli, store: TelemetryStore, tmp_path: Path) -> None:
    code, out, err = cli("ingest", "--format", "claude", str(FIXTURES / "claude-stream.jsonl"))
    assert code == 0, err
    assert "3 events recorded\n" in out
    assert "3 lines ignored\n" in out
    assert "2 lines unparseable\nline 4: not JSON" in out
    assert store.model_performance("claude-fixture-model").subscription_limit_reached

    path = _shift_opencode(tmp_path)
    code, out, _ = cli("ingest", "--format", "opencode", "--model", "oc/m", str(path))
    assert "3 events recorded\n" in out
    assert "1 line unparseable\nline 9: " in out
    perf = store.model_performance("oc/m")
    assert (perf.successful_completions, perf.failed_completions) == (2, 1)
    assert perf.avg_latency_ms == (1500 + 2250) / 2
    assert perf.subscription_limit_reached  # "monthly limit" blocks the model

    code, out, _ = cli(
        "ingest", "--format", "pi", "--session", "forced", str(FIXTURES / "pi.jsonl")
    )
    assert "2 events recorded\n" in out
    assert store.session_usage("forced").totals.message_count == 2

    jsonl = tmp_path / "events.jsonl"
    jsonl.write_text(json.dumps(json.loads(event("j").model_dump_json())) + "\nnope\n")
    code, out, _ = cli("ingest", "--format", "jsonl", str(jsonl))
    assert "1 event recorded\n" in out
    assert "1 line unparseable\nline 2: " in out


def test_ingest_opencode_without_model_is_a_usage_error(cli: Cli) -> None:
    code, _, err = cli("ingest", "--format", "opencode", str(FIXTURES / "opencode-run.jsonl"))
    assert code == 2
    assert "needs --model" in err


def test_ingest_follows_a_growing_stream(url: str, store: TelemetryStore) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "redis_telemetry", "--url", url, "ingest", "--format", "jsonl", "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None
    try:
        for n in range(1, 4):
            proc.stdin.write(event("follow").model_dump_json() + "\n")
            proc.stdin.flush()
            # each line is written while the stream is still open, within the time bound
            deadline = time.monotonic() + 15
            while store.model_performance("follow").successful_completions < n:
                assert time.monotonic() < deadline, "a line was not recorded while it streamed"
                time.sleep(0.05)
        out, err = proc.communicate(timeout=30)  # closes stdin: end of stream
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "3 events recorded\n" in out


def test_export_and_import(cli: Cli, store: TelemetryStore, url: str, tmp_path: Path) -> None:
    store.record_batch([event("a", True, 200), event("b", False, error="weekly session limit")])
    path = tmp_path / "summary.json"
    assert cli("export", "--out", str(path))[0] == 0
    summary = TelemetrySummary.model_validate_json(path.read_text())
    assert [p.model for p in summary.model_performances] == ["a", "b"]
    code, out, _ = cli("export")
    assert json.loads(out)["id"] == "telemetry_summary"
    redis.Redis.from_url(url).flushall()
    code, out, _ = cli("import", str(path))
    assert code == 0
    assert "imported 2 models" in out
    assert store.model_performance("b").subscription_limit_reached
    assert store.model_performance("a").successful_completions == 1


def test_dump_and_restore_are_lossless_and_idempotent(
    cli: Cli, store: TelemetryStore, url: str, tmp_path: Path
) -> None:
    store.record_batch([event("a"), event("a", False, error="boom"), event("b", session_id="x")])
    store.mark_subscription_limited("c", ttl_secs=300)
    before = {m: store.events(m) for m in ("a", "b")}
    path = tmp_path / "dump.jsonl"
    assert cli("dump", "--out", str(path))[0] == 0
    lines = path.read_text().splitlines()
    assert json.loads(lines[0])["type"] == "dump"
    assert len(lines) == 1 + 3 + 1
    redis.Redis.from_url(url).flushall()
    code, out, _ = cli("restore", str(path))
    assert code == 0
    assert "restored 3 of 3 events (0 already present); 1 limits" in out
    assert {m: store.events(m) for m in ("a", "b")} == before  # ids and all fields kept
    assert 290 <= redis.Redis.from_url(url).ttl("telemetry:{c}:limit") <= 300
    code, out, _ = cli("restore", str(path))
    assert "restored 0 of 3 events (3 already present)" in out
    assert store.model_performance("a").failed_completions == 1


def test_restore_reports_events_outside_the_window(
    cli: Cli, store: TelemetryStore, tmp_path: Path
) -> None:
    store.record(event("a"))
    path = tmp_path / "dump.jsonl"
    cli("dump", "--out", str(path))
    lines = path.read_text().splitlines()
    old = json.loads(lines[1])
    old["event"]["completed_at"] = "2020-01-01T00:00:00Z"
    old["event"]["event_id"] = "old-one"
    path.write_text("\n".join([*lines, json.dumps(old)]) + "\n")
    code, _out, err = cli("restore", str(path))
    assert code == 0
    assert "1 events were older than the window (3600s) and were not restored" in err


def test_restore_refuses_a_bad_file(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"type": "event", "event": {"model": "m", "latency_ms": "x"}}\n')
    code, _, err = cli("restore", str(path))
    assert code == 1
    assert f"{path}: line 1: event.latency_ms: Input should be a valid integer" in err
    assert "latency_ms" in err
    code, _, err = cli("restore", str(tmp_path / "missing.jsonl"))
    assert code == 1
    assert "cannot read" in err


HEADER = (
    '{"type": "dump", "namespace": "t", "window_secs": 60, "dumped_at": "2026-01-01T00:00:00Z"}'
)


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ('{"model": "m"}', 'no "type" field: a dump line is a JSON object whose "type" is'),
        (
            '{"type": "evnt"}',
            'its "type" is \'evnt\'; a dump line\'s is "dump", "event" or "limit"',
        ),
        ("{nope", "not JSON (key must be a string at column 2)"),
        ("[1, 2]", "not a JSON object"),
        ('{"type": "event"}', "event: Field required"),
        (
            '{"type": "event", "event": {"model": "m", "latency_ms": 1, "success": "no"}}',
            "event.success: Input should be a valid boolean",
        ),
    ],
)
def test_restore_names_the_file_the_line_and_a_plain_reason(
    cli: Cli, store: TelemetryStore, tmp_path: Path, line: str, reason: str
) -> None:
    path = tmp_path / "broken.jsonl"
    path.write_text(f"{HEADER}\n\n{line}\n")
    code, _, err = cli("restore", str(path))
    assert code == 1
    (text,) = err.splitlines()
    assert text == f"redis-telemetry: {path}: line 3: {reason}" or text.startswith(
        f"redis-telemetry: {path}: line 3: {reason}"
    ), text
    assert "discriminator" not in text
    assert store.known_models() == []  # nothing restored


def test_watch_refreshes_then_stops(cli: Cli, store: TelemetryStore) -> None:
    store.record(event("w"))
    code, out, _ = cli("watch", "--interval", "0.05", "--count", "2")
    assert code == 0
    assert "w" in out


def test_watch_stops_cleanly_on_ctrl_c(url: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "redis_telemetry", "--url", url, "watch", "--interval", "0.1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()  # the first table is on screen: the loop is running
    assert first
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Traceback" not in err


def test_bad_flags_are_a_usage_error() -> None:
    result = subprocess_cli("status", "--no-such-flag")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "redis-telemetry: error: unrecognized arguments: --no-such-flag "
        "(see redis-telemetry --help)"
    ]
    result = subprocess_cli("ingest", "--format", "xml")
    assert result.returncode == 2
    assert "invalid choice" in result.stderr


def test_unreachable_server_is_one_clear_line() -> None:
    url = f"redis://:secret@127.0.0.1:{free_port()}/0"
    result = subprocess_cli("--url", url, "status")
    assert result.returncode == 3
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"cannot reach Redis at redis://:***@127.0.0.1:{url.rsplit(':', 1)[1]}" in lines[0]
    assert "docker compose up -d" in lines[0]
    assert "redis-server" in lines[0]
    assert "secret" not in result.stderr
    assert "Traceback" not in result.stderr


def test_url_defaults_come_from_the_environment(url: str, store: TelemetryStore) -> None:
    store.record(event("env-model"))
    result = subprocess_cli("status", "--json", env={"REDIS_TELEMETRY_URL": url})
    assert [d["model"] for d in json.loads(result.stdout)] == ["env-model"]
    result = subprocess_cli("status", "--json", env={"REDIS_TELEMETRY_URL": "", "REDIS_URL": url})
    assert [d["model"] for d in json.loads(result.stdout)] == ["env-model"]


def test_console_script_is_installed() -> None:
    exe = Path(sys.executable).parent / "redis-telemetry"
    result = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=True)
    for command in (
        "status",
        "watch",
        "usage",
        "events",
        "limit",
        "record",
        "ingest",
        "export",
        "import",
        "dump",
        "restore",
        "serve",
        "demo",
    ):
        assert command in result.stdout


def test_redact() -> None:
    assert redact("redis://user:pw@h:1/0") == "redis://user:***@h:1/0"
    assert redact("redis://h:1/0?db=1&password=pw") == "redis://h:1/0?db=1&password=***"
    assert redact("redis://h:1/0") == "redis://h:1/0"
    assert redact("redis://:pw@[bad:1/0") == "redis://:***@[bad:1/0"  # malformed: still hidden


BAD_VALUES = [
    (["--url", "127.0.0.1:6379", "status"], "is not a Redis URL"),
    (["--url", "http://h:6379/0", "status"], "is not a Redis URL"),
    (["--url", "redis://127.0.0.1:70000/0", "status"], "Port out of range"),
    (["--url", "redis://127.0.0.1:port/0", "status"], "malformed Redis URL"),
    (["--url", "redis://:secret@[::1/0", "status"], "malformed Redis URL"),
    (["--url", "redis://h:6379/zero", "status"], "the database must be a number"),
    (["--url", "redis://:6379/0", "status"], "no host"),
    (["serve", "--port", "70000"], "a port between 1 and 65535"),
    (["serve", "--port", "0"], "a port between 1 and 65535"),
    (["watch", "--interval", "-1"], "seconds between 0.05 and 86400"),
    (["watch", "--interval", "nan"], "seconds between 0.05 and 86400"),
    (["watch", "--count", "0"], "a count, at least 1"),
    (["--window", "-5", "status"], "a whole number of seconds"),
    (["events", "m", "--last", "x"], "a count, at least 1"),
    (["limit", "set", "m", "--ttl", "0"], "a whole number of seconds"),
    (["demo", "--seconds", "-1"], "seconds between 0 and 604800"),
    (["--url", "redis://localhost:6379/0?foo=bar", "status"], "unknown query option 'foo'"),
    (["--url", "redis://h/0?socket_timout=2", "status"], "did you mean 'socket_timeout'?"),
    (["--url", "redis://h/0?socket_timeout=soon", "status"], "Invalid value for 'socket_timeout'"),
    (["--url", "redis://h/0?ssl_certfile=c.pem", "status"], "unknown query option"),  # rediss only
    (["--url", "redis://h/0?password=secret&foo=1", "status"], "unknown query option 'foo'"),
    (["--url", "", "status"], "expected a Redis URL"),
    (["--namespace", "", "status"], "namespace must be a non-empty string"),
    (["status", "--namespace", ""], "namespace must be a non-empty string"),
    (["status", "--url", ""], "expected a Redis URL"),
    (["--namespace", "a{b}", "status"], "must not contain"),
    (["events", ""], "model must not be empty"),
    (["limit", "set", "", "--ttl", "5"], "model must not be empty"),
    (["serve", "--host", ""], "an address to listen on"),
    (["restore", ""], "a file name"),
    (["dump", "--out", ""], "a file name"),
]


@pytest.mark.parametrize(("argv", "says"), BAD_VALUES)
def test_a_bad_url_port_or_interval_is_one_usage_line(argv: list[str], says: str) -> None:
    result = subprocess_cli(*argv)
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.splitlines()  # one line, no traceback
    assert line.startswith("redis-telemetry"), line
    assert says in line, line
    assert "secret" not in line


@pytest.mark.parametrize(
    ("variables", "says"),
    [
        ({"REDIS_TELEMETRY_URL": "localhost:6379"}, "$REDIS_TELEMETRY_URL: "),
        ({"REDIS_TELEMETRY_URL": "", "REDIS_URL": "localhost:6379"}, "$REDIS_URL: "),
        ({"REDIS_TELEMETRY_URL": "redis://h/0?foo=1"}, "unknown query option 'foo'"),
        ({"REDIS_TELEMETRY_NAMESPACE": "a{b}"}, "$REDIS_TELEMETRY_NAMESPACE: "),
        ({"REDIS_TELEMETRY_WINDOW": "an hour"}, "$REDIS_TELEMETRY_WINDOW: expected a whole"),
        ({"REDIS_TELEMETRY_WINDOW": "0"}, "$REDIS_TELEMETRY_WINDOW: "),
    ],
)
def test_a_bad_value_from_the_environment_is_a_usage_error_naming_the_variable(
    variables: dict[str, str], says: str
) -> None:
    result = subprocess_cli("status", env=variables)
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.splitlines()
    assert says in line, line


def test_serve_host_and_port_come_from_the_environment() -> None:
    result = subprocess_cli("serve", env={"REDIS_TELEMETRY_PORT": "99999"})
    assert result.returncode == 2
    assert "$REDIS_TELEMETRY_PORT: expected a port between 1 and 65535" in result.stderr
    result = subprocess_cli("serve", env={"REDIS_TELEMETRY_HOST": " "})
    assert result.returncode == 2
    assert "$REDIS_TELEMETRY_HOST: expected an address to listen on" in result.stderr
    # a variable of serve's does not trouble another command
    assert subprocess_cli("completion", "bash", env={"REDIS_TELEMETRY_PORT": "x"}).returncode == 0


def test_the_environment_sets_namespace_and_window_and_the_command_line_wins(
    url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("REDIS_TELEMETRY_URL", url)
    monkeypatch.setenv("REDIS_TELEMETRY_NAMESPACE", "from-env")
    monkeypatch.setenv("REDIS_TELEMETRY_WINDOW", "120")
    assert main(["record", "--model", "m", "--latency-ms", "5"]) == 0
    env_store = TelemetryStore.from_url(url, window_secs=120, namespace="from-env")
    assert env_store.stored_window() == 120  # the first write stored the window from the env
    assert env_store.known_models() == ["m"]
    capsys.readouterr()
    assert main(["status", "--json", "--namespace", "telemetry"]) == 0
    assert json.loads(capsys.readouterr().out) == []  # the option wins over the variable
    monkeypatch.setenv("REDIS_TELEMETRY_NAMESPACE", "")  # empty: unset, the default
    assert main(["status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    env_store.client.close()


def test_every_variable_is_named_in_the_help() -> None:
    text = subprocess_cli("--help").stdout
    for variable in (
        "REDIS_TELEMETRY_URL",
        "REDIS_URL",
        "REDIS_TELEMETRY_NAMESPACE",
        "REDIS_TELEMETRY_WINDOW",
        "REDIS_TELEMETRY_HOST",
        "REDIS_TELEMETRY_PORT",
    ):
        assert variable in text, variable
    assert "$REDIS_TELEMETRY_PORT" in subprocess_cli("serve", "--help").stdout


def test_global_options_work_after_the_command(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    other = TelemetryStore.from_url(url, window_secs=600, namespace="fleet")
    other.record(event("m"))
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    capsys.readouterr()
    # after the command, an option wins over the same one before it
    code = main(["--url", nowhere, "status", "--json", "--url", url, "--namespace", "fleet"])
    assert code == 0, capsys.readouterr().err
    assert [d["model"] for d in json.loads(capsys.readouterr().out)] == ["m"]
    assert main(["limit", "set", "m", "--ttl", "60", "--url", url, "--namespace", "fleet"]) == 0
    assert other.model_performance("m").subscription_limit_reached
    capsys.readouterr()
    # before the command, as always; absent after it, the value before stands
    assert main(["--url", url, "--namespace", "fleet", "events", "m", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 1
    other.client.close()


@pytest.mark.parametrize(
    "url",
    [
        "127.0.0.1:6379",
        "redis://h:70000/0",
        "redis://h:6379/db",
        "redis://h:6379/0?protocol=9x",
        "redis://h:6379/0?foo=bar",
        "redis+cluster://h:7001/0?foo=bar",
        "unix:///tmp/redis.sock?socket_keepalive=true",  # a TCP option
    ],
)
def test_from_url_raises_a_telemetry_error_naming_the_url(url: str) -> None:
    with pytest.raises(InvalidInputError, match="Redis URL"):
        TelemetryStore.from_url(url)
    with pytest.raises(InvalidInputError, match="Redis URL"):
        AsyncTelemetryStore.from_url(url)


@pytest.mark.slow
def test_demo_runs_on_the_embedded_default() -> None:
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    result = subprocess_cli("demo", "--seconds", "2", env={"REDIS_TELEMETRY_URL": nowhere})
    assert result.returncode == 0, result.stderr
    assert f"No Redis at {nowhere}: running on an embedded fakeredis server" in result.stderr
    assert "demo: writing to redis://127.0.0.1:" in result.stderr
    assert "router → " in result.stdout
    assert "demo done: " in result.stdout
    assert "premco/sonnet-x" in result.stdout
    done = next(line for line in result.stdout.splitlines() if line.startswith("demo done"))
    assert int(done.split()[2]) > 10


@pytest.mark.slow
def test_demo_names_its_server_and_keeps_to_a_namespace_of_its_own(
    url: str, store: TelemetryStore
) -> None:
    # the namespace a user's environment names for real data is not the demo's
    result = subprocess_cli(
        "--url", url, "demo", "--seconds", "2", env={"REDIS_TELEMETRY_NAMESPACE": "fleet"}
    )
    assert result.returncode == 0, result.stderr
    assert "embedded" not in result.stderr
    assert result.stderr.splitlines()[0] == (
        f"demo: writing to {url}, namespace 'demo' (the demo's own; its data and limits age "
        "out within 5m00s)"
    )
    with TelemetryStore.from_url(url, window_secs=300, namespace="demo") as demo:
        models = demo.known_models()
        assert models == sorted(
            ["bigco/reasoner-max", "cheapco/flaky-7b", "fastco/coder-mini", "premco/sonnet-x"]
        )
        limit = demo.model_performance("premco/sonnet-x")
        assert limit.subscription_limit_reached
        assert limit.subscription_limit_expires_at is not None
        left = limit.subscription_limit_expires_at - datetime.now(UTC)
        assert left.total_seconds() <= 300  # not the hour of a real limit
    assert store.known_models() == []  # the default namespace is untouched
    with TelemetryStore.from_url(url, namespace="fleet") as fleet:
        assert fleet.known_models() == []
    # --namespace on the command line is the user's choice, and is followed
    result = subprocess_cli("--url", url, "demo", "--seconds", "1", "--namespace", "demo-2")
    assert "namespace 'demo-2'" in result.stderr.splitlines()[0]


def test_demo_with_an_unreachable_url_is_one_clear_line() -> None:
    result = subprocess_cli("--url", f"redis://127.0.0.1:{free_port()}/0", "demo", "--seconds", "1")
    assert result.returncode == 3
    assert "cannot reach Redis" in result.stderr
    assert "Traceback" not in result.stderr
