"""The hash chain of a JSONL log: what verify finds, names and locates, and what it accepts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from guardrail.audit import EXIT_OK, EXIT_TAMPERED, AuditLogError, records, replay, stats, tail, verify
from guardrail.audit.jsonl import JsonlSink
from guardrail.audit.sqlite import SqliteSink
from guardrail.cli import main as cli_main
from guardrail.guard import Guard
from guardrail.policy import load_policy
from guardrail.record import compute_hash
from guardrail.scorers.local import LocalScorer
from tests.audit_logs import lines, make_decision, tamper, write_log
from tests.samples import HARMFUL, HARMFUL_PROMPT


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
