"""The package's exceptions and log records: one base class, and loggers named by module."""

from __future__ import annotations

import importlib
import inspect
import logging
import pkgutil

import pytest

import redis_telemetry
from redis_telemetry import TelemetryError
from redis_telemetry.core import codec
from redis_telemetry.ingest import UnparseableLine

MODULES = sorted(
    m.name
    for m in pkgutil.walk_packages(redis_telemetry.__path__, "redis_telemetry.")
    if not m.name.endswith("__main__")
)


def test_every_exception_of_the_package_is_a_telemetry_error() -> None:
    found = []
    for name in MODULES:
        module = importlib.import_module(name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, BaseException) and cls.__module__ == name:
                found.append(cls)
                assert issubclass(cls, TelemetryError), cls
    assert codec.CorruptMember in found
    assert UnparseableLine in found
    assert len(found) >= 6


def test_corrupt_member_is_still_a_value_error() -> None:
    with pytest.raises(ValueError, match="not msgpack"):
        codec.decode(b"\xc1")
    with pytest.raises(TelemetryError, match="not msgpack"):
        codec.decode(b"\xc1")


def test_each_module_logs_under_its_own_name() -> None:
    """Child loggers of ``redis_telemetry``: one module's records can be tuned alone, and a
    handler on ``redis_telemetry`` still sees them all."""
    named = []
    for name in MODULES:
        log = getattr(importlib.import_module(name), "log", None)
        if isinstance(log, logging.Logger) and name != "redis_telemetry.exporter":  # not ours
            assert log.name == name
            named.append(name)
    assert {"redis_telemetry.buffer", "redis_telemetry.core.ops"} <= set(named)
    assert len(named) >= 5
