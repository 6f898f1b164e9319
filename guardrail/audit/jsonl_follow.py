"""Following a live JSONL log (``tail -f``) across rotations, reading only what is new."""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import IO

from guardrail.audit.jsonl_lines import parse_line
from guardrail.audit.segments import file_holding, open_active, open_segment
from guardrail.audit.store import LogLine, whole


def follow_jsonl(path: Path, after_seq: int | None) -> Generator[list[LogLine], None, None]:
    """Batches of the lines appended to the log at ``path`` (see ``AuditStore.follow``)."""
    follower = _Follower(path, after_seq)
    try:
        while True:
            yield list(follower.poll())
    finally:
        follower.close()


class _Follower:
    """New lines of a JSONL log, by file identity and offset.

    Holds one file open: the one being read (``fh``), which becomes rotated segment ``number``
    when a writer renames it (rotated segments are numbered 1..k without gaps, see
    ``segments``). With no file open, ``number`` is the next segment to read. ``last_seq`` is the
    last seq read, for when the file read so far is replaced by another.
    """

    def __init__(self, path: Path, after_seq: int | None = None) -> None:
        self.path = path
        self.last_seq: int | None = after_seq
        self.buffer = b""
        self.name = str(path)
        names, active = open_active(path)
        self.number = len(names) + 1
        self.fh: IO[bytes] | None = active
        if after_seq is not None:
            self.number = file_holding(names, active, after_seq + 1) + 1
            self.fh = None  # the first poll reads from segment ``number`` (or the active file) on
            if active is not None:
                active.close()
        elif self.fh is not None:
            self._start_at_end(self.fh)

    def _start_at_end(self, fh: IO[bytes]) -> None:
        """Position after the last complete line (a line being written is read when it is done)."""
        end = fh.seek(0, os.SEEK_END)
        start = max(0, end - 65536)
        fh.seek(start)
        block = fh.read(end - start)
        cut = block.rfind(b"\n")
        if cut < 0 and start > 0:
            fh.seek(end)  # a line longer than the block: follow from the end
            return
        fh.seek(start + cut + 1)
        lines = block.split(b"\n")
        for chunk in reversed(lines if start == 0 else lines[1:]):  # the first may be cut by the block
            data = parse_line(self.name, 0, chunk).data
            seq = None if data is None else whole(data.get("seq"))
            if data is not None and data.get("type") == "genesis":
                first = whole(data.get("first_seq", 1))
                seq = None if first is None else first - 1
            if seq is not None:
                self.last_seq = seq
                return

    @staticmethod
    def _identity(fh: IO[bytes]) -> tuple[int, int]:
        st = os.fstat(fh.fileno())
        return st.st_ino, st.st_dev

    def _read(self, fh: IO[bytes], name: str) -> Iterator[LogLine]:
        lines = (self.buffer + fh.read()).split(b"\n")
        self.buffer = lines.pop()  # b"" after a final newline, else a line not finished yet
        for chunk in lines:
            line = parse_line(name, 0, chunk)
            seq = None if line.data is None else whole(line.data.get("seq"))
            if seq is not None and (self.last_seq is None or seq > self.last_seq):
                self.last_seq = seq
            yield line

    def poll(self) -> Iterator[LogLine]:
        if self.fh is not None:
            yield from self._read(self.fh, self.name)
            try:
                now = os.stat(self.path)
                if (now.st_ino, now.st_dev) == self._identity(self.fh):
                    return  # still the active file: nothing else to read
            except FileNotFoundError:
                pass  # renamed away (a rotation in progress), or removed
        names, active = open_active(self.path)  # lists names; opens only the active file
        try:
            if self.fh is not None:
                if len(names) >= self.number:  # rotated: finish this file (now segment ``number``)
                    yield from self._read(self.fh, self.name)
                    self.number += 1
                elif active is not None and self._identity(active) == self._identity(self.fh):
                    return
                else:  # the file read so far is no longer the log's: seq says what is new
                    self.number = file_holding(names, active, (self.last_seq or 0) + 1) + 1
                self.fh.close()
                self.fh = None
            while self.number <= len(names):  # the segments after it, one at a time
                segment = names[self.number - 1]
                self.buffer, self.name = b"", str(segment)
                with open_segment(segment) as fh:
                    yield from self._read(fh, self.name)
                self.number += 1
            if active is not None:  # then the active file, kept open (it becomes segment ``number``)
                self.buffer, self.name, self.fh, active = b"", str(self.path), active, None
                yield from self._read(self.fh, self.name)
        finally:
            if active is not None:
                active.close()

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()
            self.fh = None
