"""Connection URLs of the PostgreSQL store: checking them, and showing them without their password.

The URL goes to libpq untouched (TLS options such as ``sslmode`` and
``sslrootcert`` included); credentials may come from it or from libpq's usual
environment variables and files (``PGPASSWORD``, ``~/.pgpass``). Whatever a
message or a ``repr`` shows of it passes through :func:`redact` first.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = ["is_postgres_url", "redact"]

_SCHEMES = ("postgresql://", "postgres://")
_SECRET_KEYS = frozenset({"password", "sslpassword"})
_CONNINFO_SECRET = re.compile(r"\b(password|sslpassword)\s*=\s*('(?:[^'\\]|\\.)*'|\S*)", re.IGNORECASE)


def is_postgres_url(text: object) -> bool:
    """Whether ``text`` is a PostgreSQL connection URL (``postgresql://`` or ``postgres://``)."""
    return isinstance(text, str) and text.lower().startswith(_SCHEMES)


def redact(url: str) -> str:
    """``url`` with any password (in its user part or its query) replaced by ``***``.

    A libpq key/value string (``host=... password=...``) is redacted too.
    """
    if not is_postgres_url(url):
        return _CONNINFO_SECRET.sub(lambda m: f"{m.group(1)}=***", url)
    try:
        parts = urlsplit(url)
    except ValueError:
        return "postgresql://***"  # unparsable: show nothing of it
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostinfo = netloc.rpartition("@")
        user, colon, password = userinfo.partition(":")
        if colon and password:
            netloc = f"{user}:***@{hostinfo}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(k.lower() in _SECRET_KEYS for k, _ in pairs):
            query = urlencode([(k, "***" if k.lower() in _SECRET_KEYS else v) for k, v in pairs], safe="/*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
