"""The line formats batch jobs share with `guardrail score` (``guardrail.score_lines``), with a file's name.

An input line is a ``ScoreRequest`` (``{"id"?, "prompt"?, "response"}``); an output line is what
``guardrail score --input ... --output ...`` writes for it (``score_line``), and a line that cannot
be read becomes the same ``{"id", "line", "error"}`` error line, here with its ``source`` file too.
"""

from __future__ import annotations

import json
from typing import Any

from guardrail.score_lines import ScoreRequest, score_line
from guardrail.score_lines import error_line as _error_line

__all__ = ["ScoreRequest", "error_line", "json_line", "score_line"]


def error_line(source: str, lineno: int, raw: str, message: str) -> dict[str, object]:
    """The error line of an unreadable input line: its own id when readable, its line, the message, its file."""
    return {**_error_line(lineno, raw, message), "source": source}


def json_line(data: dict[str, Any]) -> str:
    """One JSONL line (with its newline), encoded as `guardrail score` encodes its output."""
    return json.dumps(data, default=str) + "\n"
