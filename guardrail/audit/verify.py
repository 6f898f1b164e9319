"""``guardrail audit verify``: check a log's hash chain from what its store holds, on any store.

Verification recomputes every hash from the stored JSON itself, so it does not depend on this
version's record model. It reads the store's ``LogLine``s in order and follows the chain: genesis
lines start it (or continue it in the next file of a rotated log), each record must carry the
next seq, the previous hash and a hash of its own content. What a store can tell on its own (a
torn line, a missing segment, an edited row, where its head row says the chain ends) arrives on
the lines; nothing here knows which kind of store it reads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from guardrail.audit.store import AuditStore, Head, LogLine, whole
from guardrail.audit.targets import opened
from guardrail.record import canonical_json, compute_hash

EXIT_OK, EXIT_TAMPERED, EXIT_TORN_TAIL = 0, 1, 3


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
    part: str = "file"
    """What the store's lines come in: "file", or "log" for a database log."""

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
        text = f"OK: {self.checked} records verified{span}, hash chain intact across {self.files} {self.part}(s)"
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


def verify(target: AuditStore | Path | str, *, head: str | None = None, expect_seq: int | None = None) -> VerifyReport:
    """Check every record's hash and its link to the previous one; stop at the first problem.

    ``target`` is a store, or a path or URL (``open_store``). What a crash can leave is accepted,
    and only that: a *torn line* (the start of a JSON line, cut short) directly before the chain's
    next line or at the end of a file; at the very end of the log it is a torn tail (exit 3). Any
    other unparseable, blank or foreign line, a file without a genesis line, and an empty log (a
    JSONL file of 0 bytes) are tampering (exit 1). A database log never written to verifies with 0
    records. A store that keeps a head row has the chain's end checked against it.

    Every segment of a rotated log is needed: a log whose first file continues another (its
    genesis names the file before it, and starts past seq 1) lost its oldest segments, which is
    tampering (exit 1, naming the missing file); archive whole logs, not their oldest files. A
    line stored in other bytes than the store writes (re-serialised, CRLF, trailing spaces) but
    with content matching its hash gets a note; one that holds a JSON key twice is tampering,
    since other tools may read the first value while the hash covers the last.

    A hash chain cannot tell that records were deleted from its *end*. To anchor it, note the
    ``head`` hash and seq that an earlier run printed and pass them back: the log must still
    contain that record, at ``expect_seq`` when both are given (records appended since are fine).
    ``expect_seq`` alone only checks that the log still reaches that seq: anyone can append
    well-formed records, so only ``head`` proves that the records up to it are the ones noted.
    """
    with opened(target) as store:
        chain = _Chain(store.name, head.strip().lower() if head else None)
        chain.report.part = store.part
        try:
            for line in store.lines():
                chain.take(line)
            chain.finish()
            chain.check_anchor(expect_seq)
        except _Tampered as found:
            return chain.fail(found)
        return chain.report


class _Tampered(Exception):
    def __init__(self, line: LogLine | None, problem: str, seq: int | None = None) -> None:
        super().__init__(problem)
        self.line, self.problem, self.seq = line, problem, seq


class _Chain:
    """The chain as read so far; ``take`` each line in order, then ``finish`` and ``check_anchor``."""

    def __init__(self, name: str, wanted: str | None) -> None:
        self.name, self.wanted = name, wanted
        self.report = VerifyReport()
        self.prev_hash: str | None = None
        self.expected_seq: int | None = None
        self.files: list[str] = []
        self.has_genesis: set[str] = set()
        self.pending: list[LogLine] = []  # torn lines not yet followed by a complete line
        self.empty: LogLine | None = None  # the last file seen, when it held no bytes
        self.last_line: LogLine | None = None
        self.store_head: LogLine | None = None
        self.anchor_at: int | None = None  # seq of the record whose hash is ``wanted`` (first_seq - 1: a genesis)
        self.reformatted: list[LogLine] = []  # lines whose bytes are not the canonical JSON the stores write

    def fail(self, found: _Tampered) -> VerifyReport:
        report = self.report
        report.where = self.name if found.line is None else found.line.where
        report.problem, report.seq = found.problem, found.seq
        report.files = len(self.files)
        return report

    def _residue(self, lines: list[LogLine]) -> None:
        self.report.crash_residue.extend(t.where for t in lines)
        lines.clear()

    def take(self, line: LogLine) -> None:
        if line.head is not None:
            self.store_head = line
            return
        if not self.files or self.files[-1] != line.file:
            if self.empty is not None:
                raise _Tampered(self.empty, "the file is empty, and later files follow it: its records were removed")
            self._residue(self.pending)  # the previous file ended in torn lines: a crash before its rotation
            self.files.append(line.file)
        self.last_line = line
        if line.tampered:
            raise _Tampered(line, line.tampered, whole((line.data or {}).get("seq")))
        if line.empty_file:
            self.empty = line
        elif line.data is None:
            self._unparsed(line)
        else:
            self._check_bytes(line, line.data)
            if line.data.get("type") == "genesis":
                self._genesis(line, line.data)
            else:
                self._record(line, line.data)

    def _unparsed(self, line: LogLine) -> None:
        if not line.fragment:
            what = "an empty line" if line.error == "an empty line" else f"a line that is {line.error}"
            raise _Tampered(line, f"{what}, and not the start of a record cut short by a crash (a line was inserted)")
        self.pending.append(line)

    def _check_bytes(self, line: LogLine, data: dict[str, Any]) -> None:
        if line.raw is None or line.raw == canonical_json(data).encode("utf-8"):
            return
        duplicated = _duplicate_key(line.raw)
        if duplicated is not None:
            raise _Tampered(
                line,
                f"the line holds the key {duplicated!r} twice: tools that read the first one see other content "
                "than the hash covers (the line was edited)",
                whole(data.get("seq")),
            )
        self.reformatted.append(line)

    def _genesis(self, line: LogLine, data: dict[str, Any]) -> None:
        if line.file in self.has_genesis:
            raise _Tampered(line, "a genesis line in the middle of a file (a second log was spliced in)")
        self.has_genesis.add(line.file)
        genesis, first_seq = data.get("genesis"), whole(data.get("first_seq", 1))
        if not isinstance(genesis, str) or not genesis or first_seq is None:
            raise _Tampered(
                line,
                f"a genesis line with genesis {genesis!r} and first_seq {data.get('first_seq')!r} "
                "(a hash and a whole number were expected): the line was edited",
            )
        continues = data.get("continues")
        if self.prev_hash is None and (first_seq != 1 or continues is not None):
            missing = (
                line.missing_before or f"the segment {continues} it continues is missing"
                if isinstance(continues, str) and continues
                else "the records before it are missing"
            )
            raise _Tampered(
                line,
                f"the log starts at seq {first_seq}; {missing} (its oldest segment(s) were deleted or moved "
                "away; verify needs every segment of the log)",
                first_seq,
            )
        if self.prev_hash is not None and genesis != self.prev_hash:
            why = line.missing_before or "files out of order?"
            raise _Tampered(line, f"this file's genesis does not carry the previous file's last hash ({why})")
        if self.prev_hash is not None and len(self.files) > 1 and continues != Path(self.files[-2]).name:
            self.report.notes.append(
                f"{line.where} says it continues {continues}, but the file before it is "
                f"{Path(self.files[-2]).name} (the chain is continuous; were the files renamed?)"
            )
        if self.expected_seq is not None and first_seq != self.expected_seq:
            raise _Tampered(line, f"this file starts at seq {first_seq}, expected {self.expected_seq}")
        self._residue(self.pending)  # torn lines before it: crashes while the file was being started
        self.prev_hash, self.expected_seq = genesis, first_seq
        if self.report.head is None:
            self.report.first_seq = first_seq
        self.report.head = genesis
        if self.wanted is not None and genesis == self.wanted and self.anchor_at is None:
            self.anchor_at = first_seq - 1

    def _record(self, line: LogLine, data: dict[str, Any]) -> None:
        seq = whole(data.get("seq"))
        if line.file not in self.has_genesis or self.prev_hash is None or self.expected_seq is None:
            raise _Tampered(line, "a file without a genesis line", seq)
        if not {"seq", "prev_hash", "hash"} <= set(data):
            raise _Tampered(
                line, "a JSON object that is not an audit record (no seq, prev_hash or hash): a line was inserted"
            )
        self._residue(self.pending)  # torn lines before it: crashes, after which the chain went on
        body = {k: v for k, v in data.items() if k != "hash"}
        if compute_hash(body) != data.get("hash"):
            raise _Tampered(line, "the record's content does not match its hash (the record was edited)", seq)
        expected = self.expected_seq
        if seq is None or seq != expected:
            what = (
                "missing (deleted?)"
                if seq is not None and seq > expected
                else "out of order or duplicated (reordered or inserted?)"
            )
            raise _Tampered(line, f"seq {data.get('seq')} where {expected} was expected: records {what}", seq)
        if data.get("prev_hash") != self.prev_hash:
            raise _Tampered(
                line,
                "prev_hash does not match the previous record's hash (a record was inserted, deleted or reordered)",
                seq,
            )
        self.prev_hash, self.expected_seq = str(data["hash"]), seq + 1
        report = self.report
        report.checked += 1
        report.last_seq, report.head = seq, self.prev_hash
        if report.first_seq is None:
            report.first_seq = seq
        if self.wanted is not None and self.prev_hash == self.wanted:
            self.anchor_at = seq

    def finish(self) -> None:
        """What only the end of the log tells: an empty file, a torn tail, the store's head row."""
        report = self.report
        report.files = len(self.files)
        if self.reformatted:
            first = self.reformatted[0]
            report.notes.append(
                f"{len(self.reformatted)} line(s) are not stored as the sink writes them (canonical JSON, one line "
                f"each; first at {first.where}): re-serialised, CRLF or trailing spaces; "
                "their content still matches their hashes"
            )
        if self.empty is not None:
            if len(self.files) == 1:
                raise _Tampered(
                    self.empty,
                    "the file is empty: an audit log starts with its genesis line, so this one was truncated "
                    "(or its writer crashed before writing anything); nothing in it can be verified",
                )
            report.files -= 1
            report.notes.append(
                f"{self.empty.file} is empty (a crash during rotation; the next write continues the chain)"
            )
        elif self.last_line is None:  # only a database yields nothing: one its store never wrote to
            report.notes.append("the database holds no records yet (no genesis row)")
        if self.store_head is not None and self.store_head.head is not None:
            self._check_store_head(self.store_head, self.store_head.head)
        if self.pending:
            if self.pending[-1].terminated:
                last = self.pending[-1]
                raise _Tampered(last, f"a line that is {last.error}, followed by no record (not a crash)")
            report.torn_tail, report.where = True, self.pending[-1].where
            self._residue(self.pending[:-1])

    def _check_store_head(self, line: LogLine, head: Head) -> None:
        last = self.report.last_seq if self.report.last_seq is not None else (self.report.first_seq or 1) - 1
        if (head.seq, head.hash) == (last, self.report.head):
            return
        if head.seq > last:
            why = "records were deleted from its end (or the head row was edited)"
        elif head.seq < last:
            why = "records were added after it without moving it (inserted?), or the head row was edited"
        else:
            why = "the last record was replaced (or the head row was edited)"
        raise _Tampered(
            line,
            f"the head row says the chain ends at seq {head.seq} with hash {head.hash}, but it ends at seq {last} "
            f"with hash {self.report.head}: {why}",
            last,
        )

    def check_anchor(self, expect_seq: int | None) -> None:
        """The noted ``head`` hash and ``expect_seq``, when given, against the chain just read."""
        wanted, report, where = self.wanted, self.report, self.last_line
        if wanted is None and expect_seq is None:
            return
        last = report.last_seq if report.last_seq is not None else (report.first_seq or 1) - 1
        ends = f"the log ends at seq {last} with head {report.head}"
        if wanted is not None and self.anchor_at is None:
            raise _Tampered(
                where,
                f"the noted head {wanted} is not in the log ({ends}): records were deleted from its end, or "
                "rewritten (or the head was noted from another log)",
                last,
            )
        if wanted is not None and expect_seq is not None and self.anchor_at != expect_seq:
            raise _Tampered(
                where,
                f"the noted head {wanted} is the record at seq {self.anchor_at}, not at seq {expect_seq} as noted "
                f"({ends}): the noted seq and hash disagree (mis-copied?)",
                last,
            )
        if self.anchor_at is None and expect_seq is not None and last < expect_seq:
            raise _Tampered(where, f"seq {expect_seq} was noted, but {ends}: records were deleted from its end", last)
        anchored = self.anchor_at if self.anchor_at is not None else expect_seq
        assert anchored is not None
        since = f"{last - anchored} record(s) appended since" if last > anchored else "nothing appended since"
        found = f"seq {anchored} has the noted hash" if wanted is not None else f"the log reaches seq {anchored}"
        report.anchor = f"anchor found: {found}, {since}"


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
