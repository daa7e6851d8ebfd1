"""Connection URLs of the PostgreSQL store: checking them, and showing them without their password.

The URL goes to libpq untouched (TLS options such as ``sslmode`` and
``sslrootcert`` included); credentials may come from it or from libpq's usual
environment variables and files (``PGPASSWORD``, ``~/.pgpass``). Whatever a
message or a ``repr`` shows of it passes through :func:`redact` first.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

__all__ = ["is_postgres_url", "redact", "split_schema"]

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


def split_schema(url: str) -> tuple[str, str | None]:
    """``url`` without its ``schema`` query parameter (durable's, not libpq's), and that parameter's value
    (``None`` if absent): ``postgresql://h/db?schema=orders`` names the store in schema ``orders``."""
    if not is_postgres_url(url) or "?" not in url:
        return url, None
    parts = urlsplit(url)
    kept: list[str] = []
    found: list[str] = []
    for item in parts.query.split("&"):
        key, _, value = item.partition("=")
        if unquote(key) == "schema":
            found.append(unquote(value))
        else:
            kept.append(item)  # as written: the rest of the URL goes to libpq untouched
    if not found:
        return url, None
    if len(found) > 1 or not found[0]:
        raise ValueError(f"the URL {redact(url)} names its schema more than once, or as ''")
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "&".join(kept), parts.fragment)), found[0]
