"""The decisions for calls the guard cannot decide by scoring: still decisions, so still recorded.

- scoring failed or the input is not text: the policy's ``fail_mode`` decides (``fail_mode_decision``);
- the LLM call, upstream request or stream failed, or an async call was cancelled: a block naming
  the error (``failure_decision``, ``CANCELLED_BEFORE_DECISION``);
- the reply holds no text to score (only tool calls): an allow that says so (``unscored_decision``);
- the audit store cannot take a decision (its database is down): the policy's ``fail_mode``
  decides again (``unrecorded_decision``), and that decision goes to the store's fallback log.

``Guard.failure``, ``Guard.unscored`` and ``Guard.record_failure`` are the public way to them.
"""

from __future__ import annotations

from typing import Any

from guardrail.actions.protocol import refusal_for
from guardrail.decision import Decision, error_text
from guardrail.policy import Policy
from guardrail.score import Scorer
from guardrail.text import described

NO_TEXT_NOTE = "no text content to score (tool calls): passed through unchanged"
"""The note of an ``unscored`` decision on a reply that holds only tool calls."""


CANCELLED_BEFORE_DECISION = "cancelled before the guard decided"
"""The error of the block recorded for an async call cancelled before its decision."""


def fail_mode_decision(
    policy: Policy,
    draft: str | None,
    error: str,
    base: dict[str, Any],
    latency: dict[str, float],
    model_id: str | None,
) -> Decision:
    """The decision when a draft could not be assessed: blocked with ``fail_mode=closed``, else allowed."""
    closed = policy.settings.fail_mode == "closed"
    intended = "block" if closed else "allow"
    enforce = closed and not policy.settings.shadow
    return Decision(
        action="block" if enforce else "allow",
        intended_action=intended,
        text=refusal_for(policy, []) if enforce else (draft or ""),
        draft=draft,
        model_id=model_id,
        latency_ms=latency,
        error=error + f" (fail_mode={policy.settings.fail_mode})",
        **base,
    )


def invalid_input(policy: Policy, response: object, prompt: object, scorer: Scorer) -> Decision | None:
    """A fail-mode decision for a response or prompt that is not text, or None if both are."""
    problems = []
    if not isinstance(response, str):
        problems.append(f"response must be a string, got {described(response)}")
    if prompt is not None and not isinstance(prompt, str):
        problems.append(f"prompt must be a string or None, got {described(prompt)}")
    if not problems:
        return None
    base: dict[str, Any] = {
        "prompt": prompt if isinstance(prompt, str) else None,
        "policy": policy.ref,
        "shadow": policy.settings.shadow,
    }
    draft = response if isinstance(response, str) else None
    return fail_mode_decision(policy, draft, "invalid input: " + "; ".join(problems), base, {}, scorer.model_id)


def failure_decision(
    policy: Policy,
    prompt: str | None,
    error: str | BaseException,
    *,
    draft: str | None,
    note: str | None,
    model_id: str | None,
) -> Decision:
    """A block with empty text naming ``error``: see ``Guard.failure``."""
    return Decision(
        action="block",
        intended_action="block",
        text="",
        prompt=prompt if isinstance(prompt, str) else None,
        draft=draft,
        policy=policy.ref,
        shadow=policy.settings.shadow,
        model_id=model_id,
        error=error if isinstance(error, str) else error_text(error),
        note=note,
    )


def unscored_decision(policy: Policy, prompt: str | None, note: str) -> Decision:
    """An allow with no scores and no model id: see ``Guard.unscored``."""
    return Decision(
        action="allow",
        intended_action="allow",
        text="",
        prompt=prompt,
        policy=policy.ref,
        shadow=policy.settings.shadow,
        note=note,
    )


def unrecorded_decision(decision: Decision, policy: Policy, error: BaseException) -> Decision:
    """``decision`` when the audit store could not take it: a block under ``fail_mode: closed``
    (unless in shadow mode), as it was under ``open``; ``error`` says so either way."""
    mode = policy.settings.fail_mode
    note = f"not recorded in the audit store: {error} (fail_mode={mode})"
    update: dict[str, Any] = {"error": note if decision.error is None else f"{decision.error}; {note}"}
    if mode == "closed" and not decision.shadow and decision.action != "block":
        update |= {"action": "block", "text": refusal_for(policy, decision.violations)}
    return decision.model_copy(update=update)


def require_prompt(prompt: object) -> None:
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a string, got {described(prompt)}")
