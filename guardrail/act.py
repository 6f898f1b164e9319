"""Step 3 of the pipeline, act: violations -> block, rewrite, log or allow.

The strongest action any violation asks for wins (``intended_action``); ``act`` runs it. Actions
are generators of effects (``actions/protocol.py``) that the guard drives sync or async; one file
per action in ``actions/``, registered in ``actions.ACTIONS``.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from guardrail.actions import ACTIONS
from guardrail.actions.protocol import (
    Action,
    Assess,
    Assessment,
    Effect,
    Generate,
    Outcome,
    Situation,
    refusal_for,
)
from guardrail.decision import ActionTaken
from guardrail.evaluate import Violation

__all__ = [
    "PRECEDENCE",
    "Action",
    "Assess",
    "Assessment",
    "Effect",
    "Generate",
    "Outcome",
    "Situation",
    "act",
    "intended_action",
    "refusal_for",
]

PRECEDENCE: dict[str, int] = {"log": 1, "rewrite": 2, "block": 3}


def intended_action(violations: list[Violation]) -> ActionTaken:
    """The strongest action any violation asks for: block > rewrite > log; allow if none."""
    if not violations:
        return "allow"
    strongest = max(violations, key=lambda v: PRECEDENCE[v.action]).action
    return strongest


def act(situation: Situation) -> Generator[Effect, Any, Outcome]:
    """Apply the policy's intended action to the situation."""
    name = intended_action(situation.violations)
    if name == "allow":
        return Outcome("allow", situation.draft)
    return (yield from ACTIONS[name].steps(situation))
