"""The PostgreSQL store against a real PostgreSQL 15 server (tests/pg.py): many writers, kills,
tampering, verify while writing, and a database that goes down and comes back."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest

from guardrail.audit import (
    EXIT_OK,
    EXIT_TAMPERED,
    AuditLogError,
    AuditWriteError,
    open_store,
    records,
    stats,
    tail_and_last_seq,
    verify,
)
from guardrail.cli import main as cli_main
from guardrail.guard import Guard
from guardrail.record import AuditRecord
from guardrail.report import build_report
from guardrail.scorers.local import LocalScorer
from guardrail.stream import StreamGuard
from tests.audit_logs import REPO, make_decision
from tests.pg import PASSWORD, PgServer

HARMLESS = "Octopuses have three hearts."


def pg_writer(url: str, n: int, tag: str) -> None:
    """Append ``n`` decisions to the log at ``url`` (run in its own process)."""
    with open_store(url) as store:
        for i in range(n):
            store.write(make_decision(i), deployment=tag)


def write(url: str, n: int, tag: str = "tests") -> None:
    pg_writer(url, n, tag)


def sql(url: str, *statements: str) -> list[Any]:
    """Run ``statements`` as the database's owner would (a tamperer with full rights); the last one's rows."""
    rows: list[Any] = []
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in statements:
            cursor = conn.execute(statement)
            rows = cursor.fetchall() if cursor.description else []
    return rows


def row_ids(url: str) -> dict[int, int]:
    """seq -> row id of the default log."""
    return dict(sql(url, "SELECT seq, id FROM guardrail_audit_records WHERE log = 'default'"))


def test_a_log_in_postgres_chains_verifies_and_answers_questions(
    pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    write(pg_url, 5)
    write(pg_url + "&log=eu", 3, "eu")  # a second log in the same database: a chain of its own
    report = verify(pg_url)
    assert report.exit_code == EXIT_OK and report.checked == 5 and report.last_seq == 5, report.summary()
    assert "across 1 log(s)" in report.summary()
    eu = verify(pg_url + "&log=eu")
    assert eu.exit_code == EXIT_OK and eu.checked == 3 and eu.first_seq == 1
    assert [r["seq"] for r in records(pg_url)] == [1, 2, 3, 4, 5]
    assert {r["deployment"] for r in records(pg_url + "&log=eu")} == {"eu"}
    assert stats(pg_url)["records"] == 5
    shown, last = tail_and_last_seq(pg_url, 2)
    assert [r["seq"] for r in shown] == [4, 5] and last == 5
    assert sql(pg_url, "SELECT version FROM guardrail_audit_schema") == [(1,)]  # created on first use
    assert cli_main(["audit", "verify", pg_url + "&log=eu"]) == EXIT_OK
    assert "OK: 3 records verified" in capsys.readouterr().out
    assert cli_main(["audit", "tail", pg_url, "-n", "1"]) == 0
    assert capsys.readouterr().out.split()[0] == "5"
    page = build_report(pg_url)
    assert "hash chain intact" in page and "log=default" in page


def test_four_processes_append_four_thousand_records_in_one_chain(pg_url: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=pg_writer, args=(pg_url, 1000, f"proc{i}")) for i in range(4)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join()
        assert proc.exitcode == 0
    report = verify(pg_url)
    assert report.exit_code == EXIT_OK and report.checked == 4000 and report.last_seq == 4000, report.summary()
    seen = [(r["deployment"], r["prompt"]) for r in records(pg_url)]
    assert len(set(seen)) == 4000
    assert Counter(d for d, _ in seen) == {f"proc{i}": 1000 for i in range(4)}


def test_threads_sharing_a_store_and_with_stores_of_their_own_keep_one_chain(pg_url: str) -> None:
    shared = open_store(pg_url)

    def on_shared(tag: str) -> None:
        for i in range(100):
            shared.write(make_decision(i), deployment=tag)

    threads = [threading.Thread(target=on_shared, args=(f"shared{i}",)) for i in range(4)]
    threads += [threading.Thread(target=pg_writer, args=(pg_url, 100, f"own{i}")) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    shared.close()
    report = verify(pg_url)
    assert report.exit_code == EXIT_OK and report.checked == 800, report.summary()


_VICTIM = (
    "import sys; sys.path.insert(0, sys.argv[2]); from tests.test_audit_postgres import pg_writer;"
    "pg_writer(sys.argv[1], 100000, 'victim')"
)


def test_sigkill_of_a_writer_mid_burst_leaves_no_partial_record(pg_url: str) -> None:
    proc = subprocess.Popen([sys.executable, "-c", _VICTIM, pg_url, str(REPO)])
    store = open_store(pg_url, readonly=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        head = store.head()
        if head is not None and head.seq >= 300:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    report = verify(pg_url)
    assert report.exit_code == EXIT_OK, report.summary()  # a database has no torn tail: all or nothing
    written = report.checked
    assert written >= 300
    assert sql(pg_url, "SELECT count(*) FROM guardrail_audit_records") == [(written,)]
    write(pg_url, 10, "restarted")
    after = verify(pg_url)
    assert after.exit_code == EXIT_OK and after.checked == written + 10, after.summary()


def test_a_writer_killed_inside_its_transaction_leaves_nothing(pg_url: str) -> None:
    write(pg_url, 1, "before")
    waiting = (
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'guardrail-audit' AND wait_event_type = 'Lock'"
    )
    with psycopg.connect(pg_url) as holder:  # someone holds the log's head row (a transaction, not autocommit)
        holder.execute("SELECT seq FROM guardrail_audit_logs WHERE log = 'default' FOR UPDATE")
        proc = subprocess.Popen([sys.executable, "-c", _VICTIM, pg_url, str(REPO)])
        try:
            deadline = time.monotonic() + 60
            while sql(pg_url, waiting) != [(1,)] and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            assert sql(pg_url, waiting) == [(1,)]  # its append started its transaction and waits for the head row
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        deadline = time.monotonic() + 30
        while sql(pg_url, waiting) != [(0,)] and time.monotonic() < deadline:
            time.sleep(0.1)  # the server notices the dead client (client_connection_check_interval) and rolls back
        assert sql(pg_url, waiting) == [(0,)]
    write(pg_url, 1, "after")
    report = verify(pg_url)
    assert report.exit_code == EXIT_OK and report.checked == 2, report.summary()
    assert [r["deployment"] for r in records(pg_url)] == ["before", "after"]


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        ("edit", "the record's content does not match its hash (the record was edited)"),
        ("delete", "seq 4 where 3 was expected: records missing (deleted?)"),
        ("insert", "seq 3 where 4 was expected: records out of order or duplicated (reordered or inserted?)"),
        ("reorder", "seq 4 where 3 was expected: records missing (deleted?)"),
    ],
)
def test_every_kind_of_tampering_is_detected_and_named_as_in_a_jsonl_log(pg_url: str, edit: str, expected: str) -> None:
    write(pg_url, 6)
    ids = row_ids(pg_url)
    table = "guardrail_audit_records"
    if edit == "edit":
        sql(pg_url, f"UPDATE {table} SET record = replace(record, '\"answer 2\"', '\"answer 9\"') WHERE seq = 3")
        where, seq = ids[3], 3
    elif edit == "delete":
        sql(pg_url, f"DELETE FROM {table} WHERE seq = 3")
        where, seq = ids[4], 4
    elif edit == "insert":  # a copy of seq 3 slipped in right after it (its owner can drop constraints)
        sql(
            pg_url,
            f"ALTER TABLE {table} DROP CONSTRAINT {table}_log_seq_key",
            f"ALTER TABLE {table} ALTER COLUMN id SET GENERATED BY DEFAULT",
            f"UPDATE {table} SET id = id + 1000 WHERE seq >= 4",
            f"INSERT INTO {table} SELECT id + 1, log, seq, gen_random_uuid(), ts, deployment, policy_name, "
            "policy_version, policy_hash, "
            f"model_id, action, intended_action, prev_hash, hash, record FROM {table} WHERE seq = 3",
        )
        where, seq = ids[3] + 1, 3
    else:  # reorder: seq 3 and 4 swap places
        sql(
            pg_url,
            f"ALTER TABLE {table} ALTER COLUMN id SET GENERATED BY DEFAULT",
            f"UPDATE {table} SET id = 0 WHERE id = {ids[3]}",
            f"UPDATE {table} SET id = {ids[3]} WHERE id = {ids[4]}",
            f"UPDATE {table} SET id = {ids[4]} WHERE id = 0",
        )
        where, seq = ids[3], 4
    report = verify(pg_url)
    assert report.exit_code == EXIT_TAMPERED and report.seq == seq, report.summary()
    assert report.problem == expected, report.summary()
    store = open_store(pg_url, readonly=True)
    assert report.where == f"{store.name} row id {where}", report.summary()


def test_edited_columns_and_records_cut_from_the_end_are_tampering_too(pg_url: str) -> None:
    write(pg_url, 6)
    ids = row_ids(pg_url)
    sql(pg_url, "UPDATE guardrail_audit_records SET action = 'block' WHERE seq = 2")
    report = verify(pg_url)
    assert report.exit_code == EXIT_TAMPERED and report.seq == 2 and str(report.where).endswith(f"row id {ids[2]}")
    assert report.problem == "columns ['action'] disagree with the hashed record (row edited)"
    sql(pg_url, "UPDATE guardrail_audit_records SET action = 'allow' WHERE seq = 2")
    sql(pg_url, "DELETE FROM guardrail_audit_records WHERE seq >= 5")  # what a JSONL log cannot tell alone
    report = verify(pg_url)
    assert report.exit_code == EXIT_TAMPERED and str(report.where).endswith("head row"), report.summary()
    assert "the head row says the chain ends at seq 6" in str(report.problem)
    assert "records were deleted from its end" in str(report.problem)


def test_verify_while_writers_append_always_verifies(pg_url: str) -> None:
    write(pg_url, 1)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=pg_writer, args=(pg_url, 700, f"w{i}")) for i in range(3)]
    for proc in procs:
        proc.start()
    seen: list[int] = []
    try:
        while any(proc.is_alive() for proc in procs) or not seen:
            report = verify(pg_url)
            assert report.exit_code == EXIT_OK, report.summary()
            seen.append(report.checked)
    finally:
        for proc in procs:
            proc.join()
    assert all(proc.exitcode == 0 for proc in procs)
    assert seen == sorted(seen) and len(set(seen)) > 1, seen  # verified mid-write, more each time
    assert verify(pg_url).checked == 2101


def test_a_password_stays_off_the_command_line_and_out_of_messages(
    postgres: PgServer, pg_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    db = urlsplit(pg_url).path.strip("/")
    without = postgres.tcp_url(db, log="ops")
    monkeypatch.delenv("PGPASSWORD", raising=False)
    with pytest.raises(AuditLogError, match=r"cannot use audit database postgresql://guardrail@127\.0\.0\.1"):
        open_store(without)
    monkeypatch.setenv("PGPASSWORD", PASSWORD)  # libpq's own variable: the URL names no password
    write(without, 2, "ops")
    monkeypatch.delenv("PGPASSWORD")
    with_password = postgres.url(db, password=True, log="ops")
    store = open_store(with_password)
    assert PASSWORD not in store.name and store.name.endswith("/" + db + "?log=ops")
    store.close()
    monkeypatch.setenv("GUARDRAIL_AUDIT_URL", with_password)  # the whole target from the environment
    assert cli_main(["audit", "verify"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "OK: 2 records verified" in out and PASSWORD not in out
    assert cli_main(["audit", "verify", with_password.replace(PASSWORD, "wrong")]) == 2
    err = capsys.readouterr().err
    assert "password authentication failed" in err and "wrong" not in err


def test_schema_is_created_on_first_use_and_a_newer_one_is_refused(pg_url: str) -> None:
    reader = verify(pg_url)  # reading an empty database creates nothing
    assert reader.exit_code == EXIT_OK and reader.checked == 0 and "no records yet" in reader.summary()
    assert sql(pg_url, "SELECT to_regclass('guardrail_audit_schema')") == [(None,)]
    write(pg_url, 1)
    assert sql(pg_url, "SELECT version FROM guardrail_audit_schema") == [(1,)]
    sql(pg_url, "INSERT INTO guardrail_audit_schema (version) VALUES (2)")
    for attempt in (lambda: open_store(pg_url), lambda: verify(pg_url)):
        with pytest.raises(AuditLogError, match=r"schema version 2, newer than this guardrail knows \(1\)"):
            attempt()


def test_a_database_that_goes_down_follows_fail_mode_and_loses_no_decision(
    scorer: LocalScorer, tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    server = PgServer()  # a server of its own, to stop and start
    try:
        server.start()
        url = server.create_database("ops")
        fallback = tmp_path / "fallback" / "audit.jsonl"
        lenient = tmp_path / "lenient.yaml"
        lenient.write_text("name: lenient\nextends: default\nsettings: {fail_mode: open}\n")
        closed = Guard("default", scorer=scorer, audit=open_store(url, fallback=fallback), deployment="closed")
        opened = Guard(lenient, scorer=scorer, audit=open_store(url, fallback=fallback), deployment="open")
        nowhere = Guard("default", scorer=scorer, audit=open_store(url, fallback=tmp_path), deployment="x")
        assert closed.check(HARMLESS).action == "allow"
        server.stop()
        with caplog.at_level(logging.ERROR, logger="guardrail.audit"):
            blocked = closed.check(HARMLESS)
        assert blocked.action == "block" and blocked.intended_action == "allow"
        assert blocked.text == closed.policy.settings.refusal_message
        assert (
            blocked.error and "not recorded in the audit store" in blocked.error and "fail_mode=closed" in blocked.error
        )
        assert str(fallback) in blocked.error and str(fallback) in caplog.text
        passed = opened.check(HARMLESS)
        assert passed.action == "allow" and passed.text == HARMLESS and "fail_mode=open" in str(passed.error)
        late = asyncio.run(closed.acheck(HARMLESS))
        assert late.action == "block"
        stream = StreamGuard(closed, "Tell me a fact.")
        assert stream.feed(HARMLESS) == ""  # held back: one short sentence is checked at the end
        tail, streamed = stream.finish()
        assert tail == "" and streamed.action == "block" and stream.refusal == blocked.text
        with pytest.raises(AuditWriteError, match="is a directory"):  # nowhere to put it: raised, never dropped
            nowhere.check(HARMLESS)
        with pytest.raises(AuditLogError, match="cannot use audit database postgresql://guardrail@/ops"):
            open_store(url)
        assert cli_main(["audit", "verify", url]) == 2
        assert "cannot read audit database" in capsys.readouterr().err
        spilled = verify(fallback)  # the fallback is an audit log of its own
        assert spilled.exit_code == EXIT_OK and spilled.checked == 4, spilled.summary()
        assert [(r["deployment"], r["action"]) for r in records(fallback)] == [
            ("closed", "block"),
            ("open", "allow"),
            ("closed", "block"),
            ("closed", "block"),
        ]
        server.start()
        assert closed.check(HARMLESS).action == "allow"  # a new connection, as soon as it is back
        assert cli_main(["audit", "import", str(fallback), "--into", url]) == 0
        assert "imported 4 record(s)" in capsys.readouterr().out
        report = verify(url)
        assert report.exit_code == EXIT_OK and report.checked == 6, report.summary()
        imported = [r["context"].get("imported_from") for r in records(url)]
        assert [o["seq"] if o else None for o in imported] == [None, None, 1, 2, 3, 4]
        server.stop()  # a restart between two decisions: the broken connection is replaced, nothing spilled
        server.start()
        assert closed.check(HARMLESS).error is None
        assert verify(url).checked == 7 and verify(fallback).checked == 4
        for guard in (closed, opened, nowhere):
            guard.close()
    finally:
        server.close()


def test_stores_are_the_guards_sinks(scorer: LocalScorer, pg_url: str) -> None:
    with Guard("default", scorer=scorer, audit=open_store(pg_url), deployment="pg") as guard:
        decision = guard.check(HARMLESS, prompt="Tell me a fact.", context={"request_id": "r1"})
        written: AuditRecord = guard.audit.write(decision, deployment="again")  # type: ignore[union-attr]
    (first, second) = list(records(pg_url))
    assert first["context"] == {"request_id": "r1"} and first["action"] == decision.action
    assert second["seq"] == written.seq == 2 and second["hash"] == written.hash


def test_a_record_that_cannot_be_built_leaves_nothing_behind(pg_url: str) -> None:
    write(pg_url, 2)

    def broken(seq: int, prev_hash: str) -> AuditRecord:
        raise ValueError(f"cannot build seq {seq}")

    with open_store(pg_url) as store:
        with pytest.raises(ValueError, match="cannot build seq"):
            store.append(broken)  # nothing is sent, nothing is locked
        store.write(make_decision(9), deployment="after")
    report = verify(pg_url)
    assert report.exit_code == EXIT_OK and report.checked == 3, report.summary()
    assert [r["deployment"] for r in records(pg_url)][-1] == "after"


def test_cli_check_audits_into_postgres(pg_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["check", "--audit", pg_url + "&log=cli", "--deployment", "cli", HARMLESS]) == 0
    capsys.readouterr()
    (record,) = records(pg_url + "&log=cli")
    assert record["deployment"] == "cli" and record["response"] == HARMLESS


def _write_with(store: Any, n: int, tag: str) -> None:
    for i in range(n):
        store.write(make_decision(i), deployment=tag)


def test_a_store_carried_across_fork_connects_anew_in_the_child(pg_url: str) -> None:
    store = open_store(pg_url)  # connected, as a pre-forking server's workers would inherit it
    store.write(make_decision(0), deployment="parent")
    child = multiprocessing.get_context("fork").Process(target=_write_with, args=(store, 50, "child"))
    child.start()
    _write_with(store, 50, "parent")
    child.join()
    assert child.exitcode == 0
    _write_with(store, 1, "parent")  # the parent's session survived the child
    store.close()
    report = verify(pg_url)
    assert report.exit_code == EXIT_OK and report.checked == 102, report.summary()
    assert Counter(r["deployment"] for r in records(pg_url)) == {"parent": 52, "child": 50}


class _LosingProxy:
    """A TCP relay to the server that, when told, drops the next answer and both connections: a
    network failure after the server committed an append but before the writer heard of it."""

    def __init__(self, port: int) -> None:
        self.upstream = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.lose_next_answer = threading.Event()
        self.lost = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream))
            threading.Thread(target=self._pump, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, True), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, answers: bool) -> None:
        try:
            while data := source.recv(65536):
                if answers and self.lose_next_answer.is_set():
                    self.lose_next_answer.clear()
                    self.lost += 1
                    break
                sink.sendall(data)
        except OSError:
            pass
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
            end.close()

    def close(self) -> None:
        self.listener.close()


def test_an_append_whose_answer_is_lost_is_sent_again_and_stored_once(
    postgres: PgServer, pg_url: str, tmp_path: Path
) -> None:
    proxy = _LosingProxy(postgres.port)
    db = urlsplit(pg_url).path.strip("/")
    url = f"postgresql://guardrail:{PASSWORD}@127.0.0.1:{proxy.port}/{db}"
    try:
        with open_store(url, fallback=tmp_path / "fallback.jsonl") as store:
            store.write(make_decision(0), deployment="tests")
            proxy.lose_next_answer.set()
            second = store.write(make_decision(1), deployment="tests")  # committed, unheard, sent again
            store.write(make_decision(2), deployment="tests")
    finally:
        proxy.close()
    assert proxy.lost == 1 and second.seq == 2
    report = verify(pg_url)
    assert report.exit_code == EXIT_OK and report.checked == 3, report.summary()
    assert [r["prompt"] for r in records(pg_url)] == ["question 0", "question 1", "question 2"]
    assert not (tmp_path / "fallback.jsonl").exists()
