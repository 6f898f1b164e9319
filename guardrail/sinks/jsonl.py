"""Former module path of the JSONL sink: see ``guardrail.audit.jsonl`` (imports here keep working)."""

from guardrail.audit.jsonl import JsonlSink, JsonlStore
from guardrail.audit.jsonl_lines import is_crash_residue, is_torn_fragment
from guardrail.audit.segments import open_active, open_segment, rotated_name, segment_number, segments

__all__ = [
    "JsonlSink",
    "JsonlStore",
    "is_crash_residue",
    "is_torn_fragment",
    "open_active",
    "open_segment",
    "rotated_name",
    "segment_number",
    "segments",
]
