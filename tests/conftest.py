"""Shared fixtures: the real shipped scorer, loaded once per test session, and a real PostgreSQL server."""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from guardrail.scorers.local import LocalScorer
from tests.pg import PgServer, require_binaries

SHARED_DATA = Path(
    os.environ.get("GUARDRAIL_SHARED_DATA") or Path(__file__).resolve().parent.parent.parent / "shared" / "data"
)
"""The shared training and evaluation data: ../shared/data beside the checkout (as CI mounts it), or
the folder GUARDRAIL_SHARED_DATA names (a worktree elsewhere)."""


@pytest.fixture(scope="session")
def scorer() -> Iterator[LocalScorer]:
    """The default scorer (int8), as users get it."""
    yield LocalScorer()


@pytest.fixture(scope="session")
def scorer_fp32() -> Iterator[LocalScorer]:
    yield LocalScorer(precision="fp32")


@pytest.fixture(scope="session")
def postgres() -> Iterator[PgServer]:
    """A real PostgreSQL 15 server for the whole session (see tests/pg.py); never skipped under CI."""
    require_binaries()
    server = PgServer()
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture
def pg_url(postgres: PgServer, request: pytest.FixtureRequest) -> str:
    """The URL of a new, empty database of the session's server, one per test."""
    name = "t_" + re.sub(r"[^a-z0-9]+", "_", request.node.name.lower())[:40] + f"_{next(_DATABASES)}"
    return postgres.create_database(name)


_DATABASES = itertools.count()
