"""Step 4 of the pipeline, record: every decision becomes a hash-chained audit record.

Each record holds ``prev_hash`` (the previous record's ``hash``, or the log's genesis value)
and ``hash`` = SHA-256 of the record's canonical JSON (sorted keys, no spaces, UTF-8) with the
``hash`` field left out. Editing, deleting, inserting or reordering a record breaks the chain.

The guard hands decisions to a ``DecisionSink``; the audit stores (``guardrail.audit``) are the sinks
that keep the chain and can be read back (``guardrail.audit.AuditStore``).
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from guardrail.decision import ActionTaken, Decision
from guardrail.evaluate import Violation
from guardrail.policy import PolicyRef
from guardrail.score import ValueScores

FORMAT = "guardrail-audit/1"


def sha256_text(text: str | None) -> str | None:
    return None if text is None else hashlib.sha256(text.encode("utf-8")).hexdigest()


def canonical_json(data: Any) -> str:
    """The one serialization hashes are computed over."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class AttemptRecord(BaseModel):
    model_config = ConfigDict(frozen=True)

    attempt: int
    text: str | None = None
    text_sha256: str | None = None
    scores: ValueScores | None = None
    violations: list[Violation] = Field(default_factory=list)
    passed: bool
    latency_ms: float
    error: str | None = None


class AuditRecord(BaseModel):
    """One decision as the audit log stores it."""

    model_config = ConfigDict(frozen=True)

    seq: int
    ts: str = Field(description="UTC, ISO 8601")
    deployment: str
    policy: PolicyRef
    model_id: str | None
    redacted: bool = False
    prompt: str | None = None
    response: str | None = Field(None, description="the draft as first generated or given")
    prompt_sha256: str | None = None
    response_sha256: str | None = None
    final_text_sha256: str
    scores: ValueScores | None
    violations: list[Violation]
    action: ActionTaken
    intended_action: ActionTaken
    shadow: bool
    attempts: list[AttemptRecord] = Field(default_factory=list)
    latency_ms: dict[str, float] = Field(default_factory=dict)
    error: str | None = None
    note: str | None = None
    context: dict[str, Any] = Field(default_factory=dict, description="e.g. LangChain run id, request id")
    prev_hash: str
    hash: str

    def expected_hash(self) -> str:
        """What ``hash`` must be for this record's content and ``prev_hash``."""
        return compute_hash(self.model_dump(mode="json", exclude={"hash"}))


def compute_hash(body: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(body).encode("utf-8")).hexdigest()


class Genesis(BaseModel):
    """The first line of a log file: states the value the first record chains to."""

    type: Literal["genesis"] = "genesis"
    format: str = FORMAT
    genesis: str
    created: str
    continues: str | None = Field(None, description="the file this one continues after rotation")
    first_seq: int = 1


def jsonable_context(context: dict[str, Any]) -> dict[str, Any]:
    """``context`` as plain JSON, so that a record is never lost to a value JSON cannot hold.

    Values JSON does not know (objects, sets, datetimes) are kept as their ``repr``; a context
    that still cannot be written (non-string keys of odd types, cycles) is kept whole as one
    ``repr`` under ``"unserializable"``.
    """
    if all(isinstance(key, str) for key in context):
        try:
            json.dumps(context)
            return context  # the usual case: plain JSON already
        except (TypeError, ValueError):
            pass
    try:
        plain: dict[str, Any] = json.loads(json.dumps(context, default=repr))
    except (TypeError, ValueError):
        return {"unserializable": repr(context)}
    return plain


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def build_record(
    decision: Decision,
    *,
    seq: int,
    prev_hash: str,
    deployment: str,
    redact: bool,
    context: dict[str, Any] | None = None,
    ts: str | None = None,
) -> AuditRecord:
    """Turn a decision into the next chained record (plain text, or only hashes when ``redact``)."""
    attempts = [
        AttemptRecord(
            attempt=a.attempt,
            text=None if redact else a.text,
            text_sha256=sha256_text(a.text),
            scores=a.scores,
            violations=a.violations,
            passed=a.passed,
            latency_ms=a.latency_ms,
            error=a.error,
        )
        for a in decision.attempts
    ]
    body: dict[str, Any] = {
        "seq": seq,
        "ts": ts or utc_now(),
        "deployment": deployment,
        "policy": decision.policy,
        "model_id": decision.model_id,
        "redacted": redact,
        "prompt": None if redact else decision.prompt,
        "response": None if redact else decision.draft,
        "prompt_sha256": sha256_text(decision.prompt),
        "response_sha256": sha256_text(decision.draft),
        "final_text_sha256": sha256_text(decision.text),
        "scores": decision.scores,
        "violations": decision.violations,
        "action": decision.action,
        "intended_action": decision.intended_action,
        "shadow": decision.shadow,
        "attempts": attempts,
        "latency_ms": decision.latency_ms,
        "error": decision.error,
        "note": decision.note,
        "context": jsonable_context(context or {}),
        "prev_hash": prev_hash,
        "hash": "",
    }
    draft = AuditRecord.model_validate(body)
    return draft.model_copy(update={"hash": draft.expected_hash()})


@runtime_checkable
class DecisionSink(Protocol):
    """Where the guard's decisions go: the writing half of ``guardrail.audit.AuditStore`` (every store is one)."""

    def write(self, decision: Decision, *, deployment: str, context: dict[str, Any] | None = None) -> AuditRecord:
        """Append one decision, durably (flushed) before returning."""
        ...

    async def awrite(
        self, decision: Decision, *, deployment: str, context: dict[str, Any] | None = None
    ) -> AuditRecord:
        """``write`` without blocking the event loop."""
        ...

    def close(self) -> None:
        """Flush and release the sink."""
        ...
