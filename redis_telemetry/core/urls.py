"""Redis URLs checked before any connection, so a malformed one is one clear error.

redis-py and ``urllib`` raise bare ``ValueError``s (or worse, an ``OverflowError`` at connect
time) for a missing scheme, a port out of range or a broken IPv6 host, and redis-py hands an
unknown query option (``?foo=bar``) to the connection class, which fails with a ``TypeError`` at
the first command; this names the problem before any connection.
"""

from __future__ import annotations

import difflib
import inspect
import re
from functools import cache
from urllib.parse import SplitResult, parse_qs, urlsplit

from redis.connection import (
    URL_QUERY_ARGUMENT_PARSERS,
    Connection,
    ConnectionPool,
    SSLConnection,
    UnixDomainSocketConnection,
    parse_url,
)

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
    _check_query(url, scheme.lower(), parts.query)
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


#: Query options a URL may set as text, besides those redis-py parses
#: (``URL_QUERY_ARGUMENT_PARSERS``)
TEXT_OPTIONS = frozenset(
    {
        "client_name",
        "lib_name",
        "lib_version",
        "username",
        "password",
        "ssl_keyfile",
        "ssl_certfile",
        "ssl_cert_reqs",
        "ssl_ca_certs",
        "ssl_ca_path",
        "ssl_ca_data",
        "ssl_ciphers",
        "ssl_password",
    }
)
_CONNECTIONS = {"unix": UnixDomainSocketConnection, "rediss": SSLConnection}


@cache
def query_options(scheme: str) -> frozenset[str]:
    """The query options a ``scheme`` URL may carry: those redis-py reads from a URL that its
    connection class (or the pool) for that scheme accepts, as an argument of its own or of a
    base class. ``decode_responses`` is not among them: members are binary."""
    accepted: set[str] = set()
    for cls in (_CONNECTIONS.get(scheme.removesuffix("+cluster"), Connection), ConnectionPool):
        for base in cls.__mro__:
            if "__init__" in vars(base):
                accepted |= set(inspect.signature(vars(base)["__init__"]).parameters)
    return frozenset(accepted & (set(URL_QUERY_ARGUMENT_PARSERS) | TEXT_OPTIONS))


def _check_query(url: str, scheme: str, query: str) -> None:
    """Refuse a query option redis-py would pass on blindly, or one whose value it cannot
    parse, naming it."""
    known = query_options(scheme)
    for name in parse_qs(query):
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise InvalidInputError(
                f"malformed Redis URL {redact(url)!r}: unknown query option {name!r} "
                f"({hint}a {scheme}:// URL takes {', '.join(sorted(known))})"
            )
    try:  # redis-py's own parser: a value it cannot read (socket_timeout=soon)
        parse_url(  # type: ignore[no-untyped-call]
            url.replace("+cluster://", "://", 1) if "+cluster://" in url else url
        )
    except ValueError as exc:
        raise InvalidInputError(f"malformed Redis URL {redact(url)!r}: {exc}") from None


def redact(url: str) -> str:
    """``url`` without its password (in the address or a ``password=`` query option), for
    messages; never raises, even on a malformed URL."""
    url = re.sub(r"([?&]password=)[^&#]*", r"\1***", url)
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
