"""The per-model cap's warning is rate-limited: the first trimmed write, then every Nth."""

from __future__ import annotations

import logging

import fakeredis
import pytest

from redis_telemetry import TelemetryStore
from redis_telemetry.core import ops

from .helpers import event


def test_the_cap_warns_for_the_first_trimmed_write_then_every_nth(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(ops, "CAP_WARNING_EVERY", 10)
    store = TelemetryStore(fakeredis.FakeRedis(), window_secs=3600, max_events_per_model=1)
    store.record(event("m"))  # at the cap: nothing trimmed yet
    trimmed = 0
    with caplog.at_level(logging.WARNING, logger="redis_telemetry"):
        for _ in range(25):
            trimmed += store.record(event("m")).capped
    assert trimmed == 25  # every write trimmed one
    warnings = [r.getMessage() for r in caplog.records if "per-model cap" in r.getMessage()]
    assert len(warnings) == 3  # the 1st, the 10th and the 20th, not 25
    assert "(1 writes trimmed by the cap so far" in warnings[0]
    assert "(20 writes trimmed by the cap so far" in warnings[2]
    store.client.close()
