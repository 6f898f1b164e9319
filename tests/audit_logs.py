"""Audit logs for the audit tests: decisions without a model, logs written by the real store, edits."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path

from guardrail.audit.jsonl import JsonlSink
from guardrail.decision import Decision
from guardrail.policy import PolicyRef, load_policy
from guardrail.record import compute_hash

REPO = Path(__file__).resolve().parent.parent


@functools.cache
def default_ref() -> PolicyRef:
    """The default preset's reference, read once (writers in the concurrency tests make thousands of decisions)."""
    return load_policy("default").ref


def make_decision(i: int, action: str = "allow", policy: PolicyRef | None = None) -> Decision:
    """A decision as the guard makes them, without a model (the sink only stores it)."""
    return Decision(
        action=action,
        intended_action=action,
        text=f"answer {i}",
        prompt=f"question {i}",
        draft=f"answer {i}",
        policy=policy or default_ref(),
        model_id="test-model",
    )


def write_log(path: Path, n: int, **kwargs: object) -> None:
    with JsonlSink(path, **kwargs) as sink:  # type: ignore[arg-type]
        for i in range(n):
            sink.write(make_decision(i), deployment="tests")


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def tamper(path: Path, index: int, edit: str) -> None:
    all_lines = lines(path)
    if edit == "edit":
        data = json.loads(all_lines[index])
        data["action"] = "allow" if data["action"] != "allow" else "block"
        all_lines[index] = json.dumps(data)
    elif edit == "delete":
        del all_lines[index]
    elif edit == "insert":
        all_lines.insert(index, all_lines[index])
    elif edit == "reorder":
        all_lines[index], all_lines[index + 1] = all_lines[index + 1], all_lines[index]
    path.write_text("\n".join(all_lines) + "\n")


def crash_fragment(path: Path, line: int, keep: int) -> bytes:
    """The first ``keep`` bytes of line ``line`` (1-based) of ``path``: what a crash in mid-write leaves."""
    return path.read_bytes().split(b"\n")[line - 1][:keep]


def writer_process(path: str, n: int, tag: str) -> None:
    with JsonlSink(path) as sink:
        for i in range(n):
            sink.write(make_decision(i), deployment=tag)


_SLOW_WRITER = (
    "import sys, time; sys.path.insert(0, sys.argv[2]); from tests.audit_logs import make_decision;"
    "from guardrail.audit import is_sqlite, is_url, open_store\n"
    "target = sys.argv[1]; rotate = not (is_sqlite(target) or is_url(target))\n"
    "with open_store(target, max_bytes=int(sys.argv[3]) if rotate else None) as sink:\n"
    "    for i in range(int(sys.argv[4])):\n"
    "        sink.write(make_decision(i), deployment='live'); time.sleep(float(sys.argv[5]))\n"
)


def start_writer(log: Path | str, max_bytes: int, n: int, pause_s: float) -> subprocess.Popen[bytes]:
    args = [str(log), str(REPO), str(max_bytes), str(n), str(pause_s)]
    return subprocess.Popen([sys.executable, "-c", _SLOW_WRITER, *args])


def append_record(log: Path, **fields: object) -> None:
    """A well-chained record with ``fields`` changed, as a buggy or older writer could have stored it."""
    last = json.loads(lines(log)[-1])
    body = {k: v for k, v in last.items() if k != "hash"} | {"seq": last["seq"] + 1, "prev_hash": last["hash"]}
    body |= fields
    with open(log, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(body | {"hash": compute_hash(body)}, sort_keys=True, separators=(",", ":")) + "\n")
