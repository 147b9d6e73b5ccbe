"""`redis-telemetry serve` as a real process on a free port, and a small HTTP client for it.

The server is ready once ``/healthz`` answers (polled, never slept for). Its output goes to
files, never to a pipe nobody reads, so a chatty server cannot block on a full pipe.
"""

from __future__ import annotations

import gzip
import http.client
import json
import os
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, NamedTuple

from .servers import free_port, poll


class Answer(NamedTuple):
    """One HTTP answer: the status, the headers (lower-case names) and the body."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def error(self) -> str:
        """The ``{"error": ...}`` body of an error answer (and it is exactly that)."""
        data = self.json()
        assert set(data) <= {"error", "ranking"}, data
        assert isinstance(data["error"], str)
        assert "\n" not in data["error"]
        return str(data["error"])


class Serve:
    """One ``redis-telemetry serve`` process on a free port."""

    def __init__(
        self,
        url: str,
        *extra: str,
        env: dict[str, str] | None = None,
        token: str | None = None,
        scheme: str = "http",
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.port = free_port()
        self.token = token  # sent by default: the token the probes and most calls need
        self.scheme = scheme
        self.ssl_context = ssl_context
        self.dir = Path(tempfile.mkdtemp(prefix="redis-telemetry-serve-"))
        self.args = [
            sys.executable,
            "-m",
            "redis_telemetry",
            "--url",
            url,
            "serve",
            "--port",
            str(self.port),
            *extra,
        ]
        variables = {k: v for k, v in os.environ.items() if not k.startswith("REDIS_TELEMETRY_")}
        self.env = {**variables, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def stdout(self) -> str:
        return (self.dir / "stdout").read_text()

    @property
    def stderr(self) -> str:
        return (self.dir / "stderr").read_text()

    def start(self, timeout: float = 30.0) -> Serve:
        with (self.dir / "stdout").open("wb") as out, (self.dir / "stderr").open("wb") as err:
            self.proc = subprocess.Popen(self.args, stdout=out, stderr=err, env=self.env)

        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"serve exited {self.proc.returncode}: {self.stderr}")
            try:
                return self.get("/healthz").status == 200
            except OSError:  # not listening yet
                return False

        try:
            poll(ready, time.monotonic() + timeout, f"serve not ready in {timeout}s")
        except RuntimeError:
            self.stop()
            raise RuntimeError(f"serve did not start: {self.stderr}") from None
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
            self.proc = None

    def __enter__(self) -> Serve:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def connection(self, timeout: float = 30.0) -> http.client.HTTPConnection:
        if self.scheme == "https":
            return http.client.HTTPSConnection(
                "127.0.0.1", self.port, timeout=timeout, context=self.ssl_context
            )
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | str | Any = None,
        headers: dict[str, str] | None = None,
        token: str | None = "default",
        timeout: float = 30.0,
    ) -> Answer:
        """One request on a fresh connection; a body that is not bytes or str is sent as
        JSON. ``token`` "default" sends the server's token, None none."""
        sent = dict(headers or {})
        if token == "default":
            token = self.token
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        if body is not None and not isinstance(body, bytes | str):
            body = json.dumps(body)
            sent.setdefault("Content-Type", "application/json")
        conn = self.connection(timeout)
        try:
            conn.request(method, path, body=body, headers=sent)
            resp = conn.getresponse()
            return Answer(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
        finally:
            conn.close()

    def get(self, path: str, **kwargs: Any) -> Answer:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, body: Any, **kwargs: Any) -> Answer:
        return self.request("POST", path, body, **kwargs)


def gzipped(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=6)
