"""Former module path of the SQLite sink: see ``guardrail.audit.sqlite`` (imports here keep working)."""

from guardrail.audit.sqlite import SqliteSink, SqliteStore

__all__ = ["SqliteSink", "SqliteStore"]
