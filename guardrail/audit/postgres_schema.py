"""The PostgreSQL audit store's tables, created on first use and migrated by version.

``guardrail_audit_schema`` lists the versions applied. A writer applies what is missing under a
transaction-level advisory lock, so that many processes starting at once create the tables once;
a database already at a newer version than this release knows is refused, not rewritten.

- ``guardrail_audit_logs``: one row per named log: its genesis (the JSON a JSONL file's first
  line holds) and its head (the last seq and hash). Appends lock this row (``FOR UPDATE``): it
  is what serializes writers, and what ``verify`` checks the chain's end against.
- ``guardrail_audit_records``: one row per record, ``record`` being its canonical JSON (what the
  hash covers), with copies of some fields for queries (``columns.COLUMNS``). ``id`` is the
  order rows were appended in: ``verify`` reads a log in that order.
"""

from __future__ import annotations

from typing import Any

LATEST = 1
_LOCK_KEY = 0x6775617264  # "guard": serializes schema changes across processes

MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        """CREATE TABLE guardrail_audit_logs (
            log text PRIMARY KEY,
            genesis text NOT NULL,
            seq bigint NOT NULL,
            hash text NOT NULL,
            updated timestamptz NOT NULL DEFAULT now()
        )""",
        """CREATE TABLE guardrail_audit_records (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            log text NOT NULL REFERENCES guardrail_audit_logs (log),
            seq bigint NOT NULL,
            ts timestamptz NOT NULL,
            deployment text NOT NULL,
            policy_name text NOT NULL,
            policy_version text NOT NULL,
            policy_hash text NOT NULL,
            model_id text,
            action text NOT NULL,
            intended_action text NOT NULL,
            prev_hash text NOT NULL,
            hash text NOT NULL,
            record text NOT NULL,
            UNIQUE (log, seq)
        )""",
        "CREATE INDEX guardrail_audit_records_log_id ON guardrail_audit_records (log, id)",
        "CREATE INDEX guardrail_audit_records_log_ts ON guardrail_audit_records (log, ts)",
        "CREATE INDEX guardrail_audit_records_log_action ON guardrail_audit_records (log, action)",
    ),
}


class SchemaTooNew(Exception):
    """The database holds a schema version this release does not know."""

    def __init__(self, version: int) -> None:
        super().__init__(
            f"its audit tables are at schema version {version}, newer than this guardrail knows ({LATEST}): "
            "upgrade guardrail"
        )


def current_version(conn: Any) -> int:
    """The schema version the database is at (0: no audit tables yet)."""
    if conn.execute("SELECT to_regclass('guardrail_audit_schema')").fetchone()[0] is None:
        return 0
    row = conn.execute("SELECT max(version) FROM guardrail_audit_schema").fetchone()
    return int(row[0] or 0)


def ensure_schema(conn: Any) -> None:
    """Create or migrate the audit tables to ``LATEST`` (``conn`` in autocommit mode); ``SchemaTooNew`` if newer."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        version = current_version(conn)
        if version > LATEST:
            raise SchemaTooNew(version)
        if version == 0:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS guardrail_audit_schema "
                "(version integer PRIMARY KEY, applied timestamptz NOT NULL DEFAULT now())"
            )
        for step in range(version + 1, LATEST + 1):
            for statement in MIGRATIONS[step]:
                conn.execute(statement)
            conn.execute("INSERT INTO guardrail_audit_schema (version) VALUES (%s)", (step,))
