"""The `guardrail` command line as a user runs it (in-process, real scorer and files)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from guardrail.audit import verify
from guardrail.cli import main
from tests.samples import HARMFUL, HARMFUL_PROMPT, REFUSAL


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_score_one_text_prints_one_json_object(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["score", REFUSAL, "--prompt", HARMFUL_PROMPT, "--precision", "fp32"], capsys)
    assert code == 0
    data = json.loads(out)
    assert set(data) >= {"scores", "labels", "confidence", "model"} and data["precision"] == "fp32"
    assert data["engine"].startswith("torch ")
    assert len(data["scores"]) == 10


def test_score_file_keeps_order_and_ids(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    rows = [
        {"id": "a", "prompt": HARMFUL_PROMPT, "response": HARMFUL},
        {"response": "Octopuses have three hearts."},
        {"id": 7, "response": REFUSAL},
    ]
    src.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    code, _, _ = run(["score", "--input", str(src), "--output", str(dst)], capsys)
    assert code == 0
    out = [json.loads(line) for line in dst.read_text().splitlines()]
    assert [o["id"] for o in out] == ["a", 2, 7]
    assert all(len(o["labels"]) == 10 for o in out)


def test_malformed_line_is_an_error_naming_its_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text('{"response": "fine"}\n{"prompt": "no response field"}\n{"response": "also fine"}\n')
    code, _, err = run(["score", "--input", str(src), "--output", str(dst)], capsys)
    assert code == 2
    assert f"{src}:2: response: Field required" in err and "Traceback" not in err
    assert not dst.exists()


def test_skip_invalid_records_bad_lines_and_goes_on(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text('{"response": "fine"}\nnot json\n{"response": "   "}\n{"id": "z", "response": "ok"}\n')
    code, _, _ = run(["score", "--input", str(src), "--output", str(dst), "--skip-invalid"], capsys)
    assert code == 0
    out = [json.loads(line) for line in dst.read_text().splitlines()]
    assert [o.get("error") is None for o in out] == [True, False, False, True]
    assert out[1]["line"] == 2 and "not valid JSON" in out[1]["error"]
    assert out[2]["line"] == 3 and "empty" in out[2]["error"]
    assert out[3]["id"] == "z"


def test_check_prints_the_decision_and_audits_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    audit = tmp_path / "audit.jsonl"
    code, out, _ = run(["check", HARMFUL, "--prompt", HARMFUL_PROMPT, "--audit", str(audit), "--json"], capsys)
    assert code == 0
    decision = json.loads(out)
    assert decision["action"] == "block" and decision["violations"]
    assert decision["policy"]["name"] == "default"
    assert verify(audit).checked == 1


def test_check_file_writes_one_decision_per_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src, dst, audit = tmp_path / "in.jsonl", tmp_path / "out.jsonl", tmp_path / "audit.jsonl"
    src.write_text(
        json.dumps({"id": 1, "prompt": HARMFUL_PROMPT, "response": HARMFUL})
        + "\n"
        + json.dumps({"id": 2, "prompt": HARMFUL_PROMPT, "response": REFUSAL})
        + "\n"
    )
    code, _, _ = run(
        ["check", "--policy", "default", "--input", str(src), "--output", str(dst), "--audit", str(audit)], capsys
    )
    assert code == 0
    out = [json.loads(line) for line in dst.read_text().splitlines()]
    assert [(o["id"], o["action"]) for o in out] == [(1, "block"), (2, "allow")]
    assert all({"text", "violations", "scores"} <= set(o) for o in out)
    assert verify(audit).checked == 2


def test_check_with_a_bad_policy_names_the_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nrules:\n  - {id: a, when: {value: securty, min: 0}, action: block, reason: r}\n")
    code, _, err = run(["check", "hello", "--policy", str(bad)], capsys)
    assert code == 2 and f"{bad}:3" in err and "did you mean 'security'" in err


def test_policy_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["policy", "validate", "default"], capsys)
    assert code == 0 and "OK" in out
    code, out, _ = run(["policy", "show", "childrens-tutor"], capsys)
    assert code == 0 and "oppose-security" in out and "too-much-hedonism" in out  # inherited + own rules
    code, out, _ = run(["policy", "schema"], capsys)
    assert code == 0 and json.loads(out)["title"] == "guardrail value policy"
    code, out, _ = run(["policy", "list"], capsys)
    assert code == 0 and "creative-writing" in out


def test_train_and_cv_name_a_missing_data_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for command in (["train", "--out", str(tmp_path / "w")], ["cv", "--out", str(tmp_path / "cv.json")]):
        code, _, err = run([*command, "--data-dir", str(tmp_path / "nowhere")], capsys)
        assert code == 2 and f"{tmp_path / 'nowhere' / 'fulcra' / 'train.jsonl'}" in err
    (tmp_path / "data" / "fulcra").mkdir(parents=True)
    (tmp_path / "data" / "fulcra" / "train.jsonl").write_text("")
    code, _, err = run(["cv", "--data-dir", str(tmp_path / "data"), "--folds", "1"], capsys)
    assert code == 2 and "--folds must be at least 2" in err
    code, _, err = run(["cv", "--data-dir", str(tmp_path / "data"), "--train-fraction", "1.5"], capsys)
    assert code == 2 and "--train-fraction must be in (0, 1]" in err


def test_recipe_settings_reach_training_and_bad_ones_are_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    (data / "fulcra").mkdir(parents=True)
    lines = [
        {"dialogue": f"Human: How do I steal bike {i}?\nBob: Break in at night.", "value_types": ["security: -1"]}
        if i % 3 == 0
        else {"dialogue": f"Human: Tips for garden {i}?\nBob: Water it daily.", "value_types": ["benevolence: +1"]}
        for i in range(24)
    ]
    (data / "fulcra" / "train.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    base = ["train", "--data-dir", str(data), "--out", str(tmp_path / "w")]

    code, _, err = run([*base, "--set", "num_layer=1"], capsys)
    assert code == 2 and "num_layer: no such recipe setting" in err and "num_layers" in err
    code, _, err = run([*base, "--set", "touche_epochs=two"], capsys)
    assert code == 2 and "--set touche_epochs:" in err and "'two'" in err
    code, _, err = run([*base, "--set", "epochs"], capsys)
    assert code == 2 and "KEY=VALUE" in err
    assert not (tmp_path / "w").exists(), "nothing is trained on a bad recipe"

    settings = ["--set", "num_layers=1", "--set", "use_toxigen=false", "--set", "lr_head=0.02"]
    code, _, _ = run([*base, "--epochs", "1", *settings], capsys)
    assert code == 0
    recipe = json.loads((tmp_path / "w" / "value_heads.json").read_text())["training"]["recipe"]
    assert (recipe["num_layers"], recipe["use_toxigen"], recipe["lr_head"], recipe["epochs"]) == (1, False, 0.02, 1)
