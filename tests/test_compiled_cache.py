"""The compiled-model cache: a later scorer reads the int8 model back instead of converting it, computes
exactly the same numbers, never uses a damaged entry, and an unwritable or disabled cache only costs time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from guardrail import LocalScorer
from guardrail.model import compiled_cache
from guardrail.model.compiled_cache import CompiledCacheWarning
from guardrail.model.openvino_runtime import OpenVinoClassifier
from tests.samples import HARMFUL, HARMFUL_PROMPT, REFUSAL

TEXTS = [
    (HARMFUL, HARMFUL_PROMPT),
    (REFUSAL, HARMFUL_PROMPT),
    ("Tea is best with a little milk.", None),
    ("Build up your weekly mileage slowly. " * 60, "How do I train for a marathon?"),  # several windows
]


def probabilities(scorer: LocalScorer) -> list[object]:
    return [scorer.score(text, prompt=prompt).probabilities for text, prompt in TEXTS]


def from_cache(scorer: LocalScorer) -> bool:
    assert isinstance(scorer.module, OpenVinoClassifier)
    return scorer.module.from_cache


def entries(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if not p.name.startswith(".")) if root.exists() else []


def test_a_second_scorer_reads_the_model_back_and_scores_exactly_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GUARDRAIL_CACHE_DIR", str(tmp_path))
    first = LocalScorer(cache_size=0)
    assert not from_cache(first)
    [entry] = entries(tmp_path)
    assert entry.name.startswith(first.model_id)
    manifest = json.loads((entry / "manifest.json").read_text())
    assert set(manifest["files"]) == {"model.xml", "model.bin"}

    second = LocalScorer(cache_size=0)
    assert from_cache(second) and second.engine == "openvino"
    assert isinstance(second.module, OpenVinoClassifier) and second.module.int8_layers() == 24
    assert probabilities(second) == probabilities(first)


def test_a_damaged_entry_is_discarded_and_built_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GUARDRAIL_CACHE_DIR", str(tmp_path))
    first = LocalScorer(cache_size=0)
    [entry] = entries(tmp_path)
    weights = entry / "model.bin"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte, as a disk error or a tamperer would leave it
    weights.write_bytes(bytes(data))

    rebuilt = LocalScorer(cache_size=0)
    assert not from_cache(rebuilt)
    assert probabilities(rebuilt) == probabilities(first)
    assert compiled_cache.find(entry.name) == entry, "the rebuilt entry is intact again"


def test_an_unwritable_cache_warns_and_the_scorer_still_works(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("GUARDRAIL_CACHE_DIR", str(blocker / "cache"))
    with pytest.warns(CompiledCacheWarning, match="cannot write the compiled-model cache .*GUARDRAIL_CACHE_DIR"):
        scorer = LocalScorer(cache_size=0)
    assert scorer.engine == "openvino" and not from_cache(scorer)
    assert scorer.score(HARMFUL, prompt=HARMFUL_PROMPT).opposed


def test_the_cache_can_be_turned_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("GUARDRAIL_CACHE_DIR", "off")
    assert compiled_cache.cache_root() is None
    assert not from_cache(LocalScorer(cache_size=0))
    assert not from_cache(LocalScorer(cache_size=0))
    assert list(tmp_path.iterdir()) == []


def test_the_default_folder_follows_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GUARDRAIL_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert compiled_cache.cache_root() == tmp_path / "guardrail"


def test_entries_are_named_by_model_and_recipe_and_only_the_most_recent_are_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = {compiled_cache.entry_name(m, r) for m in ("model-a", "model-b") for r in ("recipe-1", "recipe-2")}
    assert len(names) == 4
    assert compiled_cache.entry_name("model-a", "recipe-1") == compiled_cache.entry_name("model-a", "recipe-1")

    def write(folder: Path) -> None:
        (folder / "x").write_text("x")

    monkeypatch.setenv("GUARDRAIL_CACHE_DIR", str(tmp_path))
    for n in range(compiled_cache.KEEP + 2):
        stored = compiled_cache.store(f"entry-{n}", write, {})
        assert stored is not None
        os.utime(stored, (n, n))  # distinct use times, oldest first
    kept = [p.name for p in entries(tmp_path)]
    assert kept == [f"entry-{n}" for n in range(2, compiled_cache.KEEP + 2)]
    assert compiled_cache.find("entry-0") is None


def test_processes_loading_at_once_convert_the_model_once(tmp_path: Path) -> None:
    # Workers of one server starting together: one converts, the others wait for it and read it back.
    loader = "from guardrail import LocalScorer; print(LocalScorer(cache_size=0).module.from_cache)"
    env = {**os.environ, "GUARDRAIL_CACHE_DIR": str(tmp_path)}
    workers = [
        subprocess.Popen([sys.executable, "-c", loader], env=env, stdout=subprocess.PIPE, text=True) for _ in range(2)
    ]
    outputs = sorted(worker.communicate(timeout=600)[0].strip() for worker in workers)
    assert [w.returncode for w in workers] == [0, 0]
    assert outputs == ["False", "True"]
    assert len(entries(tmp_path)) == 1


def test_a_scorer_read_from_the_cache_never_imports_torch(tmp_path: Path) -> None:
    # torch's import is most of a cold start (~2-3 s, ~190 MB of peak memory); the cached int8 model runs without it.
    loader = (
        "import sys; from guardrail import LocalScorer; scorer = LocalScorer(cache_size=0); "
        "scorer.score('Thanks, that was helpful.', prompt='Any tips?'); "
        "print(scorer.module.from_cache, 'torch' in sys.modules)"
    )
    env = {**os.environ, "GUARDRAIL_CACHE_DIR": str(tmp_path)}
    runs = [subprocess.run([sys.executable, "-c", loader], env=env, capture_output=True, text=True, check=True)]
    runs.append(subprocess.run([sys.executable, "-c", loader], env=env, capture_output=True, text=True, check=True))
    assert [run.stdout.split() for run in runs] == [["False", "True"], ["True", "False"]]


def test_a_crashed_writers_leftovers_are_removed_later(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GUARDRAIL_CACHE_DIR", str(tmp_path))
    old, recent = tmp_path / ".incoming-old", tmp_path / ".incoming-recent"
    for folder in (old, recent):
        folder.mkdir()
        (folder / "model.bin").write_bytes(b"half")
    os.utime(old, (0, 0))  # a writer killed long ago; "recent" may still be writing
    compiled_cache.store("entry", lambda folder: None, {})
    assert not old.exists() and recent.exists()
