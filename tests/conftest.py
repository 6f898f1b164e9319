"""Shared fixtures: the real shipped scorer, loaded once per test session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from guardrail.scorers.local import LocalScorer

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def private_compiled_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One compiled-model cache for this test run, never the user's: the first int8 scorer converts
    the model and stores it, later ones (CLI subprocesses included) read it back."""
    with pytest.MonkeyPatch.context() as patch:
        folder = tmp_path_factory.mktemp("compiled-cache")
        patch.setenv("GUARDRAIL_CACHE_DIR", str(folder))
        yield folder


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
