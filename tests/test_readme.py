"""The examples in the README and in every docs page run as written (against throwaway servers,
never localhost:6379).

- A ```python block is executed, with ``redis://localhost:6379/0`` (or the cluster URL shown)
  replaced by a test server's. A page's blocks run in order in one flushed server; a docs page's
  run after the library example (the first block of docs/library.md), so they can build on it.
- A ```py block is not executed here (its page's owner tests it some other way).
- A ```console block of ``redis-cli`` recipes is replayed after the library example, and each
  answer is compared with the one the page shows.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .servers import RedisClusterServers, RedisServer

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))]
DEFAULT_URL = "redis://localhost:6379/0"
CLUSTER_URL = "redis+cluster://127.0.0.1:7001/0"

#: what the examples print, page by page (a page's examples must print at least these)
PRINTS = {
    "README.md": ["1 1.0 5120.0\n", "route to openai/gpt-5.1-codex\n"],
    "docs/library.md": [
        "anthropic/claude-sonnet-4-5 is blocked until",
        # the asyncio example sees the models the library example recorded
        "['anthropic/claude-sonnet-4-5', 'openai/gpt-5.1-codex', 'zai-coding-plan",
    ],
    # the providers example prints what the page shows it printing
    "docs/providers.md": [
        "acme claude-code\n1.6 near_exhaustion\n",
        "bigco/slow #1 by weighted",
        "acme/fast #2 by weighted (weighted score (1 = best): 0.6708); 100% of 2 ok, 300 ms "
        "avg, $0.8000/success; provider acme budget near exhaustion (hour $1.6000 of $2.0000, "
        "day $1.6000 of $20.0000): weighted score 0.6708 x 0.6 = 0.4025\n",
        "bigco/slow\nprovider_blocked\n3\n",
    ],
    # the routing example prints what the page shows it printing
    "docs/routing.md": [
        "#1 by fastest (average latency, ms: 900); 100% of 3 ok, 900 ms avg",
        "#2 by fastest (average latency, ms: 14,000); 100% of 3 ok, 14,000 ms avg, free",
        "skipped premco/sonnet: subscription-limited until",
        "skipped newco/unknown: no data in the window",
        "\nbigco/reasoner\n",
        "no candidate model is usable (premco/sonnet: subscription-limited until",
    ],
}


def name(page: Path) -> str:
    return page.relative_to(ROOT).as_posix()


def blocks(page: Path, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", page.read_text(), flags=re.S | re.M)


def library_example() -> str:
    return blocks(ROOT / "docs" / "library.md", "python")[0]


def run_python_example(code: str, page: str, url: str, cluster_port: int | None = None) -> None:
    """Run one example against the test servers instead of the addresses it shows."""
    if CLUSTER_URL in code:
        assert cluster_port is not None
        code = code.replace(CLUSTER_URL, f"redis+cluster://127.0.0.1:{cluster_port}/0")
        code = code.replace("port=7001", f"port={cluster_port}")
    assert "localhost:" not in code.replace(DEFAULT_URL, ""), f"{page}: an address tests can't swap"
    exec(compile(code.replace(DEFAULT_URL, url), page, "exec"), {"__name__": "docs_example"})


@pytest.fixture
def server(redis_server: RedisServer) -> RedisServer:
    with redis_server.client() as c:
        c.flushall()
    return redis_server


def test_the_docs_have_examples_and_the_test_knows_every_page() -> None:
    assert {name(p) for p in PAGES} >= set(PRINTS)
    assert sum(len(blocks(p, "python")) for p in PAGES) >= 7
    assert len(blocks(ROOT / "README.md", "python")) >= 1


@pytest.mark.parametrize("page", [p for p in PAGES if blocks(p, "python")], ids=name)
def test_python_examples_run(
    page: Path,
    server: RedisServer,
    request: pytest.FixtureRequest,
    capsys: pytest.CaptureFixture[str],
) -> None:
    examples = blocks(page, "python")
    cluster_port = None
    if any(CLUSTER_URL in code for code in examples):
        cluster: RedisClusterServers = request.getfixturevalue("redis_cluster")
        cluster_port = cluster.nodes[0].port
    if page.parent.name == "docs" and page.name != "library.md":
        run_python_example(library_example(), "docs/library.md", server.url)
    for code in examples:
        run_python_example(code, name(page), server.url, cluster_port)
    out = capsys.readouterr().out
    for expected in PRINTS.get(name(page), []):
        assert expected in out, expected


def redis_cli_recipes() -> list[tuple[str, str]]:
    """Every console block whose first command is redis-cli, with its page."""
    found = []
    for page in PAGES:
        for block in blocks(page, "console"):
            commands = [ln for ln in block.splitlines() if ln.startswith("$ ")]
            if commands and commands[0].startswith("$ redis-cli"):
                found.append((name(page), block))
    return found


def test_redis_cli_recipes_answer_as_shown(server: RedisServer) -> None:
    cli = shutil.which("redis-cli")
    assert cli is not None, "redis-cli comes with redis-server"
    run_python_example(library_example(), "docs/library.md", server.url)
    recipes = redis_cli_recipes()
    assert "docs/data.md" in {page for page, _ in recipes}
    checked = 0
    for _page, console in recipes:
        checked += check_recipes(console, cli, server.port)
    assert checked >= 5


def check_recipes(console: str, cli: str, port: int) -> int:
    """Replay one console block's recipes; returns how many were compared."""
    checked = 0
    for paragraph in console.split("\n\n"):
        lines = [line for line in paragraph.splitlines() if not line.startswith("#")]
        if len(lines) < 2:
            continue
        if "$(" in paragraph:  # a shell recipe: run it whole, compare the last answer
            script = "\n".join(ln[2:] for ln in lines if ln.startswith("$ "))
            script = script.replace("redis-cli", f"{cli} -p {port}")
            out = subprocess.run(["bash", "-c", script], capture_output=True, text=True)
            assert out.returncode == 0, out.stderr
            assert out.stdout.split() == lines[-1].replace("(integer) ", "").split()
            checked += 1
            continue
        command = lines[0].removeprefix("$ ").split("  #")[0].strip()
        argv = shlex.split(command)
        got = subprocess.run(
            [cli, "-p", str(port), *argv[1:]], capture_output=True, text=True, check=True
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
    return checked


def test_the_site_lists_every_page_and_the_readme_stays_short() -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    nav = {page for entry in config["nav"] for page in entry.values()}
    assert nav == {p.relative_to(ROOT / "docs").as_posix() for p in PAGES[1:]}
    # pages other issues write: linked here, their text comes from their owners
    assert nav >= {"architecture.md", "contributing.md", "ingest.md", "litellm.md"}
    assert config["strict"] is True
    assert not {"privacy", "social"} & {
        p if isinstance(p, str) else next(iter(p)) for p in config["plugins"]
    }, "the build must not need the network"
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    assert "```sh\nbash dev.sh demo\n```" in readme
    assert "```sh\nbash dev.sh test\n```" in readme
    for link in re.findall(r"\]\((docs/[^)#]+)", readme):
        assert (ROOT / link).is_file(), link


def test_every_test_the_reliability_page_names_exists() -> None:
    """Each guarantee names the test that proves it: ``tests/x.py`` and ``::test_name``."""
    text = (ROOT / "docs" / "reliability.md").read_text()
    named = re.findall(r"`(tests/\w+\.py)(?:::(\w+))?`|`::(\w+)`", text)
    assert named
    current = ""
    for path, name, same_file in named:
        current = path or current
        source = (ROOT / current).read_text()
        test = name or same_file
        assert not test or re.search(rf"^(async )?def {test}\(", source, re.M), (current, test)


def test_the_fakeredis_example_runs_as_a_users_test_suite(tmp_path: Path) -> None:
    """docs/library.md's example for a user's own tests passes under pytest, as written."""
    (example,) = [b for b in blocks(ROOT / "docs" / "library.md", "python") if "FakeRedis()" in b]
    (tmp_path / "test_users_own.py").write_text(example)
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nfilterwarnings = error\nasyncio_default_fixture_loop_scope = function\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout
