"""Reading audit logs: verify the hash chain, tail, stats and policy replay.

Works on both sinks: a JSONL log (with its rotated segments) or a SQLite database
(``.db``/``.sqlite``/``.sqlite3``). Verification recomputes every hash from the stored JSON
itself, so it does not depend on this version's record model.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from guardrail.act import intended_action
from guardrail.evaluate import evaluate
from guardrail.policy import Policy
from guardrail.record import compute_hash
from guardrail.score import ValueScores

SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")
EXIT_OK, EXIT_TAMPERED, EXIT_TORN_TAIL = 0, 1, 3


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


def is_sqlite(path: Path | str) -> bool:
    return Path(path).suffix.lower() in SQLITE_SUFFIXES


def read_lines(path: Path | str) -> Iterator[LogLine]:
    """Every line of every segment of the log, oldest first (SQLite rows in seq order)."""
    path = Path(path)
    if not path.exists() and not (path.parent / f"{path.stem}.1{path.suffix}").exists():
        raise FileNotFoundError(f"no audit log at {path}")
    if is_sqlite(path):
        from guardrail.sinks.sqlite import read_rows

        yield from read_rows(path)
        return
    from guardrail.sinks.jsonl import segments

    for segment in segments(path):
        raw = segment.read_bytes()
        chunks = raw.split(b"\n")
        for n, chunk in enumerate(chunks, 1):
            last = n == len(chunks)
            if last and not chunk:
                break  # the file ended with a newline
            if not chunk.strip():
                continue
            try:
                data = json.loads(chunk)
                if not isinstance(data, dict):
                    raise ValueError("not a JSON object")
                yield LogLine(str(segment), n, data, terminated=not last)
            except ValueError as exc:
                yield LogLine(str(segment), n, None, f"not a complete JSON record ({exc})", terminated=not last)


def records(path: Path | str) -> Iterator[dict[str, Any]]:
    """The decision records of a log (genesis lines and unreadable lines skipped)."""
    for line in read_lines(path):
        if line.data is not None and line.data.get("type") != "genesis":
            yield line.data


@dataclass
class VerifyReport:
    """What ``verify`` found. ``exit_code``: 0 intact, 1 tampered, 3 torn tail (crash)."""

    checked: int = 0
    files: int = 0
    problem: str | None = None
    where: str | None = None
    seq: int | None = None
    torn_tail: bool = False
    crash_residue: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        if self.problem:
            return EXIT_TAMPERED
        return EXIT_TORN_TAIL if self.torn_tail else EXIT_OK

    def summary(self) -> str:
        if self.problem:
            seq = f" (seq {self.seq})" if self.seq is not None else ""
            return f"TAMPERED at {self.where}{seq}: {self.problem}; {self.checked} records verified before it"
        text = f"OK: {self.checked} records verified, hash chain intact across {self.files} file(s)"
        if self.crash_residue:
            places = ", ".join(self.crash_residue)
            text += f"; {len(self.crash_residue)} torn line(s) from earlier crashes skipped ({places})"
        if self.torn_tail:
            text = f"TORN TAIL at {self.where}: the last record was cut short (a crash while writing); " + text
        return text


def verify(path: Path | str) -> VerifyReport:
    """Check every record's hash and its link to the previous one; stop at the first problem."""
    report = VerifyReport()
    prev_hash: str | None = None
    expected_seq: int | None = None
    files: set[str] = set()
    pending_torn: LogLine | None = None

    def fail(line: LogLine, problem: str, seq: int | None = None) -> VerifyReport:
        report.problem, report.where, report.seq = problem, f"{line.file}:{line.line}", seq
        report.files = len(files)
        return report

    for line in read_lines(path):
        first_in_file = line.file not in files
        files.add(line.file)
        if line.tampered:
            return fail(line, line.tampered, (line.data or {}).get("seq"))
        if line.data is None:
            if pending_torn is not None:
                return fail(pending_torn, str(pending_torn.error))
            pending_torn = line
            continue
        if pending_torn is not None:  # a torn line followed by more records: a crash, if the chain holds
            report.crash_residue.append(f"{pending_torn.file}:{pending_torn.line}")
            pending_torn = None
        data = line.data
        if data.get("type") == "genesis":
            if not first_in_file:
                return fail(line, "a genesis line in the middle of a file (a second log was spliced in)")
            if prev_hash is not None and data.get("genesis") != prev_hash:
                return fail(
                    line, "this file's genesis does not carry the previous file's last hash (files out of order?)"
                )
            if expected_seq is not None and data.get("first_seq") != expected_seq:
                return fail(line, f"this file starts at seq {data.get('first_seq')}, expected {expected_seq}")
            prev_hash = str(data.get("genesis"))
            expected_seq = int(data.get("first_seq", 1))
            continue
        seq = data.get("seq")
        if first_in_file or prev_hash is None:
            return fail(line, "a file without a genesis line", seq)
        body = {k: v for k, v in data.items() if k != "hash"}
        if compute_hash(body) != data.get("hash"):
            return fail(line, "the record's content does not match its hash (the record was edited)", seq)
        if seq != expected_seq:
            what = (
                "missing (deleted?)"
                if isinstance(seq, int) and expected_seq is not None and seq > expected_seq
                else "out of order or duplicated (reordered or inserted?)"
            )
            return fail(line, f"seq {seq} where {expected_seq} was expected: records {what}", seq)
        if data.get("prev_hash") != prev_hash:
            return fail(
                line,
                "prev_hash does not match the previous record's hash (a record was inserted, deleted or reordered)",
                seq,
            )
        prev_hash, expected_seq = str(data["hash"]), int(data["seq"]) + 1
        report.checked += 1
    report.files = len(files)
    if pending_torn is not None:
        if pending_torn.terminated:
            return fail(pending_torn, str(pending_torn.error))
        report.torn_tail, report.where = True, f"{pending_torn.file}:{pending_torn.line}"
    return report


# ----------------------------------------------------------------------------- questions


def tail(path: Path | str, n: int = 10) -> list[dict[str, Any]]:
    """The last ``n`` decision records."""
    from collections import deque

    return list(deque(records(path), maxlen=n))


def follow(path: Path | str, poll_s: float = 0.5, stop_after_s: float | None = None) -> Iterator[dict[str, Any]]:
    """Yield records as they are appended (like ``tail -f``); ``stop_after_s`` bounds it."""
    seen = sum(1 for _ in records(path))
    deadline = None if stop_after_s is None else time.monotonic() + stop_after_s
    while deadline is None or time.monotonic() < deadline:
        current = list(records(path))
        yield from current[seen:]
        seen = len(current)
        time.sleep(poll_s)


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


def stats(path: Path | str, window: str = "day") -> dict[str, Any]:
    """Counts by action, violated value, policy, deployment, and per time window."""
    by_action: Counter[str] = Counter()
    by_value: Counter[str] = Counter()
    by_policy: Counter[str] = Counter()
    by_deployment: Counter[str] = Counter()
    by_window: dict[str, Counter[str]] = {}
    errors = total = 0
    for r in records(path):
        total += 1
        by_action[r["action"]] += 1
        by_policy[f"{r['policy']['name']}@{r['policy']['version']}"] += 1
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
    for r in records(path):
        if r.get("scores") is None:
            skipped += 1  # a decision made without scores (scoring failed): nothing to replay
            continue
        scores = ValueScores.model_validate(r["scores"])
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
