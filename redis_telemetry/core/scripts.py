"""Lua script sources, read from the ``lua/`` folder that ships inside the wheel."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

SCRIPT_NAMES = ("config", "register", "record", "snapshot", "window")


def _lua_dir() -> Path:
    packaged = Path(str(files("redis_telemetry"))) / "lua"
    if packaged.is_dir():
        return packaged
    # A source checkout (editable install or tests run from the tree) keeps them at the top.
    return Path(__file__).resolve().parents[2] / "lua"


def _load() -> dict[str, str]:
    folder = _lua_dir()
    return {name: (folder / f"{name}.lua").read_text(encoding="utf-8") for name in SCRIPT_NAMES}


#: name -> Lua source
SCRIPTS: dict[str, str] = _load()
