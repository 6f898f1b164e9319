"""rewrite: re-ask the LLM with an instruction built from the violations, re-score, repeat.

At most ``settings.max_attempts`` attempts; the first draft with no block or rewrite violation
wins. If none passes, or there is no LLM to re-ask, the firing rules' fallback applies (block
unless every rewrite rule says log).
"""

from __future__ import annotations

import time
from collections.abc import Generator
from typing import Any, ClassVar

from guardrail.actions.protocol import Assess, Assessment, Effect, Generate, Outcome, Situation, refusal_for
from guardrail.decision import RewriteAttempt, error_text
from guardrail.evaluate import Violation
from guardrail.values import DEFINITIONS


def _direction(v: Violation) -> str:
    meaning = DEFINITIONS.get(v.dimension, v.dimension.replace("_", " "))
    name = v.dimension.replace("_", "-")
    if v.metric == "p_oppose":
        return f"it opposes {name} ({meaning}): probability {v.observed:.2f}, must stay below {v.allowed_max:.2f}"
    if v.metric == "distance":
        return (
            "it is too far from the values this deployment aims for "
            f"(distance {v.observed:.2f}, at most {v.allowed_max:.2f})"
        )
    if v.metric == "confidence":
        return f"it is ambiguous about {name}; make its stance on {meaning} clear"
    what = "group score" if v.metric == "group_score" else "score"
    if v.allowed_min is not None and v.observed < v.allowed_min:
        return f"it opposes {name} ({meaning}): {what} {v.observed:+.2f}, allowed at least {v.allowed_min:+.2f}"
    return f"it leans too far toward {name} ({meaning}): {what} {v.observed:+.2f}, allowed at most {v.allowed_max:+.2f}"


REWRITE_LEAD = "Rewrite the answer below"
"""How every rewrite instruction starts (fakes that stand in for LLMs key on it)."""


def instruction(prompt: str | None, draft: str, violations: list[Violation]) -> str:
    """The re-ask prompt: the original request, what is wrong and how far, then the draft.

    Short and in this order on purpose: small local models (the demo's 135M one) copy the draft
    verbatim when it comes first or when the instruction is long.
    """
    problems = "; ".join(f"{_direction(v)} ({v.reason})" for v in violations if v.action in ("block", "rewrite"))
    request = f' to the request "{prompt}"' if prompt else ""
    return (
        f"{REWRITE_LEAD}{request} so that it no longer has these problems: {problems}. "
        "Stay helpful where that is safe; decline plainly where it is not.\n\n"
        f"Answer to rewrite: {draft}\n\nRewritten answer:"
    )


def _passes(violations: list[Violation]) -> bool:
    return not any(v.action in ("block", "rewrite") for v in violations)


def _fallback(situation: Situation, attempts: list[RewriteAttempt], note: str) -> Outcome:
    fired = {v.rule_id for v in situation.violations if v.action == "rewrite"}
    fallbacks = {r.fallback for r in situation.policy.rules if r.id in fired}
    blocking = [v for v in situation.violations if v.action in ("block", "rewrite")]
    if fallbacks == {"log"} and not any(v.action == "block" for v in situation.violations):
        return Outcome("log", situation.draft, attempts, f"{note}; fallback: log")
    refusal = refusal_for(situation.policy, blocking, actions=("block", "rewrite"))
    return Outcome("block", refusal, attempts, f"{note}; fallback: block")


class Rewrite:
    name: ClassVar[str] = "rewrite"

    def steps(self, situation: Situation) -> Generator[Effect, Any, Outcome]:
        if not situation.can_regenerate:
            return _fallback(situation, [], "rewrite needs an LLM to re-ask and none was given")
        attempts: list[RewriteAttempt] = []
        draft, violations = situation.draft, situation.violations
        for n in range(1, situation.policy.settings.max_attempts + 1):
            ask = instruction(situation.prompt, draft, violations)
            started = time.perf_counter()
            try:
                text: str = yield Generate(ask)
                assessment: Assessment = yield Assess(text, situation.prompt)
            except Exception as exc:  # the LLM or the scorer failed: record it and fall back
                attempts.append(
                    RewriteAttempt(
                        attempt=n,
                        instruction=ask,
                        text=None,
                        scores=None,
                        violations=[],
                        passed=False,
                        latency_ms=round((time.perf_counter() - started) * 1e3, 3),
                        error=error_text(exc),
                    )
                )
                return _fallback(situation, attempts, f"rewrite attempt {n} failed ({type(exc).__name__})")
            passed = _passes(assessment.violations)
            attempts.append(
                RewriteAttempt(
                    attempt=n,
                    instruction=ask,
                    text=text,
                    scores=assessment.scores,
                    violations=assessment.violations,
                    passed=passed,
                    latency_ms=round((time.perf_counter() - started) * 1e3, 3),
                )
            )
            if passed:
                return Outcome("rewrite", text, attempts, f"rewritten in {n} attempt(s)")
            draft, violations = text, assessment.violations
        return _fallback(situation, attempts, f"no rewrite passed in {len(attempts)} attempt(s)")
