"""``serve --tier``: ``POST /v1/select`` answered from the server's local read tier, through a
real server process, on fakeredis's TCP server and on a redis-server started by the suite
(Redis frozen: on the real one only). The tier's own rules are ``test_tier.py``'s; here, that
the server wires them: the same selection as the library, the age it says, its own limit
writes seen at once, a window change followed, stale serving while Redis is hung, and options
out of range refused in one line."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

import pytest

from redis_telemetry import TelemetryStore

from .api import Answer, Serve
from .helpers import event
from .servers import RedisServer, poll, sigstopped

T = TypeVar("T")
FAST, SLOW = "tier/fast", "tier/slow"
MODELS = [FAST, SLOW]


def seed(url: str, namespace: str) -> TelemetryStore:
    store = TelemetryStore.from_url(url, namespace=namespace)
    store.record_batch([event(FAST, latency_ms=100)] * 3 + [event(SLOW, latency_ms=900)] * 3)
    return store


def select(api: Serve) -> dict[str, Any]:
    got = api.post("/v1/select", {"candidates": MODELS})
    assert got.status == 200, got.body
    body: dict[str, Any] = got.json()
    return body


def when(ask: Callable[[], T], wanted: Callable[[T], bool], what: str) -> T:
    """The first answer of ``ask`` that is ``wanted``, asked again (``servers.poll``) for up
    to 30 s: a condition the tier reaches by its own clock (a refresh due, data past an age)."""
    last: list[T] = []

    def ready() -> bool:
        last[:] = [ask()]
        return wanted(last[0])

    poll(ready, time.monotonic() + 30, f"never: {what}")
    return last[0]


def select_until(api: Serve, wanted: Callable[[dict[str, Any]], bool], what: str) -> Any:
    """The first selection that is ``wanted`` (see ``when``)."""
    return when(lambda: select(api), wanted, what)


def ask(api: Serve) -> Answer:
    """A selection, whatever its status."""
    return api.post("/v1/select", {"candidates": MODELS})


def test_a_selection_from_the_tier_is_the_librarys_and_says_how_old_it_is(
    url: str,
) -> None:
    store = seed(url, "tier-same")
    with Serve(url, "--namespace", "tier-same", "--tier") as api:
        tiered = select(api)
    with Serve(url, "--namespace", "tier-same") as api:
        live = select(api)
    assert tiered["model"] == live["model"] == store.select_model(MODELS) == FAST
    assert tiered["ranking"] == live["ranking"]
    assert tiered["stale"] is False
    assert 0 <= tiered["age_secs"] < 5
    assert (live["age_secs"], live["stale"]) == (0.0, False)  # read for the request
    store.close()


def test_the_servers_own_limit_writes_show_in_its_next_selection_at_once(
    url: str,
) -> None:
    """Limits set, lifted or recorded through this server change its next selection, though
    the tier reads limits again only once a second (an hour here)."""
    store = seed(url, "tier-own")
    slow_reads = ("--tier-max-age", "3600", "--tier-limits-max-age", "3600")
    with Serve(url, "--namespace", "tier-own", *slow_reads, "--tier-stale-after", "7200") as api:
        assert select(api)["model"] == FAST
        assert api.request("PUT", f"/v1/limits/{FAST}", {"ttl_secs": 600}).status == 200
        assert select(api)["model"] == SLOW
        assert api.request("DELETE", f"/v1/limits/{FAST}").status == 200
        assert select(api)["model"] == FAST
        limit_error = event(FAST, success=False).model_dump(mode="json")
        assert api.post("/v1/events", limit_error).status == 200
        assert select(api)["model"] == SLOW
        # a limit set elsewhere is not this server's write: it waits for the next refresh
        store.clear_subscription_limit(FAST)
        store.mark_subscription_limited(SLOW, 600)
        assert select(api)["model"] == SLOW
    store.close()


def test_a_limit_set_elsewhere_shows_once_the_limits_are_read_again(
    url: str,
) -> None:
    store = seed(url, "tier-else")
    with Serve(url, "--namespace", "tier-else", "--tier-limits-max-age", "0.2") as api:
        assert select(api)["model"] == FAST
        store.mark_subscription_limited(FAST, 600)
        # every selection serves memory; the one that finds the limits 0.2 s old starts the
        # refresh, and a later one has its word
        select_until(api, lambda got: got["model"] == SLOW, "the limit read")
    store.close()


def test_a_window_change_is_followed(
    url: str,
) -> None:
    """Another process changes the namespace's window on purpose: the tier's refresh is
    refused for the old one, and the server follows it, as its other routes do."""
    store = seed(url, "tier-window")
    with Serve(
        url,
        "--namespace",
        "tier-window",
        "--tier-max-age",
        "0.2",
        "--tier-limits-max-age",
        "0.2",
    ) as api:
        assert select(api)["model"] == FAST
        store.set_window(7200)
        moved = TelemetryStore.from_url(url, namespace="tier-window", window_secs=7200)
        moved.mark_subscription_limited(FAST, 600)
        select_until(api, lambda got: got["model"] == SLOW, "the new window")
        moved.close()
    store.close()


def test_selections_are_served_stale_from_memory_while_redis_is_hung(
    own_server: RedisServer,
) -> None:
    """Redis frozen (it accepts, never answers): selections still come from memory, marked
    stale once past the max age, then refused with 503 once past --tier-stale-after; when
    Redis answers again, fresh ones."""
    store = seed(own_server.url, "tier-hung")
    ages = ("--tier-max-age", "0.3", "--tier-limits-max-age", "0.3", "--tier-stale-after", "3")
    with Serve(own_server.url, "--namespace", "tier-hung", "--timeout", "1", *ages) as api:
        assert select(api)["model"] == FAST
        with sigstopped(own_server):
            stale = select_until(api, lambda got: got["stale"], "stale data")
            assert stale["model"] == FAST
            assert stale["age_secs"] >= 0.3
            gone = when(lambda: ask(api), lambda a: a.status == 503, "503 past stale-after")
            assert "stale_after" in gone.json()["error"]
        # 503 until the first refresh lands
        fresh = when(
            lambda: ask(api),
            lambda a: a.status == 200 and not a.json()["stale"],
            "fresh data once Redis answers",
        )
        assert fresh.json()["model"] == FAST
    store.close()


@pytest.mark.parametrize(
    ("options", "code", "message"),
    [
        (["--tier-max-age", "0"], 2, "--tier-max-age: expected seconds between 0.05 and 86400"),
        (
            ["--tier-max-age", "60", "--tier-stale-after", "30"],
            1,
            "--tier-stale-after (30.0) must be at least --tier-max-age and --tier-limits-max-age",
        ),
    ],
)
def test_tier_options_out_of_range_are_one_line_and_an_exit_code(
    redis_server: RedisServer, options: list[str], code: int, message: str
) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "redis_telemetry", "--url", redis_server.url, "serve", *options],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == code, proc.stderr
    (line,) = proc.stderr.strip().splitlines()[-1:]
    assert message in line, proc.stderr
    assert "Traceback" not in proc.stderr
