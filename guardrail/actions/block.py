"""block: replace the response with the rule's refusal message."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, ClassVar

from guardrail.actions.protocol import Effect, Outcome, Situation, refusal_for


class Block:
    name: ClassVar[str] = "block"

    def steps(self, situation: Situation) -> Generator[Effect, Any, Outcome]:
        yield from ()
        return Outcome("block", refusal_for(situation.policy, situation.violations))
