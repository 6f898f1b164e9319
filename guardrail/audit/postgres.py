"""Audit store in PostgreSQL (psycopg 3): one hash chain per named log, many writers anywhere.

Selected by a URL, ``postgresql://user@host:5432/db?log=NAME`` (``postgres://`` too; ``log``
defaults to "default"). The password is best left out of the URL: libpq takes it from
``PGPASSWORD`` or ``~/.pgpass``, and every other connection setting from the ``PG*`` variables
(``postgresql://`` alone means "all from the environment").

Appends are serialized per log inside the inserting transaction: one statement
(``guardrail_audit_append``, see ``postgres_schema``) locks the log's head row, takes the next seq
and the previous hash from it, fills them into the record (built here with stand-ins for them),
hashes and inserts it and moves the head, then commits. Writers in other threads, processes or
machines wait for the lock, so the chain never forks and seqs never repeat or skip;
``UNIQUE (log, seq)`` backs that up. The lock is never held across a round trip to a client. A
writer killed mid-transaction leaves nothing: the server rolls it back (a dead client's waiting
append is cancelled within a second). An append whose connection broke is sent again once on a
new connection, and stored at most once (its ``append_id``).

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
import uuid
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict

from guardrail.audit.columns import COLUMNS, as_time, column_values, mismatched, row_problem
from guardrail.audit.jsonl import JsonlStore
from guardrail.audit.postgres_schema import LATEST, SchemaTooNew, current_version, ensure_schema
from guardrail.audit.store import AuditLogError, AuditWriteError, Head, LogLine, RecordBuilder, StoreWriter, whole
from guardrail.audit.urls import redacted, with_query
from guardrail.record import AuditRecord, Genesis, canonical_json, utc_now

SCHEMES = ("postgresql", "postgres")
log = logging.getLogger("guardrail.audit")
_LOG_NAME = re.compile(r"[\w.@:/-]{1,200}")
_APPEND = "SELECT r_seq, r_prev_hash, r_hash FROM guardrail_audit_append(" + ", ".join(["%s"] * 17) + ")"


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
    libpq = with_query(url, [(k, v) for k, v in query if k != "log"])
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


def _prepare_session(conn: psycopg.Connection[Any]) -> None:
    """A writer's session: UTF-8 (hashes are over UTF-8 bytes), no endless wait for the head row, and
    a dead client's waiting append cancelled instead of stored after it died (PostgreSQL 14+)."""
    encoding = conn.info.parameter_status("server_encoding")
    if encoding != "UTF8":
        raise psycopg.NotSupportedError(f"the database's encoding is {encoding}; an audit database needs UTF8")
    conn.execute("SELECT set_config('lock_timeout', '30s', false)")
    if conn.info.server_version >= 140000:
        conn.execute("SELECT set_config('client_connection_check_interval', '1s', false)")


class _Append:
    """One append's record with stand-ins for its seq, prev_hash and hash, and the call that stores it."""

    def __init__(self, build: RecordBuilder, log_name: str) -> None:
        for _ in range(8):  # stand-ins found nowhere else in the record (random: almost always the first)
            seq, prev, digest = 10**17 + secrets.randbelow(9 * 10**17), secrets.token_hex(32), secrets.token_hex(32)
            record = build(seq, prev)
            body = canonical_json(record.model_dump(mode="json", exclude={"hash"}))
            text = canonical_json(record.model_copy(update={"hash": digest}).model_dump(mode="json"))
            once = [text.count(str(seq)), text.count(prev), text.count(digest), body.count(str(seq)), body.count(prev)]
            if once == [1, 1, 1, 1, 1]:
                break
        else:
            raise RuntimeError("no stand-ins for seq and hashes occur only once in the record")
        genesis = Genesis(genesis=secrets.token_hex(32), created=utc_now())
        columns = list(column_values(record))[: COLUMNS.index("prev_hash")]
        columns[0] = as_time(record.ts)
        self.record = record
        self.params = (
            log_name, uuid.uuid4(), canonical_json(genesis.model_dump()), genesis.genesis,
            body, text, str(seq), prev, digest, *columns,
        )  # fmt: skip

    def result(self, seq: int, prev_hash: str, digest: str) -> AuditRecord:
        """The record as stored, checked against the hash the database computed."""
        record = self.record.model_copy(update={"seq": int(seq), "prev_hash": prev_hash, "hash": digest})
        if record.expected_hash() != digest:
            raise RuntimeError(f"the database hashed seq {seq} differently from guardrail: `guardrail audit verify`")
        return record


def _connection_lost(exc: BaseException) -> bool:
    """Whether ``exc`` says the connection is gone (no answer, or the server ending sessions: a restart)."""
    state = getattr(exc, "sqlstate", None)
    return isinstance(exc, psycopg.OperationalError) and (state is None or state[:2] in ("08", "57"))


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
                _prepare_session(conn)
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
        """Append ``build(seq, prev_hash)`` in one statement holding the log's head row; returns the record.

        ``build`` is called once, before, with stand-ins that the database replaces (see the module
        docstring). A connection found broken (a server restart) is replaced once and the append
        sent again; any other failure raises ``AuditWriteError`` with the fallback log.
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
            call = _Append(build, self.log)
            unsure = False  # an attempt was sent, and its answer lost
            for attempt in (1, 2):
                reused, sent = self._conn is not None, False
                try:
                    if self._conn is None:
                        self._conn, self._pid = self._connect(), os.getpid()
                    sent = True
                    row = self._conn.execute(_APPEND, call.params).fetchone()
                    assert row is not None
                    return call.result(*row)
                except (psycopg.Error, SchemaTooNew) as exc:
                    self._drop()
                    unsure = unsure or (sent and getattr(exc, "sqlstate", None) is None)  # no answer came
                    if attempt == 1 and reused and _connection_lost(exc):
                        continue  # sent again on a new connection: stored at most once (its append_id)
                    raise self._unavailable(exc, unsure) from exc
        raise AssertionError("unreachable")

    def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
            self._conn = None

    def _unavailable(self, exc: BaseException, sent: bool) -> AuditWriteError:
        """The error for a record the database did not take, with the fallback log (when it can be opened)."""
        why = _first_line(exc)
        unsure = " (the connection broke before the answer: the record may be in the database too)" if sent else ""
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
