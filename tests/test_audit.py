"""Audit logs with real files and real processes: chain, tampering, crashes, concurrency, replay."""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from guardrail.audit import EXIT_OK, EXIT_TAMPERED, EXIT_TORN_TAIL, AuditLogError, records, replay, stats, tail, verify
from guardrail.cli import main as cli_main
from guardrail.decision import Decision
from guardrail.guard import Guard
from guardrail.policy import PolicyRef, load_policy
from guardrail.record import compute_hash
from guardrail.scorers.local import LocalScorer
from guardrail.sinks.jsonl import JsonlSink, segments
from guardrail.sinks.sqlite import SqliteSink
from tests.samples import HARMFUL, HARMFUL_PROMPT, REFUSAL

REPO = Path(__file__).resolve().parent.parent


def make_decision(i: int, action: str = "allow", policy: PolicyRef | None = None) -> Decision:
    """A decision as the guard makes them, without a model (the sink only stores it)."""
    return Decision(
        action=action,
        intended_action=action,
        text=f"answer {i}",
        prompt=f"question {i}",
        draft=f"answer {i}",
        policy=policy or load_policy("default").ref,
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


def test_stats_tell_apart_policies_that_share_a_name_and_version(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Neither file says `version`: both are "bot@1", yet they decide differently.
    (tmp_path / "lenient.yaml").write_text("name: bot\nrules: []\n")
    (tmp_path / "strict.yaml").write_text("name: bot\nextends: default\n")
    lenient, strict = load_policy(tmp_path / "lenient.yaml"), load_policy(tmp_path / "strict.yaml")
    assert lenient.ref.version == strict.ref.version == "1" and lenient.ref.hash != strict.ref.hash
    log = tmp_path / "audit.jsonl"
    with JsonlSink(log) as sink:
        for i, policy in enumerate((lenient, lenient, strict)):
            sink.write(make_decision(i, policy=policy.ref), deployment="tests")
    expected = {f"bot@1#{lenient.content_hash[:8]}": 2, f"bot@1#{strict.content_hash[:8]}": 1}
    assert stats(log)["by_policy"] == expected
    assert cli_main(["audit", "stats", str(log)]) == 0
    assert json.loads(capsys.readouterr().out)["by_policy"] == expected
    out = tmp_path / "report.html"
    assert cli_main(["audit", "report", str(log), "--out", str(out)]) == 0
    page = out.read_text()
    for key, n in expected.items():
        assert f"<tr><td>{key}</td><td>{n}</td></tr>" in page


def test_report_chart_names_group_and_target_violations(scorer: LocalScorer, tmp_path: Path) -> None:
    policy = tmp_path / "broad.yaml"
    policy.write_text(
        "name: broad\nrules:\n"
        # The mean of three scores is never exactly -1: this fires on every scored draft.
        "  - {id: any-ambition, when: {group: self_enhancement, max: -1}, action: log, reason: r}\n"
        # No draft is exactly this profile: with every scored dimension counted, this fires too.
        "  - id: off-target\n    action: log\n    reason: r\n"
        "    when: {target: {benevolence: 1, universalism: 1}, max_distance: 0.001, min_abs_score: 0}\n"
    )
    log = tmp_path / "audit.jsonl"
    guard = Guard(policy, scorer=scorer, audit=JsonlSink(log))
    guard.check("Octopuses have three hearts.")
    guard.close()
    (record,) = list(records(log))
    assert {v["dimension"] for v in record["violations"]} == {"self_enhancement", "target"}
    out = tmp_path / "report.html"
    assert cli_main(["audit", "report", str(log), "--out", str(out)]) == 0
    alt = re.search(r'<img alt="violations over time: ([^"]*)"', out.read_text())
    assert alt is not None
    assert set(alt.group(1).split(", ")) == {"self_enhancement", "target"}


async def test_async_guard_writes_audit_without_blocking(scorer: LocalScorer, tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    guard = Guard("default", scorer=scorer, audit=JsonlSink(log))
    await guard.acheck(REFUSAL, prompt=HARMFUL_PROMPT)
    guard.close()
    assert verify(log).checked == 1


# ----------------------------------------------------------------------------- what verify accepts, and only that


def crash_fragment(path: Path, line: int, keep: int) -> bytes:
    """The first ``keep`` bytes of line ``line`` (1-based) of ``path``: what a crash in mid-write leaves."""
    return path.read_bytes().split(b"\n")[line - 1][:keep]


def test_an_empty_log_file_is_not_an_intact_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "audit.jsonl"
    log.write_bytes(b"")
    report = verify(log)
    assert report.exit_code == EXIT_TAMPERED and "the file is empty" in str(report.problem), report.summary()
    assert cli_main(["audit", "verify", str(log)]) == EXIT_TAMPERED
    out = capsys.readouterr().out
    assert "0 file(s)" not in out and "OK" not in out
    write_log(log, 1)  # a writer that crashed before its first line simply starts the log
    assert verify(log).exit_code == EXIT_OK


def test_only_what_a_crash_leaves_passes_as_a_torn_line(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    write_log(log, 4)
    intact = log.read_bytes()
    all_lines = intact.split(b"\n")
    for garbage in (b"garbage-line", b'{"foo": 1}', b"", b'{"seq" 3'):  # text, a foreign object, blank, bad JSON
        log.write_bytes(b"\n".join([*all_lines[:3], garbage, *all_lines[3:]]))
        report = verify(log)
        assert report.exit_code == EXIT_TAMPERED and report.where == f"{log}:4", (garbage, report.summary())
    # The start of a record, cut short, and the chain going on after it: a crash (twice in a row, even).
    fragments = [all_lines[2][:90], b'{"action":"allow","attempts":[{"at']
    log.write_bytes(b"\n".join([*all_lines[:3], *fragments, *all_lines[3:]]))
    report = verify(log)
    assert report.exit_code == EXIT_OK and report.checked == 4, report.summary()
    assert report.crash_residue == [f"{log}:4", f"{log}:5"]
    # A fragment a crash left is never followed by a newline and then nothing.
    log.write_bytes(intact + fragments[0] + b"\n")
    assert verify(log).exit_code == EXIT_TAMPERED
    log.write_bytes(intact + fragments[0])
    assert verify(log).exit_code == EXIT_TORN_TAIL


def test_a_torn_genesis_is_recovered_by_the_next_write(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    write_log(log, 1)
    log.write_bytes(crash_fragment(log, 1, 60))  # the writer died while writing the genesis line
    assert verify(log).exit_code == EXIT_TORN_TAIL
    write_log(log, 2)
    report = verify(log)
    assert report.exit_code == EXIT_OK and report.checked == 2 and report.crash_residue == [f"{log}:1"], (
        report.summary()
    )
    write_log(log, 1)  # and it stays intact
    assert verify(log).exit_code == EXIT_OK and verify(log).checked == 3


def test_a_complete_last_line_without_its_newline_is_continued_not_repeated(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    write_log(log, 3)
    log.write_bytes(log.read_bytes()[:-1])  # the crash came just before the newline
    write_log(log, 2)
    report = verify(log)
    assert report.exit_code == EXIT_OK and report.checked == 5 and not report.crash_residue, report.summary()


@pytest.mark.parametrize("state", ["missing", "empty", "torn genesis"])
def test_a_crash_during_rotation_keeps_one_chain(tmp_path: Path, state: str) -> None:
    log = tmp_path / "audit.jsonl"
    write_log(log, 40, max_bytes=6_000)
    before = verify(log)
    assert before.exit_code == EXIT_OK and len(segments(log)) > 2
    # The writer died in mid-rotation: after renaming the full file, before the new one's genesis landed.
    os.replace(log, log.with_name(f"audit.{len(segments(log))}.jsonl"))
    if state == "empty":
        log.write_bytes(b"")
    elif state == "torn genesis":
        log.write_bytes(crash_fragment(segments(log)[0], 1, 70))
    mid = verify(log)
    assert mid.exit_code in (EXIT_OK, EXIT_TORN_TAIL), mid.summary()
    write_log(log, 3, max_bytes=6_000)
    after = verify(log)
    assert after.exit_code == EXIT_OK and after.last_seq == mid.last_seq + 3, after.summary()  # type: ignore[operator]


def test_a_fragment_left_at_rotation_stays_in_the_old_file(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    write_log(log, 3)
    with open(log, "ab") as fh:
        fh.write(crash_fragment(log, 2, 120))
    write_log(log, 2, max_bytes=100)  # the next write rotates first
    report = verify(log)
    assert report.exit_code == EXIT_OK and report.checked == 5 and len(report.crash_residue) == 1, report.summary()


def test_a_head_anchor_detects_records_deleted_from_the_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "audit.jsonl"
    write_log(log, 5)
    noted = verify(log)
    assert noted.last_seq == 5 and noted.head == json.loads(lines(log)[-1])["hash"]
    assert cli_main(["audit", "verify", str(log)]) == EXIT_OK
    assert f"head {noted.head} at seq 5" in capsys.readouterr().out  # what an auditor writes down
    write_log(log, 2)  # appending after the anchor is fine
    assert verify(log, head=noted.head, expect_seq=5).exit_code == EXIT_OK
    log.write_text("\n".join(lines(log)[:-3]) + "\n")  # seq 5, 6 and 7 deleted
    assert verify(log).exit_code == EXIT_OK  # the limit of a bare hash chain
    report = verify(log, head=noted.head)
    assert report.exit_code == EXIT_TAMPERED and "not in the log" in str(report.problem), report.summary()
    assert verify(log, expect_seq=5).exit_code == EXIT_TAMPERED
    assert cli_main(["audit", "verify", str(log), "--head", str(noted.head), "--expect-seq", "5"]) == EXIT_TAMPERED
    assert "deleted from its end" in capsys.readouterr().out


def test_malformed_lines_get_a_verdict_or_an_error_naming_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "audit.jsonl"
    write_log(log, 3)
    all_lines = lines(log)
    genesis = json.loads(all_lines[0])
    for bad in (None, "x", True):
        log.write_text("\n".join([json.dumps({**genesis, "first_seq": bad}), *all_lines[1:]]) + "\n")
        report = verify(log)
        assert report.exit_code == EXIT_TAMPERED and report.where == f"{log}:1", report.summary()
    log.write_text("\n".join([*all_lines[:2], '{"foo": 1}', *all_lines[2:]]) + "\n")
    assert verify(log).where == f"{log}:3"
    for question in (lambda: tail(log), lambda: stats(log), lambda: replay(log, load_policy("default"))):
        with pytest.raises(AuditLogError, match=f"{log}:3: not an audit record"):
            question()
    for command in ("tail", "stats"):
        assert cli_main(["audit", command, str(log)]) == 2
        assert f"{log}:3: not an audit record" in capsys.readouterr().err
    with pytest.raises(AuditLogError, match="is a directory"):
        verify(tmp_path)
    not_sqlite = tmp_path / "audit.db"
    not_sqlite.write_text("these are not the records you are looking for\n")
    with pytest.raises(AuditLogError, match=f"{not_sqlite} is not a readable guardrail audit database"):
        verify(not_sqlite)
    assert cli_main(["audit", "verify", str(not_sqlite)]) == 2
    assert str(not_sqlite) in capsys.readouterr().err


def test_sinks_refuse_what_is_not_an_audit_log_when_built(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = tmp_path / "requests.jsonl"
    other.write_text('{"id": "q1", "response": "hello"}\n')
    with pytest.raises(AuditLogError, match=f"{other} is not a guardrail audit log"):
        JsonlSink(other)
    assert cli_main(["check", "--audit", str(other), "Octopuses have three hearts."]) == 2
    assert str(other) in capsys.readouterr().err
    assert other.read_text() == '{"id": "q1", "response": "hello"}\n'  # untouched
    for kind in (JsonlSink, SqliteSink):
        with pytest.raises(AuditLogError, match=f"{tmp_path} is a directory"):
            kind(tmp_path)
    with pytest.raises(AuditLogError, match=str(other)):
        SqliteSink(other)
    # Another program appending to a log: the sink refuses to chain onto its line, and says why.
    log = tmp_path / "audit.jsonl"
    write_log(log, 1)
    with open(log, "a") as fh:
        fh.write('{"foo": 1}\n')
    with JsonlSink(log) as sink, pytest.raises(AuditLogError, match=f"{log}: its last line is neither"):
        sink.write(make_decision(1), deployment="tests")


def test_sqlite_log_never_written_has_no_records(tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    SqliteSink(db).close()
    report = verify(db)
    assert report.exit_code == EXIT_OK and report.checked == 0 and "no records yet" in report.summary()


def test_writes_racing_close_never_reopen_the_file(tmp_path: Path) -> None:
    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc to see open files")
    log = tmp_path / "audit.jsonl"
    sink = JsonlSink(log)
    written: list[int] = []

    def writer() -> None:
        while True:
            try:
                written.append(sink.write(make_decision(0), deployment="race").seq)
            except RuntimeError:
                return

    threads = [threading.Thread(target=writer) for _ in range(6)]
    for thread in threads:
        thread.start()
    time.sleep(0.3)
    sink.close()
    for thread in threads:
        thread.join()
    open_files = {os.path.realpath(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")}
    assert str(log.resolve()) not in open_files  # no write after close() left the log open
    report = verify(log)
    assert report.exit_code == EXIT_OK and report.checked == len(written) > 0


# ----------------------------------------------------------------------------- rotation, live logs, deletion

_SLOW_WRITER = (
    "import sys, time; sys.path.insert(0, sys.argv[2]); from tests.test_audit import make_decision;"
    "from guardrail.sinks.jsonl import JsonlSink; from guardrail.sinks.sqlite import SqliteSink\n"
    "db = sys.argv[1].endswith('.db')\n"
    "with (SqliteSink(sys.argv[1]) if db else JsonlSink(sys.argv[1], max_bytes=int(sys.argv[3]))) as sink:\n"
    "    for i in range(int(sys.argv[4])):\n"
    "        sink.write(make_decision(i), deployment='live'); time.sleep(float(sys.argv[5]))\n"
)


def _start_writer(log: Path, max_bytes: int, n: int, pause_s: float) -> subprocess.Popen[bytes]:
    args = [str(log), str(REPO), str(max_bytes), str(n), str(pause_s)]
    return subprocess.Popen([sys.executable, "-c", _SLOW_WRITER, *args])


def test_rotating_a_log_without_suffix_keeps_every_segment_in_order(tmp_path: Path) -> None:
    log = tmp_path / "t1" / "audit"
    write_log(log, 40, max_bytes=1_500)
    files = segments(log)
    assert len(files) > 11 and files[-1] == log
    assert [p.name for p in files[:-1]] == [f"audit.{n}" for n in range(1, len(files))]  # 10 after 9, not after 1
    report = verify(log)
    assert report.exit_code == EXIT_OK and report.checked == 40 and report.files == len(files), report.summary()
    assert [r["seq"] for r in records(log)] == list(range(1, 41))


def test_a_live_log_rotating_under_verify_always_verifies(tmp_path: Path) -> None:
    log = tmp_path / "live" / "audit.jsonl"
    write_log(log, 2)
    writer = _start_writer(log, 2_500, 600, 0.0)
    outcomes: list[int] = []
    try:
        for _ in range(60):  # bounded: the writer usually finishes first
            report = verify(log)  # an AuditLogError here (a file vanished mid-read) fails the test
            assert report.exit_code in (EXIT_OK, EXIT_TORN_TAIL), report.summary()
            outcomes.append(report.checked)
            assert stats(log)["records"] >= report.checked
            if writer.poll() is not None:
                break
    finally:
        writer.wait(timeout=120)
    assert writer.returncode == 0 and outcomes
    final = verify(log)
    assert final.exit_code == EXIT_OK and final.checked == 602 and final.files > 50, final.summary()


def test_deleting_the_oldest_segments_is_tampering_naming_the_missing_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "a.jsonl"
    write_log(log, 30, max_bytes=4_000)
    first = segments(log)[0]
    first_seq = json.loads(lines(log)[0])["first_seq"]  # segments count from 1 without gaps: only a.jsonl is read
    first.unlink()
    for kwargs in ({}, {"expect_seq": 30}):
        report = verify(log, **kwargs)  # type: ignore[arg-type]
        assert report.exit_code == EXIT_TAMPERED and report.where == f"{log}:1", report.summary()
        assert f"the log starts at seq {first_seq}; it continues a." in report.summary()
        assert "but the segment a.1.jsonl before it is missing" in report.summary()
    assert cli_main(["audit", "verify", str(log)]) == EXIT_TAMPERED
    assert "the segment a.1.jsonl before it is missing" in capsys.readouterr().out


def test_verify_with_more_segments_than_open_files_allowed(tmp_path: Path) -> None:
    from guardrail.record import canonical_json

    log = tmp_path / "many" / "audit.jsonl"
    write_log(log, 1, max_bytes=1)
    genesis_line, template = lines(log)
    record = json.loads(template)
    # 1,199 more files of one record each, chained as the sink chains rotated files (the sink's own
    # rotation is tested elsewhere; building the records by hand keeps this test fast).
    os.replace(log, log.with_name("audit.1.jsonl"))
    for seq in range(2, 1_201):
        target = log if seq == 1_200 else log.with_name(f"audit.{seq}.jsonl")
        genesis = JsonlSink._genesis_line(record["hash"], f"audit.{seq - 1}.jsonl", seq)
        body = {k: v for k, v in record.items() if k != "hash"} | {"seq": seq, "prev_hash": record["hash"]}
        record = body | {"hash": compute_hash(body)}
        target.write_bytes(genesis + (canonical_json(record) + "\n").encode())
    assert len(segments(log)) == 1_200 and genesis_line
    code = (
        "import sys; from guardrail.audit import verify, stats, tail, follow; r = verify(sys.argv[1]); "
        "print(r.summary()); assert stats(sys.argv[1])['records'] == 1200; "
        "assert [x['seq'] for x in tail(sys.argv[1], 2)] == [1199, 1200]; "
        "assert len(list(follow(sys.argv[1], after_seq=0, stop_after_s=0))) == 1200; sys.exit(r.exit_code)"
    )
    script = f'ulimit -n 256; exec {sys.executable} -c "$0" "$1"'
    done = subprocess.run(["bash", "-c", script, code, str(log)], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "OK: 1200 records verified" in done.stdout


@pytest.mark.parametrize("suffix", [".jsonl", ""])
def test_a_log_named_like_a_segment_is_another_log(tmp_path: Path, suffix: str) -> None:
    day = tmp_path / f"audit.20240101{suffix}"
    log = tmp_path / f"audit{suffix}"
    write_log(day, 4)
    before = day.read_bytes()
    write_log(log, 12, max_bytes=1_500)  # rotates: audit.1, audit.2, ... never audit.20240102
    assert day.read_bytes() == before
    assert not (tmp_path / f"audit.20240102{suffix}").exists()
    assert segments(log)[0].name == f"audit.1{suffix}" and day not in segments(log)
    mine, other = verify(log), verify(day)
    assert mine.exit_code == EXIT_OK and mine.checked == 12 and mine.first_seq == 1, mine.summary()
    assert other.exit_code == EXIT_OK and other.checked == 4, other.summary()
    assert [r["seq"] for r in records(log)] == list(range(1, 13))


def test_a_rotation_never_adopts_a_file_outside_the_run_of_segments(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    foreign = tmp_path / "audit.2.jsonl"
    write_log(foreign, 2)  # another log that happens to carry the name of segment 2
    before = foreign.read_bytes()
    with JsonlSink(log, max_bytes=1) as sink:
        sink.write(make_decision(0), deployment="tests")
        with pytest.raises(AuditLogError, match=r"cannot rotate audit log .*audit\.2\.jsonl already exists"):
            sink.write(make_decision(1), deployment="tests")
    assert foreign.read_bytes() == before and not (tmp_path / "audit.1.jsonl").exists()
    assert verify(log).checked == 1 and verify(foreign).checked == 2


@pytest.mark.parametrize("kind", ["jsonl", "sqlite"])
def test_tail_then_follow_from_its_last_seq_misses_nothing(tmp_path: Path, kind: str) -> None:
    from guardrail.audit import follow, tail_and_last_seq

    log = tmp_path / ("audit.jsonl" if kind == "jsonl" else "audit.db")
    if kind == "jsonl":
        write_log(log, 300, max_bytes=2_500)
    else:
        with SqliteSink(log) as sink:
            for i in range(300):
                sink.write(make_decision(i), deployment="tests")
    writer = _start_writer(log, 2_500, 200, 0.002)
    try:
        time.sleep(0.3)
        shown, last = tail_and_last_seq(log, 3)
        seqs = [r["seq"] for r in shown]
        assert seqs == list(range(last - 2, last + 1))
        time.sleep(0.3)  # records land between the scan and the follow's start
        deadline = time.monotonic() + 60
        while writer.poll() is None and time.monotonic() < deadline:
            seqs += [r["seq"] for r in follow(log, poll_s=0.05, stop_after_s=0.5, after_seq=seqs[-1])]
        seqs += [r["seq"] for r in follow(log, poll_s=0.05, stop_after_s=0.3, after_seq=seqs[-1])]
    finally:
        writer.wait(timeout=60)
    assert writer.returncode == 0
    assert seqs == list(range(seqs[0], 501)), seqs  # every seq exactly once, no gap, up to the end


def test_follow_across_rotation_prints_every_record_once(tmp_path: Path) -> None:
    from guardrail.audit import follow

    log = tmp_path / "audit.jsonl"
    write_log(log, 3, max_bytes=2_500)
    writer = _start_writer(log, 2_500, 150, 0.01)
    try:
        seqs = [r["seq"] for r in follow(log, poll_s=0.2, stop_after_s=4)]
        deadline = time.monotonic() + 60
        while writer.poll() is None and time.monotonic() < deadline:
            after = seqs[-1] if seqs else None  # a new follow picks up where the last one stopped
            seqs += [r["seq"] for r in follow(log, poll_s=0.2, stop_after_s=0.5, after_seq=after)]
    finally:
        writer.wait(timeout=60)
    assert seqs and seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs  # no gap, no repeat
    assert len(segments(log)) > 20 and verify(log).exit_code == EXIT_OK


def test_follow_reads_only_new_bytes_of_a_large_idle_log(tmp_path: Path) -> None:
    from guardrail.audit import follow

    log = tmp_path / "audit.jsonl"
    write_log(log, 2_000)
    start = time.process_time()
    assert list(follow(log, poll_s=0.01, stop_after_s=1.0)) == []  # ~100 polls of an idle log
    assert time.process_time() - start < 0.5
    with JsonlSink(log) as sink:
        sink.write(make_decision(0), deployment="late")
    followed = follow(log, poll_s=0.01, stop_after_s=0.5)
    assert list(followed) == []  # it starts at the end: nothing new since


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("policy_name", "lenient"),
        ("policy_version", "9"),
        ("policy_hash", "00"),
        ("model_id", "other-model"),
        ("intended_action", "block"),
        ("ts", "2020-01-01T00:00:00Z"),
        ("deployment", "elsewhere"),
    ],
)
def test_sqlite_every_copied_column_is_checked(tmp_path: Path, column: str, value: str) -> None:
    import sqlite3

    db = tmp_path / "audit.db"
    with SqliteSink(db) as sink:
        for i in range(4):
            sink.write(make_decision(i), deployment="tests")
    with sqlite3.connect(db) as conn:
        conn.execute(f"UPDATE records SET {column} = ? WHERE seq = 3", (value,))
    report = verify(db)
    assert report.exit_code == EXIT_TAMPERED and report.seq == 3 and column in report.summary(), report.summary()


def _append_record(log: Path, **fields: object) -> None:
    """A well-chained record with ``fields`` changed, as a buggy or older writer could have stored it."""
    last = json.loads(lines(log)[-1])
    body = {k: v for k, v in last.items() if k != "hash"} | {"seq": last["seq"] + 1, "prev_hash": last["hash"]}
    body |= fields
    with open(log, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(body | {"hash": compute_hash(body)}, sort_keys=True, separators=(",", ":")) + "\n")


def test_report_skips_records_with_malformed_scores(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from guardrail.report import build_report

    log = tmp_path / "audit.jsonl"
    write_log(log, 2)
    _append_record(log, scores={"scores": {"achievement": 0.5}, "labels": {"achievement": 1}})
    assert verify(log).exit_code == EXIT_OK
    page = build_report(log)
    assert "OK: 3 records verified" in page and "1 record(s) whose scores are malformed" in page
    out = tmp_path / "report.html"
    assert cli_main(["audit", "report", str(log), "--out", str(out)]) == 0 and out.exists()
    assert "Traceback" not in capsys.readouterr().err


def test_nul_bytes_left_by_a_power_loss_are_a_torn_tail_and_the_writer_recovers(tmp_path: Path) -> None:
    for residue in (b'{"action":"al' + b"\x00" * 300, b"\x00" * 2_000):  # a torn line zero-filled; a zeroed block
        log = tmp_path / f"nul{len(residue)}.jsonl"
        write_log(log, 3)
        with open(log, "ab") as fh:
            fh.write(residue)
        report = verify(log)
        assert report.exit_code == EXIT_TORN_TAIL and report.checked == 3, report.summary()
        write_log(log, 2)
        after = verify(log)
        assert after.exit_code == EXIT_OK and after.checked == 5 and len(after.crash_residue) == 1, after.summary()
    nul_only = tmp_path / "zeroed.jsonl"
    nul_only.write_bytes(b"\x00" * 512)  # the file was created, then the power went
    write_log(nul_only, 2)
    assert verify(nul_only).exit_code == EXIT_OK


def test_non_canonical_bytes_get_a_note_and_duplicate_keys_are_tampering(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    write_log(log, 3)
    original = log.read_bytes()
    log.write_bytes(original.replace(b"\n", b"\r\n"))
    report = verify(log)
    assert report.exit_code == EXIT_OK and "4 line(s) are not stored as the sink writes them" in report.summary()
    rows = original.decode().splitlines()
    rows[2] = '{"action":"block",' + rows[2][1:]  # jq and friends read the first "action", the hash the last
    log.write_text("\n".join(rows) + "\n")
    report = verify(log)
    assert report.exit_code == EXIT_TAMPERED and "holds the key 'action' twice" in report.summary()
    assert report.where == f"{log}:3"


def test_a_genesis_naming_another_file_than_the_one_before_it_gets_a_note(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    write_log(log, 10, max_bytes=3_000)
    rows = lines(log)
    genesis = json.loads(rows[0])
    rows[0] = json.dumps(genesis | {"continues": "audit.99.jsonl"}, sort_keys=True, separators=(",", ":"))
    log.write_text("\n".join(rows) + "\n")
    report = verify(log)
    assert report.exit_code == EXIT_OK and "says it continues audit.99.jsonl, but the file before it is" in (
        report.summary()
    )
