"""The default audit store: an append-only JSONL file, one record per line, hash-chained.

Safe for many threads and processes on one file: each append holds an exclusive file lock
(``filelock``), reads the chain's tail from the file itself (another process may have written
since), writes its bytes with one ``write`` call and flushes them before returning, so a crash
loses at most the record in flight and leaves at most a *torn line*: the start of a JSON line, cut
short. The next append closes such a fragment off with a newline (in the same write as the next
record) and the chain goes on from the last complete record; ``guardrail audit verify`` accepts a
fragment in exactly those places (followed by the chain's next line, or at the very end), because
no complete record is missing from the chain, and reports anything else as tampering.

A run of NUL bytes at the end (a file extended but not written before a power loss) is treated
like a torn line. Rotation by size renames the full file to ``<stem>.<n><suffix>`` (``audit.<n>``
for a path with no suffix). Segments are numbered 1, 2, 3, ... without gaps: a file outside that
run (``audit.20240101.jsonl``: another log) is never read as a segment, never overwritten, and a
rotation that would make it one raises ``AuditLogError`` naming it. A rotation starts a
new file whose genesis line names that file and carries its last hash, so the chain is continuous
across files.
If the active file is missing or holds only a torn fragment (a crash during rotation or while
writing a genesis), the new genesis again continues from the newest rotated file.

The lock is a separate file, ``<log>.lock``, left in place on purpose: ``flock`` locks an inode,
and deleting the file while another process waits on it would let a third process lock a new
file of the same name at the same time, so two writers could fork the chain.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import IO, Any

from filelock import FileLock

from guardrail.audit.jsonl_follow import follow_jsonl
from guardrail.audit.jsonl_lines import is_crash_residue, parse_line
from guardrail.audit.segments import (
    file_holding,
    missing_before,
    open_active,
    open_segment,
    rotated_name,
    rotated_segments,
    segments,
)
from guardrail.audit.store import AuditLogError, Head, LogLine, RecordBuilder, StoreWriter, prepare_log_path, whole
from guardrail.record import AuditRecord, Genesis, canonical_json, utc_now

_HEAD_BYTES = 65536


def _last_complete(fh: IO[bytes]) -> tuple[dict[str, Any] | None, bool]:
    """(last line that parses as a JSON object, whether the file does not end in a newline), read backwards.

    A last line that parses but lacks its newline (a crash just before it) counts as complete.
    """
    fh.seek(0, os.SEEK_END)
    end = fh.tell()
    if end == 0:
        return None, False
    fh.seek(end - 1)
    torn = fh.read(1) != b"\n"
    block, pos, buffer = 65536, end, b""
    while pos > 0:
        step = min(block, pos)
        pos -= step
        fh.seek(pos)
        buffer = fh.read(step) + buffer
        lines = buffer.split(b"\n")
        # lines[0] may be partial unless pos == 0; the rest are whole (the last may be torn).
        candidates = lines if pos == 0 else lines[1:]
        for raw in reversed(candidates):
            if not raw.strip():
                continue
            try:
                parsed = json.loads(raw)
            except ValueError:
                continue  # a torn line from an earlier crash
            if isinstance(parsed, dict):
                return parsed, torn
        if pos > 0:
            buffer = lines[0]
    return None, torn


def _chain_point(data: dict[str, Any]) -> tuple[str, int] | None:
    """(hash the next record chains to, its seq) after the genesis or record ``data``, if it is one."""
    if data.get("type") == "genesis":
        first_seq = whole(data.get("first_seq", 1))
        if isinstance(data.get("genesis"), str) and first_seq is not None:
            return str(data["genesis"]), first_seq
        return None
    seq = whole(data.get("seq"))
    if isinstance(data.get("hash"), str) and seq is not None:
        return str(data["hash"]), seq + 1
    return None


def _first_line_problem(head: bytes) -> str | None:
    """Why a file starting with ``head`` is not an audit log this store may append to (None: it is)."""
    if not head:
        return None  # empty: the next write starts the log
    first, newline, _ = head.partition(b"\n")
    if not newline and len(head) >= _HEAD_BYTES:
        return "its first line is far longer than a genesis line"
    try:
        data = json.loads(first)
    except ValueError:
        if is_crash_residue(first):
            return None  # a genesis line cut short (or zero-filled) by a crash: the next write recovers
        return "line 1 is not JSON"
    if isinstance(data, dict) and data.get("type") == "genesis":
        return None
    return "line 1 is not a genesis line (every audit log starts with one)"


class JsonlStore(StoreWriter):
    """Append-only, hash-chained JSONL audit log.

    ``redact=True`` stores only SHA-256 hashes of prompts and texts. ``max_bytes`` rotates files.
    ``fsync=True`` also forces each record to disk (survives power loss, costs about a millisecond).

    The constructor refuses (``AuditLogError``, naming the path) a directory and an existing file
    that is not an audit log, so that decisions are never appended to someone else's file. The
    ``<log>.lock`` file it creates stays in place (see the module docstring). ``readonly=True``
    opens a log only to read it: nothing is checked, created or locked.
    """

    part = "file"

    def __init__(
        self,
        path: Path | str,
        *,
        redact: bool = False,
        max_bytes: int | None = None,
        fsync: bool = False,
        readonly: bool = False,
    ) -> None:
        self.path = Path(path)
        self.name = str(self.path)
        self.redact = redact
        self.max_bytes = max_bytes
        self.fsync = fsync
        self.readonly = readonly
        if not readonly:
            self._check_path()
        self._file_lock = FileLock(str(self.path) + ".lock")
        self._thread_lock = threading.Lock()
        self._fh: IO[bytes] | None = None
        self._closed = False

    # ------------------------------------------------------------------ writing

    def _check_path(self) -> None:
        path = self.path
        prepare_log_path(path, "audit log", "audit.jsonl")
        if not path.exists():
            return
        try:
            with open(path, "rb") as fh:
                head = fh.read(_HEAD_BYTES)
            open(path, "ab").close()  # only checks that appending is allowed
        except OSError as exc:
            raise AuditLogError(f"cannot use {path} as an audit log ({exc.strerror})") from None
        problem = _first_line_problem(head)
        if problem:
            raise AuditLogError(
                f"{path} is not a guardrail audit log ({problem}); refusing to append to it: give a new file"
            )

    def _open(self) -> IO[bytes]:
        """The handle of the active file, reopened if another process rotated it away."""
        try:
            current = os.stat(self.path)
        except FileNotFoundError:
            current = None
        if self._fh is not None:
            mine = os.fstat(self._fh.fileno())
            if current is not None and (mine.st_ino, mine.st_dev) == (current.st_ino, current.st_dev):
                return self._fh
            self._fh.close()
        self._fh = open(self.path, "a+b")  # noqa: SIM115 - kept open across writes
        return self._fh

    @staticmethod
    def _genesis_line(genesis: str, continues: str | None, first_seq: int) -> bytes:
        header = Genesis(genesis=genesis, created=utc_now(), continues=continues, first_seq=first_seq)
        return (canonical_json(header.model_dump()) + "\n").encode("utf-8")

    def _new_file_start(self) -> tuple[bytes, str, int]:
        """(genesis line, prev_hash, seq) for a file with no complete line yet.

        Continues the chain of the last rotated segment when there is one (a crash during rotation
        left the active file missing, empty or torn); otherwise starts a new chain.
        """
        rotated = [p for p in segments(self.path) if p != self.path]
        if rotated:
            with open(rotated[-1], "rb") as fh:
                last, _ = _last_complete(fh)
            point = _chain_point(last) if last is not None else None
            if point is None:
                raise AuditLogError(
                    f"{rotated[-1]} ends with no audit record; cannot continue its chain in {self.path}"
                )
            return self._genesis_line(point[0], rotated[-1].name, point[1]), point[0], point[1]
        genesis = secrets.token_hex(32)
        return self._genesis_line(genesis, None, 1), genesis, 1

    def _check_fragments_only(self, fh: IO[bytes]) -> None:
        """A file without one complete line must hold only torn fragments (crashes), or it is not ours."""
        fh.seek(0)
        content = fh.read(_HEAD_BYTES + 1)
        lines = content.split(b"\n")
        if len(content) > _HEAD_BYTES or any(line and not is_crash_residue(line) for line in lines):
            raise AuditLogError(
                f"{self.path} holds no audit record and is not a log cut short by a crash; refusing to append to it"
            )

    def _rotate(self, last: dict[str, Any]) -> tuple[IO[bytes], bytes]:
        """Rename the full file away; (handle of the new active file, its genesis line).

        The full file becomes segment ``k + 1`` after the run ``1..k`` (see ``rotated_segments``). When
        that name, or ``k + 2`` (which the rename would join to the run), already exists, the file there
        is not a segment of this log: it is neither overwritten nor adopted, and ``AuditLogError`` names
        it (nothing was renamed; move that file away or give this log another name).
        """
        assert self._fh is not None
        number = len(rotated_segments(self.path)) + 1
        target = rotated_name(self.path, number)
        for other in (target, rotated_name(self.path, number + 1)):
            if os.path.lexists(other):  # never overwrite a file, never make another log's file a segment
                raise AuditLogError(
                    f"cannot rotate audit log {self.path} to {target.name}: {other} already exists and is not a "
                    f"segment of this log (its segments are {self.path.stem}.1{self.path.suffix} to "
                    f"{self.path.stem}.{number - 1}{self.path.suffix}, numbered without gaps); move {other.name} "
                    "away or give this log another name"
                )
        self._fh.close()
        self._fh = None
        os.replace(self.path, target)
        return self._open(), self._genesis_line(str(last["hash"]), target.name, int(last["seq"]) + 1)

    def append(self, build: RecordBuilder) -> AuditRecord:
        """Append ``build(seq, prev_hash)`` as the next line, under the file lock; returns the record."""
        with self._thread_lock:
            if self._closed:  # checked under the lock: a write racing close() never reopens the file
                raise RuntimeError(f"audit sink {self.path} is closed")
            if self.readonly:
                raise RuntimeError(f"audit log {self.path} was opened read-only")
            with self._file_lock:
                fh = self._open()
                last, torn = _last_complete(fh)
                size = fh.seek(0, os.SEEK_END)
                prefix = b"\n" if torn else b""  # closes off the fragment a crash left, in the same write
                header = b""
                if last is None:
                    if size:
                        self._check_fragments_only(fh)
                    header, prev_hash, seq = self._new_file_start()
                else:
                    point = _chain_point(last)
                    if point is None:
                        raise AuditLogError(
                            f"{self.path}: its last line is neither a genesis line nor an audit record "
                            "(was another program writing to it?); refusing to append to it"
                        )
                    prev_hash, seq = point
                    if last.get("type") != "genesis" and self.max_bytes is not None and size >= self.max_bytes:
                        fh, header = self._rotate(last)  # a fragment stays, unterminated, at the old file's end
                        prefix = b""
                record = build(seq, prev_hash)
                line = (canonical_json(record.model_dump(mode="json")) + "\n").encode("utf-8")
                fh.seek(0, os.SEEK_END)
                fh.write(prefix + header + line)  # one write: nothing of it lands without the rest's start
                fh.flush()
                if self.fsync:
                    os.fsync(fh.fileno())
                return record

    def close(self) -> None:
        """Flush and close the file; later writes raise. The ``.lock`` file stays (module docstring)."""
        with self._thread_lock:
            self._closed = True
            if self._fh is not None:
                self._fh.flush()
                self._fh.close()
                self._fh = None

    # ------------------------------------------------------------------ reading

    def lines(self, after_seq: int = 0) -> Iterator[LogLine]:
        """Every line of every segment, oldest first (from the segment holding ``after_seq + 1``).

        Blank and unparseable lines are yielded too (``data`` None, ``error`` saying why); a file
        with no bytes at all is yielded as one ``empty_file`` line. The active file is opened as one
        consistent snapshot with the list of rotated segments (``open_active``), then the segments
        are opened one at a time, in order, and streamed: at most two files are open, and a
        multi-GB file is never held in memory at once.
        """
        names, active = open_active(self.path)  # only the active file is open while the segments are read
        try:
            start = 0 if after_seq <= 0 else file_holding(names, active, after_seq + 1)
            before = names[start - 1].name if start > 0 else None
            for segment in names[start:]:  # rotated segments never move: each is opened by name, read, closed
                with open_segment(segment) as fh:
                    yield from self._file_lines(segment, fh, False, before)
                before = segment.name
            if active is not None:  # the active file: a writer may be appending
                yield from self._file_lines(self.path, active, True, before)
        finally:
            if active is not None:
                active.close()

    def _file_lines(self, path: Path, fh: IO[bytes], live: bool, before: str | None) -> Iterator[LogLine]:
        """The lines of one open file; a genesis continuing another file than ``before`` says what is missing."""
        try:
            for line in _stream(str(path), fh, live):
                continues = None if line.data is None else line.data.get("continues")
                if line.line == 1 and isinstance(continues, str) and continues and continues != before:
                    gap = missing_before(self.path, continues)
                    if gap is not None:
                        line = LogLine(line.file, 1, line.data, raw=line.raw, missing_before=gap)
                yield line
        except OSError as exc:
            raise AuditLogError(f"cannot read audit log {path} ({exc.strerror})") from None

    def follow(self, after_seq: int | None) -> Generator[list[LogLine], None, None]:
        """Batches of new lines: the active file's bytes past what was read, across rotations."""
        return follow_jsonl(self.path, after_seq)

    def head(self) -> Head | None:
        """The last record (or genesis) of the active file, or of the newest segment when it has none."""
        names, active = open_active(self.path)
        try:
            last = _last_complete(active)[0] if active is not None else None
            for segment in reversed(names):
                if last is not None:
                    break
                with open_segment(segment) as fh:
                    last = _last_complete(fh)[0]
        finally:
            if active is not None:
                active.close()
        point = None if last is None else _chain_point(last)
        return None if point is None else Head(point[1] - 1, point[0])


def _stream(name: str, fh: IO[bytes], live: bool) -> Iterator[LogLine]:
    """The lines of one open file, streamed. In the ``live`` file a last line without its newline
    (or no bytes yet) is read again briefly: a writer may be in the middle of its one ``write``."""
    n = 0
    while True:
        raw = fh.readline()
        if live and (not raw.endswith(b"\n")) and (raw or n == 0):
            for _ in range(5):
                time.sleep(0.02)
                raw += fh.readline()
                if raw.endswith(b"\n"):
                    break
        if not raw:
            if n == 0:
                yield LogLine(name, 0, None, "the file is empty", empty_file=True)
            return
        n += 1
        terminated = raw.endswith(b"\n")
        yield parse_line(name, n, raw[:-1] if terminated else raw, terminated)
        if not terminated:
            return


JsonlSink = JsonlStore
"""The name the guard's side has always used: a JSONL store is the guard's sink."""
