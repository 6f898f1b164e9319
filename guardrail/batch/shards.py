"""Shards, the manifest and resuming: what makes a batch job safe to stop and run again.

The input is cut into shards of at most ``shard_size`` rows, in input order, never across files.
Shard ``k`` is written as ``shard-0000k.jsonl`` (its output lines, in input order),
``shard-0000k.errors.jsonl`` (its unreadable lines, when it has any) and last
``shard-0000k.done.json`` (its counts): each file is written to a temporary name and renamed, so a
shard is finished exactly when its ``.done.json`` exists. ``manifest.json`` names the inputs (with
size and modification time), the options that decide the output (model id, precision, shard size,
kept fields, policy) and every shard. A rerun with the same inputs and options skips finished
shards; one whose inputs or options differ is refused, naming what changed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from guardrail.batch.inputs import BatchError, InputFile, Span, spans

FORMAT = "guardrail-batch/1"
MANIFEST = "manifest.json"
ERRORS = "errors.jsonl"


class Shard(BaseModel):
    """One unit of work: a span of one input file, scored and written by one worker call."""

    model_config = ConfigDict(frozen=True)

    index: int
    span: Span

    @property
    def name(self) -> str:
        return f"shard-{self.index:05d}"


class ShardResult(BaseModel):
    """What a worker did with one shard (its ``.done.json``)."""

    index: int
    lines: int = Field(description="input lines in the shard, blank ones included")
    scored: int
    errors: int
    engine: str | None = Field(None, description="what ran the model (e.g. 'openvino 2026.4.1'); None if nothing")
    seconds: float


class Options(BaseModel):
    """The options that decide a job's output: a rerun must use the same ones to resume."""

    model_config = ConfigDict(frozen=True)

    model_id: str
    precision: Literal["int8", "fp32"]
    shard_size: int = Field(gt=0)
    keep: tuple[str, ...] = ()
    policy: dict[str, Any] | None = Field(None, description="the resolved policy evaluated per row, if any")


class Manifest(BaseModel):
    """``manifest.json``: what a job read, with which options, and what it wrote."""

    format: str = FORMAT
    inputs: list[InputFile]
    options: Options
    shards: list[Shard]
    done: dict[int, ShardResult] = Field(default_factory=dict, description="finished shards by index")
    complete: bool = False
    errors_file: str = ERRORS
    totals: dict[str, int] = Field(default_factory=dict)
    engine: str | None = None
    runner: dict[str, Any] = Field(default_factory=dict, description="how the last run ran: local or ray, workers")


def plan(inputs: Sequence[InputFile], shard_size: int) -> list[Shard]:
    """The shards of ``inputs``, in input order."""
    pieces = (span for file in inputs for span in spans(file, shard_size))
    return [Shard(index=i, span=span) for i, span in enumerate(pieces)]


def write_atomic(path: Path, lines: Iterable[str]) -> None:
    """Write ``lines`` to ``path`` through a temporary file renamed into place (a reader sees all or nothing)."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as out:
        out.writelines(lines)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)


def finished(out_dir: Path, shard: Shard) -> ShardResult | None:
    """The shard's counts if it was written completely, else None."""
    try:
        return ShardResult.model_validate_json((out_dir / f"{shard.name}.done.json").read_bytes())
    except FileNotFoundError:
        return None


def _changed(old: Manifest, inputs: Sequence[InputFile], options: Options) -> str | None:
    if old.options != options:
        mine, theirs = options.model_dump(), old.options.model_dump()
        names = [k for k in mine if mine[k] != theirs[k]]
        return f"the option(s) {', '.join(names)} differ from the run that wrote it"
    before = {f.path: f for f in old.inputs}
    now = {f.path: f for f in inputs}
    if list(before) != list(now):
        return "its inputs were other files"
    for path, file in now.items():
        was = before[path]
        if (was.size, was.mtime_ns) != (file.size, file.mtime_ns):
            return f"the input {file.source} changed since (size or modification time)"
    return None


def prepare(out_dir: Path, inputs: Sequence[InputFile], options: Options) -> Manifest:
    """The manifest to run with: a new one, or the folder's own when this is a rerun of the same job.

    Shards already finished are listed in ``done``. A folder that holds other files, or a run over
    other inputs or with other options, is refused.
    """
    path = out_dir / MANIFEST
    old: Manifest | None = None
    if path.exists():
        try:
            old = Manifest.model_validate_json(path.read_bytes())
        except ValueError as exc:
            raise BatchError(f"{path}: not a batch manifest ({str(exc).splitlines()[0]})") from None
        problem = _changed(old, inputs, options)
        if problem:
            raise BatchError(f"{out_dir} holds another batch run: {problem}; give another --out folder")
    elif out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise BatchError(f"{out_dir} is not an empty folder and holds no {MANIFEST}; give a new or empty folder")
    _check_outside(out_dir, inputs)
    shards = old.shards if old is not None else plan(inputs, options.shard_size)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob(".*.tmp*"):  # a run stopped while writing
        stale.unlink()
    done = {s.index: r for s in shards if (r := finished(out_dir, s)) is not None}
    manifest = Manifest(inputs=list(inputs), options=options, shards=shards, done=done)
    save(out_dir, manifest)
    return manifest


def _check_outside(out_dir: Path, inputs: Sequence[InputFile]) -> None:
    root = out_dir.resolve()
    for file in inputs:
        if Path(file.path).is_relative_to(root):
            raise BatchError(f"the input {file.source} is inside the output folder {out_dir}; give another --out")


def save(out_dir: Path, manifest: Manifest) -> None:
    write_atomic(out_dir / MANIFEST, [manifest.model_dump_json(indent=2) + "\n"])


def finish(out_dir: Path, manifest: Manifest) -> Manifest:
    """Gather the shards' error files into ``errors.jsonl`` (in input order) and mark the job complete."""
    missing = [s.index for s in manifest.shards if s.index not in manifest.done]
    if missing:
        raise BatchError(f"shards {missing[:10]} are not finished; run the job again to finish them")

    def error_lines() -> Iterable[str]:
        for shard in manifest.shards:
            if manifest.done[shard.index].errors:
                with open(out_dir / f"{shard.name}.errors.jsonl", encoding="utf-8") as handle:
                    yield from handle

    write_atomic(out_dir / ERRORS, error_lines())
    results = list(manifest.done.values())
    engines = sorted({r.engine for r in results if r.engine})
    manifest = manifest.model_copy(
        update={
            "complete": True,
            "done": dict(sorted(manifest.done.items())),
            "engine": ", ".join(engines) or None,
            "totals": {
                "shards": len(manifest.shards),
                "lines": sum(r.lines for r in results),
                "scored": sum(r.scored for r in results),
                "errors": sum(r.errors for r in results),
            },
        }
    )
    save(out_dir, manifest)
    return manifest


def output_files(out_dir: Path) -> list[Path]:
    """The output shards of a finished job folder, in input order."""
    path = out_dir / MANIFEST
    try:
        manifest = Manifest.model_validate_json(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise BatchError(f"{path}: cannot read the batch manifest ({str(exc).splitlines()[0]})") from None
    if not manifest.complete:
        raise BatchError(f"{out_dir}: the batch run is not finished; run `guardrail batch score` again to finish it")
    return [out_dir / f"{s.name}.jsonl" for s in manifest.shards]


def read_json_lines(path: Path) -> Iterable[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line of a JSONL file; a line that is no JSON object is refused."""
    with open(path, encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except ValueError as exc:
                raise BatchError(f"{path}:{lineno}: not valid JSON ({exc})") from None
            if not isinstance(data, dict):
                raise BatchError(f"{path}:{lineno}: not a JSON object")
            yield lineno, data
