"""Crashes and concurrent writers on a JSONL log, with real processes: what a crash leaves is not tampering."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from guardrail.audit import EXIT_OK, EXIT_TAMPERED, EXIT_TORN_TAIL, records, verify
from guardrail.audit.jsonl import JsonlSink
from guardrail.audit.segments import segments
from tests.audit_logs import REPO, crash_fragment, make_decision, write_log, writer_process


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


def test_sigkill_mid_burst_loses_at_most_the_record_in_flight(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    code = (
        "import sys; sys.path.insert(0, sys.argv[2]); from tests.audit_logs import writer_process;"
        "writer_process(sys.argv[1], 100000, 'victim')"
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
    writer_process(str(log), 10, "restarted")
    after = verify(log)
    assert after.exit_code == EXIT_OK and after.checked == written + 10, after.summary()


def test_eight_concurrent_writers_threads_and_processes(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=writer_process, args=(str(log), 1000, f"proc{i}")) for i in range(4)]
    threads = [threading.Thread(target=writer_process, args=(str(log), 1000, f"thread{i}")) for i in range(4)]
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
