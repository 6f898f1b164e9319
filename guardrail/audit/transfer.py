"""Moving records from one store into another: a fallback log back into its database.

While a PostgreSQL store is down, the guard records its decisions in a local JSONL fallback log
(``postgres``). ``import_records`` appends them to the database once it is back, each as a new
record of the database's chain whose ``context["imported_from"]`` names the log, seq and hash it
had in the fallback log, so the two can be matched up. Import a fallback log once, when no guard
writes to it any more, then archive it (a second import appends the records again).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from guardrail.audit.questions import records
from guardrail.audit.store import AuditLogError, AuditStore, RecordBuilder
from guardrail.audit.targets import opened
from guardrail.audit.verify import EXIT_TAMPERED, verify
from guardrail.record import AuditRecord


def import_records(source: AuditStore | Path | str, into: AuditStore) -> int:
    """Append every record of ``source`` to ``into``, in order; returns how many.

    ``source`` is verified first: a tampered log (exit code 1) is refused with ``AuditLogError``,
    a torn tail (a crash) is fine.
    """
    with opened(source) as store:
        report = verify(store)
        if report.exit_code == EXIT_TAMPERED:
            raise AuditLogError(f"{store.name} is not imported: {report.summary()}")
        count = 0
        for data in records(store):
            origin = {"log": store.name, "seq": data["seq"], "hash": data["hash"]}
            into.append(_rebuilder(data, origin))
            count += 1
    return count


def _rebuilder(data: dict[str, Any], origin: dict[str, Any]) -> RecordBuilder:
    def build(seq: int, prev_hash: str) -> AuditRecord:
        context = {**(data.get("context") or {}), "imported_from": origin}
        body = data | {"seq": seq, "prev_hash": prev_hash, "context": context, "hash": ""}
        draft = AuditRecord.model_validate(body)
        return draft.model_copy(update={"hash": draft.expected_hash()})

    return build
