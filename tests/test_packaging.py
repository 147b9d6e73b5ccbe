"""The wheel and the sdist carry what users need, the wheel installs and runs, and every Lua
script keeps to the rules of the layout."""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pydantic
import pytest
import redis
import rich
import shtab

import redis_telemetry
from redis_telemetry.core import scripts
from redis_telemetry.core.scripts import SCRIPT_NAMES, SCRIPTS

from .servers import free_port

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The wheel and the sdist, built from this checkout."""
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    (wheel,) = out.glob("redis_telemetry-*.whl")
    (sdist,) = out.glob("redis_telemetry-*.tar.gz")
    return wheel, sdist


@pytest.mark.slow
def test_wheel_contains_the_lua_scripts(dists: tuple[Path, Path], tmp_path: Path) -> None:
    wheel, _ = dists
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        for name in (*SCRIPT_NAMES, "event"):
            assert f"redis_telemetry/lua/{name}.lua" in names
            packaged = zf.read(f"redis_telemetry/lua/{name}.lua").decode()
            assert packaged == (ROOT / "lua" / f"{name}.lua").read_text()
        assert "redis_telemetry/py.typed" in names
        zf.extractall(tmp_path / "site")
    # the installed package finds its scripts inside itself, not in a source checkout
    probe = "from redis_telemetry.core import scripts; print(scripts._lua_dir())"
    out = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path / "site")},
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert out == str(tmp_path / "site" / "redis_telemetry" / "lua")


@pytest.mark.slow
def test_wheel_metadata_is_complete(dists: tuple[Path, Path]) -> None:
    wheel, _ = dists
    with zipfile.ZipFile(wheel) as zf:
        (meta,) = (n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = zf.read(meta).decode()
        licence = [n for n in zf.namelist() if n.endswith(".dist-info/licenses/LICENSE")]
        assert licence, "PEP 639: the licence text travels in the wheel"
        assert zf.read(licence[0]).decode() == (ROOT / "LICENSE").read_text()
        entry_points = zf.read(meta.replace("METADATA", "entry_points.txt")).decode()
    headers = metadata.split("\n\n")[0].splitlines()
    assert "License-Expression: MIT" in headers
    assert "License-File: LICENSE" in headers
    assert not any(h.startswith("Classifier: License ::") for h in headers)  # PEP 639 forbids
    assert "Classifier: Typing :: Typed" in headers
    assert any(h.startswith("Keywords: ") and "redis" in h for h in headers)
    assert {h.split(",")[0] for h in headers if h.startswith("Project-URL: ")} >= {
        "Project-URL: Documentation",
        "Project-URL: Repository",
        "Project-URL: Changelog",
    }
    assert float(metadata.split("\n", 1)[0].removeprefix("Metadata-Version: ")) >= 2.4
    assert "redis-telemetry = redis_telemetry.cli:run" in entry_points
    # the HTTP server is an extra: a library install does not pull in a web stack
    assert "Provides-Extra: server" in headers
    requires = [h for h in headers if h.startswith("Requires-Dist: ")]
    for package in ("fastapi", "uvicorn"):
        extras = {r.split("; ")[-1] for r in requires if r.startswith(f"Requires-Dist: {package}")}
        assert "extra == 'server'" in extras, extras
        assert all(e.startswith("extra == ") for e in extras), extras  # never required alone


@pytest.mark.slow
def test_sdist_has_what_a_rebuild_and_the_tests_need(dists: tuple[Path, Path]) -> None:
    _, sdist = dists
    with tarfile.open(sdist) as tf:
        names = {n.split("/", 1)[1] for n in tf.getnames() if "/" in n}
    for needed in (
        "pyproject.toml",
        "README.md",
        "CHANGELOG.md",
        "LICENSE",
        "mkdocs.yml",
        "docs/index.md",
        "docs/metrics.md",
        "redis_telemetry/py.typed",
        "lua/record.lua",
        "tests/conftest.py",
        "deploy/grafana-dashboard.json",
        "dev.sh",
    ):
        assert needed in names, needed
    assert not any(n.startswith((".venv/", "site/")) or "__pycache__" in n for n in names)


@pytest.mark.slow
def test_the_wheel_installs_and_runs_in_a_fresh_venv(
    dists: tuple[Path, Path], tmp_path: Path
) -> None:
    """pip installs the wheel alone into a new venv; its dependencies come from this test
    run's environment through a path file, so the test needs no package index."""
    wheel, _ = dists
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    deps = {str(Path(m.__file__).resolve().parents[1]) for m in (redis, pydantic, shtab, rich)}
    (Path(site) / "deps-of-the-test-run.pth").write_text("\n".join(sorted(deps)) + "\n")
    subprocess.run(
        [str(python), "-m", "pip", "install", "--no-deps", "--no-index", "--quiet", str(wheel)],
        check=True,
        capture_output=True,
    )
    command = venv / "bin" / "redis-telemetry"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(command), *args], capture_output=True, text=True, cwd=tmp_path)

    version = run("--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"redis-telemetry {redis_telemetry.__version__}"
    where = subprocess.run(
        [str(python), "-c", "import redis_telemetry; print(redis_telemetry.__file__)"],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    ).stdout
    assert where.startswith(site), "the wheel's copy, not this checkout's"
    bash = run("completion", "bash")
    assert bash.returncode == 0, bash.stderr
    (tmp_path / "completion.bash").write_text(bash.stdout)
    for words, offered in (
        (["st"], "status"),
        (["completion", ""], "bash zsh"),
        (["--log"], "--log-level"),
        (["limit", ""], "clear set"),
    ):
        line = " ".join(["redis-telemetry", *words])
        script = (
            f"source completion.bash; COMP_WORDS=(redis-telemetry {' '.join(map(repr, words))});"
            f" COMP_CWORD={len(words)}; COMP_LINE='{line}'; COMP_POINT=${{#COMP_LINE}};"
            ' _shtab_redis_telemetry; echo "${COMPREPLY[@]}"'
        )
        got = subprocess.run(["bash", "-c", script], capture_output=True, text=True, cwd=tmp_path)
        assert sorted(got.stdout.split()) == offered.split(), (words, got.stderr)
    zsh = run("completion", "zsh")
    assert zsh.stdout.startswith("#compdef redis-telemetry")
    # -v: the command logs on stderr, and the one-line error stays
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    verbose = run("-vv", "--url", nowhere, "status")
    assert verbose.returncode == 3
    assert "DEBUG redis_telemetry.cli: status on " in verbose.stderr
    assert "Traceback" in verbose.stderr  # -vv shows what lies behind the one line
    assert verbose.stderr.rstrip().splitlines()[-1].startswith("redis-telemetry: cannot reach")
    quiet = run("--url", nowhere, "status")
    assert len(quiet.stderr.strip().splitlines()) == 1, quiet.stderr


@pytest.mark.parametrize("name", SCRIPT_NAMES)
def test_script_header_names_keys_argv_and_return(name: str) -> None:
    header = SCRIPTS[name].split("\n\n")[0]
    assert header.startswith(f"-- {name}.lua: ")
    assert "KEYS[1]" in header
    assert "ARGV[1]" in header
    assert "Returns" in header


@pytest.mark.parametrize("name", SCRIPT_NAMES)
def test_script_touches_only_keys_passed_in(name: str) -> None:
    code = "\n".join(
        line for line in SCRIPTS[name].splitlines() if not line.lstrip().startswith("--")
    )
    calls = re.findall(r"redis\.call\('(\w+)'(?:,\s*([^,)]+))?", code)
    assert calls
    # a loop variable over a table of KEYS entries only, `for _, key in ipairs({KEYS[1], ...})`
    over_keys = set(re.findall(r"for _, (\w+) in ipairs\(\{KEYS\[\d\](?:, KEYS\[\d\])*\}\)", code))
    for command, first_arg in calls:
        if command == "TIME":
            continue
        assert re.fullmatch(r"KEYS\[\d\]", first_arg) or first_arg in over_keys, (
            command,
            first_arg,
        )
    assert "os.time" not in code
    if name not in ("config", "rewindow"):  # these two set absolute times from the data
        assert "redis.call('TIME')" in code  # time comes from the server's clock


def test_scripts_in_the_package_are_the_files_in_lua() -> None:
    """Each script as sent is its file, with lua/event.lua and lua/steps.lua in place of their
    include lines; the lines rendered from the Python schema are already the same in the
    files."""
    library = (ROOT / "lua" / "event.lua").read_text()
    for name in SCRIPT_NAMES:
        source = (ROOT / "lua" / f"{name}.lua").read_text()
        if name in scripts.INCLUDES_EVENT:
            assert scripts.render_fields(source) == source
            assert scripts.render(source, library) == SCRIPTS[name]
        else:
            assert scripts.with_steps(source) == SCRIPTS[name]
        assert (scripts.INCLUDE_STEPS in source) == (name in scripts.INCLUDES_STEPS)


def test_record_lua_keeps_the_totals_the_client_reads() -> None:
    from redis_telemetry.core.codec import TOTALS_FIELDS

    fields = re.search(r"local FIELDS = \{(.*?)\}", SCRIPTS["record"], flags=re.S)
    assert fields is not None
    assert tuple(re.findall(r"'(\w+)'", fields.group(1))) == TOTALS_FIELDS
