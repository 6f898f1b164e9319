"""The files of a rotated JSONL log: which ones belong to it, and opening them consistently.

Rotation renames the full active file to ``<stem>.<n><suffix>`` (``audit.<n>`` for a path with no
suffix). Segments are numbered 1, 2, 3, ... without gaps: a file outside that run
(``audit.20240101.jsonl``: another log) is never read as a segment. Rotated segments never move
again; only the active file is renamed. A live log may be rotated while it is read, so the active
file is opened as one consistent snapshot with the list of segments (``open_active``).
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import IO

from filelock import FileLock, Timeout

from guardrail.audit.jsonl_lines import parse_line
from guardrail.audit.store import AuditLogError, whole


def rotated_name(path: Path, number: int) -> Path:
    """The name segment ``number`` of the log at ``path`` gets: ``<stem>.<number><suffix>``."""
    return path.with_name(f"{path.stem}.{number}{path.suffix}")


def segment_number(path: Path, name: str) -> int | None:
    """The number ``n`` when ``name`` has the form of a rotated segment of the log at ``path`` (else None)."""
    m = re.fullmatch(rf"{re.escape(path.stem)}\.([1-9]\d*){re.escape(path.suffix)}", name)
    return int(m.group(1)) if m else None


def rotated_segments(path: Path) -> list[tuple[int, Path]]:
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
    no suffix) for ``n`` = 1, 2, ... up to the first missing number (see ``rotated_segments``).
    """
    path = Path(path)
    files = [p for _, p in rotated_segments(path)]
    return [*files, path] if path.exists() else files


def _snapshot(path: Path) -> tuple[list[Path], IO[bytes] | None] | None:
    """(rotated segments, handle on the active file or None) if no rotation split listing and opening (else None)."""
    names = [p for _, p in rotated_segments(path)]
    try:
        active: IO[bytes] | None = open(path, "rb")  # noqa: SIM115 - closed by the caller
    except FileNotFoundError:
        active = None  # a crash (or a rotation) between renaming the active file and starting the next one
    except OSError as exc:
        raise AuditLogError(f"cannot read audit log {exc.filename or path} ({exc.strerror})") from None
    try:
        again = [p for _, p in rotated_segments(path)]
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


def missing_before(path: Path, continues: str) -> str | None:
    """When ``continues`` names an existing file of segment form outside the log's run of segments
    (1..k, no gaps), which segment numbers are missing before it (None: not that case)."""
    number = segment_number(path, continues)
    if number is None or not (path.parent / continues).exists():
        return None
    missing = [rotated_name(path, i).name for i in range(1, number) if not rotated_name(path, i).exists()]
    if not missing:
        return None
    names = missing[0] if len(missing) == 1 else f"{missing[0]}, ... ({len(missing)} files)"
    plural = "segment" if len(missing) == 1 else "segments"
    return (
        f"it continues {continues}, but the {plural} {names} before it {'is' if len(missing) == 1 else 'are'} "
        f"missing, so {continues} is not read as a segment of this log (segments are numbered from 1 "
        "without gaps)"
    )


def first_seq_of(head: bytes) -> int | None:
    """The ``first_seq`` of a file whose first bytes are ``head``, when it starts with a genesis line."""
    first, newline, _ = head.partition(b"\n")
    data = parse_line("", 0, first).data if newline else None
    if data is None or data.get("type") != "genesis":
        return None
    return whole(data.get("first_seq", 1))


def file_holding(names: list[Path], active: IO[bytes] | None, seq: int) -> int:
    """Index in ``names`` (``len(names)``: the active file) of the earliest file that can hold ``seq``.

    Scans from the newest file backwards, reading only each file's genesis line: the first
    whose ``first_seq`` is at most ``seq`` holds it (or ``seq`` is not written yet); a file
    without a readable genesis says nothing, so the scan goes on (0 when nothing decides).
    """
    first = None if active is None else first_seq_of(os.pread(active.fileno(), 65536, 0))
    if first is not None and first <= seq:
        return len(names)
    for i in range(len(names) - 1, -1, -1):
        with open_segment(names[i]) as fh:
            first = first_seq_of(fh.read(65536))
        if first is not None and first <= seq:
            return i
    return 0
