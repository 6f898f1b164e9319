"""`guardrail batch` on a real local Ray instance: the same output as the local path, a killed
actor retried, resuming, re-scoring. One Ray instance serves the whole module (2 CPUs, a small
object store)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from guardrail.audit import JsonlSink
from guardrail.batch import batch_score
from guardrail.batch.rescore import rescore
from guardrail.guard import Guard
from guardrail.policy import policy_from_dict
from guardrail.scorers.local import LocalScorer
from tests.batch_corpus import DiesOnce, error_lines, output_lines, ray_env, required, rows, shard_bytes, write_corpus

ray = required("ray")


@pytest.fixture(scope="module", autouse=True)
def ray_instance() -> Iterator[Any]:
    with ray_env():
        ray.init(num_cpus=2, object_store_memory=150 * 1024**2, include_dashboard=False, log_to_driver=False)
        try:
            yield ray
        finally:
            ray.shutdown()


@pytest.fixture(scope="module")
def local_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A corpus of a few hundred rows (bad lines among them) and its output from the local path."""
    folder = tmp_path_factory.mktemp("corpus")
    write_corpus(folder / "responses.jsonl", 300)
    batch_score([str(folder / "responses.jsonl")], folder / "local", shard_size=40, workers=1, progress=False)
    return folder / "responses.jsonl", folder / "local"


def test_ray_writes_exactly_what_the_local_path_writes(local_run: tuple[Path, Path], tmp_path: Path) -> None:
    corpus, local = local_run
    manifest = batch_score([str(corpus)], tmp_path / "ray", shard_size=40, workers=2, ray="auto", progress=False)
    assert manifest.runner["kind"] == "ray" and ray.is_initialized()  # a connected driver stays connected
    assert shard_bytes(tmp_path / "ray") == shard_bytes(local)
    assert (tmp_path / "ray" / "errors.jsonl").read_bytes() == (local / "errors.jsonl").read_bytes()
    assert manifest.totals == json.loads((local / "manifest.json").read_text())["totals"]
    assert len(output_lines(tmp_path / "ray")) == 300 and len(error_lines(tmp_path / "ray")) == 7


def test_a_killed_actor_is_retried_without_losing_or_doubling_rows(
    local_run: tuple[Path, Path], tmp_path: Path
) -> None:
    corpus, local = local_run
    out = tmp_path / "ray"
    batch_score([str(corpus)], out, shard_size=40, workers=2, ray="auto", worker=DiesOnce, progress=False)
    assert (tmp_path / "died").exists()  # an actor process did exit mid-shard
    assert shard_bytes(out) == shard_bytes(local)
    ids = [(x["source"], x["line"]) for x in output_lines(out)]
    assert len(ids) == len(set(ids)) == 300


def test_a_rerun_on_ray_scores_only_unfinished_shards(local_run: tuple[Path, Path], tmp_path: Path) -> None:
    corpus, local = local_run
    out = tmp_path / "out"
    shutil.copytree(local, out)
    for name in ("shard-00002.done.json", "shard-00002.jsonl", "shard-00005.done.json"):
        (out / name).unlink()
    untouched = {
        p.name: p.stat().st_mtime_ns
        for p in out.glob("shard-*")
        if not p.name.startswith(("shard-00002", "shard-00005"))
    }
    batch_score([str(corpus)], out, shard_size=40, workers=2, ray="auto", progress=False)
    assert shard_bytes(out) == shard_bytes(local)
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*") if p.name in untouched} == untouched


def test_rescoring_an_audit_log_on_ray_matches_the_local_path(scorer: LocalScorer, tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    with JsonlSink(log) as sink:
        guard = Guard("default", scorer=scorer, audit=sink)
        for row in rows(24):
            guard.check(row["response"], prompt=row.get("prompt"))
    stricter = policy_from_dict(
        {
            "name": "stricter",
            "extends": "default",
            "rules": [{"id": "safe", "when": {"value": "security", "min": 0.5}, "action": "log", "reason": "r"}],
        }
    )
    local = rescore(log, stricter, tmp_path / "local", workers=1, shard_size=8, progress=False)
    on_ray = rescore(log, stricter, tmp_path / "ray", workers=2, shard_size=8, ray="auto", progress=False)
    same = ("records", "rescored", "changed", "transitions", "changed_by_value", "examples")
    assert {k: on_ray[k] for k in same} == {k: local[k] for k in same}
    assert local["changed"] > 0
    assert (tmp_path / "ray" / "changed.jsonl").read_bytes() == (tmp_path / "local" / "changed.jsonl").read_bytes()
