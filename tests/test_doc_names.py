"""Every code name a page of the docs mentions exists, so the docs cannot drift from the code.

The heuristic reads the code spans of README.md, CHANGELOG.md and docs/*.md (and the commands of
their console blocks) and checks:

- a dotted name under ``redis_telemetry`` imports and resolves, attribute by attribute;
- a called name (``select_model()``, ``store.record(event)``) is a function, method or class
  the package defines (or one of the few names of other tools listed below, with the tool);
- a ``redis-telemetry`` command line names a real subcommand and real options of it;
- an option (``--json``) is one of the command's, of the benchmarks', or listed below;
- an UPPER_CASE name with an underscore is defined in the package or in its Lua scripts, or is
  a variable the package, its tests or docker-compose.yml read;
- a file (``core/totals.py``, ``deploy/users.acl``) is in the repository;
- no page names the project's machine tools.

The changelog is read only for files and dotted names: it speaks of older releases too.
"""

from __future__ import annotations

import argparse
import ast
import re
import shlex
from functools import cache
from pathlib import Path

import pytest

from redis_telemetry.cli import build_parser
from redis_telemetry.core import totals

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CHANGELOG = ROOT / "CHANGELOG.md"

#: Called names that belong to other tools, by the tool they belong to.
FOREIGN_CALLS = {
    # PromQL
    "histogram_quantile": "PromQL",
    "rate": "PromQL",
    "time": "PromQL",
    "sum": "PromQL",
    "label_replace": "PromQL",
    # libraries and tools a page shows beside the package
    "FakeRedis": "fakeredis",
    "FakeServer": "fakeredis",
    "RedisCluster": "redis-py",
    "model_copy": "pydantic",
    "setswitchinterval": "Python (sys)",
    "completion": "LiteLLM (Router)",
    "register_plugin": "LiteLLM",
    "set_custom_routing_strategy": "LiteLLM (Router)",
    "callback": "a user's own function",
}
#: Options of other tools a page shows.
FOREIGN_OPTIONS = {
    "--aclfile": "redis-server",
    "--tls-port": "redis-server",
    "--strict": "mypy, mkdocs build",
    "--input-format": "claude",
    "--output-format": "claude",
}
#: UPPER_CASE names of other tools a page shows.
FOREIGN_CONSTANTS = {
    "ROUND_ROBIN_REPLICAS": "redis-py (LoadBalancingStrategy)",
    "OTEL_LOGS_EXPORT_INTERVAL": "Claude Code",
    "CLAUDE_CODE_ENHANCED_TELEMETRY_BETA": "Claude Code",
    "OTEL_TRACES_EXPORTER": "Claude Code",
    "TRACELOOP_BASE_URL": "OpenLLMetry",
    "TRACELOOP_HEADERS": "OpenLLMetry",
    "TRACELOOP_TRACE_CONTENT": "OpenLLMetry",
}
#: Files of other tools a page names, or that a run writes.
FOREIGN_FILES = {
    "config.yaml": "the LiteLLM Proxy's config",
    "packages/coding-agent/docs/json.md": "pi-mono's repository",
    "packages/opencode/package.json": "opencode's repository",
}
GENERATED = ("benchmarks/results/",)  # written by a benchmark run
#: Tools of this machine, which docs never name.
MACHINE_TOOLS = ("duplicates",)

FENCE = re.compile(r"^```.*?^```", flags=re.S | re.M)
SPAN = re.compile(r"`([^`\n]+)`")
CALL = re.compile(r"([A-Za-z_][\w.]*)\(")
UPPER = re.compile(r"\b[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+\b")
FILE = re.compile(r"^[\w./-]+\.(?:py|lua|md|yml|yaml|json|acl|toml|sh|jsonl|png)$")


def spans(page: Path) -> list[str]:
    """The page's inline code spans (outside fenced blocks)."""
    return SPAN.findall(FENCE.sub("", page.read_text()))


def console_commands(page: Path) -> list[str]:
    """The ``$ redis-telemetry ...`` command lines of the page's console blocks."""
    blocks = re.findall(r"^```console\n(.*?)^```", page.read_text(), flags=re.S | re.M)
    return [
        line[2:]
        for block in blocks
        for line in block.replace("\\\n", " ").splitlines()
        if line.startswith("$ redis-telemetry")
    ]


def defined(tree: ast.AST) -> set[str]:
    """The names a module's source defines or imports, anywhere in it."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.alias):
            names.add((node.asname or node.name).split(".")[0])
    return names


@cache
def package_names() -> frozenset[str]:
    """Every function, method, class and assigned name the package defines, the Lua scripts'
    local functions and names, and the environment variables that the package, its tests and
    docker-compose.yml read (the identifier-like strings of their source)."""
    names: set[str] = set()
    for path in (ROOT / "redis_telemetry").rglob("*.py"):
        names |= defined(ast.parse(path.read_text()))
    for path in (ROOT / "lua").glob("*.lua"):
        names |= set(re.findall(r"\blocal (?:function )?([A-Za-z_]\w*)", path.read_text()))
    for path in [*(ROOT / "redis_telemetry").rglob("*.py"), *(ROOT / "tests").glob("*.py")]:
        strings = [
            n.value for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Constant)
        ]
        names |= {v for v in strings if isinstance(v, str) and re.fullmatch(r"[A-Z][A-Z0-9_]+", v)}
    names |= set(re.findall(r"\$\{([A-Z][A-Z0-9_]+)", (ROOT / "docker-compose.yml").read_text()))
    return frozenset(names)


@cache
def commands() -> dict[str, dict[str, bool]]:
    """Each subcommand (``limit set`` as ``limit set``) -> its options, each with whether it
    takes a value; ``""``: the top-level parser's."""
    out: dict[str, dict[str, bool]] = {}

    def walk(parser: argparse.ArgumentParser, path: str) -> None:
        out[path] = {o: a.nargs != 0 for a in parser._actions for o in a.option_strings}
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, f"{path} {name}".strip())

    walk(build_parser(), "")
    return out


def benchmark_options() -> set[str]:
    text = "".join(p.read_text() for p in (ROOT / "benchmarks").glob("*.py"))
    return set(re.findall(r'add_argument\(\s*"(--[\w-]+)"', text))


def resolves(dotted: str) -> bool:
    """The longest module prefix of ``dotted`` exists in the source tree, its next part is a
    name that module defines or imports, and any further parts are names of the package
    (read, not imported: an integration's module imports its framework)."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        base = ROOT.joinpath(*parts[:i])
        source = base / "__init__.py" if base.is_dir() else base.with_suffix(".py")
        if not source.is_file():
            continue
        rest = parts[i:]
        if rest and rest[0] not in defined(ast.parse(source.read_text())):
            return False
        return all(name in package_names() for name in rest[1:])
    return False


def file_exists(name: str) -> bool:
    if name in FOREIGN_FILES or name.startswith(GENERATED):
        return True
    if "/" in name:
        bases = (ROOT, ROOT / "redis_telemetry", ROOT / "tests")
        return any((base / name).exists() for base in bases)
    return any(ROOT.rglob(name))


def problems_of_command(line: str) -> list[str]:
    """What is wrong with one ``redis-telemetry ...`` command line: an unknown subcommand or
    an option neither it nor the global parser has."""
    words = [w for w in shlex.split(line.split("|")[0].split("&")[0]) if w != "redis-telemetry"]
    path = ""
    options = dict(commands()[""])
    takes_value = False
    for word in words:
        if takes_value or word.isupper():  # an option's value, or a placeholder (COMMAND)
            takes_value = False
        elif word.startswith("-"):
            takes_value = "=" not in word and options.get(word, False)
        elif (deeper := f"{path} {word}".strip()) in commands():
            path = deeper
            options |= commands()[path]
        elif not path:
            return [f"{line!r}: no command {word!r}"]
    used = {w.split("=")[0] for w in words if w.startswith("--")}
    return [f"{line!r}: {path or 'redis-telemetry'} has no option {o}" for o in used - set(options)]


def problems(page: Path) -> list[str]:
    found = []
    all_options = set().union(*map(set, commands().values()))
    all_options |= benchmark_options() | set(FOREIGN_OPTIONS)
    for span in spans(page):
        for dotted in re.findall(r"\bredis_telemetry(?:\.\w+)+", span):
            if not resolves(dotted):
                found.append(f"{dotted}: not in the package")
        head = span.split()[0]
        if FILE.match(head) and not file_exists(head):
            found.append(f"{head}: no such file")
        if page == CHANGELOG:
            continue  # it speaks of older releases too
        if "redis_telemetry_" in span or "sum by" in span:
            continue  # PromQL: checked against a scrape by tests/test_exporter.py
        for called in CALL.findall(span):
            name = called.split(".")[-1]
            if name not in package_names() and name not in FOREIGN_CALLS:
                found.append(f"{called}(): not defined in the package")
        if head == "redis-telemetry":
            found += problems_of_command(span)
        elif head.startswith("--") and head.split("=")[0] not in all_options:
            found.append(f"{head}: no such option")
        for upper in UPPER.findall(span):
            if upper not in package_names() and upper not in FOREIGN_CONSTANTS:
                found.append(f"{upper}: not defined in the package or its scripts")
    if page != CHANGELOG:
        for line in console_commands(page):
            found += problems_of_command(line)
    text = page.read_text()
    for tool in MACHINE_TOOLS:
        if re.search(rf"`{tool}\b", text):
            found.append(f"names the machine tool `{tool}`")
    return found


@pytest.mark.parametrize("page", [*PAGES, CHANGELOG], ids=lambda p: p.name)
def test_every_code_name_a_page_mentions_exists(page: Path) -> None:
    assert problems(page) == []


def test_the_checker_finds_drift(tmp_path: Path) -> None:
    page = tmp_path / "drift.md"
    page.write_text(
        "Add it to `ADDED_LATER` and to `named_contribution()`; run `duplicates --change`.\n"
        "`redis_telemetry.core.nothing`, `core/nothing.py`, `--no-such-flag`,\n"
        "`redis-telemetry statuz`, `redis-telemetry serve --json`, and `store.record(event)`.\n"
        "```console\n$ redis-telemetry events m --lats 3\n```\n"
    )
    assert problems(page) == [
        "ADDED_LATER: not defined in the package or its scripts",
        "named_contribution(): not defined in the package",
        "redis_telemetry.core.nothing: not in the package",
        "core/nothing.py: no such file",
        "--no-such-flag: no such option",
        "'redis-telemetry statuz': no command 'statuz'",
        "'redis-telemetry serve --json': serve has no option --json",
        "'redis-telemetry events m --lats 3': events has no option --lats",
        "names the machine tool `duplicates`",
    ]


def test_the_data_page_lists_every_running_total() -> None:
    """docs/data.md, the public contract of the keys, names each field of the totals hash."""
    row = next(
        line
        for line in (ROOT / "docs" / "data.md").read_text().splitlines()
        if line.startswith("| `<ns>:{<model>}:totals`")
    )
    assert [f for f in totals.FIELDS if f"`{f}`" not in row] == []


API_MODULES = (
    "redis_telemetry",
    "redis_telemetry.ingest",
    "redis_telemetry.server",
    "redis_telemetry.integrations.litellm",
    "redis_telemetry.otlp",
)


def public_names(module: str) -> set[str]:
    """The names of a module's ``__all__``, read from its source (the LiteLLM integration's
    import needs LiteLLM)."""
    path = ROOT.joinpath(*module.split("."), "__init__.py")
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            return {f"{module}.{name}" for name in ast.literal_eval(node.value)}
    raise AssertionError(f"{module} has no __all__")


def test_the_api_reference_covers_every_public_name() -> None:
    page = (ROOT / "docs" / "api.md").read_text()
    documented = set(re.findall(r"^::: ([\w.]+)$", page, flags=re.M))
    public = set().union(*map(public_names, API_MODULES))
    assert sorted(public - documented) == []
    assert sorted(documented - public) == []  # and nothing that is not public
