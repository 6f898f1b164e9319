"""log: let the response through unchanged; the decision records the violation."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, ClassVar

from guardrail.actions.protocol import Effect, Outcome, Situation


class Log:
    name: ClassVar[str] = "log"

    def steps(self, situation: Situation) -> Generator[Effect, Any, Outcome]:
        yield from ()
        return Outcome("log", situation.draft)
