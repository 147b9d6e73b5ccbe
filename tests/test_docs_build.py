"""The docs check of `bash dev.sh test` (`bash dev.sh docs`: mkdocs build --strict) passes on
these docs and fails on a dead link: a check that can fail."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV = Path(sys.executable).parent.parent


def docs_check(tree: Path) -> subprocess.CompletedProcess[str]:
    """``bash dev.sh docs`` in ``tree``, with this test run's environment as its venv."""
    return subprocess.run(
        ["bash", str(tree / "dev.sh"), "docs"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "VENV": str(VENV)},
    )


def copy_of_the_site(tmp_path: Path) -> Path:
    """What the site is built from, copied: its config, pages, included files, the package
    (for the API reference) and dev.sh."""
    tree = tmp_path / "tree"
    tree.mkdir()
    for name in ("dev.sh", "mkdocs.yml", "CHANGELOG.md", "README.md"):
        shutil.copy(ROOT / name, tree / name)
    for name in ("docs", "redis_telemetry"):
        shutil.copytree(ROOT / name, tree / name, ignore=shutil.ignore_patterns("__pycache__"))
    return tree


def test_the_docs_build_clean() -> None:
    result = docs_check(ROOT)
    assert result.returncode == 0, result.stderr
    assert "WARNING" not in result.stderr


def test_a_dead_link_fails_the_docs_check(tmp_path: Path) -> None:
    tree = copy_of_the_site(tmp_path)
    assert docs_check(tree).returncode == 0  # the copy builds as the docs do
    page = tree / "docs" / "index.md"
    page.write_text(page.read_text() + "\nSee [the lost page](no-such-page.md).\n")
    result = docs_check(tree)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "no-such-page.md" in output  # the warning is shown, not quieted
    assert "Aborted with 1 warnings in strict mode!" in output
