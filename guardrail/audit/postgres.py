"""Audit store in PostgreSQL (psycopg 3): one hash chain per named log, many writers anywhere.

Selected by a URL, ``postgresql://user@host:5432/db?log=NAME`` (``postgres://`` too; ``log``
defaults to "default"). The password is best left out of the URL: libpq takes it from
``PGPASSWORD`` or ``~/.pgpass``, and every other connection setting from the ``PG*`` variables
(``postgresql://`` alone means "all from the environment").

Appends are serialized per log inside the inserting transaction: it locks the log's head row
(``SELECT ... FOR UPDATE``), takes the next seq and the previous hash from it, inserts the record
and moves the head, then commits. Writers in other threads, processes or machines wait for the
lock, so the chain never forks and seqs never repeat or skip; ``UNIQUE (log, seq)`` backs that
up. A writer killed mid-transaction leaves nothing: the server rolls the transaction back.

When the database cannot take a record (down, unreachable, lock timeout), ``append`` raises
``AuditWriteError`` carrying a local JSONL *fallback* log (``fallback=``, else
``$GUARDRAIL_AUDIT_FALLBACK``, else ``$XDG_STATE_HOME/guardrail/audit-fallback-<log>.jsonl``),
logged at ERROR with its path; the guard applies its ``fail_mode`` and records that decision there
(``Guard.record``). ``import_records`` moves such a log into the database once it is back.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import threading
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict

from guardrail.audit.columns import COLUMNS, as_time, column_values, mismatched, row_problem
from guardrail.audit.jsonl import JsonlStore
from guardrail.audit.postgres_schema import LATEST, SchemaTooNew, current_version, ensure_schema
from guardrail.audit.store import AuditLogError, AuditWriteError, Head, LogLine, RecordBuilder, StoreWriter, whole
from guardrail.audit.urls import redacted
from guardrail.record import AuditRecord, Genesis, canonical_json, utc_now

SCHEMES = ("postgresql", "postgres")
log = logging.getLogger("guardrail.audit")
_LOG_NAME = re.compile(r"[\w.@:/-]{1,200}")
_SESSION = (
    "SELECT set_config('lock_timeout', '30s', false), set_config('idle_in_transaction_session_timeout', '60s', false)"
)


def split_url(url: str, log_name: str | None = None) -> tuple[str, str, str]:
    """(libpq URL, log name, how messages name it: the URL without password) for a store URL.

    The log comes from ``log_name``, else the URL's ``?log=``, else "default". ``AuditLogError``
    names what is wrong with a URL libpq would refuse.
    """
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    from_url = [value for key, value in query if key == "log"]
    name = log_name or (from_url[-1] if from_url else "default")
    if not _LOG_NAME.fullmatch(name):
        raise AuditLogError(f"audit log name {name!r}: use 1 to 200 letters, digits and . _ - @ : /")
    libpq = urlunsplit(parts._replace(query=urlencode([(k, v) for k, v in query if k != "log"], safe="/:@")))
    try:
        conninfo_to_dict(libpq)
    except psycopg.ProgrammingError as exc:
        problem = f"not a PostgreSQL URL libpq accepts ({_first_line(exc)})"
        raise AuditLogError(f"{redacted(url, log=name)}: {problem}") from None
    return libpq, name, redacted(url, log=name)


def default_fallback(log_name: str) -> Path:
    """Where decisions go while the database is down: ``$GUARDRAIL_AUDIT_FALLBACK``, else a file per log
    under ``$XDG_STATE_HOME/guardrail`` (``~/.local/state/guardrail``)."""
    if os.environ.get("GUARDRAIL_AUDIT_FALLBACK"):
        return Path(os.environ["GUARDRAIL_AUDIT_FALLBACK"])
    state = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    return state / "guardrail" / f"audit-fallback-{re.sub(r'[^A-Za-z0-9._-]', '_', log_name)}.jsonl"


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


class PostgresStore(StoreWriter):
    """Hash-chained audit records of the log ``log`` in a PostgreSQL database.

    A writer connects at construction and creates or migrates the tables (``postgres_schema``);
    ``AuditLogError`` names the URL (without password) when it cannot. ``readonly=True`` only reads,
    each read on its own connection, in one snapshot. ``redact=True`` stores only hashes.
    """

    part = "log"

    def __init__(
        self,
        url: str,
        *,
        log: str | None = None,
        redact: bool = False,
        readonly: bool = False,
        fallback: Path | str | None = None,
        connect_timeout: int = 10,
    ) -> None:
        self.conninfo, self.log, self.name = split_url(url, log)
        self.redact = redact
        self.readonly = readonly
        self.connect_timeout = connect_timeout
        self.fallback_path = Path(fallback) if fallback is not None else default_fallback(self.log)
        self._fallback: JsonlStore | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._conn: psycopg.Connection[Any] | None = None
        self._pid = os.getpid()
        self._inherited: list[psycopg.Connection[Any]] = []
        if not readonly:
            self._conn = self._connect_or_explain()

    def _connect(self) -> psycopg.Connection[Any]:
        settings = conninfo_to_dict(self.conninfo)
        extra: dict[str, Any] = {} if "connect_timeout" in settings else {"connect_timeout": self.connect_timeout}
        if "application_name" not in settings:
            extra["application_name"] = "guardrail-audit"
        conn = psycopg.connect(self.conninfo, autocommit=True, **extra)
        try:
            if not self.readonly:
                conn.execute(_SESSION)  # a writer stuck holding the head lock cannot stall the others for long
                ensure_schema(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _connect_or_explain(self) -> psycopg.Connection[Any]:
        try:
            return self._connect()
        except SchemaTooNew as exc:
            raise AuditLogError(f"audit database {self.name}: {exc}") from None
        except psycopg.Error as exc:
            raise AuditLogError(f"cannot use audit database {self.name} ({_first_line(exc)})") from None

    # ------------------------------------------------------------------ writing

    def append(self, build: RecordBuilder) -> AuditRecord:
        """Append ``build(seq, prev_hash)`` in one transaction holding the log's head row; returns the record.

        A connection found broken before anything was sent (a server restart) is replaced once;
        any other failure raises ``AuditWriteError`` with the fallback log.
        """
        with self._lock:
            if self._closed:
                raise RuntimeError(f"audit sink {self.name} is closed")
            if self.readonly:
                raise RuntimeError(f"audit database {self.name} was opened read-only")
            if self._conn is not None and self._pid != os.getpid():
                # Forked with the store (a pre-forking server): that socket is the parent's session.
                # Kept unclosed, since closing it would end the parent's session too; this process connects anew.
                self._inherited.append(self._conn)
                self._conn = None
            for attempt in (1, 2):
                fresh = self._conn is None
                sent = [False]
                try:
                    if self._conn is None:
                        self._conn, self._pid = self._connect(), os.getpid()
                    return self._append(self._conn, build, sent)
                except (psycopg.Error, SchemaTooNew) as exc:
                    self._drop()
                    if attempt == 1 and not fresh and not sent[0] and isinstance(exc, psycopg.OperationalError):
                        continue
                    raise self._unavailable(exc, sent[0]) from exc
        raise AssertionError("unreachable")

    def _append(self, conn: psycopg.Connection[Any], build: RecordBuilder, sent: list[bool]) -> AuditRecord:
        lock = "SELECT seq, hash FROM guardrail_audit_logs WHERE log = %s FOR UPDATE"
        # Not pipelined: a writer stuck between statements is then "idle in transaction", which the
        # session's idle_in_transaction_session_timeout ends, so it cannot hold the head row forever.
        with conn.transaction():
            row = conn.execute(lock, (self.log,)).fetchone()
            if row is None:  # the log's first record: start its chain
                genesis = Genesis(genesis=secrets.token_hex(32), created=utc_now())
                conn.execute(
                    "INSERT INTO guardrail_audit_logs (log, genesis, seq, hash) VALUES (%s, %s, 0, %s) "
                    "ON CONFLICT (log) DO NOTHING",
                    (self.log, canonical_json(genesis.model_dump()), genesis.genesis),
                )
                row = conn.execute(lock, (self.log,)).fetchone()
                assert row is not None  # inserted, or inserted by another writer: it is there now
            seq, prev_hash = int(row[0]) + 1, str(row[1])
            record = build(seq, prev_hash)
            values = list(column_values(record))
            values[0] = as_time(record.ts)
            sent[0] = True
            conn.execute(
                f"INSERT INTO guardrail_audit_records (log, seq, {', '.join(COLUMNS)}, record) "
                f"VALUES ({', '.join(['%s'] * (len(COLUMNS) + 3))})",
                (self.log, seq, *values, canonical_json(record.model_dump(mode="json"))),
            )
            conn.execute(
                "UPDATE guardrail_audit_logs SET seq = %s, hash = %s, updated = now() WHERE log = %s",
                (seq, record.hash, self.log),
            )
        return record

    def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
            self._conn = None

    def _unavailable(self, exc: BaseException, sent: bool) -> AuditWriteError:
        """The error for a record the database did not take, with the fallback log (when it can be opened)."""
        why = _first_line(exc)
        unsure = " (the connection broke while committing: the record may be in the database too)" if sent else ""
        try:
            if self._fallback is None:
                self._fallback = JsonlStore(self.fallback_path, redact=self.redact)
        except (AuditLogError, OSError) as fallback_exc:
            log.error("audit store %s cannot take a record (%s); no fallback log: %s", self.name, why, fallback_exc)
            return AuditWriteError(f"audit store {self.name} cannot take the record ({why}), and {fallback_exc}")
        log.error(
            "audit store %s cannot take a record (%s)%s; recording the decision in the fallback log %s",
            self.name,
            why,
            unsure,
            self.fallback_path,
        )
        message = f"audit store {self.name} cannot take the record ({why}){unsure}; fallback log {self.fallback_path}"
        return AuditWriteError(message, self._fallback)

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._drop()
                if self._fallback is not None:
                    self._fallback.close()

    # ------------------------------------------------------------------ reading

    def _reader(self, snapshot: bool = True) -> psycopg.Connection[Any] | None:
        """A new connection for reading (one read-only REPEATABLE READ snapshot unless ``snapshot`` is
        False); None when the database has no audit tables yet."""
        try:
            conn = psycopg.connect(self.conninfo, connect_timeout=self.connect_timeout, autocommit=not snapshot)
        except psycopg.Error as exc:
            raise AuditLogError(f"cannot read audit database {self.name} ({_first_line(exc)})") from None
        try:
            if snapshot:
                conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
                conn.read_only = True
            version = current_version(conn)
        except psycopg.Error as exc:
            conn.close()
            raise AuditLogError(f"cannot read audit database {self.name} ({_first_line(exc)})") from None
        if version > LATEST:
            conn.close()
            raise AuditLogError(f"audit database {self.name}: {SchemaTooNew(version)}")
        if version == 0:
            conn.close()
            return None
        return conn

    def lines(self, after_seq: int = 0) -> Iterator[LogLine]:
        """The genesis row, every record past ``after_seq`` in the order appended, then the head row.

        Genesis and head rows come only from the start (``after_seq`` 0). Rows are streamed with a
        server-side cursor, all in one snapshot: a log verified while writers append ends at a
        consistent head.
        """
        conn = self._reader()
        if conn is None:
            return
        try:
            yield from self._rows(conn, after_seq, ends=after_seq <= 0)
        except psycopg.Error as exc:
            raise AuditLogError(f"cannot read audit database {self.name} ({_first_line(exc)})") from None
        finally:
            conn.close()

    def _rows(self, conn: psycopg.Connection[Any], after_seq: int, ends: bool) -> Iterator[LogLine]:
        """The log's rows past ``after_seq``; with ``ends``, its genesis row first and its head row last."""
        head = conn.execute("SELECT genesis, seq, hash FROM guardrail_audit_logs WHERE log = %s", (self.log,))
        row = head.fetchone()
        if row is None:
            return
        if ends:
            yield _genesis_line(self.name, row[0])
        query = (
            f"SELECT id, seq, {', '.join(COLUMNS)}, record FROM guardrail_audit_records "
            "WHERE log = %s AND seq > %s ORDER BY id"
        )
        with conn.cursor(name="guardrail_audit_read") if not conn.autocommit else conn.cursor() as cursor:
            if isinstance(cursor, psycopg.ServerCursor):
                cursor.itersize = 2000
            cursor.execute(query, (self.log, after_seq))
            for row_id, seq, *values, text in cursor:
                yield self._row_line(int(row_id), seq, tuple(values), text)
        if ends:
            yield LogLine(self.name, 0, None, head=Head(int(row[1]), str(row[2])), place=f"{self.name} head row")

    def _row_line(self, row_id: int, seq: Any, values: tuple[Any, ...], text: Any) -> LogLine:
        place = f"{self.name} row id {row_id}"
        try:
            data = json.loads(text)
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
        except (TypeError, ValueError) as exc:
            problem = f"row seq {seq} holds no valid JSON record ({exc})"
            return LogLine(self.name, row_id, None, tampered=problem, place=place)
        wrong = mismatched(data, seq, values)
        if wrong:
            return LogLine(self.name, row_id, data, tampered=row_problem(wrong), place=place)
        return LogLine(self.name, row_id, data, raw=str(text).encode("utf-8"), place=place)

    def follow(self, after_seq: int | None) -> Generator[list[LogLine], None, None]:
        """Batches of the records past the last seq read (from the head when ``after_seq`` is None),
        polled on one connection."""
        if after_seq is None:
            head = self.head()
            after_seq = 0 if head is None else head.seq
        last, conn = after_seq, None
        try:
            while True:
                conn = conn or self._reader(snapshot=False)
                batch = [] if conn is None else list(self._rows(conn, last, ends=False))
                for line in batch:
                    seq = whole((line.data or {}).get("seq"))
                    last = last if seq is None else max(last, seq)
                yield batch
        except psycopg.Error as exc:
            raise AuditLogError(f"cannot read audit database {self.name} ({_first_line(exc)})") from None
        finally:
            if conn is not None:
                conn.close()

    def head(self) -> Head | None:
        """The log's head row: its last seq and hash (seq 0 and the genesis before the first record)."""
        conn = self._reader(snapshot=False)
        if conn is None:
            return None
        try:
            row = conn.execute("SELECT seq, hash FROM guardrail_audit_logs WHERE log = %s", (self.log,)).fetchone()
        except psycopg.Error as exc:
            raise AuditLogError(f"cannot read audit database {self.name} ({_first_line(exc)})") from None
        finally:
            conn.close()
        return None if row is None else Head(int(row[0]), str(row[1]))


def _genesis_line(name: str, text: Any) -> LogLine:
    """The genesis JSON a log's row holds, as the first line of the log."""
    place = f"{name} genesis row"
    try:
        data = json.loads(text)
    except (TypeError, ValueError) as exc:
        return LogLine(name, 0, None, tampered=f"the genesis row holds no valid JSON ({exc})", place=place)
    if not isinstance(data, dict):
        return LogLine(name, 0, None, tampered="the genesis row holds no JSON object", place=place)
    return LogLine(name, 0, data, raw=str(text).encode("utf-8"), place=place)
