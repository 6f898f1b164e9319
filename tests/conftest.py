"""Shared fixtures: the real shipped scorer, loaded once per test session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from guardrail.scorers.local import LocalScorer

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def scorer() -> Iterator[LocalScorer]:
    """The default scorer (int8), as users get it."""
    yield LocalScorer()


@pytest.fixture(scope="session")
def scorer_fp32() -> Iterator[LocalScorer]:
    yield LocalScorer(precision="fp32")


def require_shared_data() -> Path:
    if not (SHARED_DATA / "fulcra" / "train.jsonl").exists():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA
