"""The SQLite store: the same chain in a database, and its copied columns checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from guardrail.audit import EXIT_OK, EXIT_TAMPERED, stats, verify
from guardrail.audit.sqlite import SqliteSink
from tests.audit_logs import make_decision


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


def test_sqlite_log_never_written_has_no_records(tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    SqliteSink(db).close()
    report = verify(db)
    assert report.exit_code == EXIT_OK and report.checked == 0 and "no records yet" in report.summary()


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
