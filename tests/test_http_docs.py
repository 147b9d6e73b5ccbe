"""docs/http.md's console examples, run in order against a real server: each `$ ` command runs
in bash (`localhost:10464` is the test server's address; `export` lines set the variables the
later commands and the server see; `redis-telemetry serve` starts the server), and prints what
the page shows, but for times (RFC 3339, masked) and the port."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from redis_telemetry.core.tokens import READ_TOKEN_ENV, WRITE_TOKEN_ENV

from .api import Serve
from .servers import RedisServer

PAGE = Path(__file__).resolve().parents[1] / "docs" / "http.md"
ADDRESS = "localhost:10464"
HOST = re.compile(r"(?:127\.0\.0\.1|localhost):\d+")
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)")


class Example(NamedTuple):
    command: str
    output: str
    line: int


def examples(text: str) -> list[Example]:
    """Every ``$ `` command of the page's console blocks, with the output shown after it."""
    found: list[Example] = []
    for block in re.finditer(r"^```console\n(.*?)^```", text, flags=re.S | re.M):
        first = text[: block.start()].count("\n") + 2
        lines = block.group(1).splitlines()
        i = 0
        while i < len(lines):
            if not lines[i].startswith("$ "):
                i += 1
                continue
            start = i
            command = lines[i][2:]
            while command.endswith("\\"):
                i += 1
                command = command[:-1] + "\n" + lines[i]
            i += 1
            output = []
            while i < len(lines) and not lines[i].startswith("$ "):
                output.append(lines[i])
                i += 1
            found.append(Example(command, "\n".join(output), first + start))
    return found


def masked(text: str) -> str:
    """``text`` without what changes from run to run: times, and the server's port."""
    return TIME.sub("<time>", HOST.sub(ADDRESS, text)).strip()


class Session:
    """The shell state the page's commands share: variables, and the server once started."""

    def __init__(self, redis_url: str, workdir: Path) -> None:
        self.redis_url = redis_url
        self.workdir = workdir
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("REDIS_TELEMETRY_")}
        self.server: Serve | None = None

    def run(self, example: Example) -> str:
        command = example.command.strip()
        if command.startswith("export "):
            name = command.split()[1].split("=")[0]
            value = self.bash(f'{command}; printf %s "${name}"')
            self.env[name] = value
            return ""
        if command.startswith("redis-telemetry ") and " serve" in command:
            assert self.server is None, "one server a page"
            args = command.removesuffix("&").split()[1:]
            assert args[0] == "serve", "the page starts serve with its own options only"
            token = self.env.get(READ_TOKEN_ENV) or self.env.get(WRITE_TOKEN_ENV)
            self.server = Serve(self.redis_url, *args[1:], env=self.env, token=token).start()
            return self.server.stdout
        assert self.server is not None, f"line {example.line}: no server started yet"
        return self.bash(command.replace(ADDRESS, f"127.0.0.1:{self.server.port}"))

    def bash(self, command: str) -> str:
        result = subprocess.run(
            ["bash", "-c", command],
            capture_output=True,
            text=True,
            env=self.env,
            cwd=self.workdir,
            timeout=120,
        )
        assert result.returncode == 0, f"{command!r}: {result.stderr}"
        return result.stdout

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()


@pytest.fixture
def session(tmp_path: Path) -> Iterator[Session]:
    redis = RedisServer().start()  # a server of its own: the page's numbers start from nothing
    shell = Session(redis.url, tmp_path)
    try:
        yield shell
    finally:
        shell.close()
        redis.cleanup()


def test_the_pages_examples_print_what_the_page_shows(session: Session) -> None:
    found = examples(PAGE.read_text())
    assert len(found) >= 20
    for example in found:
        got = session.run(example)
        assert masked(got) == masked(example.output), (
            f"docs/http.md line {example.line}: {example.command}\n--- got:\n{got}"
        )


def test_the_checker_sees_a_wrong_output() -> None:
    page = "```console\n$ echo one\\\n two\nuno\n$ true\n```\n"
    assert examples(page) == [Example("echo one\n two", "uno", 2), Example("true", "", 5)]
    assert masked("at 2026-10-02T08:00:01.250Z on 127.0.0.1:9") == f"at <time> on {ADDRESS}"
