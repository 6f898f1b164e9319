"""A real PostgreSQL 15 server for tests and benchmarks, started from Debian's binaries.

The server refuses to run as root: under root (CI) it runs as the ``postgres`` system user the
Debian package creates, from a data folder that user owns in a temporary folder; otherwise as
the current user. It listens on a free port of 127.0.0.1 (password auth) and on a unix socket in
that folder (trust), and is stopped (fast shutdown) and removed by ``close``.

``require_binaries`` fails when they are missing under CI (``CI=true``), so these tests never
skip silently there; elsewhere it skips, naming what to install.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.servers import free_port

PG_BIN = Path(os.environ.get("GUARDRAIL_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
USER = "guardrail"
PASSWORD = "audit-test-password"
INSTALL = "install PostgreSQL 15 (`apt-get install postgresql-15`, which `make test` does)"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def require_binaries() -> None:
    """Fail (under CI) or skip (elsewhere) when the server binaries are missing, saying what to install."""
    missing = [name for name in ("initdb", "postgres") if not (PG_BIN / name).is_file()]
    if not missing:
        return
    message = f"PostgreSQL server binaries {missing} not found in {PG_BIN}: {INSTALL}"
    if in_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


class PgServer:
    """One PostgreSQL cluster in a temporary folder; ``start``/``stop`` may be called again (a restart).

    Tests run it with ``fsync`` off (they kill clients, never the machine); ``durable=True`` keeps
    the server's defaults (fsync and synchronous commit on), for benchmarks.
    """

    def __init__(self, durable: bool = False) -> None:
        self.durable = durable
        self.root = Path(tempfile.mkdtemp(prefix="guardrail-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._as: dict[str, Any] = {}
        if os.geteuid() == 0:  # the server refuses root: run it as the Debian package's system user
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError(f"running as root and no 'postgres' user to run the server as: {INSTALL}") from None
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
            self._as = {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []}
        self._init()

    def _run(self, *args: str) -> None:
        env = {"PATH": os.environ.get("PATH", ""), "LC_ALL": "C.UTF-8", "HOME": str(self.root)}
        done = subprocess.run(args, cwd=self.root, env=env, capture_output=True, text=True, **self._as)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed: {done.stdout}{done.stderr}")

    def _init(self) -> None:
        pwfile = self.root / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if self._as:
            os.chown(pwfile, self._as["user"], self._as["group"])
        self._run(
            str(PG_BIN / "initdb"), "-D", str(self.data), "-U", USER, f"--pwfile={pwfile}", "-E", "UTF8",
            "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync",
        )  # fmt: skip
        pwfile.unlink()

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        log = open(self.root / "server.log", "ab")  # noqa: SIM115 - the server's own log, closed with it
        if self._as:
            os.fchown(log.fileno(), self._as["user"], self._as["group"])
        settings = {
            "port": str(self.port),
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": str(self.root),
            "fsync": "on" if self.durable else "off",
            "max_connections": "200",
            "shared_buffers": "32MB",
        }
        args = [str(PG_BIN / "postgres"), "-D", str(self.data)]
        for key, value in settings.items():
            args += ["-c", f"{key}={value}"]
        env = {"PATH": os.environ.get("PATH", ""), "LC_ALL": "C.UTF-8"}
        self.proc = subprocess.Popen(args, stdout=log, stderr=log, env=env, cwd=self.root, **self._as)
        log.close()
        deadline = time.monotonic() + 60
        while True:
            try:
                psycopg.connect(self.url("postgres"), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"PostgreSQL did not start: {(self.root / 'server.log').read_text()}") from None
                time.sleep(0.1)

    def stop(self) -> None:
        """Fast shutdown: sessions are ended, nothing is left running."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, db: str = "guardrail", *, password: bool = False, log: str | None = None) -> str:
        """A URL of database ``db`` over the unix socket (trust), or TCP with the password in the URL."""
        query = f"?log={log}" if log else ""
        if password:
            return f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{db}{query}"
        sep = "&" if query else "?"
        return f"postgresql://{USER}@/{db}{query}{sep}host={self.root}&port={self.port}"

    def tcp_url(self, db: str, log: str | None = None) -> str:
        """A URL over TCP without a password (libpq takes it from ``PGPASSWORD``)."""
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{db}" + (f"?log={log}" if log else "")

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)
