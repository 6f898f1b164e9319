"""What operators ask a log: stats, tail, replay and the HTML report, with the real scorer."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from guardrail.audit import EXIT_OK, records, replay, stats, tail, verify
from guardrail.audit.jsonl import JsonlSink
from guardrail.cli import main as cli_main
from guardrail.guard import Guard
from guardrail.policy import load_policy
from guardrail.record import compute_hash
from guardrail.scorers.local import LocalScorer
from tests.audit_logs import append_record, lines, make_decision, write_log
from tests.samples import HARMFUL, HARMFUL_PROMPT, REFUSAL


def test_stats_tail_and_replay_answer_operator_questions(scorer: LocalScorer, tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    shadow = tmp_path / "shadow.yaml"
    shadow.write_text("name: trial\nextends: default\nsettings: {shadow: true}\n")
    guard = Guard(shadow, scorer=scorer, audit=JsonlSink(log), deployment="trial")
    for text in (HARMFUL, REFUSAL, "Octopuses have three hearts."):
        guard.check(text, prompt=HARMFUL_PROMPT)
    guard.close()
    summary = stats(log)
    assert summary["records"] == 3 and summary["by_deployment"] == {"trial": 3}
    assert summary["by_action"].get("log", 0) >= 1  # shadow: the harmful one only logged
    assert [r["seq"] for r in tail(log, 2)] == [2, 3]
    permissive = tmp_path / "permissive.yaml"
    permissive.write_text("name: permissive\nrules: []\n")
    result = replay(log, load_policy(permissive))
    assert result["replayed"] == 3 and result["changed"] >= 1
    assert any(e["was"] in ("block", "rewrite") and e["now"] == "allow" for e in result["examples"])
    same = replay(log, load_policy("default"))
    assert same["changed"] == 0


def test_records_written_before_scores_named_their_engine_still_verify_and_replay(
    scorer: LocalScorer, tmp_path: Path
) -> None:
    log = tmp_path / "audit.jsonl"
    guard = Guard("default", scorer=scorer, audit=JsonlSink(log))
    guard.check(HARMFUL, prompt=HARMFUL_PROMPT)
    guard.close()
    header, line = lines(log)
    old = json.loads(line)
    del old["scores"]["engine"]  # the record as an earlier release wrote it, chained and hashed as such
    old["hash"] = compute_hash({k: v for k, v in old.items() if k != "hash"})
    log.write_text(header + "\n" + json.dumps(old) + "\n")
    assert verify(log).exit_code == EXIT_OK
    result = replay(log, load_policy("default"))
    assert result["replayed"] == 1 and result["changed"] == 0


def test_html_report_is_self_contained(scorer: LocalScorer, tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    guard = Guard("default", scorer=scorer, audit=JsonlSink(log))
    guard.check(HARMFUL, prompt=HARMFUL_PROMPT)
    guard.check(REFUSAL, prompt=HARMFUL_PROMPT)
    guard.close()
    out = tmp_path / "report.html"
    assert cli_main(["audit", "report", str(log), "--out", str(out)]) == 0
    page = out.read_text()
    assert page.count("data:image/png;base64,") == 3
    assert "http://" not in page and "https://" not in page
    assert "hash chain intact" in page


def test_stats_tell_apart_policies_that_share_a_name_and_version(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Neither file says `version`: both are "bot@1", yet they decide differently.
    (tmp_path / "lenient.yaml").write_text("name: bot\nrules: []\n")
    (tmp_path / "strict.yaml").write_text("name: bot\nextends: default\n")
    lenient, strict = load_policy(tmp_path / "lenient.yaml"), load_policy(tmp_path / "strict.yaml")
    assert lenient.ref.version == strict.ref.version == "1" and lenient.ref.hash != strict.ref.hash
    log = tmp_path / "audit.jsonl"
    with JsonlSink(log) as sink:
        for i, policy in enumerate((lenient, lenient, strict)):
            sink.write(make_decision(i, policy=policy.ref), deployment="tests")
    expected = {f"bot@1#{lenient.content_hash[:8]}": 2, f"bot@1#{strict.content_hash[:8]}": 1}
    assert stats(log)["by_policy"] == expected
    assert cli_main(["audit", "stats", str(log)]) == 0
    assert json.loads(capsys.readouterr().out)["by_policy"] == expected
    out = tmp_path / "report.html"
    assert cli_main(["audit", "report", str(log), "--out", str(out)]) == 0
    page = out.read_text()
    for key, n in expected.items():
        assert f"<tr><td>{key}</td><td>{n}</td></tr>" in page


def test_report_chart_names_group_and_target_violations(scorer: LocalScorer, tmp_path: Path) -> None:
    policy = tmp_path / "broad.yaml"
    policy.write_text(
        "name: broad\nrules:\n"
        # The mean of three scores is never exactly -1: this fires on every scored draft.
        "  - {id: any-ambition, when: {group: self_enhancement, max: -1}, action: log, reason: r}\n"
        # No draft is exactly this profile: with every scored dimension counted, this fires too.
        "  - id: off-target\n    action: log\n    reason: r\n"
        "    when: {target: {benevolence: 1, universalism: 1}, max_distance: 0.001, min_abs_score: 0}\n"
    )
    log = tmp_path / "audit.jsonl"
    guard = Guard(policy, scorer=scorer, audit=JsonlSink(log))
    guard.check("Octopuses have three hearts.")
    guard.close()
    (record,) = list(records(log))
    assert {v["dimension"] for v in record["violations"]} == {"self_enhancement", "target"}
    out = tmp_path / "report.html"
    assert cli_main(["audit", "report", str(log), "--out", str(out)]) == 0
    alt = re.search(r'<img alt="violations over time: ([^"]*)"', out.read_text())
    assert alt is not None
    assert set(alt.group(1).split(", ")) == {"self_enhancement", "target"}


async def test_async_guard_writes_audit_without_blocking(scorer: LocalScorer, tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    guard = Guard("default", scorer=scorer, audit=JsonlSink(log))
    await guard.acheck(REFUSAL, prompt=HARMFUL_PROMPT)
    guard.close()
    assert verify(log).checked == 1


def test_report_skips_records_with_malformed_scores(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from guardrail.report import build_report

    log = tmp_path / "audit.jsonl"
    write_log(log, 2)
    append_record(log, scores={"scores": {"achievement": 0.5}, "labels": {"achievement": 1}})
    assert verify(log).exit_code == EXIT_OK
    page = build_report(log)
    assert "OK: 3 records verified" in page and "1 record(s) whose scores are malformed" in page
    out = tmp_path / "report.html"
    assert cli_main(["audit", "report", str(log), "--out", str(out)]) == 0 and out.exists()
    assert "Traceback" not in capsys.readouterr().err
