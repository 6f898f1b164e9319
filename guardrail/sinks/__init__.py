"""Audit sinks, one file each: ``jsonl.JsonlSink`` (default) and ``sqlite.SqliteSink``."""
