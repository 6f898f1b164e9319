"""Audit store on SQLite (stdlib ``sqlite3``, WAL mode): the same hash-chained records, queryable.

Each record is stored as its canonical JSON (what the hash covers) plus indexed columns for
queries (ts, deployment, policy, action, ...; see ``columns``). Appends run in ``BEGIN IMMEDIATE``
transactions, so threads and processes writing one database serialize and the chain stays linear.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

from guardrail.audit.columns import COLUMNS, column_values, mismatched, row_problem
from guardrail.audit.store import AuditLogError, Head, LogLine, RecordBuilder, StoreWriter, prepare_log_path, whole
from guardrail.record import AuditRecord, Genesis, canonical_json, utc_now

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


class SqliteStore(StoreWriter):
    """Hash-chained audit records in a SQLite database (``redact=True`` stores only hashes).

    A path that cannot be an audit database (a directory, a file that is not SQLite, a database
    whose ``records`` table is someone else's) raises ``AuditLogError`` naming it, at construction.
    ``readonly=True`` opens it only to read (each read opens its own read-only connection).
    """

    part = "file"

    def __init__(self, path: Path | str, *, redact: bool = False, readonly: bool = False) -> None:
        self.path = Path(path)
        self.name = str(self.path)
        self.redact = redact
        self._conn = None if readonly else _connect(self.path)
        self._lock = threading.Lock()
        self._closed = False

    def append(self, build: RecordBuilder) -> AuditRecord:
        """Append ``build(seq, prev_hash)`` in its own ``BEGIN IMMEDIATE`` transaction; returns the record."""
        with self._lock:
            if self._closed:
                raise RuntimeError(f"audit sink {self.path} is closed")
            conn = self._conn
            if conn is None:
                raise RuntimeError(f"audit database {self.path} was opened read-only")
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
                record = build(seq, prev_hash)
                values = (record.seq, *column_values(record), canonical_json(record.model_dump(mode="json")))
                conn.execute(f"INSERT INTO records VALUES ({', '.join('?' * len(values))})", values)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return record

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                if self._conn is not None:
                    self._conn.close()

    # ------------------------------------------------------------------ reading

    def _reader(self) -> sqlite3.Connection:
        try:
            return sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True)
        except sqlite3.Error as exc:
            raise AuditLogError(f"cannot open audit database {self.path} ({exc})") from None

    def lines(self, after_seq: int = 0) -> Iterator[LogLine]:
        """The genesis row (from the start), then every record past ``after_seq`` in rowid order.

        A file that is not a readable guardrail audit database raises ``AuditLogError`` naming it.
        """
        conn = self._reader()
        name = self.name
        try:
            row = conn.execute("SELECT value FROM meta WHERE key = 'genesis'").fetchone() if after_seq <= 0 else None
            if row is not None:
                try:
                    genesis = json.loads(row[0])
                except (TypeError, ValueError) as exc:
                    yield LogLine(name, 0, None, tampered=f"the genesis row holds no valid JSON ({exc})")
                    return
                if not isinstance(genesis, dict):
                    yield LogLine(name, 0, None, tampered="the genesis row holds no JSON object")
                    return
                yield LogLine(name, 0, genesis, raw=str(row[0]).encode("utf-8"))
            query = f"SELECT seq, {', '.join(COLUMNS)}, record FROM records WHERE seq > ? ORDER BY rowid"
            for n, (seq, *values, text) in enumerate(conn.execute(query, (after_seq,)), 1):
                yield _row_line(name, n, seq, tuple(values), text)
        except sqlite3.DatabaseError as exc:
            raise AuditLogError(f"{self.path} is not a readable guardrail audit database ({exc})") from None
        finally:
            conn.close()

    def follow(self, after_seq: int | None) -> Generator[list[LogLine], None, None]:
        """Batches of the rows past the last seq read (from the current last one when ``after_seq`` is None)."""
        if after_seq is None:
            head = self.head()
            after_seq = 0 if head is None else head.seq
        last = after_seq
        while True:
            batch = list(self.lines(last))
            for line in batch:
                seq = whole((line.data or {}).get("seq"))
                last = last if seq is None else max(last, seq)
            yield batch

    def head(self) -> Head | None:
        """The last row's seq and hash (seq 0 and the genesis before the first record)."""
        conn = self._reader()
        try:
            last = conn.execute("SELECT seq, hash FROM records ORDER BY seq DESC LIMIT 1").fetchone()
            if last is not None:
                return Head(int(last[0]), str(last[1]))
            row = conn.execute("SELECT value FROM meta WHERE key = 'genesis'").fetchone()
        except sqlite3.DatabaseError as exc:
            raise AuditLogError(f"{self.path} is not a readable guardrail audit database ({exc})") from None
        finally:
            conn.close()
        return None if row is None else Head(0, str(json.loads(row[0])["genesis"]))


def _row_line(name: str, n: int, seq: Any, values: tuple[Any, ...], text: Any) -> LogLine:
    """A ``records`` row as a ``LogLine``: its record, or why the row was altered."""
    try:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
    except (TypeError, ValueError) as exc:
        return LogLine(name, n, None, tampered=f"row seq {seq} holds no valid JSON record ({exc})")
    wrong = mismatched(data, seq, values)
    if wrong:
        return LogLine(name, n, data, tampered=row_problem(wrong))
    return LogLine(name, n, data, raw=text.encode("utf-8") if isinstance(text, str) else None)


SqliteSink = SqliteStore
"""The name the guard's side has always used: a SQLite store is the guard's sink."""
