"""The errors of policy loading: ``PolicyError`` (what users see) and ``Unresolved`` (internal).

A ``PolicyError`` names the file (or preset, or ``GUARDRAIL_POLICY=...``), the line, the field
and what was expected; how each kind of mistake is worded is in ``validate`` (the models' errors),
``parse`` (YAML and encoding) and ``load`` / ``refs`` (``extends``, ``remove_rules``).
"""

from __future__ import annotations


class PolicyError(ValueError):
    """A policy that cannot be used, with where and why."""

    def __init__(self, message: str, *, source: str | None = None, line: int | None = None, field: str | None = None):
        self.source, self.line, self.field, self.detail = source, line, field, message
        where = source or "<policy>"
        if line is not None:
            where += f":{line}"
        if field:
            where += f": {field}"
        super().__init__(f"{where}: {message}")


class Unresolved(Exception):
    """A reference that names no policy that can be read: whoever wrote it is told (the file with
    the ``extends``, the ``GUARDRAIL_POLICY`` variable, or the caller's own argument)."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message
