"""Telling a store URL from a file path, and naming a URL without its password."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")


def scheme_of(target: str) -> str | None:
    """The scheme of ``target`` when it is a URL (``postgresql`` for ``postgresql://...``), else None."""
    match = _SCHEME.match(target)
    return match.group(1).lower() if match else None


def redacted(url: str, **query: str) -> str:
    """``url`` without a password (in its user part or its query), with ``query`` set: fit for messages and logs."""
    parts = urlsplit(url)
    user, at, host = parts.netloc.rpartition("@")
    netloc = f"{user.partition(':')[0]}@{host}" if at else host
    kept = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "password" and k not in query]
    return with_query(urlunsplit(parts._replace(netloc=netloc)), kept + list(query.items()))


def with_query(url: str, pairs: list[tuple[str, str]]) -> str:
    """``url`` with its query replaced by ``pairs``, percent-encoded as libpq decodes it (a space is %20, not +)."""
    return urlunsplit(urlsplit(url)._replace(query=urlencode(pairs, safe="/:@", quote_via=quote)))
