"""What an action works with: the effects it yields, the situation it decides about, its outcome.

Actions are written "sans I/O": each is a generator that *yields* the effects it needs
(``Generate`` a new draft from the LLM, ``Assess`` a text: score + evaluate) and receives their
results. The guard drives the same generator synchronously or asynchronously, so every action
has sync and async twins without being written twice. ``Action`` is the protocol every file
of ``actions/`` implements; ``act.py`` picks which one runs.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from guardrail.decision import ActionTaken, RewriteAttempt
from guardrail.evaluate import Violation
from guardrail.policy import Policy
from guardrail.score import ValueScores


@dataclass(frozen=True)
class Generate:
    """Effect: ask the LLM for text. The driver sends back the text (or throws its error)."""

    prompt: str


@dataclass(frozen=True)
class Assess:
    """Effect: score and evaluate ``text``. The driver sends back an ``Assessment``."""

    text: str
    prompt: str | None


@dataclass(frozen=True)
class Assessment:
    scores: ValueScores
    violations: list[Violation]


Effect = Generate | Assess


@dataclass
class Situation:
    """What an action decides about: the draft, its assessment, the policy, whether an LLM can be re-asked."""

    policy: Policy
    prompt: str | None
    draft: str
    scores: ValueScores
    violations: list[Violation]
    can_regenerate: bool


@dataclass
class Outcome:
    action: ActionTaken
    text: str
    attempts: list[RewriteAttempt] = field(default_factory=list)
    note: str | None = None


class Action(Protocol):
    """One way of handling violations. ``steps`` is a generator of effects returning an Outcome."""

    name: ClassVar[str]

    def steps(self, situation: Situation) -> Generator[Effect, Any, Outcome]: ...


def refusal_for(policy: Policy, violations: list[Violation], actions: tuple[str, ...] = ("block",)) -> str:
    """The refusal text: the message of the first firing rule whose action is in ``actions``, else the policy's.

    A block names its block rules; a rewrite that falls back to a block names its rewrite rules.
    """
    messages = {r.id: r.message for r in policy.rules if r.message}
    for v in violations:
        if v.action in actions and v.rule_id in messages:
            return str(messages[v.rule_id])
    return policy.settings.refusal_message
