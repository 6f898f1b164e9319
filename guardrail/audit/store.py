"""The one protocol every audit store implements, and what its readers get back.

A store keeps one hash chain of ``AuditRecord``s (see ``guardrail.record``). It can

- ``append`` a record: the store assigns the next seq and the previous hash inside its own lock
  or transaction, has the builder make the record with them, stores it and returns it;
- give back what it holds, in seq order, as located ``LogLine``s (``lines``), from the start or
  from past a seq; and ``follow`` what is appended later;
- say where its chain ends (``head``).

Stores are also the guard's sinks (``DecisionSink``): ``write`` turns a decision into the next
record through ``append`` (``StoreWriter``). ``verify``, ``tail``, ``stats``, ``replay`` and
``report`` only use this protocol, so they work the same on every store. What only one kind of
store can tell (a torn line, a missing segment, a row whose columns disagree with its record) it
says on the ``LogLine``s it yields.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Self, runtime_checkable

from guardrail.decision import Decision
from guardrail.record import AuditRecord, DecisionSink, build_record

RecordBuilder = Callable[[int, str], AuditRecord]
"""Builds the record to append from the (seq, prev_hash) the store assigned. It must put them only
into the record's ``seq`` and ``prev_hash``: a store may call it with stand-ins and put the real
values in where they stand (the PostgreSQL store does, inside the database's transaction)."""


class AuditLogError(ValueError):
    """A path or URL that cannot be read (or written) as an audit log; the message names it and the line."""


class AuditWriteError(RuntimeError):
    """A store could not append (its database is down, say); nothing of the record was stored.

    ``fallback``, when the store has one, is a local store that takes the decision instead: the
    guard records its fail-mode decision there (see ``Guard.record``), so it is never lost silently.
    """

    def __init__(self, message: str, fallback: DecisionSink | None = None) -> None:
        super().__init__(message)
        self.fallback = fallback


@dataclass(frozen=True)
class Head:
    """Where a chain ends: the last record's seq and hash (seq ``first - 1`` and the genesis with none)."""

    seq: int
    hash: str


@dataclass(frozen=True)
class LogLine:
    """One stored unit (a line of a file, a row): where it is, and its parsed JSON or why it could not be parsed."""

    file: str
    line: int
    data: dict[str, Any] | None
    error: str | None = None
    terminated: bool = True
    tampered: str | None = None
    """Set by a store that can tell on its own that this row was altered."""
    fragment: bool = False
    """An unparseable line that is the start of a JSON object cut short: what a crash leaves."""
    empty_file: bool = False
    """Stands for a file that holds no bytes at all (``line`` is 0)."""
    raw: bytes | None = field(default=None, repr=False)
    """The stored bytes of a parsed line (without its newline), for the canonical-bytes check."""
    missing_before: str | None = None
    """On a genesis line that continues another file: why that file is not part of the log, when the store knows."""
    head: Head | None = None
    """A store's own note of where its chain ends (a head row), checked against the chain's last record."""
    place: str | None = None
    """How messages name this unit when ``file:line`` does not fit (a database row)."""

    @property
    def where(self) -> str:
        if self.place is not None:
            return self.place
        return self.file if self.empty_file else f"{self.file}:{self.line}"


@runtime_checkable
class AuditStore(DecisionSink, Protocol):
    """A hash-chained audit log: a file, a SQLite database or a log in a PostgreSQL database."""

    name: str
    """How messages name the store: its path, or its URL without a password."""
    part: str
    """What ``LogLine.file`` names: "file", or "log" for a database log."""

    def append(self, build: RecordBuilder) -> AuditRecord:
        """Store ``build(seq, prev_hash)`` as the next record, atomically; returns it as stored."""
        ...

    def lines(self, after_seq: int = 0) -> Iterator[LogLine]:
        """Everything stored, in order. With ``after_seq`` a store may skip what comes before the
        first record past it (readers filter by seq); only ``after_seq=0`` is a whole log to verify."""
        ...

    def follow(self, after_seq: int | None) -> Generator[list[LogLine], None, None]:
        """Batches of what is appended past ``after_seq`` (None: from the current end), an empty
        batch when nothing is new yet; closing the iterator releases what it holds."""
        ...

    def head(self) -> Head | None:
        """Where the chain ends now; None when nothing was ever written."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc: object) -> None: ...


class StoreWriter:
    """``DecisionSink`` on top of ``append``: what every store shares to be the guard's sink."""

    redact: bool = False

    def append(self, build: RecordBuilder) -> AuditRecord:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def write(self, decision: Decision, *, deployment: str, context: dict[str, Any] | None = None) -> AuditRecord:
        """Append one decision as the next record of the chain; returns the record written."""
        redact = self.redact

        def build(seq: int, prev_hash: str) -> AuditRecord:
            return build_record(
                decision, seq=seq, prev_hash=prev_hash, deployment=deployment, redact=redact, context=context
            )

        return self.append(build)

    async def awrite(
        self, decision: Decision, *, deployment: str, context: dict[str, Any] | None = None
    ) -> AuditRecord:
        """``write`` in a worker thread: the event loop never waits on a lock, a disk or a database."""
        return await asyncio.to_thread(self.write, decision, deployment=deployment, context=context)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def prepare_log_path(path: Path, what: str, example: str) -> None:
    """Before a store writes ``path``: refuse a folder and create the parent folder, naming the path.

    ``what`` says what the path is ("audit log", "audit database"); ``example`` a file name to suggest.
    """
    if path.is_dir():
        raise AuditLogError(f"{what} {path} is a directory; give a file path, e.g. {path / example}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AuditLogError(f"cannot create the folder of {what} {path} ({exc.strerror})") from None


def whole(value: Any) -> int | None:
    """``value`` when it is an int (not a bool), else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None
