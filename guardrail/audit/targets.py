"""From what a user names (``--audit``, ``guardrail audit verify TARGET``) to a store: ``open_store``.

- a path ending in ``.db``, ``.sqlite`` or ``.sqlite3``: a SQLite database (``sqlite.SqliteStore``);
- any other path: a JSONL log (``jsonl.JsonlStore``);
- ``postgresql://...`` or ``postgres://...``: a log in a PostgreSQL database (``postgres.PostgresStore``);
- any other ``scheme://``: refused, naming the schemes there are (never a folder named ``mysql:``).

``GUARDRAIL_AUDIT_URL`` names a target in the environment (``target_from_env``), so that a
database URL, or the password in it, needs no place on a command line.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from guardrail.audit.jsonl import JsonlStore
from guardrail.audit.sqlite import SqliteStore
from guardrail.audit.store import AuditLogError, AuditStore
from guardrail.audit.urls import redacted, scheme_of

SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")
POSTGRES_SCHEMES = ("postgresql", "postgres")
ENV_TARGET = "GUARDRAIL_AUDIT_URL"


def is_sqlite(path: Path | str) -> bool:
    """Whether a path names a SQLite audit database (by its suffix: the rule writers and readers share)."""
    return Path(path).suffix.lower() in SQLITE_SUFFIXES


def is_url(target: Path | str) -> bool:
    """Whether ``target`` is a URL (``scheme://...``) rather than a file path."""
    return isinstance(target, str) and scheme_of(target) is not None


def target_from_env() -> str | None:
    """The audit target ``$GUARDRAIL_AUDIT_URL`` names (a URL or a path), if set and not blank."""
    value = os.environ.get(ENV_TARGET, "").strip()
    return value or None


def open_store(
    target: Path | str,
    *,
    readonly: bool = False,
    redact: bool = False,
    max_bytes: int | None = None,
    fsync: bool = False,
    log: str | None = None,
    fallback: Path | str | None = None,
) -> AuditStore:
    """The store ``target`` (a path or a URL) names, opened to append to or, with ``readonly``, to read.

    ``max_bytes`` (rotation) and ``fsync`` apply to JSONL logs; ``log`` (a log name, instead of the
    URL's ``?log=``) and ``fallback`` (where decisions go while the database is down) to PostgreSQL.
    Raises ``AuditLogError`` naming the target (without its password) when it cannot be a store,
    and ``FileNotFoundError`` when a log to read does not exist.
    """
    if isinstance(target, str) and not target.strip():
        raise AuditLogError("no audit log named: give a file path or a postgresql:// URL")
    scheme = scheme_of(target) if isinstance(target, str) else None
    if scheme is not None:
        assert isinstance(target, str)
        if scheme not in POSTGRES_SCHEMES:
            raise AuditLogError(
                f"{redacted(target)}: guardrail has no audit store for {scheme}:// URLs; give a file path "
                "(a .jsonl log, or .db/.sqlite/.sqlite3 for SQLite) or a postgresql:// URL"
            )
        if max_bytes is not None or fsync:
            raise AuditLogError(f"{redacted(target)}: rotation (max_bytes) and fsync apply to JSONL logs only")
        from guardrail.audit.postgres import PostgresStore

        return PostgresStore(target, log=log, redact=redact, readonly=readonly, fallback=fallback)
    if log is not None or fallback is not None:
        raise AuditLogError(f"{target}: a log name and a fallback log apply to PostgreSQL stores only")
    path = Path(target)
    if readonly:
        _check_readable(path)
    if is_sqlite(path):
        return SqliteStore(path, redact=redact, readonly=readonly)
    return JsonlStore(path, redact=redact, max_bytes=max_bytes, fsync=fsync, readonly=readonly)


def _check_readable(path: Path) -> None:
    if path.is_dir():
        raise AuditLogError(f"{path} is a directory, not an audit log (give the .jsonl file or the database)")
    if not path.exists() and not (path.parent / f"{path.stem}.1{path.suffix}").exists():
        raise FileNotFoundError(f"no audit log at {path}")


@contextmanager
def opened(target: AuditStore | Path | str) -> Iterator[AuditStore]:
    """``target`` as a store to read: a store as it is, or a path or URL opened read-only and closed after."""
    if not isinstance(target, Path | str):
        yield target
        return
    store = open_store(target, readonly=True)
    try:
        yield store
    finally:
        store.close()
