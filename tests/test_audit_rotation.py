"""Rotated JSONL logs and live logs: segments, deletion, and tail/follow across rotations."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from guardrail.audit import EXIT_OK, EXIT_TAMPERED, EXIT_TORN_TAIL, AuditLogError, records, stats, verify
from guardrail.audit.jsonl import JsonlSink
from guardrail.audit.segments import segments
from guardrail.cli import main as cli_main
from guardrail.record import compute_hash
from tests.audit_logs import REPO, lines, make_decision, start_writer, write_log


def test_rotation_keeps_one_continuous_chain(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    write_log(log, 60, max_bytes=8_000)
    files = segments(log)
    assert len(files) > 2
    report = verify(log)
    assert report.exit_code == EXIT_OK and report.checked == 60 and report.files == len(files)
    files[1].unlink()  # losing a whole rotated file is detected too
    assert verify(log).exit_code == EXIT_TAMPERED


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
    writer = start_writer(log, 2_500, 600, 0.0)
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


@pytest.mark.parametrize("kind", ["jsonl", "sqlite", "postgresql"])
def test_tail_then_follow_from_its_last_seq_misses_nothing(
    tmp_path: Path, kind: str, request: pytest.FixtureRequest
) -> None:
    from guardrail.audit import follow, open_store, tail_and_last_seq

    log: Path | str = tmp_path / "audit.jsonl"
    if kind == "jsonl":
        write_log(tmp_path / "audit.jsonl", 300, max_bytes=2_500)
    else:  # a SQLite file, or a database of the real server (tests/pg.py)
        log = request.getfixturevalue("pg_url") if kind == "postgresql" else tmp_path / "audit.db"
        with open_store(log) as sink:
            for i in range(300):
                sink.write(make_decision(i), deployment="tests")
    writer = start_writer(log, 2_500, 200, 0.002)
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
    writer = start_writer(log, 2_500, 150, 0.01)
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
