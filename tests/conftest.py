"""Shared fixtures: the real shipped scorer, loaded once per test session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from guardrail.scorers.local import LocalScorer

SHARED_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


@pytest.fixture(scope="session")
def scorer() -> Iterator[LocalScorer]:
    """The default scorer (int8), as users get it."""
    yield LocalScorer()


@pytest.fixture(scope="session")
def scorer_fp32() -> Iterator[LocalScorer]:
    yield LocalScorer(precision="fp32")
