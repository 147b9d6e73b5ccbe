"""The README's examples run as written (against a throwaway server, not localhost:6379)."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from .servers import RedisClusterServers, RedisServer

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
DEFAULT_URL = "redis://localhost:6379/0"


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


CLUSTER_URL = "redis+cluster://127.0.0.1:7001/0"


def run_python_example(code: str, url: str, cluster_port: int | None = None) -> None:
    """Run one README example against the test servers instead of the addresses it shows."""
    if CLUSTER_URL in code:
        assert cluster_port is not None
        code = code.replace(CLUSTER_URL, f"redis+cluster://127.0.0.1:{cluster_port}/0")
        code = code.replace("port=7001", f"port={cluster_port}")
    else:
        assert DEFAULT_URL in code
    exec(compile(code.replace(DEFAULT_URL, url), "README.md", "exec"), {"__name__": "readme"})


@pytest.fixture
def server(redis_server: RedisServer) -> RedisServer:
    with redis_server.client() as c:
        c.flushall()
    return redis_server


def test_python_examples_run(
    server: RedisServer, redis_cluster: RedisClusterServers, capsys: pytest.CaptureFixture[str]
) -> None:
    examples = blocks("python")
    assert len(examples) >= 2
    for code in examples:
        run_python_example(code, server.url, redis_cluster.nodes[0].port)
    out = capsys.readouterr().out
    assert "anthropic/claude-sonnet-4-5 is blocked until" in out
    assert "['anthropic/claude-sonnet-4-5', 'openai/gpt-5.1-codex', 'zai-coding-plan" in out
    # the routing example prints what the README shows it printing
    assert "#1 by fastest (average latency, ms: 900); 100% of 3 ok, 900 ms avg" in out
    assert "#2 by fastest (average latency, ms: 14,000); 100% of 3 ok, 14,000 ms avg, free" in out
    assert "skipped premco/sonnet: subscription-limited until" in out
    assert "skipped newco/unknown: no data in the window" in out
    assert "\nbigco/reasoner\n" in out
    assert "no candidate model is usable (premco/sonnet: subscription-limited until" in out


def test_redis_cli_recipes_answer_as_shown(server: RedisServer) -> None:
    cli = shutil.which("redis-cli")
    assert cli is not None, "redis-cli comes with redis-server"
    run_python_example(blocks("python")[0], server.url)
    (console,) = (b for b in blocks("console") if "redis-cli" in b)
    checked = 0
    for paragraph in console.split("\n\n"):
        lines = [line for line in paragraph.splitlines() if not line.startswith("#")]
        if len(lines) < 2:
            continue
        if "$(" in paragraph:  # a shell recipe: run it whole, compare the last answer
            script = "\n".join(ln[2:] for ln in lines if ln.startswith("$ "))
            script = script.replace("redis-cli", f"{cli} -p {server.port}")
            out = subprocess.run(["bash", "-c", script], capture_output=True, text=True)
            assert out.returncode == 0, out.stderr
            assert out.stdout.split() == lines[-1].replace("(integer) ", "").split()
            checked += 1
            continue
        command = lines[0].removeprefix("$ ").split("  #")[0].strip()
        argv = shlex.split(command)
        got = subprocess.run(
            [cli, "-p", str(server.port), *argv[1:]], capture_output=True, text=True, check=True
        ).stdout.split()
        want = [w.strip('"') for w in re.sub(r"\(integer\)|\d+\)", "", " ".join(lines[1:])).split()]
        if argv[1] in ("ZRANGE", "--scan", "HGETALL"):
            assert sorted(g for g in got if not g.isdigit()) == sorted(
                w for w in want if not w.isdigit()
            )
        elif argv[1] == "TTL":
            assert 3590 <= int(got[0]) <= int(want[0])
        else:
            assert got == want, command
        checked += 1
    assert checked >= 5
