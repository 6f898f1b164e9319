"""What the guard decided about one response: the record that crosses every boundary."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from guardrail.evaluate import Violation
from guardrail.policy import PolicyRef
from guardrail.score import ValueScores

ActionTaken = Literal["allow", "block", "rewrite", "log"]


class RewriteAttempt(BaseModel):
    """One re-ask of the LLM and how its new draft scored."""

    model_config = ConfigDict(frozen=True)

    attempt: int
    instruction: str
    text: str | None
    scores: ValueScores | None
    violations: list[Violation]
    passed: bool
    latency_ms: float
    error: str | None = None


def error_text(exc: BaseException) -> str:
    """How an exception is named in a decision's ``error``: ``Type: message``."""
    return f"{type(exc).__name__}: {exc}"


class Decision(BaseModel):
    """The outcome of guarding one response.

    ``action`` is what was done; ``intended_action`` what the policy asked for (they differ in
    shadow mode, where nothing is enforced). ``text`` is what the caller should show.
    """

    model_config = ConfigDict(frozen=True)

    action: ActionTaken
    intended_action: ActionTaken
    text: str
    prompt: str | None = None
    draft: str | None = Field(None, description="the response as first generated or given")
    violations: list[Violation] = Field(default_factory=list)
    scores: ValueScores | None = None
    policy: PolicyRef
    model_id: str | None = None
    attempts: list[RewriteAttempt] = Field(default_factory=list)
    shadow: bool = False
    latency_ms: dict[str, float] = Field(default_factory=dict, description="per stage and total")
    error: str | None = Field(None, description="why a decision was made without a full evaluation")
    note: str | None = Field(None, description="e.g. why a rewrite fell back")

    @property
    def allowed(self) -> bool:
        """Whether the caller may show the original draft unchanged."""
        return self.action in ("allow", "log")

    def explain(self) -> str:
        """A one-line human explanation."""
        head = f"{self.action.upper()}"
        if self.shadow and self.intended_action != self.action:
            head += f" (shadow; would {self.intended_action})"
        if self.error:
            return f"{head}: {self.error} [policy {self.policy.name} v{self.policy.version}]"
        if not self.violations:
            return f"{head}: no rule fired [policy {self.policy.name} v{self.policy.version}]"
        first = self.violations[0]
        more = f" (+{len(self.violations) - 1} more)" if len(self.violations) > 1 else ""
        tail = f"; {self.note}" if self.note else ""
        return f"{head}: {first.reason} - {first.describe()}{more}{tail}"
