"""The guard end to end with the real scorer and real policy files.

LLMs are stood in for by small scripted callables (named Fake...): they replace a remote model,
nothing else. The scorer, policies, evaluation and actions are the real ones.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from guardrail.actions.rewrite import REWRITE_LEAD
from guardrail.guard import Guard
from guardrail.policy import load_policy
from guardrail.score import ValueScores
from guardrail.scorers.local import LocalScorer
from tests.samples import HARMFUL, HARMFUL_PROMPT, REFUSAL

REWRITE_POLICY = """
name: rewrite-test
version: "3"
extends: default
settings: {max_attempts: 3}
rules:
  - {id: oppose-security, when: {opposes: security}, action: rewrite, reason: Keep people safe.}
  - {id: oppose-conformity, when: {opposes: conformity}, action: rewrite, reason: Do not help break laws.}
  - {id: oppose-benevolence, when: {opposes: benevolence}, action: rewrite, reason: Be honest and kind.}
  - {id: oppose-universalism, when: {opposes: universalism}, action: rewrite, reason: Treat groups fairly.}
"""


class FakeImprovingLLM:
    """Stands in for a remote LLM: complies at first, refuses once told what was wrong."""

    def __init__(self) -> None:
        self.prompts: list[str] = []

    def __call__(self, prompt: str) -> str:
        self.prompts.append(prompt)
        return REFUSAL if prompt.startswith(REWRITE_LEAD) else HARMFUL


class FakeStubbornLLM:
    """Stands in for a remote LLM that never changes its harmful answer."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, prompt: str) -> str:
        self.calls += 1
        return HARMFUL


class BrokenScorer:
    """A scorer whose model fails (e.g. out of memory): the guard must fail closed or open."""

    model_id = "broken"

    def score(self, response: str, prompt: str | None = None) -> ValueScores:
        raise RuntimeError("model crashed")

    def score_batch(self, responses: Sequence[str], prompts: Sequence[str | None] | None = None) -> list[ValueScores]:
        raise RuntimeError("model crashed")

    async def ascore(self, response: str, prompt: str | None = None) -> ValueScores:
        raise RuntimeError("model crashed")

    async def ascore_batch(
        self, responses: Sequence[str], prompts: Sequence[str | None] | None = None
    ) -> list[ValueScores]:
        raise RuntimeError("model crashed")


class SlowScorer(BrokenScorer):
    """The real scorer behind a delay, to exercise the scoring timeout."""

    def __init__(self, inner: LocalScorer, delay_s: float) -> None:
        self.inner, self.delay_s, self.model_id = inner, delay_s, inner.model_id

    def score(self, response: str, prompt: str | None = None) -> ValueScores:
        time.sleep(self.delay_s)
        return self.inner.score(response, prompt)


@pytest.fixture
def rewrite_policy(tmp_path: Path) -> Path:
    path = tmp_path / "rewrite.yaml"
    path.write_text(REWRITE_POLICY)
    return path


def test_harmful_compliant_answer_is_blocked_and_a_benign_one_allowed(scorer: LocalScorer) -> None:
    guard = Guard("default", scorer=scorer)
    blocked = guard.check(HARMFUL, prompt=HARMFUL_PROMPT)
    assert blocked.action == "block"
    assert blocked.text == guard.policy.settings.refusal_message != HARMFUL
    assert blocked.violations and all(v.margin > 0 for v in blocked.violations)
    assert {v.rule_id for v in blocked.violations} <= {r.id for r in guard.policy.rules}
    allowed = guard.check("Build up your weekly mileage slowly and rest well before race day.", prompt="Marathon tips?")
    assert allowed.action == "allow" and allowed.text.startswith("Build up")
    assert not allowed.violations
    for decision in (blocked, allowed):
        assert decision.policy.name == "default" and decision.policy.hash == guard.policy.content_hash
        assert decision.model_id == scorer.model_id and decision.scores is not None
        assert decision.latency_ms["total"] > 0
    assert blocked.explain().startswith("BLOCK: ")


def test_rewrite_converges_when_the_llm_improves(scorer: LocalScorer, rewrite_policy: Path) -> None:
    llm = FakeImprovingLLM()
    decision = Guard(rewrite_policy, scorer=scorer).generate(HARMFUL_PROMPT, llm)
    assert decision.action == "rewrite"
    assert decision.draft == HARMFUL and decision.text == REFUSAL
    assert len(decision.attempts) == 1 and decision.attempts[0].passed
    ask = decision.attempts[0].instruction
    assert HARMFUL_PROMPT in ask and HARMFUL in ask
    opposed = {v.dimension for v in decision.violations}
    assert any(value.replace("_", "-") in ask for value in opposed)
    assert decision.attempts[0].scores is not None


def test_rewrite_falls_back_to_block_when_the_llm_never_improves(scorer: LocalScorer, rewrite_policy: Path) -> None:
    llm = FakeStubbornLLM()
    guard = Guard(rewrite_policy, scorer=scorer)
    decision = guard.wrap(llm)(HARMFUL_PROMPT)
    assert decision.action == "block" and decision.intended_action == "rewrite"
    assert len(decision.attempts) == 3 and not any(a.passed for a in decision.attempts)
    assert llm.calls == 1 + 3  # the first draft and three re-asks, then it stops
    assert decision.note and "fallback: block" in decision.note


def test_rewrite_without_an_llm_falls_back_and_says_so(scorer: LocalScorer, rewrite_policy: Path) -> None:
    decision = Guard(rewrite_policy, scorer=scorer).check(HARMFUL, prompt=HARMFUL_PROMPT)
    assert decision.action == "block" and decision.attempts == []
    assert decision.note and "none was given" in decision.note


def test_fail_closed_blocks_and_fail_open_allows_when_scoring_fails(tmp_path: Path) -> None:
    closed = Guard("default", scorer=BrokenScorer()).check("Anything at all.")
    assert closed.action == "block" and closed.error and "model crashed" in closed.error
    open_path = tmp_path / "open.yaml"
    open_path.write_text("name: open\nextends: default\nsettings: {fail_mode: open}\n")
    opened = Guard(open_path, scorer=BrokenScorer()).check("Anything at all.")
    assert opened.action == "allow" and opened.text == "Anything at all." and opened.error


def test_scoring_timeout_counts_as_a_failure(scorer: LocalScorer, tmp_path: Path) -> None:
    path = tmp_path / "fast.yaml"
    path.write_text("name: fast\nextends: default\nsettings: {scoring_timeout_s: 0.05}\n")
    decision = Guard(path, scorer=SlowScorer(scorer, 0.5)).check("A perfectly harmless sentence.")
    assert decision.action == "block" and decision.error and "longer than 0.05s" in decision.error


def test_shadow_mode_never_changes_the_text(scorer: LocalScorer, tmp_path: Path) -> None:
    path = tmp_path / "shadow.yaml"
    path.write_text("name: shadow\nextends: default\nsettings: {shadow: true}\n")
    decision = Guard(path, scorer=scorer).check(HARMFUL, prompt=HARMFUL_PROMPT)
    assert decision.text == HARMFUL and decision.shadow
    assert decision.intended_action in ("block", "rewrite") and decision.action == "log"
    assert f"shadow; would {decision.intended_action}" in decision.explain()


def test_hot_reload_picks_up_edits_and_survives_a_broken_one(scorer: LocalScorer, tmp_path: Path) -> None:
    path = tmp_path / "live.yaml"
    path.write_text("name: live\nversion: '1'\nextends: default\n")
    guard = Guard(path, scorer=scorer, hot_reload=True)
    assert guard.check(HARMFUL, prompt=HARMFUL_PROMPT).action == "block"
    path.write_text("name: live\nversion: '2'\nextends: default\nsettings: {shadow: true}\n")
    guard._policies.reload_now()
    decision = guard.check(HARMFUL, prompt=HARMFUL_PROMPT)
    assert decision.policy.version == "2" and decision.action == "log"
    path.write_text("name: live\nversion: '3'\nrules: [oops\n")
    with pytest.warns(RuntimeWarning, match="keeping live v2"):
        guard._policies.reload_now()
    assert guard.policy.version == "2" and guard.policy_error is not None
    assert "YAML syntax error" in str(guard.policy_error)


async def test_async_twins_behave_like_the_sync_ones(scorer: LocalScorer, rewrite_policy: Path) -> None:
    guard = Guard("default", scorer=scorer)
    sync = guard.check(HARMFUL, prompt=HARMFUL_PROMPT)
    asynchronous = await guard.acheck(HARMFUL, prompt=HARMFUL_PROMPT)
    assert (sync.action, sync.text, sync.violations) == (
        asynchronous.action,
        asynchronous.text,
        asynchronous.violations,
    )

    async def fake_async_llm(prompt: str) -> str:  # stands in for a remote async LLM
        return REFUSAL if prompt.startswith(REWRITE_LEAD) else HARMFUL

    decision = await Guard(rewrite_policy, scorer=scorer).awrap(fake_async_llm)(HARMFUL_PROMPT)
    assert decision.action == "rewrite" and decision.text == REFUSAL


def test_generation_failure_is_recorded_and_raised(scorer: LocalScorer, tmp_path: Path) -> None:
    from guardrail.sinks.jsonl import JsonlSink

    def failing_llm(prompt: str) -> str:  # stands in for a remote LLM that is down
        raise ConnectionError("upstream down")

    sink = JsonlSink(tmp_path / "audit.jsonl")
    guard = Guard("default", scorer=scorer, audit=sink)
    with pytest.raises(ConnectionError):
        guard.generate("hello?", failing_llm)
    sink.close()
    lines = (tmp_path / "audit.jsonl").read_text().splitlines()
    assert len(lines) == 2 and "upstream down" in lines[1]


def test_policy_is_loaded_once_and_exposed(scorer: LocalScorer) -> None:
    assert Guard(load_policy("creative-writing"), scorer=scorer).policy.name == "creative-writing"
