"""Step 2 of the pipeline, evaluate: value scores + policy -> violations.

Plain functions over plain data: no model, no I/O. ``evaluate`` returns one ``Violation`` per
rule whose condition fires, with the observed number, the allowed range and how far outside it.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict

from guardrail.policy import (
    Condition,
    GroupRange,
    Opposes,
    Policy,
    Rule,
    TargetDistance,
    Uncertain,
    ValueRange,
)
from guardrail.score import ValueScores
from guardrail.values import GROUPS, VALUE_NAMES, ValueGroup

Metric = Literal["score", "group_score", "p_oppose", "distance", "confidence"]


class Violation(BaseModel):
    """One rule that fired on one response."""

    model_config = ConfigDict(frozen=True)

    rule_id: str
    action: Literal["block", "rewrite", "log"]
    dimension: str
    """The value, the group, ``target`` (distance rules) or the value whose confidence is low."""
    metric: Metric
    observed: float
    allowed_min: float | None
    allowed_max: float | None
    margin: float
    """How far outside the allowed range the observation lies (> 0)."""
    reason: str

    def describe(self) -> str:
        """E.g. 'security score -0.82, allowed at least -0.30 (rule keep-safe)'.

        Only bounds the violation recorded and actually passed are shown: an ``opposes`` rule fires
        on the scorer's label, so when the recorded threshold does not explain the firing (a scorer
        without ``oppose_thresholds``, or a record replayed without them) the text says so.
        """
        if self.metric == "p_oppose":
            if self.allowed_max is not None and self.observed >= self.allowed_max:
                bound = f"allowed below {self.allowed_max:+.2f}"
            else:
                bound = "labelled opposing by the scorer (at or above its tuned threshold, not known here)"
        elif self.allowed_min is not None and self.observed < self.allowed_min:
            bound = f"allowed at least {self.allowed_min:+.2f}"
        elif self.allowed_max is not None and self.observed > self.allowed_max:
            bound = f"allowed at most {self.allowed_max:+.2f}"
        else:
            bound = f"outside the allowed range by {self.margin:.2f}"
        label = {
            "score": "score",
            "group_score": "group score",
            "p_oppose": "P(oppose)",
            "distance": "distance to target",
            "confidence": "confidence",
        }[self.metric]
        return f"{self.dimension} {label} {self.observed:+.2f}, {bound} (rule {self.rule_id})"


def _outside(
    rule: Rule, dimension: str, metric: Metric, observed: float, low: float | None, high: float | None
) -> Violation | None:
    margin = 0.0
    if low is not None and observed < low:
        margin = low - observed
    elif high is not None and observed > high:
        margin = observed - high
    if margin <= 1e-9:
        return None
    return Violation(
        rule_id=rule.id,
        action=rule.action,
        dimension=dimension,
        metric=metric,
        observed=round(observed, 6),
        allowed_min=low,
        allowed_max=high,
        margin=round(margin, 6),
        reason=rule.reason,
    )


def _check(
    rule: Rule, condition: Condition, scores: ValueScores, oppose_thresholds: dict[str, float]
) -> list[Violation]:
    if isinstance(condition, ValueRange):
        v = _outside(rule, condition.value, "score", scores.scores[condition.value], condition.min, condition.max)
        return [v] if v else []
    if isinstance(condition, GroupRange):
        members = GROUPS[ValueGroup(condition.group)]
        mean = sum(scores.scores[m] for m in members) / len(members)
        v = _outside(rule, condition.group, "group_score", mean, condition.min, condition.max)
        return [v] if v else []
    if isinstance(condition, Opposes):
        name = condition.opposes
        if scores.labels[name] != -1:
            return []
        p_oppose = scores.probabilities[name][0]
        threshold = oppose_thresholds.get(name, 0.5)
        # Fired by the label; the margin is how far P(oppose) passed the model's threshold.
        return [
            Violation(
                rule_id=rule.id,
                action=rule.action,
                dimension=name,
                metric="p_oppose",
                observed=round(p_oppose, 6),
                allowed_min=None,
                allowed_max=threshold,
                margin=round(max(p_oppose - threshold, 1e-6), 6),
                reason=rule.reason,
            )
        ]
    if isinstance(condition, TargetDistance):
        dims = [d for d in condition.target if abs(scores.scores[d]) > condition.min_abs_score]
        distance = math.sqrt(sum((scores.scores[d] - condition.target[d]) ** 2 for d in dims))
        v = _outside(rule, "target", "distance", distance, None, condition.max_distance)
        return [v] if v else []
    if isinstance(condition, Uncertain):
        names = VALUE_NAMES if condition.uncertain == "any" else (condition.uncertain,)
        found = []
        for name in names:
            v = _outside(rule, name, "confidence", scores.confidence[name], condition.below, None)
            if v:
                found.append(v)
        return found
    raise TypeError(f"unknown condition {type(condition).__name__}")  # pragma: no cover


def evaluate(scores: ValueScores, policy: Policy, oppose_thresholds: dict[str, float] | None = None) -> list[Violation]:
    """Every violation of ``policy`` by a response with these ``scores``, in rule order.

    ``oppose_thresholds`` (the scorer's tuned P(oppose) thresholds) only fill in the allowed
    bound reported for ``opposes`` rules; whether they fire is the scorer's label. Without them
    0.5 stands in, and ``Violation.describe`` never shows it as a bound the draft passed when the
    draft's P(oppose) is below it.
    """
    found: list[Violation] = []
    for rule in policy.rules:
        found.extend(_check(rule, rule.when, scores, oppose_thresholds or {}))
    return found
