"""The default audit sink: an append-only JSONL file, one record per line, hash-chained.

Safe for many threads and processes on one file: each append holds an exclusive file lock
(``filelock``), reads the chain's tail from the file itself (another process may have written
since), writes one line and flushes it before returning, so a crash loses at most the record
in flight. A torn last line left by a crash is closed off with a newline and the chain goes on
from the last complete record; ``guardrail audit verify`` reports such a line as a crash, not
as tampering, because no complete record is missing from the chain.

Rotation by size renames the full file to ``<stem>.<n><suffix>`` and starts a new file whose
genesis line names that file and carries its last hash, so the chain is continuous across files.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import threading
from pathlib import Path
from typing import IO, Any

from filelock import FileLock

from guardrail.decision import Decision
from guardrail.record import AuditRecord, Genesis, build_record, canonical_json, utc_now


def segments(path: Path | str) -> list[Path]:
    """All files of the log at ``path``, oldest first: rotated segments, then the active file."""
    path = Path(path)
    pattern = re.compile(rf"^{re.escape(path.stem)}\.(\d+){re.escape(path.suffix)}$")
    rotated = []
    if path.parent.exists():
        for p in path.parent.iterdir():
            m = pattern.match(p.name)
            if m:
                rotated.append((int(m.group(1)), p))
    files = [p for _, p in sorted(rotated)]
    return [*files, path] if path.exists() else files


def _last_complete(fh: IO[bytes]) -> tuple[dict[str, Any] | None, bool]:
    """(last parseable JSON line, whether the file ends in a torn line), reading backwards."""
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
        if torn and candidates:
            candidates = candidates[:-1]
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


class JsonlSink:
    """Append-only, hash-chained JSONL audit log.

    ``redact=True`` stores only SHA-256 hashes of prompts and texts. ``max_bytes`` rotates files.
    ``fsync=True`` also forces each record to disk (survives power loss, costs about a millisecond).
    """

    def __init__(
        self, path: Path | str, *, redact: bool = False, max_bytes: int | None = None, fsync: bool = False
    ) -> None:
        self.path = Path(path)
        self.redact = redact
        self.max_bytes = max_bytes
        self.fsync = fsync
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file_lock = FileLock(str(self.path) + ".lock")
        self._thread_lock = threading.Lock()
        self._fh: IO[bytes] | None = None
        self._closed = False

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

    def _start_file(self, fh: IO[bytes], genesis: str, continues: str | None, first_seq: int) -> None:
        header = Genesis(genesis=genesis, created=utc_now(), continues=continues, first_seq=first_seq)
        fh.write((canonical_json(header.model_dump()) + "\n").encode("utf-8"))

    def _rotate(self, last: dict[str, Any]) -> IO[bytes]:
        assert self._fh is not None
        taken = {int(m.group(1)) for p in segments(self.path) if (m := re.search(r"\.(\d+)\.[^.]+$", p.name))}
        target = self.path.with_name(f"{self.path.stem}.{max(taken, default=0) + 1}{self.path.suffix}")
        self._fh.close()
        self._fh = None
        os.replace(self.path, target)
        fh = self._open()
        self._start_file(fh, str(last["hash"]), target.name, int(last["seq"]) + 1)
        return fh

    def write(self, decision: Decision, *, deployment: str, context: dict[str, Any] | None = None) -> AuditRecord:
        """Append one decision as the next record of the chain; returns the record written."""
        if self._closed:
            raise RuntimeError(f"audit sink {self.path} is closed")
        with self._thread_lock, self._file_lock:
            fh = self._open()
            last, torn = _last_complete(fh)
            if last is None:
                if torn:  # only a torn fragment: keep it visible, start the chain after it
                    fh.write(b"\n")
                self._start_file(fh, secrets.token_hex(32), None, 1)
                last, torn = _last_complete(fh)
                assert last is not None
            elif torn:
                fh.write(b"\n")  # close off the fragment a crash left; the chain continues below
            if last.get("type") == "genesis":
                prev_hash, seq = str(last["genesis"]), int(last.get("first_seq", 1))
            else:
                prev_hash, seq = str(last["hash"]), int(last["seq"]) + 1
                if self.max_bytes is not None and fh.tell() >= self.max_bytes:
                    fh = self._rotate(last)
                    prev_hash = str(last["hash"])
            record = build_record(
                decision, seq=seq, prev_hash=prev_hash, deployment=deployment, redact=self.redact, context=context
            )
            fh.write((canonical_json(record.model_dump(mode="json")) + "\n").encode("utf-8"))
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
        """Flush and close the file; later writes raise."""
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
