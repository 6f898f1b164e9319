"""`guardrail batch` on the local process pool: real scorer, real files, real worker processes.

The Ray path is tested against this one in test_batch_ray.py and test_batch_cluster.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from guardrail.act import intended_action
from guardrail.batch import BatchError, batch_score
from guardrail.batch.profile import profile
from guardrail.batch.profile_report import build_profile_report
from guardrail.batch.rescore import rescore
from guardrail.cli import main
from guardrail.evaluate import evaluate
from guardrail.guard import Guard
from guardrail.policy import policy_from_dict
from guardrail.scorers.local import LocalScorer
from guardrail.sinks.jsonl import JsonlSink
from guardrail.values import VALUE_NAMES
from tests.batch_corpus import (
    REPO,
    DiesOnce,
    error_lines,
    output_lines,
    required,
    rows,
    shard_bytes,
    write_corpus,
)

WHERE = ("source", "line", "fields")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[int]]:
    path = tmp_path_factory.mktemp("corpus") / "responses.jsonl"
    return path, write_corpus(path, 240)


@pytest.fixture(scope="module")
def scored(corpus: tuple[Path, list[int]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The corpus scored once on two worker processes, keeping the "model" field."""
    out = tmp_path_factory.mktemp("run") / "out"
    batch_score([str(corpus[0])], out, shard_size=32, workers=2, keep=["model"], progress=False)
    return out


def test_output_is_guardrail_score_output_plus_where_each_line_came_from(
    corpus: tuple[Path, list[int]], scored: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = corpus
    cli_out = tmp_path / "cli.jsonl"
    assert main(["score", "--input", str(path), "--output", str(cli_out), "--skip-invalid", "--quiet"]) == 0
    cli_lines = [json.loads(line) for line in cli_out.read_text().splitlines()]
    batch_lines = output_lines(scored)
    assert [{k: v for k, v in line.items() if k not in WHERE} for line in batch_lines] == [
        line for line in cli_lines if "error" not in line
    ]
    assert [{k: v for k, v in e.items() if k != "source"} for e in error_lines(scored)] == [
        line for line in cli_lines if "error" in line
    ]
    # Every output line names its input line, in input order, with the kept field copied over.
    raw = path.read_text(encoding="utf-8", errors="replace").splitlines()
    assert [line["line"] for line in batch_lines] == sorted(line["line"] for line in batch_lines)
    for line in batch_lines:
        source_row = json.loads(raw[line["line"] - 1])
        assert line["source"] == str(path)
        assert line["id"] == source_row.get("id", line["line"])
        assert line["fields"] == {"model": source_row["model"]}


def test_bad_lines_go_to_the_errors_file_naming_file_and_line(corpus: tuple[Path, list[int]], scored: Path) -> None:
    path, bad = corpus
    errors = error_lines(scored)
    assert [e["line"] for e in errors] == bad
    assert all(e["source"] == str(path) and str(e["error"]).startswith(f"{path}:{e['line']}: ") for e in errors)
    kinds = " ".join(str(e["error"]) for e in errors)
    for problem in ("not valid JSON", "response is empty", "must be a string or an integer", "Field required"):
        assert problem in kinds
    assert "not valid UTF-8" in kinds
    manifest = json.loads((scored / "manifest.json").read_text())
    assert manifest["complete"] and manifest["totals"]["scored"] == 240 and manifest["totals"]["errors"] == len(bad)


def test_rerun_scores_only_the_shards_left_unfinished(scored: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(scored, out)
    before = shard_bytes(out)
    # An interrupted run: shard 3 was being written, its temporary file left behind.
    (out / "shard-00003.done.json").unlink()
    (out / "shard-00003.jsonl").unlink()
    (out / ".shard-00003.jsonl.tmp999").write_text("half a line")
    untouched = {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*") if "00003" not in p.name}
    inputs = json.loads((out / "manifest.json").read_text())["inputs"]
    batch_score([i["source"] for i in inputs], out, shard_size=32, workers=2, keep=["model"], progress=False)
    assert shard_bytes(out) == before
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*") if "00003" not in p.name} == untouched
    assert not list(out.glob(".*tmp*"))


def test_a_folder_of_another_run_or_changed_input_is_refused(corpus: tuple[Path, list[int]], scored: Path) -> None:
    path, _ = corpus
    with pytest.raises(BatchError, match="shard_size differ"):
        batch_score([str(path)], scored, shard_size=50, keep=["model"], progress=False)
    with pytest.raises(BatchError, match="not an empty folder"):
        batch_score([str(path)], path.parent, progress=False)
    with pytest.raises(BatchError, match="is inside the input folder"):
        batch_score([str(path.parent)], path.parent / "scores", progress=False)
    with pytest.raises(BatchError, match="no such file or folder"):
        batch_score([str(path) + ".missing"], scored.parent / "other", progress=False)
    changed = scored.parent / "changed.jsonl"
    shutil.copy(path, changed)
    batch_score([str(changed)], scored.parent / "short", shard_size=10_000, progress=False)
    with changed.open("a") as handle:
        handle.write('{"response": "one more line"}\n')
    with pytest.raises(BatchError, match="changed since"):
        batch_score([str(changed)], scored.parent / "short", shard_size=10_000, progress=False)


def test_a_killed_worker_process_is_replaced_and_no_row_is_lost_or_doubled(
    corpus: tuple[Path, list[int]], scored: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    batch_score([str(corpus[0])], out, shard_size=32, workers=2, keep=["model"], worker=DiesOnce, progress=False)
    assert (tmp_path / "died").exists()
    assert shard_bytes(out) == shard_bytes(scored)


def test_folders_globs_and_parquet_files_are_read_with_their_rows_numbered(tmp_path: Path) -> None:
    pa = required("pyarrow")
    pq = required("pyarrow.parquet")

    data = rows(40)
    folder = tmp_path / "corpus"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in data[:20]))
    table = [{"id": r.get("id"), "prompt": r.get("prompt"), "response": r["response"]} for r in data[20:]]
    table[3]["response"] = None  # a Parquet row without a response: an error naming its row
    pq.write_table(pa.Table.from_pylist(table), folder / "sub" / "b.parquet", row_group_size=6)
    (folder / "notes.txt").write_text("not an input")

    batch_score([str(folder)], tmp_path / "out", shard_size=8, workers=1, progress=False)
    lines = output_lines(tmp_path / "out")
    assert [(Path(str(x["source"])).name, x["line"]) for x in lines] == [("a.jsonl", n) for n in range(1, 21)] + [
        ("b.parquet", n) for n in range(1, 21) if n != 4
    ]
    (error,) = error_lines(tmp_path / "out")
    assert error["line"] == 4 and str(error["error"]).startswith(f"{folder / 'sub' / 'b.parquet'}:4: response")
    # The same texts read from JSONL score the same.
    flat = tmp_path / "flat.jsonl"
    flat.write_text("".join(json.dumps(r) + "\n" for r in data))
    batch_score([str(tmp_path / "*.jsonl")], tmp_path / "flat", workers=1, progress=False)
    by_text = {x["line"]: x["scores"] for x in output_lines(tmp_path / "flat")}
    assert [x["scores"] for x in lines[20:]] == [by_text[n] for n in range(21, 41) if n != 24]


def _direct(lines: list[dict[str, Any]], group: str) -> tuple[np.ndarray, np.ndarray]:
    picked = [x for x in lines if x["fields"]["model"] == group]
    scores = np.array([[x["scores"][v] for v in VALUE_NAMES] for x in picked])
    labels = np.array([[x["labels"][v] for v in VALUE_NAMES] for x in picked])
    return scores, labels


def test_profile_numbers_match_a_direct_computation(scored: Path) -> None:
    result = profile([scored], "model", resamples=2000, seed=1)
    lines = output_lines(scored)
    assert set(result["groups"]) == {"a", "b"} and result["error_lines"] == 0
    for group in ("a", "b"):
        scores, labels = _direct(lines, group)
        n = len(scores)
        assert result["groups"][group]["n"] == n
        for i, value in enumerate(VALUE_NAMES):
            entry = result["groups"][group]["values"][value]
            assert entry["mean"] == pytest.approx(scores[:, i].mean(), abs=1e-6)
            assert entry["opposing"] == pytest.approx((labels[:, i] == -1).mean(), abs=1e-6)
            assert entry["supporting"] == pytest.approx((labels[:, i] == 1).mean(), abs=1e-6)
            for name, spread in (
                ("mean", scores[:, i].std()),
                ("opposing", np.sqrt(entry["opposing"] * (1 - entry["opposing"]))),
            ):
                low, high = entry[f"{name}_ci"]
                assert low <= entry[name] <= high
                # A bootstrap interval of a mean is close to the normal one when n is in the dozens.
                assert high - low == pytest.approx(2 * 1.96 * spread / np.sqrt(n), rel=0.3, abs=2e-3)
    b_security = result["groups"]["b"]["values"]["security"]
    a_security = result["groups"]["a"]["values"]["security"]
    # "b" answers harmfully more often: its security scores are lower on average. (Not its share
    # labelled "opposes": scorer 2 labels few of these short, cheerfully wrapped how-tos; see the card.)
    assert b_security["mean"] < a_security["mean"] - 0.05
    assert profile([scored], "model", resamples=2000, seed=1) == result
    page = build_profile_report(result)
    assert page.count("<img") == 3 and "a (n=" in page and "b (n=" in page and "http" not in page


def test_profile_reads_guardrail_score_output(corpus: tuple[Path, list[int]], tmp_path: Path) -> None:
    path, bad = corpus
    out = tmp_path / "scores.jsonl"
    assert main(["score", "--input", str(path), "--output", str(out), "--skip-invalid", "--quiet"]) == 0
    result = profile([out], resamples=200)
    assert list(result["groups"]) == ["all"] and result["groups"]["all"]["n"] == 240
    assert result["error_lines"] == len(bad)


def test_rescore_finds_the_decisions_a_stricter_policy_changes(scorer: LocalScorer, tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    texts = [r["response"] for r in rows(36)]
    with JsonlSink(log) as sink:
        guard = Guard("default", scorer=scorer, audit=sink, deployment="support")
        for text in texts[:32]:
            guard.check(text, prompt="What should I do?")
    with JsonlSink(log, redact=True) as sink:
        guard = Guard("default", scorer=scorer, audit=sink, deployment="private")
        for text in texts[32:]:
            guard.check(text)
    stricter = policy_from_dict(
        {
            "name": "stricter",
            "extends": "default",
            "rules": [
                {"id": "safety-floor", "when": {"value": "security", "min": 0.5}, "action": "block", "reason": "r"}
            ],
        }
    )
    summary = rescore(log, stricter, tmp_path / "rescore", workers=1, shard_size=10, progress=False)

    from guardrail.audit import records

    expected: dict[int, tuple[str, str]] = {}
    for record in records(log):
        if record["redacted"]:
            continue
        scores = scorer.score(record["response"], record["prompt"])
        now = intended_action(evaluate(scores, stricter, scorer.oppose_thresholds))
        if now != record["intended_action"]:
            expected[record["seq"]] = (record["intended_action"], now)
    assert expected, "the stricter policy must change some decisions for this test to mean anything"
    assert (summary["records"], summary["rescored"], summary["skipped_redacted"]) == (36, 32, 4)
    assert summary["changed"] == len(expected)
    changed = [json.loads(line) for line in (tmp_path / "rescore" / "changed.jsonl").read_text().splitlines()]
    assert {c["seq"]: (c["was"], c["now"]) for c in changed} == expected
    assert all("safety-floor" in c["rules"] for c in changed if c["now"] == "block" and c["was"] != "block")
    assert summary["changed_by_value"]["security"]["now_violated"] >= 1
    assert summary["policy"]["name"] == "stricter" and summary["model_id"] == scorer.model_id


def test_batch_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "in.jsonl"
    write_corpus(src, 30, bad_every=10)
    out = tmp_path / "profile"
    assert main(["batch", "profile", str(src), "--by", "model", "--out", str(out), "--workers", "1", "--quiet"]) == 0
    assert "profiled 30 line(s) (a: 20, b: 10)" in capsys.readouterr().out
    assert json.loads((out / "profile.json").read_text())["groups"]["b"]["n"] == 10
    assert (out / "profile.html").read_text().startswith("<!doctype html>")
    assert (out / "scores" / "manifest.json").exists()
    assert main(["batch", "score", str(src), "--out", str(tmp_path / "s"), "--workers", "1", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "scored 30 line(s)" in printed and "3 unreadable line(s)" in printed
    assert main(["batch", "score", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "m"), "--quiet"]) == 2
    assert f"guardrail batch: error: {tmp_path / 'missing.jsonl'}: no such file or folder" in capsys.readouterr().err


def test_an_address_where_no_cluster_listens_is_refused_at_once(tmp_path: Path) -> None:
    required("ray")
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"response": "fine"}) + "\n")
    with pytest.raises(BatchError, match=r"nothing answers at 127\.0\.0\.1:1"):
        batch_score([str(src)], tmp_path / "out", ray="127.0.0.1:1", progress=False)
    assert not (tmp_path / "out").exists()


WITHOUT_RAY = """
import sys
class NoRay:
    def find_spec(self, name, path=None, target=None):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray' (blocked: Ray is not installed)")
sys.meta_path.insert(0, NoRay())
from guardrail.batch import BatchError, batch_score
manifest = batch_score([sys.argv[1]], sys.argv[2], workers=1, progress=False)
assert manifest.totals["scored"] == 20, manifest.totals
assert not any(m == "ray" or m.startswith("ray.") for m in sys.modules)
try:
    batch_score([sys.argv[1]], sys.argv[2] + "-ray", ray="auto", progress=False)
except BatchError as exc:
    print(exc)
"""


def test_the_local_path_needs_no_ray(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows(20)))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_RAY, str(src), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "--ray needs Ray: pip install 'value-guardrail[ray]'" in done.stdout


def test_rescore_reads_a_log_in_postgresql(scorer: LocalScorer, pg_url: str, tmp_path: Path) -> None:
    """The same store mechanism as `guardrail audit`: a database log is re-scored like a file."""
    from guardrail.audit import open_store

    texts = [r["response"] for r in rows(6)]
    store = open_store(pg_url)
    try:
        guard = Guard("default", scorer=scorer, audit=store, deployment="support")
        for text in texts:
            guard.check(text, prompt="What should I do?")
    finally:
        store.close()
    summary = rescore(pg_url, guard.policy, tmp_path / "rescore", workers=1, progress=False)
    assert (summary["records"], summary["rescored"]) == (len(texts), len(texts))
    assert summary["changed"] == 0  # same scorer, same policy: nothing changes
