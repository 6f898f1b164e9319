"""Audit logs with real files and real processes: chain, tampering, crashes, concurrency, replay."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from guardrail.audit import EXIT_OK, EXIT_TAMPERED, EXIT_TORN_TAIL, records, replay, stats, tail, verify
from guardrail.cli import main as cli_main
from guardrail.decision import Decision
from guardrail.guard import Guard
from guardrail.policy import load_policy
from guardrail.record import compute_hash
from guardrail.scorers.local import LocalScorer
from guardrail.sinks.jsonl import JsonlSink, segments
from guardrail.sinks.sqlite import SqliteSink
from tests.samples import HARMFUL, HARMFUL_PROMPT, REFUSAL

REPO = Path(__file__).resolve().parent.parent


def make_decision(i: int, action: str = "allow") -> Decision:
    """A decision as the guard makes them, without a model (the sink only stores it)."""
    return Decision(
        action=action,
        intended_action=action,
        text=f"answer {i}",
        prompt=f"question {i}",
        draft=f"answer {i}",
        policy=load_policy("default").ref,
        model_id="test-model",
    )


def write_log(path: Path, n: int, **kwargs: object) -> None:
    with JsonlSink(path, **kwargs) as sink:  # type: ignore[arg-type]
        for i in range(n):
            sink.write(make_decision(i), deployment="tests")


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_intact_log_verifies_and_counts_records(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    write_log(log, 5)
    report = verify(log)
    assert report.exit_code == EXIT_OK and report.checked == 5
    header = json.loads(lines(log)[0])
    first = json.loads(lines(log)[1])
    assert header["type"] == "genesis" and first["prev_hash"] == header["genesis"]
    assert [r["seq"] for r in records(log)] == [1, 2, 3, 4, 5]


def test_records_hold_what_an_auditor_needs(scorer: LocalScorer, tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    guard = Guard("default", scorer=scorer, audit=JsonlSink(log), deployment="support-bot")
    decision = guard.check(HARMFUL, prompt=HARMFUL_PROMPT, context={"run_id": "abc"})
    guard.close()
    (record,) = list(records(log))
    assert record["deployment"] == "support-bot" and record["context"] == {"run_id": "abc"}
    assert record["policy"] == decision.policy.model_dump()
    assert record["model_id"] == scorer.model_id and record["action"] == decision.action
    assert record["prompt"] == HARMFUL_PROMPT and record["response"] == HARMFUL
    assert set(record["scores"]["scores"]) == set(decision.scores.scores)  # type: ignore[union-attr]
    # Which arithmetic produced the scores, so that they can be computed again the same way.
    assert record["scores"]["precision"] == "int8" and record["scores"]["engine"] == scorer.engine_version
    assert record["ts"].endswith("Z") and record["latency_ms"]["total"] > 0


def test_redacted_mode_keeps_only_hashes(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    write_log(log, 1, redact=True)
    text = log.read_text()
    assert "question 0" not in text and "answer 0" not in text
    (record,) = list(records(log))
    assert record["prompt"] is None and len(record["prompt_sha256"]) == 64
    assert verify(log).exit_code == EXIT_OK


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


@pytest.mark.parametrize(
    ("edit", "line", "expected"),
    [
        ("edit", 4, "edited"),
        ("delete", 4, "seq 4 where 3 was expected"),
        ("insert", 5, "seq 3 where 4 was expected"),  # the copy at line 4 is indistinguishable; line 5 is not
        ("reorder", 4, "seq 4 where 3 was expected"),
    ],
)
def test_every_kind_of_tampering_is_detected_and_located(tmp_path: Path, edit: str, line: int, expected: str) -> None:
    log = tmp_path / "audit.jsonl"
    write_log(log, 6)
    tamper(log, 3, edit)  # line 4 of the file holds seq 3
    report = verify(log)
    assert report.exit_code == EXIT_TAMPERED
    assert report.where == f"{log}:{line}" and expected in str(report.problem), report.summary()


def test_rehashed_edit_still_breaks_the_chain(tmp_path: Path) -> None:
    from guardrail.record import compute_hash

    log = tmp_path / "audit.jsonl"
    write_log(log, 4)
    all_lines = lines(log)
    data = json.loads(all_lines[2])
    data["action"] = "block"
    data["hash"] = compute_hash({k: v for k, v in data.items() if k != "hash"})  # a forger recomputes the hash
    all_lines[2] = json.dumps(data)
    log.write_text("\n".join(all_lines) + "\n")
    report = verify(log)
    assert report.exit_code == EXIT_TAMPERED and report.seq == 3 and "prev_hash" in str(report.problem)


def test_cli_verify_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "audit.jsonl"
    write_log(log, 3)
    assert cli_main(["audit", "verify", str(log)]) == EXIT_OK
    assert "3 records verified" in capsys.readouterr().out
    tamper(log, 2, "edit")
    assert cli_main(["audit", "verify", str(log)]) == EXIT_TAMPERED
    out = capsys.readouterr().out
    assert f"{log}:3" in out and "seq 2" in out


def test_torn_tail_is_a_crash_not_tampering_and_the_chain_continues(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    write_log(log, 4)
    raw = log.read_bytes()
    log.write_bytes(raw[: len(raw) - 40])  # the last record cut mid-line
    report = verify(log)
    assert report.exit_code == EXIT_TORN_TAIL and report.checked == 3 and report.torn_tail
    write_log(log, 2)  # a restarted writer
    report = verify(log)
    assert report.exit_code == EXIT_OK and report.checked == 5 and len(report.crash_residue) == 1
    assert [r["seq"] for r in records(log)] == [1, 2, 3, 4, 5]


def _writer_process(path: str, n: int, tag: str) -> None:
    with JsonlSink(path) as sink:
        for i in range(n):
            sink.write(make_decision(i), deployment=tag)


def test_sigkill_mid_burst_loses_at_most_the_record_in_flight(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    code = (
        "import sys; sys.path.insert(0, sys.argv[2]); from tests.test_audit import _writer_process;"
        "_writer_process(sys.argv[1], 100000, 'victim')"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(log), str(REPO)])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not log.exists() or log.stat().st_size < 200_000):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    report = verify(log)
    assert report.exit_code in (EXIT_OK, EXIT_TORN_TAIL), report.summary()
    written = report.checked
    assert written > 100
    _writer_process(str(log), 10, "restarted")
    after = verify(log)
    assert after.exit_code == EXIT_OK and after.checked == written + 10, after.summary()


def test_eight_concurrent_writers_threads_and_processes(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer_process, args=(str(log), 1000, f"proc{i}")) for i in range(4)]
    threads = [threading.Thread(target=_writer_process, args=(str(log), 1000, f"thread{i}")) for i in range(4)]
    for proc in procs:
        proc.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for proc in procs:
        proc.join()
        assert proc.exitcode == 0
    report = verify(log)
    assert report.exit_code == EXIT_OK and report.checked == 8000
    seen = [(r["deployment"], r["prompt"]) for r in records(log)]
    assert len(set(seen)) == 8000
    assert all(sum(1 for d, _ in seen if d == tag) == 1000 for tag in {d for d, _ in seen})


def test_rotation_keeps_one_continuous_chain(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    write_log(log, 60, max_bytes=8_000)
    files = segments(log)
    assert len(files) > 2
    report = verify(log)
    assert report.exit_code == EXIT_OK and report.checked == 60 and report.files == len(files)
    files[1].unlink()  # losing a whole rotated file is detected too
    assert verify(log).exit_code == EXIT_TAMPERED


def test_sqlite_sink_chains_and_detects_row_edits(tmp_path: Path) -> None:
    import sqlite3

    db = tmp_path / "audit.db"
    with SqliteSink(db) as sink:
        for i in range(5):
            sink.write(make_decision(i, "block" if i % 2 else "allow"), deployment="tests")
    assert verify(db).exit_code == EXIT_OK and verify(db).checked == 5
    assert stats(db)["by_action"] == {"allow": 3, "block": 2}
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE records SET action = 'allow' WHERE seq = 2")
    report = verify(db)
    assert report.exit_code == EXIT_TAMPERED and report.seq == 2


def test_stats_tail_and_replay_answer_operator_questions(scorer: LocalScorer, tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    shadow = tmp_path / "shadow.yaml"
    shadow.write_text("name: trial\nextends: default\nsettings: {shadow: true}\n")
    guard = Guard(shadow, scorer=scorer, audit=JsonlSink(log), deployment="trial")
    for text in (HARMFUL, REFUSAL, "Octopuses have three hearts."):
        guard.check(text, prompt=HARMFUL_PROMPT)
    guard.close()
    summary = stats(log)
    assert summary["records"] == 3 and summary["by_deployment"] == {"trial": 3}
    assert summary["by_action"].get("log", 0) >= 1  # shadow: the harmful one only logged
    assert [r["seq"] for r in tail(log, 2)] == [2, 3]
    permissive = tmp_path / "permissive.yaml"
    permissive.write_text("name: permissive\nrules: []\n")
    result = replay(log, load_policy(permissive))
    assert result["replayed"] == 3 and result["changed"] >= 1
    assert any(e["was"] in ("block", "rewrite") and e["now"] == "allow" for e in result["examples"])
    same = replay(log, load_policy("default"))
    assert same["changed"] == 0


def test_records_written_before_scores_named_their_engine_still_verify_and_replay(
    scorer: LocalScorer, tmp_path: Path
) -> None:
    log = tmp_path / "audit.jsonl"
    guard = Guard("default", scorer=scorer, audit=JsonlSink(log))
    guard.check(HARMFUL, prompt=HARMFUL_PROMPT)
    guard.close()
    header, line = lines(log)
    old = json.loads(line)
    del old["scores"]["engine"]  # the record as an earlier release wrote it, chained and hashed as such
    old["hash"] = compute_hash({k: v for k, v in old.items() if k != "hash"})
    log.write_text(header + "\n" + json.dumps(old) + "\n")
    assert verify(log).exit_code == EXIT_OK
    result = replay(log, load_policy("default"))
    assert result["replayed"] == 1 and result["changed"] == 0


def test_html_report_is_self_contained(scorer: LocalScorer, tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    guard = Guard("default", scorer=scorer, audit=JsonlSink(log))
    guard.check(HARMFUL, prompt=HARMFUL_PROMPT)
    guard.check(REFUSAL, prompt=HARMFUL_PROMPT)
    guard.close()
    out = tmp_path / "report.html"
    assert cli_main(["audit", "report", str(log), "--out", str(out)]) == 0
    page = out.read_text()
    assert page.count("data:image/png;base64,") == 3
    assert "http://" not in page and "https://" not in page
    assert "hash chain intact" in page


async def test_async_guard_writes_audit_without_blocking(scorer: LocalScorer, tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    guard = Guard("default", scorer=scorer, audit=JsonlSink(log))
    await guard.acheck(REFUSAL, prompt=HARMFUL_PROMPT)
    guard.close()
    assert verify(log).checked == 1
