"""The namespace's shared window, as one store sees it.

Every store of a namespace must trim with the same window, or one would delete what another
still counts. The window is stored in ``<ns>:config``; a writer claims or confirms it (with
``config.lua``) before its first write and again every ``CONFIG_RECHECK_MS``, so a window
changed on purpose elsewhere is noticed within that time.

``set_window()`` also stamps the new window into every listed model's totals (``window_ms``,
by ``rewindow.lua``, which extends the keys' TTLs to the new window too). ``record.lua``
refuses a write whose window differs from that stamp, so a store that has not seen the change
cannot trim a model that existed at the change with the old window, not even for the
``CONFIG_RECHECK_MS`` until its next check: its write raises :class:`WindowMismatchError`, and
its next write re-checks the config. (A model first written after the change has no stamp
until the next ``set_window()``; there the old bound, ``CONFIG_RECHECK_MS``, still holds.)
"""

from __future__ import annotations

import logging
from typing import Any

from ..errors import TelemetryError, WindowMismatchError
from . import rules
from .commands import Cmd, Eval, Op
from .keys import Keys
from .replies import time_ms
from .scripts import GRACE_MS, config_call, register_call

log = logging.getLogger(__name__)

#: A writer re-confirms the namespace's window (and refreshes the config's TTL) this often.
CONFIG_RECHECK_MS = 60_000
#: Models per round trip when ``set_window()`` walks the registry (ZSCAN's COUNT hint).
REWINDOW_PAGE = 200


class SharedWindow:
    """This store's window, and whether (and until when) Redis confirmed it."""

    def __init__(self, keys: Keys, secs: int) -> None:
        self.keys = keys
        self.secs = rules.check_positive_secs("window_secs", secs)
        self.confirmed = False
        #: when (client ms) the window was last confirmed, and the config TTL set then
        self.confirmed_at = 0
        self.config_ttl_ms = 0

    @property
    def ms(self) -> int:
        return self.secs * 1000

    def check(self, raw: Any, writing: bool) -> None:
        """Compare the stored window ``raw`` with this store's: a different one raises, an
        unreadable one refuses a write (a read goes on with this store's window, logged)."""
        if raw is None:
            return  # nothing claimed yet (reads only: a write's config.lua always returns one)
        try:
            stored = int(raw)
            if stored <= 0:
                raise ValueError
        except (TypeError, ValueError):
            msg = f"{self.keys.config} holds window_secs={raw!r}, which is not a positive integer"
            if writing:
                raise TelemetryError(
                    f"{msg}; refusing to write. Repair it with set_window()"
                ) from None
            log.warning("%s; reading with window_secs=%d", msg, self.secs)
            return
        if stored != self.secs:
            raise WindowMismatchError(self.keys.namespace, stored, self.secs)
        self.confirmed = True

    def config_ttl(self, ttl_ms: int) -> int:
        """The config key's TTL for a write whose data lives ``ttl_ms``."""
        return max(ttl_ms, self.ms) + CONFIG_RECHECK_MS + GRACE_MS

    def governs(self, score_ms: int, now_ms: int) -> int:
        """How long from ``now_ms`` the config must live for data stamped ``score_ms``: until
        it leaves the window (a future stamp included; one less than ``GRACE_MS`` ahead, which
        the config's TTL already adds, does not count, so the steady state stays one call)."""
        return max(0, score_ms - now_ms - GRACE_MS) + self.ms

    def due(self, config_ttl_ms: int, now_ms: int) -> bool:
        """Whether a write must (re)confirm the window and refresh the config's TTL."""
        return (
            not self.confirmed
            or now_ms - self.confirmed_at >= CONFIG_RECHECK_MS
            or config_ttl_ms > self.config_ttl_ms
        )

    def claim(self, config_ttl_ms: int) -> Eval:
        """The ``config.lua`` call that claims or confirms the window; its reply goes to
        :meth:`claimed`."""
        return config_call(self.keys, self.secs, config_ttl_ms)

    def claimed(self, reply: Any, config_ttl_ms: int, now_ms: int) -> None:
        """Read ``config.lua``'s reply: raises unless the window is this store's."""
        self.check(reply, writing=True)
        self.confirmed_at = now_ms
        self.config_ttl_ms = config_ttl_ms

    def change(self, secs: int) -> Op[None]:
        """Store another window on purpose, then walk the registry in pages: each listed
        model's keys live until its newest event leaves the new window (never shorter than
        before), its totals carry the window's stamp, and the registry keeps it as long."""
        secs = rules.check_positive_secs("window_secs", secs)
        window_ms = secs * 1000
        ttl_ms = window_ms + CONFIG_RECHECK_MS + GRACE_MS
        yield [
            Cmd("hset", (self.keys.config, "window_secs", secs)),
            *extend(self.keys.config, ttl_ms),
        ]
        cursor: Any = 0
        while True:
            ((cursor, page),) = yield [
                Cmd("zscan", (self.keys.models, cursor), {"count": REWINDOW_PAGE})
            ]
            models = list(dict.fromkeys(filter(None, map(_model_name, page))))
            if models:
                newest = yield [self.rewindow(m, window_ms) for m in models]
                keep = [
                    (m, int(float(n)) + window_ms + GRACE_MS, 0)
                    for m, n in zip(models, newest, strict=True)
                    if n is not None and not isinstance(n, BaseException)
                ]
                if keep:
                    # the config governs these models' data: it lives as long as the newest
                    (now,) = yield [Cmd("time", route=self.keys.config)]
                    longest = max(until for _, until, _ in keep) - time_ms(now)
                    yield [
                        register_call(self.keys, keep),
                        *extend(self.keys.config, longest + CONFIG_RECHECK_MS),
                    ]
            if int(cursor) == 0:
                return

    def rewindow(self, model: str, window_ms: int) -> Eval:
        """The ``rewindow.lua`` call for one model (see its header)."""
        keys = (
            self.keys.events(model),
            self.keys.totals(model),
            self.keys.sessions(model),
            self.keys.latency(model),
            self.keys.ids(model),
        )
        return Eval("rewindow", keys, (window_ms, GRACE_MS), tolerant=True)

    def refused(self) -> None:
        """A write was refused for its window: the next write confirms the window first."""
        self.confirmed = False

    def changed(self, secs: int, now_ms: int) -> None:
        """Take ``secs`` as this store's window, confirmed now."""
        self.secs = secs
        self.confirmed = True
        self.confirmed_at = now_ms
        self.config_ttl_ms = 0  # the next write sets the config's full TTL


def extend(key: str, ttl_ms: int) -> list[Cmd]:
    """Give ``key`` a TTL of ``ttl_ms`` where it has none, else only a longer one: no write
    shortens a key's life."""
    return [
        Cmd("pexpire", (key, ttl_ms), {"nx": True}),
        Cmd("pexpire", (key, ttl_ms), {"gt": True}),
    ]


def _model_name(entry: tuple[Any, Any]) -> str | None:
    """A registry entry's model name; None for one that is not a model's (written by hand)."""
    try:
        return rules.check_model_name(bytes(entry[0]).decode("utf-8"))
    except (UnicodeDecodeError, TelemetryError):
        return None
