"""The wheel ships the Lua scripts, and every script keeps to the rules of the layout."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from redis_telemetry.core.scripts import SCRIPT_NAMES, SCRIPTS

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_contains_the_lua_scripts(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("redis_telemetry-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        for name in SCRIPT_NAMES:
            assert f"redis_telemetry/lua/{name}.lua" in names
            assert zf.read(f"redis_telemetry/lua/{name}.lua").decode() == SCRIPTS[name]
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
    for command, first_arg in calls:
        if command == "TIME":
            continue
        assert re.fullmatch(r"KEYS\[\d\]", first_arg), (command, first_arg)
    assert "os.time" not in code
    if name != "config":
        assert "redis.call('TIME')" in code  # time comes from the server's clock


def test_scripts_in_the_package_are_the_files_in_lua() -> None:
    for name in SCRIPT_NAMES:
        assert (ROOT / "lua" / f"{name}.lua").read_text() == SCRIPTS[name]


def test_record_lua_keeps_the_totals_the_client_reads() -> None:
    from redis_telemetry.core.codec import TOTALS_FIELDS

    fields = re.search(r"local FIELDS = \{(.*?)\}", SCRIPTS["record"], flags=re.S)
    assert fields is not None
    assert tuple(re.findall(r"'(\w+)'", fields.group(1))) == TOTALS_FIELDS
