"""Batch jobs over large corpora: score, value-profile, and re-score audit logs.

``batch_score`` scores JSONL / Parquet input into sharded, resumable output (the same lines as
`guardrail score`), on a local process pool or on a Ray cluster (``ray[data]``, the optional
extra ``value-guardrail[ray]``; nothing here imports Ray unless asked to use it).
``profile`` reads that output and computes each group's value profile with bootstrap confidence
intervals; ``rescore`` re-scores the texts of an audit log and evaluates a policy on them.
The commands are ``guardrail batch score|profile|rescore`` (``guardrail.cli.batch``).
"""

from __future__ import annotations

from guardrail.batch.inputs import BatchError
from guardrail.batch.job import batch_score
from guardrail.batch.profile import profile
from guardrail.batch.rescore import rescore
from guardrail.batch.shards import Manifest

__all__ = ["BatchError", "Manifest", "batch_score", "profile", "rescore"]
