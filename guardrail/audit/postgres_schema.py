"""The PostgreSQL audit store's tables, created on first use and migrated by version.

``guardrail_audit_schema`` lists the versions applied. A writer applies what is missing under a
transaction-level advisory lock, so that many processes starting at once create the tables once;
a database already at a newer version than this release knows is refused, not rewritten.

- ``guardrail_audit_logs``: one row per named log: its genesis (the JSON a JSONL file's first
  line holds) and its head (the last seq and hash). Appends lock this row (``FOR UPDATE``): it
  is what serializes writers, and what ``verify`` checks the chain's end against.
- ``guardrail_audit_records``: one row per record, ``record`` being its canonical JSON (what the
  hash covers), with copies of some fields for queries (``columns.COLUMNS``). ``id`` is the
  order rows were appended in: ``verify`` reads a log in that order. ``append_id`` names the
  client's append, so that one retried after a lost connection is not stored twice.
- ``guardrail_audit_append(...)``: one append as one statement (its own transaction). It locks the
  log's head row (``FOR UPDATE``), puts the next seq and the head's hash into the record the
  client sent with stand-ins for them, hashes it (SHA-256 of its UTF-8 bytes, as
  ``record.compute_hash``), inserts it and moves the head. The head row is held only while the
  server does that, never across a round trip to a client, so no client can stall the others.
"""

from __future__ import annotations

from typing import Any

LATEST = 1
APPEND_FUNCTION = """CREATE FUNCTION guardrail_audit_append(
    p_log text, p_append_id uuid, p_genesis text, p_genesis_hash text,
    p_body text, p_record text, p_seq_token text, p_prev_token text, p_hash_token text,
    p_ts timestamptz, p_deployment text, p_policy_name text, p_policy_version text, p_policy_hash text,
    p_model_id text, p_action text, p_intended_action text
) RETURNS TABLE (r_seq bigint, r_prev_hash text, r_hash text) LANGUAGE plpgsql AS $$
DECLARE
    v_seq bigint;
    v_prev text;
    v_body text;
    v_hash text;
BEGIN
    SELECT l.seq, l.hash INTO v_seq, v_prev FROM guardrail_audit_logs l WHERE l.log = p_log FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO guardrail_audit_logs (log, genesis, seq, hash) VALUES (p_log, p_genesis, 0, p_genesis_hash)
            ON CONFLICT (log) DO NOTHING;
        SELECT l.seq, l.hash INTO v_seq, v_prev FROM guardrail_audit_logs l WHERE l.log = p_log FOR UPDATE;
    END IF;
    RETURN QUERY SELECT r.seq, r.prev_hash, r.hash FROM guardrail_audit_records r WHERE r.append_id = p_append_id;
    IF FOUND THEN
        RETURN;  -- a retry of an append that was stored: the same answer, nothing stored twice
    END IF;
    v_seq := v_seq + 1;
    v_body := replace(replace(p_body, p_seq_token, v_seq::text), p_prev_token, v_prev);
    v_hash := encode(sha256(convert_to(v_body, 'UTF8')), 'hex');
    INSERT INTO guardrail_audit_records (
        log, seq, append_id, ts, deployment, policy_name, policy_version, policy_hash, model_id, action,
        intended_action, prev_hash, hash, record
    ) VALUES (
        p_log, v_seq, p_append_id, p_ts, p_deployment, p_policy_name, p_policy_version, p_policy_hash, p_model_id,
        p_action, p_intended_action, v_prev, v_hash,
        replace(replace(replace(p_record, p_seq_token, v_seq::text), p_prev_token, v_prev), p_hash_token, v_hash)
    );
    UPDATE guardrail_audit_logs l SET seq = v_seq, hash = v_hash, updated = now() WHERE l.log = p_log;
    RETURN QUERY SELECT v_seq, v_prev, v_hash;
END
$$"""
_LOCK_KEY = 0x6775617264  # "guard": serializes schema changes across processes

MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        """CREATE TABLE guardrail_audit_logs (
            log text PRIMARY KEY,
            genesis text NOT NULL,
            seq bigint NOT NULL,
            hash text NOT NULL,
            updated timestamptz NOT NULL DEFAULT now()
        )""",
        """CREATE TABLE guardrail_audit_records (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            log text NOT NULL REFERENCES guardrail_audit_logs (log),
            seq bigint NOT NULL,
            append_id uuid NOT NULL UNIQUE,
            ts timestamptz NOT NULL,
            deployment text NOT NULL,
            policy_name text NOT NULL,
            policy_version text NOT NULL,
            policy_hash text NOT NULL,
            model_id text,
            action text NOT NULL,
            intended_action text NOT NULL,
            prev_hash text NOT NULL,
            hash text NOT NULL,
            record text NOT NULL,
            UNIQUE (log, seq)
        )""",
        "CREATE INDEX guardrail_audit_records_log_id ON guardrail_audit_records (log, id)",
        "CREATE INDEX guardrail_audit_records_log_ts ON guardrail_audit_records (log, ts)",
        "CREATE INDEX guardrail_audit_records_log_action ON guardrail_audit_records (log, action)",
        APPEND_FUNCTION,
    ),
}


class SchemaTooNew(Exception):
    """The database holds a schema version this release does not know."""

    def __init__(self, version: int) -> None:
        super().__init__(
            f"its audit tables are at schema version {version}, newer than this guardrail knows ({LATEST}): "
            "upgrade guardrail"
        )


def current_version(conn: Any) -> int:
    """The schema version the database is at (0: no audit tables yet)."""
    if conn.execute("SELECT to_regclass('guardrail_audit_schema')").fetchone()[0] is None:
        return 0
    row = conn.execute("SELECT max(version) FROM guardrail_audit_schema").fetchone()
    return int(row[0] or 0)


def ensure_schema(conn: Any) -> None:
    """Create or migrate the audit tables to ``LATEST`` (``conn`` in autocommit mode); ``SchemaTooNew`` if newer."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        version = current_version(conn)
        if version > LATEST:
            raise SchemaTooNew(version)
        if version == 0:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS guardrail_audit_schema "
                "(version integer PRIMARY KEY, applied timestamptz NOT NULL DEFAULT now())"
            )
        for step in range(version + 1, LATEST + 1):
            for statement in MIGRATIONS[step]:
                conn.execute(statement)
            conn.execute("INSERT INTO guardrail_audit_schema (version) VALUES (%s)", (step,))
