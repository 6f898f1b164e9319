"""Reading audit logs: verify the hash chain, tail, stats and policy replay.

Works on both sinks: a JSONL log (with its rotated segments) or a SQLite database
(``.db``/``.sqlite``/``.sqlite3``). Verification recomputes every hash from the stored JSON
itself, so it does not depend on this version's record model.

A path that is not an audit log (a directory, a file another program wrote, a ``.db`` that is not
SQLite) raises ``AuditLogError`` naming the file and, where there is one, the line.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from pydantic import ValidationError

from guardrail.act import intended_action
from guardrail.evaluate import evaluate
from guardrail.policy import Policy
from guardrail.record import canonical_json, compute_hash
from guardrail.score import ValueScores

SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")
EXIT_OK, EXIT_TAMPERED, EXIT_TORN_TAIL = 0, 1, 3


class AuditLogError(ValueError):
    """A path that cannot be read (or written) as an audit log; the message names the file and line."""


def prepare_log_path(path: Path, what: str, example: str) -> None:
    """Before a sink writes ``path``: refuse a folder and create the parent folder, naming the path.

    ``what`` says what the path is ("audit log", "audit database"); ``example`` a file name to suggest.
    """
    if path.is_dir():
        raise AuditLogError(f"{what} {path} is a directory; give a file path, e.g. {path / example}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AuditLogError(f"cannot create the folder of {what} {path} ({exc.strerror})") from None


@dataclass(frozen=True)
class LogLine:
    """One stored line (or row): where it is, and its parsed JSON or why it could not be parsed."""

    file: str
    line: int
    data: dict[str, Any] | None
    error: str | None = None
    terminated: bool = True
    tampered: str | None = None
    """Set by a sink that can tell on its own that this row was altered."""
    fragment: bool = False
    """An unparseable line that is the start of a JSON object cut short: what a crash leaves."""
    empty_file: bool = False
    """Stands for a file that holds no bytes at all (``line`` is 0)."""
    raw: bytes | None = field(default=None, repr=False)
    """The stored bytes of a parsed line (without its newline), for the canonical-bytes check."""


def is_sqlite(path: Path | str) -> bool:
    return Path(path).suffix.lower() in SQLITE_SUFFIXES


def _check_log_path(path: Path) -> None:
    if path.is_dir():
        raise AuditLogError(f"{path} is a directory, not an audit log (give the .jsonl file or the database)")
    if not path.exists() and not (path.parent / f"{path.stem}.1{path.suffix}").exists():
        raise FileNotFoundError(f"no audit log at {path}")


def read_lines(path: Path | str) -> Iterator[LogLine]:
    """Every line of every segment of the log, oldest first (SQLite rows in seq order).

    Blank and unparseable lines are yielded too (``data`` None, ``error`` saying why); a file
    with no bytes at all is yielded as one ``empty_file`` line. A live log may be rotated while it
    is read: the active file is opened as one consistent snapshot with the list of rotated segments
    (``sinks.jsonl.open_active``), then the segments are opened one at a time, in order, and streamed
    line by line: at most two files are open, and a multi-GB file is never held in memory at once.
    """
    path = Path(path)
    _check_log_path(path)
    if is_sqlite(path):
        from guardrail.sinks.sqlite import read_rows

        yield from read_rows(path)
        return
    from guardrail.sinks.jsonl import open_active, open_segment

    names, active = open_active(path)  # only the active file is open while the segments are read
    try:
        for segment in names:  # rotated segments never move: each is opened by name, read, closed
            with open_segment(segment) as fh:
                try:
                    yield from _segment_lines(str(segment), fh, False)
                except OSError as exc:
                    raise AuditLogError(f"cannot read audit log {segment} ({exc.strerror})") from None
        if active is not None:  # the active file: a writer may be appending
            try:
                yield from _segment_lines(str(path), active, True)
            except OSError as exc:
                raise AuditLogError(f"cannot read audit log {path} ({exc.strerror})") from None
    finally:
        if active is not None:
            active.close()


def _segment_lines(name: str, fh: IO[bytes], live: bool) -> Iterator[LogLine]:
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


def parse_line(name: str, n: int, chunk: bytes, terminated: bool = True) -> LogLine:
    """One stored line (without its newline) as a ``LogLine``."""
    from guardrail.sinks.jsonl import is_crash_residue

    if not chunk.strip():
        return LogLine(name, n, None, "an empty line", terminated=terminated)
    try:
        data = json.loads(chunk)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        return LogLine(name, n, data, terminated=terminated, raw=chunk)
    except ValueError as exc:  # UnicodeDecodeError included
        return LogLine(
            name,
            n,
            None,
            f"not a complete JSON record ({exc})",
            terminated=terminated,
            fragment=is_crash_residue(chunk),
        )


def _record_problem(data: dict[str, Any]) -> str | None:
    """Why ``data`` is not a decision record the questions below can read (None: it is one)."""
    for key, kind in (("seq", int), ("ts", str), ("deployment", str), ("action", str), ("policy", dict)):
        value = data.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            return f"'{key}' is missing or not a {kind.__name__}" if key in data else f"no '{key}' field"
    policy = data["policy"]
    if not isinstance(policy.get("name"), str) or not isinstance(policy.get("version"), str):
        return "'policy' has no name and version"
    violations = data.get("violations", [])
    if not isinstance(violations, list) or any(
        not isinstance(v, dict) or not isinstance(v.get("dimension"), str) or not isinstance(v.get("rule_id"), str)
        for v in violations
    ):
        return "'violations' is not a list of violations"
    try:
        datetime.fromisoformat(data["ts"].replace("Z", "+00:00"))
    except ValueError:
        return f"'ts' is not an ISO 8601 time ({data['ts']!r})"
    return None


def _located_records(path: Path | str) -> Iterator[tuple[LogLine, dict[str, Any]]]:
    for line in read_lines(path):
        if line.data is None or line.data.get("type") == "genesis":
            continue
        problem = _record_problem(line.data)
        if problem:
            raise AuditLogError(
                f"{line.file}:{line.line}: not an audit record ({problem}); "
                "`guardrail audit verify` checks the whole log"
            )
        yield line, line.data


def records(path: Path | str) -> Iterator[dict[str, Any]]:
    """The decision records of a log (genesis lines and unreadable lines skipped).

    A complete JSON line that is not a decision record raises ``AuditLogError`` naming it.
    """
    for _, data in _located_records(path):
        yield data


@dataclass
class VerifyReport:
    """What ``verify`` found. ``exit_code``: 0 intact, 1 tampered (or empty, or anchor missed), 3 torn tail."""

    checked: int = 0
    files: int = 0
    problem: str | None = None
    where: str | None = None
    seq: int | None = None
    torn_tail: bool = False
    crash_residue: list[str] = field(default_factory=list)
    first_seq: int | None = None
    last_seq: int | None = None
    head: str | None = None
    """The hash the next record will chain to: the last record's hash (the genesis with no records)."""
    anchor: str | None = None
    """What ``head``/``expect_seq`` matched, when given."""
    notes: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        if self.problem:
            return EXIT_TAMPERED
        return EXIT_TORN_TAIL if self.torn_tail else EXIT_OK

    def summary(self) -> str:
        if self.problem:
            seq = f" (seq {self.seq})" if self.seq is not None else ""
            return f"TAMPERED at {self.where}{seq}: {self.problem}; {self.checked} records verified before it"
        span = ""
        if self.checked:
            span = (
                f" (seq {self.first_seq})"
                if self.first_seq == self.last_seq
                else f" (seq {self.first_seq}-{self.last_seq})"
            )
        text = f"OK: {self.checked} records verified{span}, hash chain intact across {self.files} file(s)"
        if self.head is not None:
            at = f"seq {self.last_seq}" if self.checked else "the genesis, no records yet"
            text += f"; head {self.head} at {at}"
        if self.anchor:
            text += f"; {self.anchor}"
        if self.crash_residue:
            places = ", ".join(self.crash_residue)
            text += f"; {len(self.crash_residue)} torn line(s) from earlier crashes skipped ({places})"
        for note in self.notes:
            text += f"; {note}"
        if self.torn_tail:
            text = f"TORN TAIL at {self.where}: the last record was cut short (a crash while writing); " + text
        return text


def _whole(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _duplicate_key(raw: bytes) -> str | None:
    """A key that some JSON object of ``raw`` holds twice (json.loads keeps only the last), if any."""
    found: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in items]
        if len(set(keys)) != len(keys) and not found:
            found.append(next(k for k in keys if keys.count(k) > 1))
        return dict(items)

    try:
        json.loads(raw, object_pairs_hook=pairs)
    except ValueError:
        return None
    return found[0] if found else None


def _gap(path: Path, continues: str) -> str | None:
    """When ``continues`` names an existing file of segment form outside the log's run of segments
    (1..k, no gaps), which segment numbers are missing before it (None: not that case)."""
    if is_sqlite(path):
        return None
    from guardrail.sinks.jsonl import rotated_name, segment_number

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


def verify(path: Path | str, *, head: str | None = None, expect_seq: int | None = None) -> VerifyReport:
    """Check every record's hash and its link to the previous one; stop at the first problem.

    What a crash can leave is accepted, and only that: a *torn line* (the start of a JSON line,
    cut short) directly before the chain's next line or at the end of a file; at the very end of
    the log it is a torn tail (exit 3). Any other unparseable, blank or foreign line, a file
    without a genesis line, and an empty log (a JSONL file of 0 bytes) are tampering (exit 1).
    A SQLite database its sink never wrote to (no genesis row, no records) verifies with 0 records.

    Every segment of a rotated log is needed: a log whose first file continues another (its
    genesis names the file before it, and starts past seq 1) lost its oldest segments, which is
    tampering (exit 1, naming the missing file); archive whole logs, not their oldest files. A
    line stored in other bytes than the sink writes (re-serialised, CRLF, trailing spaces) but
    with content matching its hash gets a note; one that holds a JSON key twice is tampering,
    since other tools may read the first value while the hash covers the last.

    A hash chain cannot tell that records were deleted from its *end*. To anchor it, note the
    ``head`` hash and seq that an earlier run printed and pass them back: the log must still
    contain that record, at ``expect_seq`` when both are given (records appended since are fine).
    ``expect_seq`` alone only checks that the log still reaches that seq: anyone can append
    well-formed records, so only ``head`` proves that the records up to it are the ones noted.
    """
    wanted = head.strip().lower() if head else None
    report = VerifyReport()
    prev_hash: str | None = None
    expected_seq: int | None = None
    files: list[str] = []
    has_genesis: set[str] = set()
    pending: list[LogLine] = []  # torn lines not yet followed by a complete line
    empty: LogLine | None = None  # the last file seen, when it held no bytes
    last_line: LogLine | None = None
    anchor_at: int | None = None  # seq of the record whose hash is ``head`` (first_seq - 1: a genesis)
    reformatted: list[LogLine] = []  # lines whose bytes are not the canonical JSON the sinks write

    def fail(line: LogLine | None, problem: str, seq: int | None = None) -> VerifyReport:
        if line is None:
            report.where = str(path)
        else:
            report.where = line.file if line.empty_file else f"{line.file}:{line.line}"
        report.problem, report.seq = problem, seq
        report.files = len(files)
        return report

    def residue(lines: list[LogLine]) -> None:
        report.crash_residue.extend(f"{t.file}:{t.line}" for t in lines)
        lines.clear()

    for line in read_lines(path):
        if not files or files[-1] != line.file:
            if empty is not None:
                return fail(empty, "the file is empty, and later files follow it: its records were removed")
            residue(pending)  # the previous file ended in torn lines: a crash before its rotation
            files.append(line.file)
        last_line = line
        if line.tampered:
            return fail(line, line.tampered, _whole((line.data or {}).get("seq")))
        if line.empty_file:
            empty = line
            continue
        if line.data is None:
            if not line.fragment:
                what = "an empty line" if line.error == "an empty line" else f"a line that is {line.error}"
                return fail(line, f"{what}, and not the start of a record cut short by a crash (a line was inserted)")
            pending.append(line)
            continue
        data = line.data
        if line.raw is not None and line.raw != canonical_json(data).encode("utf-8"):
            duplicated = _duplicate_key(line.raw)
            if duplicated is not None:
                return fail(
                    line,
                    f"the line holds the key {duplicated!r} twice: tools that read the first one see other content "
                    "than the hash covers (the line was edited)",
                    _whole(data.get("seq")),
                )
            reformatted.append(line)
        if data.get("type") == "genesis":
            if line.file in has_genesis:
                return fail(line, "a genesis line in the middle of a file (a second log was spliced in)")
            has_genesis.add(line.file)
            genesis, first_seq = data.get("genesis"), _whole(data.get("first_seq", 1))
            if not isinstance(genesis, str) or not genesis or first_seq is None:
                return fail(
                    line,
                    f"a genesis line with genesis {genesis!r} and first_seq {data.get('first_seq')!r} "
                    "(a hash and a whole number were expected): the line was edited",
                )
            continues = data.get("continues")
            if prev_hash is None and (first_seq != 1 or continues is not None):
                missing = (
                    _gap(Path(path), continues) or f"the segment {continues} it continues is missing"
                    if isinstance(continues, str) and continues
                    else "the records before it are missing"
                )
                return fail(
                    line,
                    f"the log starts at seq {first_seq}; {missing} (its oldest segment(s) were deleted or moved "
                    "away; verify needs every segment of the log)",
                    first_seq,
                )
            if prev_hash is not None and genesis != prev_hash:
                gap = _gap(Path(path), continues) if isinstance(continues, str) else None
                return fail(
                    line,
                    f"this file's genesis does not carry the previous file's last hash ({gap})"
                    if gap
                    else "this file's genesis does not carry the previous file's last hash (files out of order?)",
                )
            if prev_hash is not None and len(files) > 1 and continues != Path(files[-2]).name:
                report.notes.append(
                    f"{line.file}:{line.line} says it continues {continues}, but the file before it is "
                    f"{Path(files[-2]).name} (the chain is continuous; were the files renamed?)"
                )
            if expected_seq is not None and first_seq != expected_seq:
                return fail(line, f"this file starts at seq {first_seq}, expected {expected_seq}")
            residue(pending)  # torn lines before it: crashes while the file was being started
            prev_hash, expected_seq = genesis, first_seq
            if report.head is None:
                report.first_seq = first_seq
            report.head = genesis
            if wanted is not None and genesis == wanted and anchor_at is None:
                anchor_at = first_seq - 1
            continue
        seq = _whole(data.get("seq"))
        if line.file not in has_genesis or prev_hash is None or expected_seq is None:
            return fail(line, "a file without a genesis line", seq)
        if not {"seq", "prev_hash", "hash"} <= set(data):
            return fail(
                line, "a JSON object that is not an audit record (no seq, prev_hash or hash): a line was inserted"
            )
        residue(pending)  # torn lines before it: crashes, after which the chain went on
        body = {k: v for k, v in data.items() if k != "hash"}
        if compute_hash(body) != data.get("hash"):
            return fail(line, "the record's content does not match its hash (the record was edited)", seq)
        if seq is None or seq != expected_seq:
            what = (
                "missing (deleted?)"
                if seq is not None and seq > expected_seq
                else "out of order or duplicated (reordered or inserted?)"
            )
            return fail(line, f"seq {data.get('seq')} where {expected_seq} was expected: records {what}", seq)
        if data.get("prev_hash") != prev_hash:
            return fail(
                line,
                "prev_hash does not match the previous record's hash (a record was inserted, deleted or reordered)",
                seq,
            )
        prev_hash, expected_seq = str(data["hash"]), seq + 1
        report.checked += 1
        report.last_seq, report.head = seq, prev_hash
        if report.first_seq is None:
            report.first_seq = seq
        if wanted is not None and prev_hash == wanted:
            anchor_at = seq
    report.files = len(files)
    if reformatted:
        report.notes.append(
            f"{len(reformatted)} line(s) are not stored as the sink writes them (canonical JSON, one line each; "
            f"first at {reformatted[0].file}:{reformatted[0].line}): re-serialised, CRLF or trailing spaces; "
            "their content still matches their hashes"
        )
    if empty is not None:
        if len(files) == 1:
            return fail(
                empty,
                "the file is empty: an audit log starts with its genesis line, so this one was truncated "
                "(or its writer crashed before writing anything); nothing in it can be verified",
            )
        report.files -= 1
        report.notes.append(f"{empty.file} is empty (a crash during rotation; the next write continues the chain)")
    elif last_line is None:  # only SQLite yields nothing: a database its sink never wrote to
        report.notes.append("the database holds no records yet (no genesis row)")
    if pending:
        if pending[-1].terminated:
            return fail(pending[-1], f"a line that is {pending[-1].error}, followed by no record (not a crash)")
        report.torn_tail, report.where = True, f"{pending[-1].file}:{pending[-1].line}"
        residue(pending[:-1])
    if wanted is None and expect_seq is None:
        return report
    last = report.last_seq if report.last_seq is not None else (report.first_seq or 1) - 1
    ends = f"the log ends at seq {last} with head {report.head}"
    if wanted is not None and anchor_at is None:
        return fail(
            last_line,
            f"the noted head {wanted} is not in the log ({ends}): records were deleted from its end, or rewritten "
            "(or the head was noted from another log)",
            last,
        )
    if wanted is not None and expect_seq is not None and anchor_at != expect_seq:
        return fail(
            last_line,
            f"the noted head {wanted} is the record at seq {anchor_at}, not at seq {expect_seq} as noted ({ends}): "
            "the noted seq and hash disagree (mis-copied?)",
            last,
        )
    if anchor_at is None and expect_seq is not None and last < expect_seq:
        return fail(last_line, f"seq {expect_seq} was noted, but {ends}: records were deleted from its end", last)
    anchored = anchor_at if anchor_at is not None else expect_seq
    assert anchored is not None
    since = f"{last - anchored} record(s) appended since" if last > anchored else "nothing appended since"
    found = f"seq {anchored} has the noted hash" if wanted is not None else f"the log reaches seq {anchored}"
    report.anchor = f"anchor found: {found}, {since}"
    return report


# ----------------------------------------------------------------------------- questions


def tail(path: Path | str, n: int = 10) -> list[dict[str, Any]]:
    """The last ``n`` decision records."""
    return tail_and_last_seq(path, n)[0]


def tail_and_last_seq(path: Path | str, n: int = 10) -> tuple[list[dict[str, Any]], int]:
    """(the last ``n`` decision records, the seq of the last record read: 0 when there is none).

    Pass the seq to ``follow(after_seq=...)`` to print what was appended after this scan, with no gap.
    """
    from collections import deque

    last: deque[dict[str, Any]] = deque(maxlen=n)
    seq = 0
    for record in records(path):
        last.append(record)
        seq = record["seq"]
    return list(last), seq


def follow(
    path: Path | str, poll_s: float = 0.5, stop_after_s: float | None = None, *, after_seq: int | None = None
) -> Iterator[dict[str, Any]]:
    """Yield records as they are appended (like ``tail -f``); ``stop_after_s`` bounds it.

    Without ``after_seq`` it starts at the current end. With it, it yields every record whose seq
    is past ``after_seq`` first (those already in the log, then new ones): ``tail_and_last_seq``
    then ``follow(after_seq=...)`` misses nothing appended between the two. Reads only what is
    new: the active file's bytes past what was read (a rotation is followed by finishing the
    renamed file, then the segments after it, opened one at a time), or the rows past the last seq
    for SQLite. A record is yielded only if its seq is past the last one yielded, so none repeats.
    """
    path = Path(path)
    _check_log_path(path)
    deadline = None if stop_after_s is None else time.monotonic() + stop_after_s
    source = _SqliteFollower(path, after_seq) if is_sqlite(path) else _JsonlFollower(path, after_seq)
    try:
        while True:
            yield from source.poll()
            if deadline is not None and time.monotonic() >= deadline:
                return
            time.sleep(poll_s if deadline is None else max(0.0, min(poll_s, deadline - time.monotonic())))
    finally:
        source.close()


def _first_seq(head: bytes) -> int | None:
    """The ``first_seq`` of a file whose first bytes are ``head``, when it starts with a genesis line."""
    first, newline, _ = head.partition(b"\n")
    data = parse_line("", 0, first).data if newline else None
    if data is None or data.get("type") != "genesis":
        return None
    return _whole(data.get("first_seq", 1))


class _JsonlFollower:
    """New records of a JSONL log, by file identity and offset; ``last_seq`` keeps out repeats.

    Holds one file open: the one being read (``fh``), which becomes rotated segment ``number``
    when a writer renames it (rotated segments are numbered 1..k without gaps, see
    ``sinks.jsonl``). With no file open, ``number`` is the next segment to read.
    """

    def __init__(self, path: Path, after_seq: int | None = None) -> None:
        from guardrail.sinks.jsonl import open_active

        self.path = path
        self.last_seq: int | None = after_seq
        self.buffer = b""
        self.name = str(path)
        names, active = open_active(path)
        self.number = len(names) + 1
        self.fh: IO[bytes] | None = active
        if after_seq is not None:
            self.number = self._start(names, active, after_seq + 1) + 1
            self.fh = None  # the first poll reads from segment ``number`` (or the active file) on
            if active is not None:
                active.close()
        elif self.fh is not None:
            self._start_at_end(self.fh)

    @staticmethod
    def _start(names: list[Path], active: IO[bytes] | None, seq: int) -> int:
        """Index in ``names`` (``len(names)``: the active file) of the earliest file that can hold ``seq``.

        Scans from the newest file backwards, reading only each file's genesis line: the first
        whose ``first_seq`` is at most ``seq`` holds it (or ``seq`` is not written yet); a file
        without a readable genesis says nothing, so the scan goes on (0 when nothing decides).
        """
        from guardrail.sinks.jsonl import open_segment

        first = None if active is None else _first_seq(os.pread(active.fileno(), 65536, 0))
        if first is not None and first <= seq:
            return len(names)
        for i in range(len(names) - 1, -1, -1):
            with open_segment(names[i]) as fh:
                first = _first_seq(fh.read(65536))
            if first is not None and first <= seq:
                return i
        return 0

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
            seq = None if data is None else _whole(data.get("seq"))
            if data is not None and data.get("type") == "genesis":
                first = _whole(data.get("first_seq", 1))
                seq = None if first is None else first - 1
            if seq is not None:
                self.last_seq = seq
                return

    @staticmethod
    def _identity(fh: IO[bytes]) -> tuple[int, int]:
        st = os.fstat(fh.fileno())
        return st.st_ino, st.st_dev

    def _read(self, fh: IO[bytes], name: str) -> Iterator[dict[str, Any]]:
        lines = (self.buffer + fh.read()).split(b"\n")
        self.buffer = lines.pop()  # b"" after a final newline, else a line not finished yet
        for chunk in lines:
            record = parse_line(name, 0, chunk).data
            if record is None or record.get("type") == "genesis":
                continue  # a torn line from a crash, or the start of a file
            seq = _whole(record.get("seq"))
            problem = "no seq" if seq is None else _record_problem(record)
            if seq is None or problem:
                raise AuditLogError(f"{name}: a line that is not an audit record ({problem})")
            if self.last_seq is None or seq > self.last_seq:
                self.last_seq = seq
                yield record

    def poll(self) -> Iterator[dict[str, Any]]:
        from guardrail.sinks.jsonl import open_active, open_segment

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
                    self.number = self._start(names, active, (self.last_seq or 0) + 1) + 1
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


class _SqliteFollower:
    """New rows of a SQLite log, by seq."""

    def __init__(self, path: Path, after_seq: int | None = None) -> None:
        import sqlite3

        self.path = path
        self.conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        if after_seq is not None:
            self.last_seq = after_seq
            return
        row = self.conn.execute("SELECT max(seq) FROM records").fetchone()
        self.last_seq = int(row[0]) if row and row[0] is not None else 0

    def poll(self) -> Iterator[dict[str, Any]]:
        rows = self.conn.execute("SELECT seq, record FROM records WHERE seq > ? ORDER BY seq", (self.last_seq,))
        for seq, text in rows.fetchall():
            self.last_seq = seq
            try:
                record = json.loads(text)
            except (TypeError, ValueError):
                raise AuditLogError(f"{self.path}: row seq {seq} holds no valid JSON record") from None
            yield record

    def close(self) -> None:
        self.conn.close()


def one_line(record: dict[str, Any]) -> str:
    """``seq ts deployment action policy violated-values``, for terminals."""
    dims = sorted({v["dimension"] for v in record.get("violations", [])})
    policy = record.get("policy", {})
    return (
        f"{record.get('seq'):>6} {record.get('ts', '')[:19]} {record.get('deployment', ''):<12} "
        f"{record.get('action', ''):<8} {policy.get('name', '')}@{policy.get('version', '')} "
        f"{','.join(dims) or '-'}{'  ERROR ' + record['error'] if record.get('error') else ''}"
    )


def _bucket(ts: str, window: str) -> str:
    moment = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    return moment.strftime({"hour": "%Y-%m-%d %H:00", "day": "%Y-%m-%d", "week": "%G-W%V"}[window])


def policy_key(policy: dict[str, Any]) -> str:
    """How ``stats`` names a policy: ``name@version#<first 8 hex of its content hash>``.

    Name and version alone are not enough: a policy without a ``version`` is "1", and an edited
    file keeps its name, so two different rule sets can share them. The hash is what decided;
    ``guardrail policy validate`` prints it (its first 16 hex), ``guardrail policy show`` in full.
    """
    key = f"{policy['name']}@{policy['version']}"
    digest = policy.get("hash")
    return f"{key}#{digest[:8]}" if isinstance(digest, str) and digest else key


def stats(path: Path | str, window: str = "day") -> dict[str, Any]:
    """Counts by action, violated value, policy (see ``policy_key``), deployment, and per time window."""
    by_action: Counter[str] = Counter()
    by_value: Counter[str] = Counter()
    by_policy: Counter[str] = Counter()
    by_deployment: Counter[str] = Counter()
    by_window: dict[str, Counter[str]] = {}
    errors = total = 0
    for r in records(path):
        total += 1
        by_action[r["action"]] += 1
        by_policy[policy_key(r["policy"])] += 1
        by_deployment[r["deployment"]] += 1
        for dim in {v["dimension"] for v in r.get("violations", [])}:
            by_value[dim] += 1
        by_window.setdefault(_bucket(r["ts"], window), Counter())[r["action"]] += 1
        errors += r.get("error") is not None
    return {
        "records": total,
        "errors": errors,
        "by_action": dict(by_action.most_common()),
        "by_violated_value": dict(by_value.most_common()),
        "by_policy": dict(by_policy.most_common()),
        "by_deployment": dict(by_deployment.most_common()),
        "window": window,
        "by_window": {k: dict(v) for k, v in sorted(by_window.items())},
    }


def replay(path: Path | str, policy: Policy, examples: int = 5) -> dict[str, Any]:
    """What ``policy`` would have decided for every recorded score vector, without re-scoring.

    Compares *intended* actions (what each policy asks for), so shadow-mode records count as
    what they would have done. Rewrites cannot be replayed without the LLM: they are compared
    as "rewrite", not as their outcome.
    """
    transitions: Counter[tuple[str, str]] = Counter()
    changed: list[dict[str, Any]] = []
    replayed = skipped = 0
    for line, r in _located_records(path):
        if r.get("scores") is None:
            skipped += 1  # a decision made without scores (scoring failed): nothing to replay
            continue
        try:
            scores = ValueScores.model_validate(r["scores"])
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(k) for k in first["loc"])
            raise AuditLogError(
                f"{line.file}:{line.line}: the record's scores cannot be replayed ({where}: {first['msg']})"
            ) from None
        violations = evaluate(scores, policy)
        new, old = intended_action(violations), r.get("intended_action", r["action"])
        transitions[(old, new)] += 1
        replayed += 1
        if new != old and len(changed) < examples:
            changed.append(
                {
                    "seq": r["seq"],
                    "ts": r["ts"],
                    "was": old,
                    "now": new,
                    "rules": [v.rule_id for v in violations],
                    "was_rules": [v["rule_id"] for v in r.get("violations", [])],
                }
            )
    n_changed = sum(n for (a, b), n in transitions.items() if a != b)
    return {
        "policy": policy.ref.model_dump(),
        "replayed": replayed,
        "skipped_without_scores": skipped,
        "changed": n_changed,
        "transitions": {f"{a} -> {b}": n for (a, b), n in sorted(transitions.items())},
        "examples": changed,
    }
