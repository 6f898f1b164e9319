"""The JSONL line formats of scoring jobs, shared by `guardrail score`, `check` and `batch`.

An input line is a ``ScoreRequest`` (``{"id"?, "prompt"?, "response"}``); the output line of a
scored text is ``score_line``; an input line that cannot be read becomes ``error_line``
(``{"id", "line", "error"}``, with its own id when that can be read). They live outside the CLI
so that batch workers read and write the same lines without loading the command-line package.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

from guardrail.text import normalize_text

ErrorLine = dict[str, object]
"""The output line of an input line that could not be read: ``{"id", "line", "error"}``."""


def usable_id(value: object) -> bool:
    """Whether ``value`` can be an item's id: a string or an integer (never a bool)."""
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


class ScoreRequest(BaseModel):
    """One line of a `guardrail score --input` file."""

    model_config = ConfigDict(extra="ignore")

    id: str | int | None = None
    prompt: str | None = None
    response: str

    @field_validator("id", mode="before")
    @classmethod
    def _string_or_integer(cls, value: object) -> object:
        # Lax validation would read true as 1 and 2.0 as 2: an id is copied to the output as given, or refused.
        if value is None or usable_id(value):
            return value
        raise ValueError(f"must be a string or an integer, got {json.dumps(value)}")

    @field_validator("response")
    @classmethod
    def _scorable(cls, value: str) -> str:
        normalize_text(value)  # empty or invisible-only text is refused here, before any scoring
        return value


def error_line(lineno: int, line: str, message: str) -> ErrorLine:
    """The error line for an unreadable input line: its own id when that can be read, else its number."""
    item_id: object = lineno
    try:
        data = json.loads(line)
    except ValueError:
        data = None
    if isinstance(data, dict) and usable_id(data.get("id")):
        item_id = data["id"]
    return {"id": item_id, "line": lineno, "error": message}


def score_line(result: Any, item_id: object = None) -> dict[str, object]:
    """The output line of one scored text (``ValueScores``), with its id first when it has one."""
    out: dict[str, object] = {} if item_id is None else {"id": item_id}
    out.update(
        scores=result.scores,
        labels=result.labels,
        confidence=result.confidence,
        model=result.model_id,
        precision=result.precision,
        engine=result.engine,
    )
    return out
