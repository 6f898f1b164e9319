"""The scoring worker: loads the model once, then scores and writes whole shards.

One ``ShardScorer`` lives in each local worker process and in each Ray actor. ``process`` reads a
shard's rows, scores the valid ones with ``LocalScorer.score_batch`` (``batch_size`` texts per
call), evaluates the job's policy with ``guardrail.evaluate`` when it has one, and writes the
shard's files (see ``guardrail.batch.shards``). The same code runs on both paths, so their output
is the same. Called with a Ray Data batch (``{"shard": [shard JSON, ...]}``), it returns
``{"result": [ShardResult JSON, ...]}``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from guardrail.batch.formats import json_line, score_line
from guardrail.batch.inputs import BatchError, Row, read_span
from guardrail.batch.shards import Shard, ShardResult, write_atomic

if TYPE_CHECKING:
    from guardrail.policy import Policy
    from guardrail.score import ValueScores
    from guardrail.scorers.local import LocalScorer


class JobSpec(BaseModel):
    """What every worker of a job needs to know (sent to each process or actor once)."""

    model_config = ConfigDict(frozen=True)

    out_dir: str
    model_id: str = Field(description="the weights the job was planned with: every worker must load the same")
    precision: Literal["int8", "fp32"] = "int8"
    batch_size: int = Field(64, gt=0, description="texts per scorer call")
    keep: tuple[str, ...] = ()
    policy: dict[str, Any] | None = None


def _chunks(rows: Iterator[Row], size: int) -> Iterator[list[Row]]:
    """Rows in runs holding ``size`` valid requests each (error rows ride along where they fall)."""
    chunk: list[Row] = []
    valid = 0
    for row in rows:
        chunk.append(row)
        valid += row.request is not None
        if valid == size:
            yield chunk
            chunk, valid = [], 0
    if chunk:
        yield chunk


class ShardScorer:
    """Scores shards with one ``LocalScorer`` loaded at construction (the callable class Ray Data runs)."""

    def __init__(self, job: JobSpec | str) -> None:
        from guardrail.scorers.local import LocalScorer

        self.job = job if isinstance(job, JobSpec) else JobSpec.model_validate_json(job)
        self.out_dir = Path(self.job.out_dir)
        # No cache: a corpus is read once, and a cache would hold thousands of results for nothing.
        self.scorer: LocalScorer = LocalScorer(precision=self.job.precision, cache_size=0)
        if self.scorer.model_id != self.job.model_id:  # e.g. a node with another version of the package
            raise BatchError(f"this worker's model is {self.scorer.model_id}, the job's {self.job.model_id}")
        self.policy: Policy | None = None
        if self.job.policy is not None:
            from guardrail.policy import Policy

            self.policy = Policy.model_validate(self.job.policy)

    def _line(self, row: Row, result: ValueScores) -> dict[str, object]:
        assert row.request is not None
        item_id = row.request.id if row.request.id is not None else row.line
        line: dict[str, object] = {**score_line(result, item_id), "source": row.source, "line": row.line}
        if self.job.keep:
            line["fields"] = row.fields
        if self.policy is not None:
            from guardrail.act import intended_action
            from guardrail.evaluate import evaluate

            violations = evaluate(result, self.policy, self.scorer.oppose_thresholds)
            line["decision"] = {
                "action": intended_action(violations),
                "violations": [v.model_dump(mode="json") for v in violations],
            }
        return line

    def process(self, shard: Shard) -> ShardResult:
        """Score ``shard`` and write its files; returns its counts (also written as its ``.done.json``)."""
        started = time.perf_counter()
        lines: list[str] = []
        errors: list[str] = []
        for chunk in _chunks(read_span(shard.span, self.job.keep), self.job.batch_size):
            valid = [r for r in chunk if r.request is not None]
            scored = self.scorer.score_batch(
                [r.request.response for r in valid if r.request], [r.request.prompt for r in valid if r.request]
            )
            results = dict(zip((id(r) for r in valid), scored, strict=True))
            for row in chunk:
                if row.error is not None:
                    errors.append(json_line(row.error))
                else:
                    lines.append(json_line(self._line(row, results[id(row)])))
        if errors:
            write_atomic(self.out_dir / f"{shard.name}.errors.jsonl", errors)
        write_atomic(self.out_dir / f"{shard.name}.jsonl", lines)
        result = ShardResult(
            index=shard.index,
            lines=shard.span.lines,
            scored=len(lines),
            errors=len(errors),
            engine=self.scorer.engine_version if lines else None,
            seconds=round(time.perf_counter() - started, 3),
        )
        write_atomic(self.out_dir / f"{shard.name}.done.json", [result.model_dump_json() + "\n"])
        return result

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Ray Data's entry: ``{"shard": [shard JSON]}`` -> ``{"result": [ShardResult JSON]}``."""
        done = [self.process(Shard.model_validate_json(str(s))).model_dump_json() for s in batch["shard"]]
        return {"result": np.array(done, dtype=object)}
