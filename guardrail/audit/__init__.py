"""The audit log: hash-chained decision records in a store, and what auditors ask of them.

One protocol, ``AuditStore`` (``store``), implemented once per store:

- ``jsonl.JsonlStore``: a JSONL file, rotated into numbered segments (``segments``), with what a
  crash leaves told apart from tampering (``jsonl_lines``) and ``tail -f`` (``jsonl_follow``);
- ``sqlite.SqliteStore``: a SQLite database;
- ``postgres.PostgresStore``: a named log in a PostgreSQL database, many writers at once
  (tables and the append function: ``postgres_schema``).

The database stores share their copied-column checks (``columns``). ``open_store`` (``targets``)
maps a path or URL to its store (``urls`` names a URL without its password); the guard writes
decisions through it (stores are the guard's sinks). ``verify`` (``verify``), ``records``,
``tail``, ``follow``, ``stats`` and ``replay`` (``questions``) take a store, a path or a URL and
work the same on every store; ``import_records`` (``transfer``) moves a fallback log into its
database.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from guardrail.audit.jsonl import JsonlSink, JsonlStore
from guardrail.audit.questions import (
    follow,
    one_line,
    policy_key,
    records,
    replay,
    stats,
    tail,
    tail_and_last_seq,
)
from guardrail.audit.sqlite import SqliteSink, SqliteStore
from guardrail.audit.store import AuditLogError, AuditStore, AuditWriteError, Head, LogLine, prepare_log_path
from guardrail.audit.targets import ENV_TARGET, SQLITE_SUFFIXES, is_sqlite, is_url, open_store, target_from_env
from guardrail.audit.transfer import import_records
from guardrail.audit.verify import EXIT_OK, EXIT_TAMPERED, EXIT_TORN_TAIL, VerifyReport, verify

if TYPE_CHECKING:
    from guardrail.audit.postgres import PostgresStore

__all__ = [
    "ENV_TARGET",
    "EXIT_OK",
    "EXIT_TAMPERED",
    "EXIT_TORN_TAIL",
    "SQLITE_SUFFIXES",
    "AuditLogError",
    "AuditStore",
    "AuditWriteError",
    "Head",
    "JsonlSink",
    "JsonlStore",
    "LogLine",
    "PostgresStore",
    "SqliteSink",
    "SqliteStore",
    "VerifyReport",
    "follow",
    "import_records",
    "is_sqlite",
    "is_url",
    "one_line",
    "open_store",
    "policy_key",
    "prepare_log_path",
    "records",
    "replay",
    "stats",
    "tail",
    "tail_and_last_seq",
    "target_from_env",
    "verify",
]


def __getattr__(name: str) -> Any:
    if name == "PostgresStore":  # imported on first use: psycopg is only loaded for a database log
        from guardrail.audit.postgres import PostgresStore

        return PostgresStore
    raise AttributeError(f"module 'guardrail.audit' has no attribute {name!r}")
