"""Redis URLs checked before any connection, so a malformed one is one clear error.

redis-py and ``urllib`` raise bare ``ValueError``s (or worse, an ``OverflowError`` at connect
time) for a missing scheme, a port out of range or a broken IPv6 host; this names the problem.
"""

from __future__ import annotations

from urllib.parse import SplitResult, urlsplit

from ..errors import InvalidInputError

#: The schemes ``from_url`` takes: redis-py's own, and ours for a Redis Cluster seed node.
SCHEMES = ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster")


def check_url(url: object) -> str:
    """``url`` when it is a Redis URL this package can connect to; else InvalidInputError."""
    if not isinstance(url, str) or not url.strip():
        raise InvalidInputError(
            f"expected a Redis URL such as redis://localhost:6379/0, got {url!r}"
        )
    scheme, sep, _ = url.partition("://")
    if not sep or scheme.lower() not in SCHEMES:
        raise InvalidInputError(
            f"{redact(url)!r} is not a Redis URL: it must start with one of "
            + ", ".join(f"{s}://" for s in SCHEMES)
        )
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidInputError(f"malformed Redis URL {redact(url)!r}: {exc}") from None
    if scheme.lower() == "unix":
        if not parts.path:
            raise InvalidInputError(f"malformed Redis URL {redact(url)!r}: no socket path")
        return url
    if not parts.hostname:
        raise InvalidInputError(f"malformed Redis URL {redact(url)!r}: no host")
    if port == 0:
        raise InvalidInputError(f"malformed Redis URL {redact(url)!r}: port 0")
    db = parts.path.strip("/")
    if db and not (db.isdigit() and db.isascii()):
        raise InvalidInputError(
            f"malformed Redis URL {redact(url)!r}: the database must be a number, got {db!r}"
        )
    return url


def redact(url: str) -> str:
    """``url`` without its password, for messages; never raises, even on a malformed URL."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        scheme, sep, rest = url.partition("://")
        creds, at, host = rest.rpartition("@")
        return f"{scheme}{sep}{creds.partition(':')[0]}:***@{host}" if at else url
    if password is None:
        return url
    return _without_password(parts, password)


def _without_password(parts: SplitResult, password: str) -> str:
    netloc = parts.netloc.replace(f":{password}@", ":***@")
    return parts._replace(netloc=netloc).geturl()
