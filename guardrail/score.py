"""Step 1 of the pipeline, score: text -> where it sits in value space.

``Scorer`` is the protocol every scorer implements (``guardrail.scorers.local.LocalScorer`` is
the default); ``ValueScores`` is what it returns for one response.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from guardrail.values import VALUE_NAMES, ValueVector


class ValueScores(BaseModel):
    """The value-space reading of one response.

    ``scores[v] = P(support) - P(oppose)`` in [-1, 1]; ``labels[v]`` in {-1, 0, 1} from the
    model's tuned thresholds; ``confidence[v]`` is the probability of the chosen label.
    """

    model_config = ConfigDict(frozen=True)

    scores: dict[str, float]
    labels: dict[str, int]
    confidence: dict[str, float]
    probabilities: dict[str, tuple[float, float, float]] = Field(
        description="P(oppose), P(unrelated), P(support) per value"
    )
    model_id: str
    precision: str = Field(description="int8 or fp32: the arithmetic that produced these scores")
    engine: str | None = Field(
        None,
        description="what ran that arithmetic, with its version, e.g. 'openvino 2026.4.1' or 'torch 2.13.0' "
        "(int8 scores differ slightly between engines and versions); None in records made before it was kept",
    )
    windows: int = Field(1, description="how many token windows the response was split into")

    @property
    def vector(self) -> ValueVector:
        """The scores as an immutable ``ValueVector``."""
        return ValueVector.from_mapping(self.scores)

    @property
    def opposed(self) -> list[str]:
        """Values the response opposes (label -1), in FULCRA order."""
        return [v for v in VALUE_NAMES if self.labels[v] == -1]


@runtime_checkable
class Scorer(Protocol):
    """Anything that maps responses (with optional prompts) into value space."""

    @property
    def model_id(self) -> str:
        """Identifies the weights behind every score this scorer returns."""
        ...

    def score(self, response: str, prompt: str | None = None) -> ValueScores:
        """Score one response."""
        ...

    def score_batch(self, responses: Sequence[str], prompts: Sequence[str | None] | None = None) -> list[ValueScores]:
        """Score many responses in one call, in input order."""
        ...

    async def ascore(self, response: str, prompt: str | None = None) -> ValueScores:
        """``score`` without blocking the event loop."""
        ...

    async def ascore_batch(
        self, responses: Sequence[str], prompts: Sequence[str | None] | None = None
    ) -> list[ValueScores]:
        """``score_batch`` without blocking the event loop."""
        ...
