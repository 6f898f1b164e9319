"""The line formats batch jobs share with `guardrail score`, imported from the CLI in this one place.

An input line is a ``ScoreRequest`` (``{"id"?, "prompt"?, "response"}``); an output line is what
``guardrail score --input ... --output ...`` writes for it (``score_line``), and a line that cannot
be read becomes the same ``{"id", "line", "error"}`` error line, here with its ``source`` file too.
These belong in a module outside the CLI (importing them loads the whole ``guardrail.cli``
package, and ``guardrail.cli.batch`` imports this package back); until they move, this module is
the one place that names them.
"""

from __future__ import annotations

import json
from typing import Any

from guardrail.cli.io import ScoreRequest, _error_line
from guardrail.cli.score import _scores_json

__all__ = ["ScoreRequest", "error_line", "json_line", "score_line"]


def score_line(result: Any, item_id: object) -> dict[str, object]:
    """The output line of one scored text, exactly as `guardrail score` writes it."""
    return _scores_json(result, item_id)


def error_line(source: str, lineno: int, raw: str, message: str) -> dict[str, object]:
    """The error line of an unreadable input line: its own id when readable, its line, the message, its file."""
    return {**_error_line(lineno, raw, message), "source": source}


def json_line(data: dict[str, Any]) -> str:
    """One JSONL line (with its newline), encoded as `guardrail score` encodes its output."""
    return json.dumps(data, default=str) + "\n"
