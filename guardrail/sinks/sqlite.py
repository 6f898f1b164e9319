"""Audit sink on SQLite (stdlib ``sqlite3``, WAL mode): the same hash-chained records, queryable.

Each record is stored as its canonical JSON (what the hash covers) plus indexed columns for
queries (ts, deployment, policy, action, ...). Appends run in ``BEGIN IMMEDIATE`` transactions,
so threads and processes writing one database serialize and the chain stays linear.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from guardrail.audit import AuditLogError, prepare_log_path
from guardrail.decision import Decision
from guardrail.record import AuditRecord, Genesis, build_record, canonical_json, utc_now

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY,
    ts TEXT NOT NULL,
    deployment TEXT NOT NULL,
    policy_name TEXT NOT NULL,
    policy_version TEXT NOT NULL,
    policy_hash TEXT NOT NULL,
    model_id TEXT,
    action TEXT NOT NULL,
    intended_action TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS records_ts ON records (ts);
CREATE INDEX IF NOT EXISTS records_action ON records (action);
CREATE INDEX IF NOT EXISTS records_deployment ON records (deployment);
"""
COLUMNS = (
    "ts",
    "deployment",
    "policy_name",
    "policy_version",
    "policy_hash",
    "model_id",
    "action",
    "intended_action",
    "prev_hash",
    "hash",
)
"""Every column that copies a field of the hashed record (besides ``seq``): ``read_rows`` checks them all."""


def _field(data: dict[str, Any], column: str) -> Any:
    """The field of the record that ``column`` copies (``policy_name`` is ``policy.name``)."""
    if column.startswith("policy_"):
        policy = data.get("policy")
        return policy.get(column.removeprefix("policy_")) if isinstance(policy, dict) else None
    return data.get(column)


RECORD_COLUMNS = ("seq", *COLUMNS, "record")
"""The ``records`` table's columns, in order (a table with other columns is not ours)."""


def _connect(path: Path) -> sqlite3.Connection:
    """Open (creating if need be) the audit database at ``path``; ``AuditLogError`` naming it if it cannot be."""
    prepare_log_path(path, "audit database", "audit.db")
    try:
        conn = sqlite3.connect(str(path), timeout=60.0, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise AuditLogError(f"cannot open audit database {path} ({exc})") from None
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.executescript(SCHEMA)
        columns = tuple(row[1] for row in conn.execute("PRAGMA table_info(records)"))
        meta = tuple(row[1] for row in conn.execute("PRAGMA table_info(meta)"))
    except sqlite3.Error as exc:
        conn.close()
        raise AuditLogError(f"cannot use {path} as an audit database ({exc})") from None
    if columns != RECORD_COLUMNS or meta != ("key", "value"):
        conn.close()
        raise AuditLogError(
            f"{path} already has 'records' or 'meta' tables that are not guardrail's; refusing to write to it"
        )
    return conn


class SqliteSink:
    """Hash-chained audit records in a SQLite database (``redact=True`` stores only hashes).

    A path that cannot be an audit database (a directory, a file that is not SQLite, a database
    whose ``records`` table is someone else's) raises ``AuditLogError`` naming it, at construction.
    """

    def __init__(self, path: Path | str, *, redact: bool = False) -> None:
        self.path = Path(path)
        self.redact = redact
        self._conn = _connect(self.path)
        self._lock = threading.Lock()
        self._closed = False

    def write(self, decision: Decision, *, deployment: str, context: dict[str, Any] | None = None) -> AuditRecord:
        """Append one decision in its own transaction; returns the record written."""
        with self._lock:
            if self._closed:
                raise RuntimeError(f"audit sink {self.path} is closed")
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute("SELECT value FROM meta WHERE key = 'genesis'").fetchone()
                if row is None:
                    genesis = Genesis(genesis=secrets.token_hex(32), created=utc_now())
                    conn.execute("INSERT INTO meta VALUES ('genesis', ?)", (canonical_json(genesis.model_dump()),))
                    prev_hash, seq = genesis.genesis, 1
                else:
                    last = conn.execute("SELECT seq, hash FROM records ORDER BY seq DESC LIMIT 1").fetchone()
                    if last is None:
                        prev_hash, seq = json.loads(row[0])["genesis"], 1
                    else:
                        prev_hash, seq = last[1], last[0] + 1
                record = build_record(
                    decision, seq=seq, prev_hash=prev_hash, deployment=deployment, redact=self.redact, context=context
                )
                conn.execute(
                    "INSERT INTO records VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        record.seq,
                        record.ts,
                        record.deployment,
                        record.policy.name,
                        record.policy.version,
                        record.policy.hash,
                        record.model_id,
                        record.action,
                        record.intended_action,
                        record.prev_hash,
                        record.hash,
                        canonical_json(record.model_dump(mode="json")),
                    ),
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return record

    async def awrite(
        self, decision: Decision, *, deployment: str, context: dict[str, Any] | None = None
    ) -> AuditRecord:
        """``write`` in a worker thread, so the event loop never waits on the database."""
        return await asyncio.to_thread(self.write, decision, deployment=deployment, context=context)

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()

    def __enter__(self) -> SqliteSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_rows(path: Path) -> Iterator[Any]:
    """The database as ``audit.LogLine``s: the genesis, then every record in seq order.

    A file that is not a readable guardrail audit database raises ``AuditLogError`` naming it.
    """
    from guardrail.audit import LogLine

    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise AuditLogError(f"cannot open audit database {path} ({exc})") from None
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'genesis'").fetchone()
        if row is not None:
            try:
                genesis = json.loads(row[0])
            except (TypeError, ValueError) as exc:
                yield LogLine(str(path), 0, None, tampered=f"the genesis row holds no valid JSON ({exc})")
                return
            if not isinstance(genesis, dict):
                yield LogLine(str(path), 0, None, tampered="the genesis row holds no JSON object")
                return
            yield LogLine(str(path), 0, genesis, raw=str(row[0]).encode("utf-8"))
        rows = conn.execute(f"SELECT seq, {', '.join(COLUMNS)}, record FROM records ORDER BY rowid")
        for n, (seq, *cols, text) in enumerate(rows, 1):
            try:
                data = json.loads(text)
                if not isinstance(data, dict):
                    raise ValueError("not a JSON object")
            except (TypeError, ValueError) as exc:
                yield LogLine(str(path), n, None, tampered=f"row seq {seq} holds no valid JSON record ({exc})")
                continue
            mismatch = [c for c, v in zip(COLUMNS, cols, strict=True) if _field(data, c) != v]
            if data.get("seq") != seq:
                mismatch.insert(0, "seq")
            if mismatch:
                yield LogLine(
                    str(path), n, data, tampered=f"columns {mismatch} disagree with the hashed record (row edited)"
                )
                continue
            yield LogLine(str(path), n, data, raw=text.encode("utf-8") if isinstance(text, str) else None)
    except sqlite3.DatabaseError as exc:
        raise AuditLogError(f"{path} is not a readable guardrail audit database ({exc})") from None
    finally:
        conn.close()
