"""The columns a database store copies out of each record for queries, and checking them on read.

A database row holds the record's canonical JSON (what its hash covers) and, for queries, copies
of some of its fields. A copy that disagrees with the record means the row was edited.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from guardrail.record import AuditRecord

COLUMNS = (
    "ts",
    "deployment",
    "policy_name",
    "policy_version",
    "policy_hash",
    "model_id",
    "action",
    "intended_action",
    "prev_hash",
    "hash",
)
"""Every column that copies a field of the hashed record (besides ``seq``): reads check them all."""


def field_of(data: dict[str, Any], column: str) -> Any:
    """The field of the record that ``column`` copies (``policy_name`` is ``policy.name``)."""
    if column.startswith("policy_"):
        policy = data.get("policy")
        return policy.get(column.removeprefix("policy_")) if isinstance(policy, dict) else None
    return data.get(column)


def column_values(record: AuditRecord) -> tuple[Any, ...]:
    """The ``COLUMNS`` of ``record``, in order."""
    data = record.model_dump(mode="json")
    return tuple(field_of(data, column) for column in COLUMNS)


def as_time(ts: Any) -> datetime | None:
    """A record's ``ts`` as an aware datetime (None: not an ISO 8601 time)."""
    try:
        return datetime.fromisoformat(ts.replace("Z", "+00:00")) if isinstance(ts, str) else None
    except ValueError:
        return None


def mismatched(data: dict[str, Any], seq: Any, values: tuple[Any, ...]) -> list[str]:
    """The columns (``seq`` and ``COLUMNS``) whose stored ``values`` disagree with the record ``data``.

    A ``ts`` column stored as a time (PostgreSQL's timestamptz) is compared as a time.
    """
    wrong = [] if data.get("seq") == seq else ["seq"]
    for column, value in zip(COLUMNS, values, strict=True):
        expected = field_of(data, column)
        if isinstance(value, datetime):
            expected = as_time(expected)
        if expected != value:
            wrong.append(column)
    return wrong


def row_problem(columns: list[str]) -> str:
    """How ``verify`` names a row whose copied ``columns`` disagree with its record."""
    return f"columns {columns} disagree with the hashed record (row edited)"
