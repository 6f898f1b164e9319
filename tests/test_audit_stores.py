"""open_store: which store a path or URL names, and URLs the product does not know refused."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from guardrail.audit import AuditLogError, JsonlStore, SqliteStore, open_store
from guardrail.audit.postgres import PostgresStore
from guardrail.cli import main as cli_main
from tests.audit_logs import REPO


def test_paths_and_urls_name_their_store(tmp_path: Path) -> None:
    for name, kind in (("a.jsonl", JsonlStore), ("a", JsonlStore), ("a.db", SqliteStore), ("a.SQLite3", SqliteStore)):
        with open_store(tmp_path / name) as store:
            assert isinstance(store, kind) and store.name == str(tmp_path / name)
    for url in ("postgresql://auditor:s3cret@db.internal:5432/audit?log=eu", "postgres://auditor@db.internal/audit"):
        store = open_store(url, readonly=True)  # a reader connects only when it reads
        assert isinstance(store, PostgresStore) and "s3cret" not in store.name
    assert open_store("postgresql://db.internal/audit", readonly=True, log="us").name.endswith("?log=us")
    assert PostgresStore("postgresql://db.internal/audit", readonly=True).log == "default"


@pytest.mark.parametrize(
    "target", ["mysql://auditor:s3cret@db.internal/audit", "http://127.0.0.1:9/audit", "sqlite:///audit.db"]
)
def test_a_url_the_product_does_not_know_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], target: str
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(AuditLogError, match="guardrail has no audit store for"):
        open_store(target)
    assert cli_main(["check", "--audit", target, "Octopuses have three hearts."]) == 2
    err = capsys.readouterr().err
    assert "guardrail has no audit store for" in err and "postgresql://" in err and "s3cret" not in err
    assert cli_main(["audit", "verify", target]) == 2
    assert "guardrail has no audit store for" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # no folder named "mysql:" (what a URL used to become)


def test_a_postgres_url_libpq_would_refuse_is_named(tmp_path: Path) -> None:
    refused = r"audit\?colour=blue&log=default: not a PostgreSQL URL libpq accepts \(invalid URI query parameter"
    with pytest.raises(AuditLogError, match=refused):
        open_store("postgresql://db.internal/audit?colour=blue")
    with pytest.raises(AuditLogError, match="audit log name 'a b'"):
        open_store("postgresql://db.internal/audit?log=a b")
    with pytest.raises(AuditLogError, match="apply to JSONL logs only"):
        open_store("postgresql://db.internal/audit", max_bytes=1000)
    with pytest.raises(AuditLogError, match="apply to PostgreSQL stores only"):
        open_store(tmp_path / "a.jsonl", log="eu")


def test_postgres_tests_fail_under_ci_when_the_server_is_missing(tmp_path: Path) -> None:
    one = "tests/test_audit_postgres.py::test_schema_is_created_on_first_use_and_a_newer_one_is_refused"
    run = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", one]
    for ci, code, said in (("true", 1, "1 error"), ("", 0, "SKIPPED")):  # an error in its fixture under CI
        env = {**os.environ, "GUARDRAIL_TEST_PG_BIN": str(tmp_path), "CI": ci}
        done = subprocess.run(run, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == code, done.stdout + done.stderr
        assert said in done.stdout and "apt-get install postgresql-15" in done.stdout, done.stdout


def test_libpq_settings_in_a_url_reach_libpq_unchanged() -> None:
    from guardrail.audit.postgres import split_url

    url = "postgresql://auditor:s3cret@/audit?host=/run/postgresql&options=-c%20synchronous_commit%3Doff&log=eu"
    libpq, log, shown = split_url(url)
    assert libpq == "postgresql://auditor:s3cret@/audit?host=/run/postgresql&options=-c%20synchronous_commit%3Doff"
    assert (
        log == "eu"
        and shown == "postgresql://auditor@/audit?host=/run/postgresql&options=-c%20synchronous_commit%3Doff&log=eu"
    )
