"""The command's top-level options: --version, -v/--log-level, and shell completion."""

from __future__ import annotations

import importlib.metadata
import logging
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

import redis_telemetry
from redis_telemetry import cli, demo, exporter
from redis_telemetry.cli import main

from .servers import free_port

PACKAGE = logging.getLogger("redis_telemetry")


@pytest.fixture(autouse=True)
def package_logger() -> Iterator[None]:
    """Each test leaves the package's logger as it found it."""
    level, handlers = PACKAGE.level, list(PACKAGE.handlers)
    yield
    PACKAGE.setLevel(level)
    PACKAGE.handlers[:] = handlers


def test_version_comes_from_the_package_metadata(capsys: pytest.CaptureFixture[str]) -> None:
    assert redis_telemetry.__version__ == importlib.metadata.version("redis-telemetry")
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"redis-telemetry {redis_telemetry.__version__}\n"


@pytest.mark.parametrize(
    ("flags", "level"),
    [
        ([], logging.WARNING),
        (["-v"], logging.INFO),
        (["-vv"], logging.DEBUG),
        (["-vvv"], logging.DEBUG),
        (["--log-level", "error"], logging.ERROR),
        (["-vv", "--log-level", "WARNING"], logging.WARNING),
    ],
)
def test_verbosity_sets_the_package_logger(
    flags: list[str], level: int, capsys: pytest.CaptureFixture[str]
) -> None:
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    assert main([*flags, "--url", nowhere, "status"]) == cli.EXIT_UNAVAILABLE
    assert PACKAGE.level == level
    err = capsys.readouterr().err
    assert ("DEBUG redis_telemetry.cli: status on" in err) == (level == logging.DEBUG)
    assert err.rstrip().splitlines()[-1].startswith("redis-telemetry: cannot reach Redis")


def test_running_twice_does_not_double_the_log_lines(capsys: pytest.CaptureFixture[str]) -> None:
    for _ in range(2):
        main(["--log-level", "debug", "completion", "bash"])
    assert capsys.readouterr().err.count("completion on ") == 2  # one line per run, not 1 + 2


def test_a_bad_log_level_is_one_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--log-level", "loud", "status"])
    assert exit_.value.code == 2
    assert "argument --log-level: invalid choice: 'LOUD'" in capsys.readouterr().err


def test_modules_log_to_children_of_the_package_logger() -> None:
    for module in (cli, exporter, demo):
        assert module.log.name == module.__name__
        assert module.log.parent is PACKAGE


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_completion_is_generated_from_the_parser(
    shell: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["completion", shell]) == 0
    script = capsys.readouterr().out
    # every subcommand and top-level option is offered
    for word in ("status", "ingest", "serve", "completion", "--version", "--log-level", "--url"):
        assert word in script, word
    assert script.startswith("#compdef redis-telemetry" if shell == "zsh" else "#")


def test_the_version_has_one_source_and_names_the_latest_release() -> None:
    """pyproject.toml holds the version; the installed metadata, `--version` and the changelog's
    newest release agree with it, so a release that cuts the changelog bumps the version."""
    root = Path(__file__).resolve().parents[1]
    source = tomllib.loads((root / "pyproject.toml").read_text())["project"]["version"]
    assert importlib.metadata.version("redis-telemetry") == source  # installed from this tree
    assert redis_telemetry.__version__ == source
    headings = re.findall(r"^## \[([^\]]+)\]", (root / "CHANGELOG.md").read_text(), flags=re.M)
    assert headings[0] == "Unreleased"
    assert headings[1] == source
    assert not any(v == source for v in headings[2:])  # one release per version
