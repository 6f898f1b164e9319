"""The guard end to end with the real scorer and real policy files.

LLMs are stood in for by small scripted callables (named Fake...): they replace a remote model,
nothing else. The scorer, policies, evaluation and actions are the real ones.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

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
    from guardrail.audit import JsonlSink

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


def _records(path: Path) -> list[dict[str, object]]:
    import json

    return [json.loads(line) for line in path.read_text().splitlines()[1:]]  # after the genesis line


def test_input_that_is_not_text_is_a_recorded_fail_mode_decision(scorer: LocalScorer, tmp_path: Path) -> None:
    from guardrail.audit import JsonlSink

    log = tmp_path / "audit.jsonl"
    with Guard("default", scorer=scorer, audit=JsonlSink(log)) as guard:
        not_text = guard.check(123)  # type: ignore[arg-type]
        none = guard.check(None)  # type: ignore[arg-type]
        bad_prompt = guard.check("A harmless reply.", prompt={"role": "user"})  # type: ignore[arg-type]
    assert not_text.action == none.action == bad_prompt.action == "block"
    assert not_text.error and "response must be a string, got int 123" in not_text.error
    assert none.error and "got NoneType" in none.error
    assert bad_prompt.error and "prompt must be a string or None, got dict" in bad_prompt.error
    assert bad_prompt.draft == "A harmless reply." and bad_prompt.prompt is None
    assert [r["error"] for r in _records(log)] == [not_text.error, none.error, bad_prompt.error]
    open_policy = tmp_path / "open.yaml"
    open_policy.write_text("name: open\nextends: default\nsettings: {fail_mode: open}\n")
    opened = Guard(open_policy, scorer=scorer).check(None)  # type: ignore[arg-type]
    assert opened.action == "allow" and opened.text == "" and opened.error


def test_an_llm_answer_that_is_not_text_is_recorded_and_raised(scorer: LocalScorer, tmp_path: Path) -> None:
    from guardrail.audit import JsonlSink

    def fake_llm_returning_a_dict(prompt: str) -> str:  # stands in for a client returning a raw response
        return {"choices": []}  # type: ignore[return-value]

    async def fake_async_llm(prompt: str) -> str:  # stands in for an async remote LLM, given to a sync method
        return REFUSAL

    log = tmp_path / "audit.jsonl"
    with Guard("default", scorer=scorer, audit=JsonlSink(log)) as guard:
        with pytest.raises(TypeError, match="the LLM returned dict"):
            guard.generate(HARMFUL_PROMPT, fake_llm_returning_a_dict)
        with pytest.raises(TypeError, match="awaitable"):
            guard.generate(HARMFUL_PROMPT, fake_async_llm)  # type: ignore[arg-type]
    errors = [str(r["error"]) for r in _records(log)]
    assert len(errors) == 2 and all(e.startswith("generation failed: TypeError") for e in errors)
    assert "the LLM returned dict" in errors[0] and "awaitable" in errors[1]


async def test_an_llm_timeout_is_not_reported_as_a_scoring_timeout(scorer: LocalScorer, tmp_path: Path) -> None:
    from guardrail.audit import JsonlSink
    from guardrail.guard import ScoringTimeoutError

    async def fake_llm_timing_out(prompt: str) -> str:  # stands in for a remote LLM whose read times out
        raise TimeoutError("LLM read timed out")

    log = tmp_path / "audit.jsonl"
    guard = Guard("default", scorer=scorer, audit=JsonlSink(log))
    with pytest.raises(TimeoutError, match="LLM read timed out") as raised:
        await guard.agenerate(HARMFUL_PROMPT, fake_llm_timing_out)
    assert not isinstance(raised.value, ScoringTimeoutError)
    guard.close()
    assert _records(log)[0]["error"] == "generation failed: TimeoutError: LLM read timed out"


async def test_a_sync_llm_in_the_async_api_does_not_block_the_event_loop(scorer: LocalScorer) -> None:
    import asyncio
    import threading

    loop_ran = threading.Event()

    def fake_slow_llm(prompt: str) -> str:  # stands in for a blocking remote LLM client
        # Only a task on the event loop can set the event: if this ran on the loop, it would wait in vain.
        return REFUSAL if loop_ran.wait(timeout=10) else "the event loop was blocked"

    async def on_the_loop() -> None:
        await asyncio.sleep(0.05)
        loop_ran.set()

    guarded = Guard("default", scorer=scorer).awrap(fake_slow_llm)
    decision, _ = await asyncio.gather(guarded(HARMFUL_PROMPT), on_the_loop())
    assert decision.draft == REFUSAL and decision.action == "allow"


def test_a_timed_out_score_does_not_leave_queued_work_behind(scorer: LocalScorer, tmp_path: Path) -> None:
    class CountingSlowScorer(SlowScorer):
        calls = 0

        def score(self, response: str, prompt: str | None = None) -> ValueScores:
            self.calls += 1
            return super().score(response, prompt)

    path = tmp_path / "fast.yaml"
    path.write_text("name: fast\nextends: default\nsettings: {scoring_timeout_s: 0.05}\n")
    slow = CountingSlowScorer(scorer, 0.6)
    guard = Guard(path, scorer=slow)
    decisions = [guard.check(f"A perfectly harmless sentence, number {i}.") for i in range(3)]
    assert all(d.action == "block" and d.error and "longer than 0.05s" in d.error for d in decisions)
    time.sleep(1.5)  # long enough for the abandoned jobs to have run, had they stayed queued
    assert slow.calls == 1  # the first job was already running; the two queued ones were dropped
    guard.close()


async def test_a_closed_guard_refuses_calls_on_both_paths(scorer: LocalScorer) -> None:
    with Guard("default", scorer=scorer) as guard:
        assert guard.check("A harmless reply.").action == "allow"
    with pytest.raises(RuntimeError, match="closed"):
        guard.check("A harmless reply.")
    with pytest.raises(RuntimeError, match="closed"):
        await guard.acheck("A harmless reply.")


def test_a_context_json_cannot_hold_is_recorded_not_lost(scorer: LocalScorer, tmp_path: Path) -> None:
    from guardrail.audit import JsonlSink, verify

    log = tmp_path / "audit.jsonl"
    with Guard("default", scorer=scorer, audit=JsonlSink(log)) as guard:
        odd: dict[Any, Any] = {"request": "r-1", "handler": object(), "tags": {"a"}, 7: "seven"}
        decision = guard.check("A harmless reply.", context=odd)
    assert decision.action == "allow"
    [record] = _records(log)
    context = record["context"]
    assert isinstance(context, dict) and context["request"] == "r-1"
    assert str(context["handler"]).startswith("<object object") and context["tags"] == "{'a'}"
    assert context["7"] == "seven"
    assert verify(log).exit_code == 0


def test_a_stream_ends_in_exactly_one_recorded_decision(scorer: LocalScorer, tmp_path: Path) -> None:
    from guardrail.audit import JsonlSink
    from guardrail.stream import StreamGuard

    log = tmp_path / "audit.jsonl"
    benign = "Build up your weekly mileage slowly and rest well before race day. Drink water as you go. "
    with Guard("default", scorer=scorer, audit=JsonlSink(log)) as guard:
        finished = StreamGuard(guard, "Marathon tips?")
        shown = finished.feed(benign)
        tail, decision = finished.finish()
        assert (shown + tail, decision.action) == (benign, "allow")
        assert finished.finish() == ("", decision) and finished.abort(ConnectionError("late")) is decision
        assert finished.feed("More text after the end.") == ""

        broken = StreamGuard(guard, "Marathon tips?")
        released = broken.feed(benign) + broken.feed("Then the connection dro")
        aborted = broken.abort(ConnectionError("upstream went away"))
        assert released == benign and aborted.action == "block"
        assert aborted.error == "stream failed: ConnectionError: upstream went away"
        assert aborted.draft == benign + "Then the connection dro"
        assert aborted.note and f"releasing {len(benign)} of" in aborted.note
        assert broken.finish() == ("", aborted) and broken.feed("more") == ""
    records = _records(log)
    assert [r["action"] for r in records] == ["allow", "block"]
    assert records[1]["error"] == aborted.error


def test_a_rewrite_rule_that_falls_back_to_block_shows_its_own_message(scorer: LocalScorer, tmp_path: Path) -> None:
    message = "I can't help with that, but I can point you to safety resources."
    path = tmp_path / "rewrite-message.yaml"
    rules = "\n".join(
        f"  - {{id: oppose-{v}, when: {{opposes: {v}}}, action: rewrite, reason: Be safe., message: {message!r}}}"
        for v in ("security", "conformity", "benevolence", "universalism")
    )
    path.write_text(f"name: rewrite-message\nextends: default\nrules:\n{rules}\n")
    decision = Guard(path, scorer=scorer).generate(HARMFUL_PROMPT, FakeStubbornLLM())
    assert decision.action == "block" and decision.intended_action == "rewrite"
    assert decision.text == message


async def test_a_call_cancelled_while_its_decision_is_written_is_recorded_once(
    scorer: LocalScorer, tmp_path: Path
) -> None:
    import asyncio

    from guardrail.audit import JsonlSink
    from guardrail.record import AuditRecord

    class SlowDiskSink(JsonlSink):
        """The real JSONL sink on a slow disk: each write takes half a second."""

        def write(self, decision: Any, *, deployment: str, context: dict[str, Any] | None = None) -> AuditRecord:
            time.sleep(0.5)
            return super().write(decision, deployment=deployment, context=context)

    log = tmp_path / "audit.jsonl"
    guard = Guard("default", scorer=scorer, audit=SlowDiskSink(log))
    call = asyncio.create_task(guard.acheck("A harmless reply.", prompt="Hello?"))
    await asyncio.sleep(0.3)  # scored (milliseconds), now writing
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await asyncio.sleep(0.6)
    guard.close()
    assert [(r["action"], r["error"]) for r in _records(log)] == [("allow", None)]
