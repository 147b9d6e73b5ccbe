"""The examples of docs/ingest.md run as written, against a test server."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).parent.parent / "docs" / "ingest.md"


def python_blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", DOC.read_text(), flags=re.S | re.M)


def test_the_page_has_its_examples() -> None:
    assert len(python_blocks()) == 1


@pytest.mark.parametrize("code", python_blocks())
def test_python_examples_run(code: str, url: str, capsys: pytest.CaptureFixture[str]) -> None:
    exec(compile(code.replace("redis://localhost:6379/0", url), str(DOC), "exec"), {})
    assert capsys.readouterr().out == "1 event recorded\n1 line ignored\n"


def test_the_console_example_is_what_the_command_prints(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from redis_telemetry.cli import main

    shown = re.search(
        r"^\$ redis-telemetry (ingest [^\n]*)\n(.*?)^```", DOC.read_text(), re.M | re.S
    )
    assert shown is not None
    args, output = shown.group(1).split(), shown.group(2)
    root = Path(__file__).parent.parent
    args[-1] = str(root / args[-1])
    assert main(["--url", url, *args]) == 0
    assert capsys.readouterr().out == output  # line for line, none of them wrapped
