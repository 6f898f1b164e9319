"""The default audit sink: an append-only JSONL file, one record per line, hash-chained.

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

import asyncio
import codecs
import json
import os
import re
import secrets
import threading
import time
from pathlib import Path
from typing import IO, Any

from filelock import FileLock

from guardrail.audit import AuditLogError, prepare_log_path
from guardrail.decision import Decision
from guardrail.record import AuditRecord, Genesis, build_record, canonical_json, utc_now

_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?")
_NUMBER_START = re.compile(r"-?(?:0|[1-9]\d*)?(?:\.\d*)?(?:[eE][+-]?\d*)?")
_NUMBER_CHARS = re.compile(r"[-+0-9.eE]*")
_HEAD_BYTES = 65536


def rotated_name(path: Path, number: int) -> Path:
    """The name segment ``number`` of the log at ``path`` gets: ``<stem>.<number><suffix>``."""
    return path.with_name(f"{path.stem}.{number}{path.suffix}")


def segment_number(path: Path, name: str) -> int | None:
    """The number ``n`` when ``name`` has the form of a rotated segment of the log at ``path`` (else None)."""
    m = re.fullmatch(rf"{re.escape(path.stem)}\.([1-9]\d*){re.escape(path.suffix)}", name)
    return int(m.group(1)) if m else None


def _rotated(path: Path) -> list[tuple[int, Path]]:
    """(number, path) of the rotated segments of the log at ``path``: ``<stem>.1<suffix>`` to ``<stem>.<k><suffix>``.

    Only the contiguous run from 1 counts (it stops at the first missing number): the sink
    numbers rotations 1, 2, 3, ... without gaps, so a file such as ``audit.20240101.jsonl`` next to
    ``audit.jsonl`` is another log, not segment 20240101 of this one. Names with a leading zero
    (``audit.01.jsonl``) are never segments.
    """
    taken: set[int] = set()
    if path.parent.is_dir():
        for p in path.parent.iterdir():
            number = segment_number(path, p.name)
            if number is not None:
                taken.add(number)
    run = []
    number = 1
    while number in taken:
        run.append((number, rotated_name(path, number)))
        number += 1
    return run


def segments(path: Path | str) -> list[Path]:
    """All files of the log at ``path``, oldest first: rotated segments, then the active file.

    Rotated segments are ``<stem>.<n><suffix>`` (``audit.3.jsonl``; ``audit.3`` for a path with
    no suffix) for ``n`` = 1, 2, ... up to the first missing number (see ``_rotated``).
    """
    path = Path(path)
    files = [p for _, p in _rotated(path)]
    return [*files, path] if path.exists() else files


def _snapshot(path: Path) -> tuple[list[Path], IO[bytes] | None] | None:
    """(rotated segments, handle on the active file or None) if no rotation split listing and opening (else None)."""
    names = [p for _, p in _rotated(path)]
    try:
        active: IO[bytes] | None = open(path, "rb")  # noqa: SIM115 - closed by the caller
    except FileNotFoundError:
        active = None  # a crash (or a rotation) between renaming the active file and starting the next one
    except OSError as exc:
        raise AuditLogError(f"cannot read audit log {exc.filename or path} ({exc.strerror})") from None
    try:
        again = [p for _, p in _rotated(path)]
    except OSError as exc:
        if active is not None:
            active.close()
        raise AuditLogError(f"cannot list the folder of audit log {path} ({exc.strerror})") from None
    # Rotated segments never move; only the active file is renamed (to the next number). When the
    # list did not change, what was opened is the file that follows the last listed segment.
    if again == names:
        return names, active
    if active is not None:
        active.close()
    return None


def open_active(path: Path | str) -> tuple[list[Path], IO[bytes] | None]:
    """The rotated segments of the log (oldest first) and a read handle on its active file, consistent.

    A writer may rotate the log while it is listed (renaming the active file to the next number
    and starting a new one). The segments are listed, the active file opened, and the segments
    listed again; the snapshot stands when that list did not change, so the handle is the file
    that follows the listed segments (None: there is no active file, e.g. after a crash during a
    rotation). When a busy writer keeps rotating, the writers' file lock is taken for the moment
    of listing and opening (writers wait that long; the reading itself never holds it).

    Only one file is held open: rotated segments are never renamed again, so the caller opens
    them one at a time, by name, when it reads them (``open_segment``). ``AuditLogError`` names a
    file that cannot be read.
    """
    from filelock import Timeout

    path = Path(path)
    for attempt in range(1000):
        snap = _snapshot(path)
        if snap is not None:
            return snap
        if attempt % 10 == 2:
            try:
                with FileLock(str(path) + ".lock", timeout=10):
                    snap = _snapshot(path)
                if snap is not None:
                    return snap
            except (OSError, Timeout):
                pass  # a read-only folder, or a writer holding the lock for long: keep trying without it
        time.sleep(0.002)
    raise AuditLogError(f"cannot read audit log {path}: its files kept being renamed or removed while it was listed")


def open_segment(name: Path) -> IO[bytes]:
    """A read handle on the rotated segment ``name``; ``AuditLogError`` naming it when it cannot be opened."""
    try:
        return open(name, "rb")
    except FileNotFoundError:
        raise AuditLogError(
            f"cannot read audit log segment {name}: it was removed while the log was read (segments never move)"
        ) from None
    except OSError as exc:
        raise AuditLogError(f"cannot read audit log segment {name} ({exc.strerror})") from None


def _scan_string(text: str, i: int) -> int | None:
    """End (after the closing quote) of the JSON string starting at ``text[i]``; None: runs to the end; -1: invalid."""
    j, n = i + 1, len(text)
    while j < n:
        ch = text[j]
        if ch == '"':
            return j + 1
        if ch == "\\":
            if j + 1 >= n:
                return None
            escape = text[j + 1]
            if escape == "u":
                digits = text[j + 2 : j + 6]
                if any(c not in "0123456789abcdefABCDEF" for c in digits):
                    return -1
                if len(digits) < 4:
                    return None
                j += 6
                continue
            if escape not in '"\\/bfnrt':
                return -1
            j += 2
            continue
        if ord(ch) < 0x20:
            return -1
        j += 1
    return None


def is_torn_fragment(raw: bytes) -> bool:
    """Whether ``raw`` is the start of a JSON object cut short: what a crash in mid-write leaves.

    True for ``{"action":"allow","atte``; False for complete JSON, for text that is not JSON
    (``hello``) and for JSON that goes wrong before it ends (``{"a" 1``).
    """
    try:
        text = codecs.getincrementaldecoder("utf-8")().decode(raw, final=False)  # a cut multi-byte char is fine
    except UnicodeDecodeError:
        return False
    if not text.startswith("{"):
        return False
    stack: list[str] = []
    expect, i, n = "value", 0, len(text)
    while i < n:
        c = text[i]
        if c in " \t\r":
            i += 1
            continue
        if (expect == "key_or_close" and c == "}") or (expect == "value_or_close" and c == "]"):
            expect = "after"  # an empty object or array: it closes as it would after a value
        if expect in ("key", "key_or_close"):
            if c != '"':
                return False
            end = _scan_string(text, i)
            if end is None:
                return True
            if end < 0:
                return False
            i, expect = end, "colon"
        elif expect == "colon":
            if c != ":":
                return False
            i, expect = i + 1, "value"
        elif expect in ("value", "value_or_close"):
            if c in "{[":
                stack.append(c)
                i, expect = i + 1, ("key_or_close" if c == "{" else "value_or_close")
            elif c == '"':
                end = _scan_string(text, i)
                if end is None:
                    return True
                if end < 0:
                    return False
                i, expect = end, "after"
            elif c in "-0123456789":
                match = _NUMBER_CHARS.match(text, i)
                assert match is not None
                if match.end() == n:
                    return _NUMBER_START.fullmatch(match.group()) is not None
                if not _NUMBER.fullmatch(match.group()):
                    return False
                i, expect = match.end(), "after"
            elif c in "tfn":
                word = {"t": "true", "f": "false", "n": "null"}[c]
                if text.startswith(word, i):
                    i, expect = i + len(word), "after"
                else:
                    return word.startswith(text[i:])  # cut inside the literal, or a wrong word
            else:
                return False
        else:  # after a complete value
            if c == "," and stack:
                i, expect = i + 1, ("key" if stack[-1] == "{" else "value")
            elif stack and c == ("}" if stack[-1] == "{" else "]"):
                stack.pop()
                i += 1
                if not stack:
                    return False  # the object is complete, and something follows it
            else:
                return False
    return bool(stack)


def is_crash_residue(raw: bytes) -> bool:
    """Whether ``raw`` is what a crash can leave of a line: a torn fragment, a run of NUL bytes
    (a file extended but not written before a power loss), or a torn fragment followed by NULs."""
    stripped = raw.rstrip(b"\x00")
    if not stripped:
        return bool(raw)
    return is_torn_fragment(stripped)


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


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _chain_point(data: dict[str, Any]) -> tuple[str, int] | None:
    """(hash the next record chains to, its seq) after the genesis or record ``data``, if it is one."""
    if data.get("type") == "genesis":
        first_seq = _int(data.get("first_seq", 1))
        if isinstance(data.get("genesis"), str) and first_seq is not None:
            return str(data["genesis"]), first_seq
        return None
    seq = _int(data.get("seq"))
    if isinstance(data.get("hash"), str) and seq is not None:
        return str(data["hash"]), seq + 1
    return None


def _first_line_problem(head: bytes) -> str | None:
    """Why a file starting with ``head`` is not an audit log this sink may append to (None: it is)."""
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


class JsonlSink:
    """Append-only, hash-chained JSONL audit log.

    ``redact=True`` stores only SHA-256 hashes of prompts and texts. ``max_bytes`` rotates files.
    ``fsync=True`` also forces each record to disk (survives power loss, costs about a millisecond).

    The constructor refuses (``AuditLogError``, naming the path) a directory and an existing file
    that is not an audit log, so that decisions are never appended to someone else's file. The
    ``<log>.lock`` file it creates stays in place (see the module docstring).
    """

    def __init__(
        self, path: Path | str, *, redact: bool = False, max_bytes: int | None = None, fsync: bool = False
    ) -> None:
        self.path = Path(path)
        self.redact = redact
        self.max_bytes = max_bytes
        self.fsync = fsync
        self._check_path()
        self._file_lock = FileLock(str(self.path) + ".lock")
        self._thread_lock = threading.Lock()
        self._fh: IO[bytes] | None = None
        self._closed = False

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

        The full file becomes segment ``k + 1`` after the run ``1..k`` (see ``_rotated``). When that
        name, or ``k + 2`` (which the rename would join to the run), already exists, the file there is
        not a segment of this log: it is neither overwritten nor adopted, and ``AuditLogError`` names
        it (nothing was renamed; move that file away or give this log another name).
        """
        assert self._fh is not None
        number = len(_rotated(self.path)) + 1
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

    def write(self, decision: Decision, *, deployment: str, context: dict[str, Any] | None = None) -> AuditRecord:
        """Append one decision as the next record of the chain; returns the record written."""
        with self._thread_lock:
            if self._closed:  # checked under the lock: a write racing close() never reopens the file
                raise RuntimeError(f"audit sink {self.path} is closed")
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
                record = build_record(
                    decision, seq=seq, prev_hash=prev_hash, deployment=deployment, redact=self.redact, context=context
                )
                line = (canonical_json(record.model_dump(mode="json")) + "\n").encode("utf-8")
                fh.seek(0, os.SEEK_END)
                fh.write(prefix + header + line)  # one write: nothing of it lands without the rest's start
                fh.flush()
                if self.fsync:
                    os.fsync(fh.fileno())
                return record

    async def awrite(
        self, decision: Decision, *, deployment: str, context: dict[str, Any] | None = None
    ) -> AuditRecord:
        """``write`` in a worker thread: the event loop never waits on the file lock or the disk."""
        return await asyncio.to_thread(self.write, decision, deployment=deployment, context=context)

    def close(self) -> None:
        """Flush and close the file; later writes raise. The ``.lock`` file stays (module docstring)."""
        with self._thread_lock:
            self._closed = True
            if self._fh is not None:
                self._fh.flush()
                self._fh.close()
                self._fh = None

    def __enter__(self) -> JsonlSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
