"""`batch score` as a function: plan the shards, run the unfinished ones, write the manifest.

``batch_score`` resolves the inputs, prepares the output folder (a rerun of the same job resumes:
finished shards are not scored again), runs the shards on the local process pool or, with
``ray``, on a Ray cluster, shows progress (a tqdm bar of input lines, plus Ray Data's own bars),
and returns the finished ``Manifest``. The output is the same on both paths: the same shards,
written by the same worker code.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from guardrail.batch.inputs import BatchError, InputFile, resolve_inputs
from guardrail.batch.shards import Manifest, Options, Shard, ShardResult, finish, prepare, save
from guardrail.batch.worker import JobSpec, ShardScorer

if TYPE_CHECKING:
    from guardrail.policy import Policy


def batch_score(
    inputs: Sequence[str] | Sequence[InputFile],
    out_dir: Path | str,
    *,
    precision: Literal["int8", "fp32"] = "int8",
    shard_size: int = 1000,
    batch_size: int = 64,
    keep: Sequence[str] = (),
    policy: Policy | None = None,
    workers: int = 1,
    ray: str | None = None,
    worker: type[ShardScorer] = ShardScorer,
    progress: bool = True,
) -> Manifest:
    """Score every row of ``inputs`` (files, folders or globs of JSONL / Parquet) into ``out_dir``.

    Output: ``shard-NNNNN.jsonl`` files in input order, each line as `guardrail score` writes it
    plus ``source`` and ``line`` (and ``fields``: the ``keep`` input fields; ``decision``: the
    action and violations of ``policy``, when given); ``errors.jsonl``, one line per unreadable input
    line, naming its file and line; ``manifest.json``. ``workers`` is the number of local processes,
    or of Ray actors when ``ray`` is an address ("auto": the cluster on this machine, or a new local
    Ray instance). ``worker`` is the class each of them runs (a ``ShardScorer``).
    """
    if shard_size < 1 or batch_size < 1 or workers < 1:
        raise BatchError("shard size, batch size and workers must each be 1 or more")
    from guardrail.model.weights import read_config

    if shard_size < 1 or batch_size < 1 or workers < 1:
        raise BatchError("shard size, batch size and workers must each be 1 or more")
    session: contextlib.AbstractContextManager[object] = contextlib.nullcontext()
    if ray is not None:
        from guardrail.batch.ray_runner import ray_session

        session = ray_session(ray)
    with session:  # entered before any work: a bad address or a missing Ray is said at once
        _check_not_inside(out_dir, inputs)
        files = resolve_inputs([str(i) for i in inputs]) if inputs and isinstance(inputs[0], str) else inputs
        out = Path(out_dir)
        options = Options(
            model_id=read_config()[1],
            precision=precision,
            shard_size=shard_size,
            keep=tuple(keep),
            policy=policy.model_dump(mode="json") if policy is not None else None,
        )
        manifest = prepare(out, [InputFile.model_validate(f) for f in files], options)
        todo = [s for s in manifest.shards if s.index not in manifest.done]
        job = JobSpec(
            out_dir=str(out.resolve()),
            model_id=options.model_id,
            precision=precision,
            batch_size=batch_size,
            keep=options.keep,
            policy=options.policy,
        )
        results: Iterator[ShardResult]
        if ray is not None:
            from guardrail.batch.ray_runner import run_ray

            results = run_ray(job, todo, workers, address=ray, worker=worker, progress=progress)
        else:
            from guardrail.batch.local import run_local

            results = run_local(job, todo, workers, worker=worker)
        manifest.runner = {"kind": "ray" if ray is not None else "local", "workers": workers, "address": ray}
        save(out, manifest)
        _follow(manifest, todo, results, progress)
        return finish(out, manifest)


def _check_not_inside(out_dir: Path | str, inputs: Sequence[str] | Sequence[InputFile]) -> None:
    """Refuse an output folder inside an input folder: a rerun would read its shards as input."""
    out = Path(out_dir).resolve()
    for spec in inputs:
        if isinstance(spec, str) and Path(spec).is_dir() and out.is_relative_to(Path(spec).resolve()):
            raise BatchError(f"the output folder {out_dir} is inside the input folder {spec}; give another --out")


def _follow(manifest: Manifest, todo: Sequence[Shard], results: Iterator[ShardResult], progress: bool) -> None:
    """Collect the shards' results into ``manifest``, with a progress bar of input lines."""
    from tqdm import tqdm

    skipped = len(manifest.shards) - len(todo)
    if skipped and progress:
        print(f"resuming: {skipped} of {len(manifest.shards)} shard(s) already finished", file=sys.stderr)
    total = sum(s.span.lines for s in todo)
    with tqdm(total=total, unit="line", file=sys.stderr, disable=not progress or not todo) as bar:
        for result in results:
            manifest.done[result.index] = result
            bar.update(result.lines)
