"""The local runner: shards scored by a pool of worker processes on this machine, without Ray.

Each process builds one ``ShardScorer`` (the model loads once per process) and then takes shards
one at a time. Processes are started with ``spawn``, so a host process that already runs model
threads is never forked. If a worker process dies (killed, out of memory), the pool is rebuilt and
the shards not yet finished are given out again, up to ``retries`` times: a shard is written only
whole (see ``guardrail.batch.shards``), so nothing is lost or written twice.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from guardrail.batch.inputs import BatchError
from guardrail.batch.shards import Shard, ShardResult, finished
from guardrail.batch.worker import JobSpec, ShardScorer

_WORKER: ShardScorer | None = None


def _start(worker: type[ShardScorer], job: str) -> None:
    global _WORKER
    _WORKER = worker(job)


def _process(shard: str) -> str:
    assert _WORKER is not None, "the worker process was not initialized"
    return _WORKER.process(Shard.model_validate_json(shard)).model_dump_json()


def run_local(
    job: JobSpec,
    shards: Sequence[Shard],
    workers: int = 1,
    *,
    worker: type[ShardScorer] = ShardScorer,
    retries: int = 2,
) -> Iterator[ShardResult]:
    """Score ``shards`` in ``workers`` processes; yields each shard's result as it finishes (in any order).

    ``worker`` is the class each process builds (``ShardScorer`` or a subclass of it, importable by name).
    """
    if workers < 1:
        raise BatchError(f"workers must be 1 or more, got {workers}")
    todo = {s.index: s for s in shards}
    deaths = 0
    context = multiprocessing.get_context("spawn")
    while todo:
        if deaths:  # shards a dying pool finished but could not report are not scored again
            for index, shard in list(todo.items()):
                written = finished(Path(job.out_dir), shard)
                if written is not None:
                    del todo[index]
                    yield written
            if not todo:
                break
        pool = ProcessPoolExecutor(
            max_workers=min(workers, len(todo)),
            mp_context=context,
            initializer=_start,
            initargs=(worker, job.model_dump_json()),
        )
        try:
            pending: set[Future[str]] = {pool.submit(_process, s.model_dump_json()) for s in todo.values()}
            while pending:
                completed, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in completed:
                    result = ShardResult.model_validate_json(future.result())
                    del todo[result.index]
                    yield result
        except BrokenProcessPool:
            deaths += 1
            if deaths > retries:
                raise BatchError(
                    f"a worker process died {deaths} times (killed, or out of memory?); {len(todo)} shard(s) "
                    "are not finished: run the job again to finish them"
                ) from None
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
