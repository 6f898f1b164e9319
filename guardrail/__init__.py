"""guardrail: score LLM responses in Schwartz's value space and enforce value policies.

The public API is re-exported here. Heavy parts (torch, transformers) load on first use, so
``import guardrail`` stays cheap for code that only handles policies or records.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from guardrail.score import Scorer, ValueScores
from guardrail.text import InvalidTextError
from guardrail.values import DEFINITIONS, GROUPS, VALUE_NAMES, ValueGroup, ValueVector

if TYPE_CHECKING:
    from guardrail.scorers.local import LocalScorer

__all__ = [
    "DEFINITIONS",
    "GROUPS",
    "VALUE_NAMES",
    "InvalidTextError",
    "LocalScorer",
    "Scorer",
    "ValueGroup",
    "ValueScores",
    "ValueVector",
]

_LAZY = {"LocalScorer": "guardrail.scorers.local"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'guardrail' has no attribute {name!r}")
