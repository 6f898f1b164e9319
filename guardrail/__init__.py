"""guardrail: score LLM responses in Schwartz's value space and enforce value policies.

The public API is re-exported here. ``LocalScorer`` is imported on first use, so ``import guardrail``
stays cheap for code that only handles policies or audit records. The default int8 scorer never
imports torch or transformers (see ``guardrail.model.openvino_int8``); fp32 and ``engine="torch"`` do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from guardrail.audit import AuditStore, JsonlSink, SqliteSink, open_store
from guardrail.decision import Decision, RewriteAttempt
from guardrail.evaluate import Violation, evaluate
from guardrail.guard import Guard, ScoringTimeoutError
from guardrail.policy import Policy, PolicyError, PolicyRef, Rule, Settings, load_policy, presets
from guardrail.record import AuditRecord, DecisionSink
from guardrail.score import Scorer, ValueScores
from guardrail.stream import StreamGuard
from guardrail.text import InvalidTextError
from guardrail.values import DEFINITIONS, GROUPS, VALUE_NAMES, ValueGroup, ValueVector

if TYPE_CHECKING:
    from guardrail.scorers.local import LocalScorer

__all__ = [
    "DEFINITIONS",
    "GROUPS",
    "VALUE_NAMES",
    "AuditRecord",
    "AuditStore",
    "Decision",
    "DecisionSink",
    "Guard",
    "InvalidTextError",
    "JsonlSink",
    "LocalScorer",
    "Policy",
    "PolicyError",
    "PolicyRef",
    "RewriteAttempt",
    "Rule",
    "Scorer",
    "ScoringTimeoutError",
    "Settings",
    "SqliteSink",
    "StreamGuard",
    "ValueGroup",
    "ValueScores",
    "ValueVector",
    "Violation",
    "evaluate",
    "load_policy",
    "open_store",
    "presets",
]

_LAZY = {"LocalScorer": "guardrail.scorers.local"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'guardrail' has no attribute {name!r}")
