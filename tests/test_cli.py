"""The `guardrail` command line as a user runs it (in-process, real scorer and files)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import guardrail.cli
from guardrail.audit import verify
from guardrail.cli import COMMANDS, main
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

    code, _, err = run([*base, "--set", "num_layers=1"], capsys)
    assert code == 2 and f"no external data at {data / 'external'}" in err and "external_per_class=0" in err

    settings = ["--set", "num_layers=1", "--set", "use_toxigen=false", "--set", "lr_head=0.02"]
    settings += ["--set", "external_per_class=0"]
    code, _, _ = run([*base, "--epochs", "1", *settings], capsys)
    assert code == 0
    recipe = json.loads((tmp_path / "w" / "value_heads.json").read_text())["training"]["recipe"]
    assert (recipe["num_layers"], recipe["use_toxigen"], recipe["lr_head"], recipe["epochs"]) == (1, False, 0.02, 1)


def test_output_that_is_the_input_is_refused_and_the_input_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"id": "a", "response": REFUSAL}) + "\n")
    before = src.read_bytes()
    (tmp_path / "link.jsonl").symlink_to(src)
    (tmp_path / "hard.jsonl").hardlink_to(src)
    for command in ("score", "check"):
        for same in (src, tmp_path / "sub" / ".." / "in.jsonl", tmp_path / "link.jsonl", tmp_path / "hard.jsonl"):
            code, _, err = run([command, "--input", str(src), "--output", str(same)], capsys)
            assert code == 2, (command, same)
            assert f"--output {same} is the same file as --input {src}" in err and "Traceback" not in err
            assert src.read_bytes() == before
    audit = tmp_path / "audit.jsonl"
    code, _, err = run(["check", "--input", str(src), "--audit", str(src)], capsys)
    assert code == 2 and "--audit" in err and src.read_bytes() == before
    code, _, err = run(["check", "--input", str(src), "--output", str(audit), "--audit", str(audit)], capsys)
    assert code == 2 and f"--audit {audit} is the same file as --output {audit}" in err
    assert not audit.exists()


def test_outputs_that_cannot_be_written_are_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src, folder = tmp_path / "in.jsonl", tmp_path / "folder"
    src.write_text(json.dumps({"response": REFUSAL}) + "\n")
    folder.mkdir()
    for command in ("score", "check"):
        code, _, err = run([command, "--input", str(src), "--output", str(folder)], capsys)
        assert code == 2 and f"--output {folder} is a folder" in err and "Traceback" not in err
        missing = tmp_path / "no" / "such" / "out.jsonl"
        code, _, err = run([command, "--input", str(src), "--output", str(missing)], capsys)
        assert code == 2 and f"cannot write {missing}: No such file or directory" in err
        code, _, err = run([command, REFUSAL, "--output", str(tmp_path / "one.jsonl")], capsys)
        assert code == 2 and "--output goes with --input" in err
    code, _, err = run(["check", "--input", str(src), "--audit", str(folder)], capsys)
    assert code == 2 and f"--audit {folder} is a folder" in err

    audit = tmp_path / "audit.jsonl"
    assert run(["check", REFUSAL, "--audit", str(audit)], capsys)[0] == 0
    log_before = audit.read_bytes()
    code, _, err = run(["audit", "report", str(audit), "--out", str(folder)], capsys)
    assert code == 2 and f"--out {folder} is a folder" in err and "Traceback" not in err
    code, _, err = run(["audit", "report", str(audit), "--out", str(audit)], capsys)
    assert code == 2 and "is the same file as the audit log" in err
    assert audit.read_bytes() == log_before, "the audit log is never overwritten by its report"


def test_audit_commands_refuse_bad_counts_and_unreadable_logs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    audit = tmp_path / "audit.jsonl"
    assert run(["check", REFUSAL, "--audit", str(audit)], capsys)[0] == 0
    for args in (["tail", str(audit), "-n", "-1"], ["replay", str(audit), "--policy", "default", "--examples", "-2"]):
        with pytest.raises(SystemExit) as exited:
            main(["audit", *args])
        err = capsys.readouterr().err
        assert exited.value.code == 2 and "must be 0 or more" in err and "Traceback" not in err
    code, out, _ = run(["audit", "tail", str(audit), "-n", "0"], capsys)
    assert code == 0 and out == ""
    # A folder where a log should be: one line naming the path and what is wrong with it.
    code, _, err = run(["audit", "tail", str(tmp_path)], capsys)
    assert code == 2 and f"{tmp_path} is a directory" in err and "Traceback" not in err


def test_check_audit_and_audit_commands_choose_the_sink_by_the_same_name_rule(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import sqlite3

    db = tmp_path / "log.db"
    code, _, _ = run(["check", HARMFUL, "--prompt", HARMFUL_PROMPT, "--audit", str(db), "--json"], capsys)
    assert code == 0
    with sqlite3.connect(db) as conn:  # a real SQLite database, not JSONL under a .db name
        assert conn.execute("SELECT action FROM records").fetchall() == [("block",)]
    code, out, _ = run(["audit", "verify", str(db)], capsys)
    assert code == 0 and "1 records verified" in out
    code, out, _ = run(["audit", "tail", str(db)], capsys)
    assert code == 0 and "block" in out

    not_db = tmp_path / "old.db"
    not_db.write_text('{"a JSONL line": true}\n')
    code, _, err = run(["check", REFUSAL, "--audit", str(not_db)], capsys)
    assert code == 2 and f"--audit {not_db}: " in err and "not a database" in err and "Traceback" not in err
    for command in ("stats", "verify"):
        code, _, err = run(["audit", command, str(not_db)], capsys)
        assert code == 2 and str(not_db) in err and "not a" in err and "Traceback" not in err


def test_input_that_is_not_utf8_names_its_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src, dst, audit = tmp_path / "latin1.jsonl", tmp_path / "out.jsonl", tmp_path / "audit.jsonl"
    lines = [{"id": "a", "response": REFUSAL}, {"id": "b", "response": "Caf\u00e9 au lait."}, {"response": REFUSAL}]
    src.write_bytes(b"".join((json.dumps(line, ensure_ascii=False) + "\n").encode("latin-1") for line in lines))
    for command in ("score", "check"):
        code, _, err = run([command, "--input", str(src), "--output", str(dst)], capsys)
        assert code == 2 and f"{src}:2: not valid UTF-8 (byte 0xe9" in err and "Traceback" not in err
        assert not dst.exists()
    args = ["--input", str(src), "--output", str(dst), "--audit", str(audit), "--skip-invalid"]
    code, _, _ = run(["check", *args], capsys)
    assert code == 0
    out = [json.loads(line) for line in dst.read_text().splitlines()]
    assert [o["id"] for o in out] == ["a", "b", 3]
    assert out[1]["line"] == 2 and "not valid UTF-8" in out[1]["error"] and "action" not in out[1]
    assert out[0]["action"] == out[2]["action"] == "allow"
    assert verify(audit).checked == 2, "the unreadable line is no decision, so it is not audited"


def test_blank_text_is_refused_and_not_audited(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    audit = tmp_path / "audit.jsonl"
    assert run(["check", REFUSAL, "--audit", str(audit)], capsys)[0] == 0
    for blank in ("   ", "", "\u200b\u200b"):
        code, out, err = run(["check", blank, "--audit", str(audit)], capsys)
        assert code == 2 and out == ""
        assert "empty" in err and "nothing was checked or recorded" in err
    assert verify(audit).checked == 1, "the log holds only the decision that was reported"
    code, _, err = run(["score", "   "], capsys)
    assert code == 2 and "empty" in err


def test_skip_invalid_error_lines_keep_their_own_id(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    rows = [
        '{"id": "first", "response": "Octopuses have three hearts."}',  # after a byte-order mark
        '{"id": "blank", "response": "   "}',
        '{"id": true, "response": "fine"}',
        '{"id": 1.5, "response": "fine"}',
        '{"id": 7}',
        "not json",
        '{"id": 8, "response": "fine"}',
    ]
    src.write_bytes(b"\xef\xbb\xbf" + "\n".join(rows).encode() + b"\n")
    code, _, err = run(["score", "--input", str(src), "--output", str(dst)], capsys)
    assert code == 2 and f"{src}:2: response:" in err, "the BOM is accepted, the first error is line 2"
    src.write_bytes(b"\xef\xbb\xbf" + "\n".join(r for r in rows if "blank" not in r).encode() + b"\n")
    code, _, err = run(["score", "--input", str(src), "--output", str(dst)], capsys)
    assert code == 2 and f"{src}:2: id: must be a string or an integer, got true" in err
    src.write_bytes(b"\xef\xbb\xbf" + "\n".join(rows).encode() + b"\n")

    code, _, _ = run(["score", "--input", str(src), "--output", str(dst), "--skip-invalid"], capsys)
    assert code == 0
    out = [json.loads(line) for line in dst.read_text().splitlines()]
    assert [(o["id"], o.get("line")) for o in out] == [
        ("first", None),
        ("blank", 2),
        (3, 3),
        (4, 4),
        (7, 5),
        (6, 6),
        (8, None),
    ]
    assert "empty" in out[1]["error"]
    assert "id: must be a string or an integer, got true" in out[2]["error"]
    assert "id: must be a string or an integer, got 1.5" in out[3]["error"]
    assert "response: Field required" in out[4]["error"] and "not valid JSON" in out[5]["error"]
    assert "error" not in out[0] and len(out[6]["scores"]) == 10


def test_missing_input_is_named_alike_with_or_without_skip_invalid(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.jsonl"
    for command in ("score", "check"):
        for extra in ([], ["--skip-invalid"]):
            code, _, err = run([command, "--input", str(missing), *extra], capsys)
            assert code == 2 and f"cannot read {missing}: No such file or directory" in err, (command, extra)
            assert "Errno" not in err


def test_help_explains_options_and_exit_statuses(capsys: pytest.CaptureFixture[str]) -> None:
    def help_of(*command: str) -> str:
        with pytest.raises(SystemExit) as exited:
            main([*command, "--help"])
        assert exited.value.code == 0
        return " ".join(capsys.readouterr().out.split())

    top = help_of()
    assert "1 tampered and 3 torn tail, only from 'audit verify'" in top and "4 an unexpected error" in top
    assert "--precision {int8,fp32} int8 (default)" in help_of("score")
    assert "-n N how many of the last records" in help_of("audit", "tail")
    assert "--out OUT HTML file to write" in help_of("audit", "report")
    assert "preset name" in help_of("policy", "validate")
    check = help_of("check")
    assert "nothing is recorded" in check and ".db, .sqlite or .sqlite3" in check


def test_every_command_module_is_on_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    # A module of guardrail/cli/ missing from COMMANDS would hold commands that no one can run.
    package = Path(guardrail.cli.__file__).parent
    modules = {path.stem for path in package.glob("*.py")} - {"__init__", "__main__", "io"}
    assert modules == {group.__name__.rpartition(".")[2] for group in COMMANDS}  # type: ignore[attr-defined]
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "{score,train,cv,eval,check,policy,audit,serve,demo,batch}" in capsys.readouterr().out


def test_serve_refuses_a_bad_upstream_and_a_busy_port_before_loading_anything(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import socket

    for upstream in ("not a url", "ftp://example.org/v1", "127.0.0.1:8000/v1"):
        code, _, err = run(["serve", "--upstream", upstream, "--port", "1"], capsys)
        assert code == 2 and f"--upstream {upstream!r} must be an http:// or https:// URL" in err
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, out, err = run(["serve", "--upstream", "http://127.0.0.1:9/v1", "--port", str(port)], capsys)
    assert code == 2 and f"cannot listen on 127.0.0.1:{port}" in err and "Traceback" not in err
    assert "guardrail proxy on" not in out  # nothing announced


def test_serve_stops_cleanly_on_sigterm_and_its_audit_verifies(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    import httpx

    from tests.servers import free_port

    port, audit = free_port(), tmp_path / "proxy.jsonl"
    command = [sys.executable, "-m", "guardrail.cli", "serve", "--upstream", "http://127.0.0.1:9/v1"]
    proc = subprocess.Popen(
        [*command, "--port", str(port), "--audit", str(audit)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1.0)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        answer = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body, timeout=10)
        assert answer.status_code == 502  # nothing listens on port 9: the failure is answered and recorded
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0 and "guardrail proxy stopped" in err and "Traceback" not in err
    assert verify(audit).exit_code == 0 and verify(audit).checked == 1


def test_outputs_never_overwrite_a_rotated_segment_of_the_audit_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from guardrail.audit import JsonlSink
    from guardrail.audit.segments import segments
    from guardrail.decision import Decision
    from guardrail.policy import load_policy

    audit = tmp_path / "a.jsonl"
    decision = Decision(action="allow", intended_action="allow", text="t", policy=load_policy("default").ref)
    with JsonlSink(audit, max_bytes=1_500) as sink:
        for _ in range(12):
            sink.write(decision, deployment="tests")
    rotated = segments(audit)[1]
    before = {p: p.read_bytes() for p in segments(audit)}
    code, _, err = run(["audit", "report", str(audit), "--out", str(rotated)], capsys)
    assert code == 2 and f"--out {rotated} is a segment of the audit log {audit}" in err and "Traceback" not in err
    future = tmp_path / "a.99.jsonl"  # the name a later rotation would take
    code, _, err = run(["audit", "report", str(audit), "--out", str(future)], capsys)
    assert code == 2 and "the name of a rotated segment" in err and not future.exists()
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"response": REFUSAL}) + "\n")
    code, _, err = run(["check", "--input", str(src), "--output", str(rotated), "--audit", str(audit)], capsys)
    assert code == 2 and f"--output {rotated} is a segment of the audit log {audit}" in err
    assert {p: p.read_bytes() for p in segments(audit)} == before
    assert verify(audit).exit_code == 0
