"""What operators and auditors ask a log: its records, the last ones, new ones, counts, and replay.

Every question works on any store (a path, a URL or an open ``AuditStore``) through its
``lines``, ``follow`` and ``head``. A complete JSON line that is not a decision record raises
``AuditLogError`` naming where it is; unreadable lines (what a crash leaves) are skipped, since
``guardrail audit verify`` is what judges them.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from guardrail.act import intended_action
from guardrail.audit.store import AuditLogError, AuditStore, LogLine, whole
from guardrail.audit.targets import opened
from guardrail.evaluate import evaluate
from guardrail.policy import Policy
from guardrail.score import ValueScores

Target = AuditStore | Path | str


def record_problem(data: dict[str, Any]) -> str | None:
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


def located_records(lines: Iterable[LogLine]) -> Iterator[tuple[LogLine, dict[str, Any]]]:
    """The decision records among ``lines``, with where each one is."""
    for line in lines:
        if line.data is None or line.data.get("type") == "genesis":
            continue
        problem = record_problem(line.data)
        if problem:
            raise AuditLogError(
                f"{line.where}: not an audit record ({problem}); `guardrail audit verify` checks the whole log"
            )
        yield line, line.data


def records(target: Target) -> Iterator[dict[str, Any]]:
    """The decision records of a log, in order (genesis lines and unreadable lines skipped).

    A complete JSON line that is not a decision record raises ``AuditLogError`` naming it.
    """
    with opened(target) as store:
        for _, data in located_records(store.lines()):
            yield data


def tail(target: Target, n: int = 10) -> list[dict[str, Any]]:
    """The last ``n`` decision records."""
    return tail_and_last_seq(target, n)[0]


def tail_and_last_seq(target: Target, n: int = 10) -> tuple[list[dict[str, Any]], int]:
    """(the last ``n`` decision records, the seq of the last record read: 0 when there is none).

    Reads from where the store's head says the last ``n`` start. Pass the seq to
    ``follow(after_seq=...)`` to print what was appended after this scan, with no gap.
    """
    with opened(target) as store:
        head = store.head()
        start = max(0, head.seq - n) if head is not None else 0
        last: deque[dict[str, Any]] = deque(maxlen=n)
        seq = 0
        for _, record in located_records(store.lines(start)):
            if record["seq"] > start:
                last.append(record)
                seq = record["seq"]
        return list(last), seq


def _followed(line: LogLine) -> dict[str, Any] | None:
    """The record a followed line holds (None: a genesis or a torn line); ``AuditLogError`` for anything else."""
    if line.data is None:
        if line.tampered:
            raise AuditLogError(f"{line.where}: {line.tampered}")
        return None
    if line.data.get("type") == "genesis":
        return None
    problem = "no seq" if whole(line.data.get("seq")) is None else record_problem(line.data)
    if problem:
        raise AuditLogError(f"{line.file}: a line that is not an audit record ({problem})")
    return line.data


def follow(
    target: Target, poll_s: float = 0.5, stop_after_s: float | None = None, *, after_seq: int | None = None
) -> Iterator[dict[str, Any]]:
    """Yield records as they are appended (like ``tail -f``); ``stop_after_s`` bounds it.

    Without ``after_seq`` it starts at the current end. With it, it yields every record whose seq
    is past ``after_seq`` first (those already in the log, then new ones): ``tail_and_last_seq``
    then ``follow(after_seq=...)`` misses nothing appended between the two. Each store reads only
    what is new (see ``AuditStore.follow``); a record is yielded only if its seq is past the last
    one yielded, so none repeats.
    """
    with opened(target) as store:
        deadline = None if stop_after_s is None else time.monotonic() + stop_after_s
        last = after_seq
        batches = store.follow(after_seq)
        try:
            for batch in batches:
                for line in batch:
                    record = _followed(line)
                    if record is not None and (last is None or record["seq"] > last):
                        last = record["seq"]
                        yield record
                if deadline is not None and time.monotonic() >= deadline:
                    return
                time.sleep(poll_s if deadline is None else max(0.0, min(poll_s, deadline - time.monotonic())))
        finally:
            batches.close()


def one_line(record: dict[str, Any]) -> str:
    """``seq ts deployment action policy violated-values``, for terminals."""
    dims = sorted({v["dimension"] for v in record.get("violations", [])})
    policy = record.get("policy", {})
    return (
        f"{record.get('seq'):>6} {record.get('ts', '')[:19]} {record.get('deployment', ''):<12} "
        f"{record.get('action', ''):<8} {policy.get('name', '')}@{policy.get('version', '')} "
        f"{','.join(dims) or '-'}{'  ERROR ' + record['error'] if record.get('error') else ''}"
    )


def bucket(ts: str, window: str) -> str:
    """The ``hour``, ``day`` or ``week`` a record's ``ts`` falls in, as ``stats`` labels it."""
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


def stats(target: Target, window: str = "day") -> dict[str, Any]:
    """Counts by action, violated value, policy (see ``policy_key``), deployment, and per time window."""
    by_action: Counter[str] = Counter()
    by_value: Counter[str] = Counter()
    by_policy: Counter[str] = Counter()
    by_deployment: Counter[str] = Counter()
    by_window: dict[str, Counter[str]] = {}
    errors = total = 0
    for r in records(target):
        total += 1
        by_action[r["action"]] += 1
        by_policy[policy_key(r["policy"])] += 1
        by_deployment[r["deployment"]] += 1
        for dim in {v["dimension"] for v in r.get("violations", [])}:
            by_value[dim] += 1
        by_window.setdefault(bucket(r["ts"], window), Counter())[r["action"]] += 1
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


def replay(target: Target, policy: Policy, examples: int = 5) -> dict[str, Any]:
    """What ``policy`` would have decided for every recorded score vector, without re-scoring.

    Compares *intended* actions (what each policy asks for), so shadow-mode records count as
    what they would have done. Rewrites cannot be replayed without the LLM: they are compared
    as "rewrite", not as their outcome.
    """
    transitions: Counter[tuple[str, str]] = Counter()
    changed: list[dict[str, Any]] = []
    replayed = skipped = 0
    with opened(target) as store:
        for line, r in located_records(store.lines()):
            if r.get("scores") is None:
                skipped += 1  # a decision made without scores (scoring failed): nothing to replay
                continue
            try:
                scores = ValueScores.model_validate(r["scores"])
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(k) for k in first["loc"])
                raise AuditLogError(
                    f"{line.where}: the record's scores cannot be replayed ({where}: {first['msg']})"
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
