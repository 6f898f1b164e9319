"""Re-scoring an audit log: what the current scorer and a policy would decide on the recorded texts.

``rescore`` reads the log once (``audit_records``, the one place batch reads audit records) and
stages every record that holds its text as a JSONL input row (``staged/records.jsonl``, with the
recorded decision kept alongside). That file goes through ``batch_score`` like any corpus, locally
or on Ray, with the policy evaluated per row; then the recorded and the new intended actions are
compared (intended, so shadow-mode records count as what they would have done). Redacted records
and records without a text are counted, not scored. A rerun reuses the staged file and resumes.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from guardrail.batch.formats import json_line
from guardrail.batch.inputs import BatchError
from guardrail.batch.job import batch_score
from guardrail.batch.shards import output_files, read_json_lines, write_atomic

if TYPE_CHECKING:
    from guardrail.policy import Policy

AUDIT_FIELD = "audit"
STAGED = Path("staged") / "records.jsonl"
STAGED_INFO = Path("staged") / "staged.json"
SCORES = "scores"
CHANGED = "changed.jsonl"
SUMMARY = "rescore.json"


def audit_records(path: Path | str) -> Iterator[dict[str, Any]]:
    """The decision records of an audit log (JSONL with its segments, SQLite, or a postgresql:// URL), in log order."""
    from guardrail.audit import AuditLogError, records

    try:
        yield from records(path)
    except AuditLogError as exc:
        raise BatchError(str(exc)) from None


def _recorded(record: dict[str, Any]) -> dict[str, Any]:
    """What the batch output carries of the recorded decision."""
    return {
        "seq": record["seq"],
        "ts": record["ts"],
        "deployment": record["deployment"],
        "model_id": record.get("model_id"),
        "intended_action": record.get("intended_action", record["action"]),
        "violations": [
            {"rule_id": v["rule_id"], "dimension": v["dimension"], "action": v["action"]}
            for v in record.get("violations", [])
        ],
    }


def stage(log: Path | str, out_dir: Path, progress: bool = True) -> dict[str, Any]:
    """Write the log's records that hold their text as batch input; returns what was staged and skipped."""
    info_path = out_dir / STAGED_INFO
    if info_path.exists():
        info: dict[str, Any] = json.loads(info_path.read_text(encoding="utf-8"))
        return info
    from tqdm import tqdm

    counts: Counter[str] = Counter()

    def rows() -> Iterator[str]:
        with tqdm(unit="record", desc="reading the audit log", file=sys.stderr, disable=not progress) as bar:
            for record in audit_records(log):
                bar.update(1)
                counts["records"] += 1
                if record.get("redacted"):
                    counts["skipped_redacted"] += 1
                elif record.get("response") is None:
                    counts["skipped_without_text"] += 1
                else:
                    counts["staged"] += 1
                    row = {"id": record["seq"], "prompt": record.get("prompt"), "response": record["response"]}
                    yield json_line({**row, AUDIT_FIELD: _recorded(record)})

    (out_dir / STAGED).parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out_dir / STAGED, rows())
    info = {
        "log": str(log),
        **{k: counts[k] for k in ("records", "staged", "skipped_redacted", "skipped_without_text")},
    }
    write_atomic(info_path, [json.dumps(info, indent=2) + "\n"])
    return info


def _compare(line: dict[str, Any]) -> dict[str, Any] | None:
    """The change of one re-scored record's decision, or None when the intended action is the same."""
    was = line["fields"][AUDIT_FIELD]
    now = line["decision"]
    if now["action"] == was["intended_action"]:
        return None
    new_dims = {v["dimension"] for v in now["violations"]}
    old_dims = {v["dimension"] for v in was["violations"]}
    return {
        "seq": was["seq"],
        "ts": was["ts"],
        "deployment": was["deployment"],
        "was": was["intended_action"],
        "now": now["action"],
        "rules": [v["rule_id"] for v in now["violations"]],
        "was_rules": [v["rule_id"] for v in was["violations"]],
        "values_now_violated": sorted(new_dims - old_dims),
        "values_no_longer_violated": sorted(old_dims - new_dims),
    }


def summarize(out_dir: Path, policy: Policy, staged: dict[str, Any], examples: int = 5) -> dict[str, Any]:
    """Compare every re-scored decision with the recorded one; writes ``changed.jsonl`` and ``rescore.json``."""
    transitions: Counter[tuple[str, str]] = Counter()
    by_value: dict[str, Counter[str]] = {}
    recorded_models: Counter[str] = Counter()
    changed: list[dict[str, Any]] = []
    rescored = 0
    model_id = None

    def changed_lines() -> Iterator[str]:
        nonlocal rescored, model_id
        for path in output_files(out_dir / SCORES):
            for _, line in read_json_lines(path):
                rescored += 1
                model_id = line["model"]
                was = line["fields"][AUDIT_FIELD]
                recorded_models[str(was["model_id"])] += 1
                transitions[(was["intended_action"], line["decision"]["action"])] += 1
                change = _compare(line)
                if change is None:
                    continue
                for key in ("values_now_violated", "values_no_longer_violated"):
                    for value in change[key]:
                        by_value.setdefault(value, Counter())[key.removeprefix("values_")] += 1
                if len(changed) < examples:
                    changed.append(change)
                yield json_line(change)

    write_atomic(out_dir / CHANGED, changed_lines())
    errors = sum(1 for _ in read_json_lines(out_dir / SCORES / "errors.jsonl"))
    summary = {
        **staged,
        "policy": policy.ref.model_dump(),
        "model_id": model_id,
        "recorded_model_ids": dict(recorded_models.most_common()),
        "rescored": rescored,
        "errors": errors,
        "errors_file": str(out_dir / SCORES / "errors.jsonl"),
        "changed": sum(n for (a, b), n in transitions.items() if a != b),
        "transitions": {f"{a} -> {b}": n for (a, b), n in sorted(transitions.items())},
        "changed_by_value": {v: dict(c) for v, c in sorted(by_value.items())},
        "changed_file": str(out_dir / CHANGED),
        "examples": changed,
    }
    write_atomic(out_dir / SUMMARY, [json.dumps(summary, indent=2) + "\n"])
    return summary


def rescore(
    log: Path | str,
    policy: Policy,
    out_dir: Path | str,
    *,
    examples: int = 5,
    progress: bool = True,
    **options: Any,
) -> dict[str, Any]:
    """Re-score the texts of the audit log ``log`` with the current scorer, evaluate ``policy`` on them,
    and say which decisions would change (by action transition and by value; every one of them in
    ``changed.jsonl``). ``options`` go to ``batch_score`` (``workers``, ``ray``, ``shard_size`` ...)."""
    out = Path(out_dir)
    from guardrail.audit import is_url

    if not is_url(log) and not Path(log).exists():  # a database log is opened (and its errors named) by the store
        raise BatchError(f"{log}: no such audit log")
    if out.exists() and any(out.iterdir()) and not (out / STAGED_INFO).exists():
        raise BatchError(f"{out} is not an empty folder and holds no re-scoring run; give a new or empty folder")
    out.mkdir(parents=True, exist_ok=True)
    staged = stage(log, out, progress)
    batch_score([str(out / STAGED)], out / SCORES, keep=(AUDIT_FIELD,), policy=policy, progress=progress, **options)
    return summarize(out, policy, staged, examples)
