"""`guardrail batch score|profile|rescore`: large corpora on a local process pool or on Ray.

Each command calls ``guardrail.batch``'s functions (imported when a command runs: that package
imports the CLI's line formats); a ``BatchError`` (bad input, a folder that holds another run, a
Ray address nothing answers at) becomes a ``CliError``, one line and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from guardrail.cli.audit import _count
from guardrail.cli.io import CliError, load_policy_or_fail

SCORE_LINES_HELP = (
    "JSONL / Parquet rows of {id?, prompt?, response, ...}: files, folders (searched for *.jsonl and *.parquet) "
    "or globs; a row's number is its line (Parquet: its row, from 1)"
)


@contextmanager
def _as_cli_errors() -> Iterator[None]:
    from guardrail.batch import BatchError

    try:
        yield
    except BatchError as exc:
        raise CliError(str(exc)) from None


def _positive(text: str) -> int:
    """argparse type of a size: a whole number, 1 or more."""
    value = _count(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def _run_options(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "precision": args.precision,
        "shard_size": args.shard_size,
        "batch_size": args.batch_size,
        "workers": args.workers,
        "ray": args.ray,
        "progress": not args.quiet,
    }


def cmd_batch_score(args: argparse.Namespace) -> int:
    from guardrail.batch import batch_score
    from guardrail.batch.shards import ERRORS

    policy = load_policy_or_fail(args.policy) if args.policy else None
    with _as_cli_errors():
        manifest = batch_score(args.inputs, args.out, keep=args.keep, policy=policy, **_run_options(args))
    totals = manifest.totals
    print(
        f"scored {totals['scored']} line(s) into {args.out} ({totals['shards']} shard(s), engine {manifest.engine}); "
        f"{totals['errors']} unreadable line(s) in {Path(args.out) / ERRORS}"
    )
    return 0


def _is_score_output(source: str) -> bool:
    """Whether ``source`` is `batch score` output (a folder with a manifest) or a file of score lines."""
    from guardrail.batch.shards import MANIFEST

    path = Path(source)
    if path.is_dir():
        return (path / MANIFEST).exists()
    if path.suffix.lower() == ".parquet" or not path.is_file():
        return False
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if line.strip():
                try:
                    return "scores" in json.loads(line)
                except (ValueError, TypeError):
                    return False
    return False


def cmd_batch_profile(args: argparse.Namespace) -> int:
    from guardrail.batch import BatchError, batch_score, profile
    from guardrail.batch.profile_report import build_profile_report

    out = Path(args.out)
    sources = list(args.inputs)
    with _as_cli_errors():
        kinds = {_is_score_output(s) for s in sources}
        if kinds == {True, False}:
            raise BatchError("give either score output (to profile) or input rows (to score first), not both")
        if kinds == {False}:  # rows to score first: their scores go to OUT/scores (a rerun resumes)
            keep = [args.by] if args.by else []
            batch_score(sources, out / "scores", keep=keep, **_run_options(args))
            sources = [str(out / "scores")]
        result = profile(sources, args.by, resamples=args.resamples, confidence=args.confidence, seed=args.seed)
        out.mkdir(parents=True, exist_ok=True)
        (out / "profile.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        (out / "profile.html").write_text(build_profile_report(result), encoding="utf-8")
    sizes = ", ".join(f"{g}: {d['n']}" for g, d in result["groups"].items())
    print(f"profiled {result['lines']} line(s) ({sizes}); wrote {out / 'profile.json'} and {out / 'profile.html'}")
    return 0


def cmd_batch_rescore(args: argparse.Namespace) -> int:
    from guardrail.batch import rescore

    policy = load_policy_or_fail(args.policy)
    with _as_cli_errors():
        summary = rescore(args.log, policy, args.out, examples=args.examples, **_run_options(args))
    print(json.dumps(summary, indent=2))
    return 0


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output folder (a rerun into the same folder resumes)")
    parser.add_argument(
        "--workers",
        type=_positive,
        default=max(1, (os.cpu_count() or 1) // 2),
        help="local worker processes, or Ray actors with --ray; each loads the model once (default: half the CPUs)",
    )
    parser.add_argument(
        "--ray",
        metavar="auto|ADDRESS",
        help="run on Ray: 'auto' joins the cluster on this machine (or starts a local Ray instance), ADDRESS "
        "joins that cluster; inputs and --out must be on a file system every node shares. Without it: a local "
        "process pool, no Ray needed",
    )
    parser.add_argument("--batch-size", type=_positive, default=64, help="texts per scorer call (default 64)")
    parser.add_argument(
        "--shard-size", type=_positive, default=1000, help="input lines per output shard, the unit of work (1000)"
    )
    parser.add_argument("--precision", choices=["int8", "fp32"], default="int8", help="the scorer's (default int8)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `guardrail batch` and its subcommands."""
    batch = commands.add_parser(
        "batch", help="score, value-profile and re-score large corpora (a local process pool, or Ray)"
    )
    sub = batch.add_subparsers(dest="batch_command", required=True)

    score = sub.add_parser(
        "score",
        help="score JSONL / Parquet rows into sharded output, resumable",
        description="Score every row into OUT/shard-NNNNN.jsonl (input order; each line as `guardrail score` "
        "writes it, plus source and line), OUT/errors.jsonl (unreadable lines, with file and line) and "
        "OUT/manifest.json. Running it again into the same OUT resumes: finished shards are not scored again.",
    )
    score.add_argument("inputs", nargs="+", metavar="INPUT", help=SCORE_LINES_HELP)
    score.add_argument(
        "--keep",
        action="append",
        default=[],
        metavar="FIELD",
        help="copy this input field into each output "
        "line's 'fields' (e.g. the model that wrote the response, to profile by it); repeatable",
    )
    score.add_argument("--policy", help="also evaluate this policy (preset or file): each line gets a 'decision'")
    _add_run_options(score)
    score.set_defaults(func=cmd_batch_score)

    prof = sub.add_parser(
        "profile",
        help="value profile per group, with bootstrap intervals, as JSON and an HTML report",
        description="Per group and value: the mean score and the shares opposing and supporting, with "
        "bootstrap confidence intervals; writes OUT/profile.json and OUT/profile.html. INPUT is `batch score` "
        "output (a folder) or `guardrail score` output (read without re-scoring), or input rows, scored first "
        "into OUT/scores.",
    )
    prof.add_argument("inputs", nargs="+", metavar="INPUT")
    prof.add_argument("--by", metavar="FIELD", help="group by this field (kept with `batch score --keep FIELD`)")
    prof.add_argument("--resamples", type=_positive, default=1000, help="bootstrap resamples (default 1000)")
    prof.add_argument("--confidence", type=float, default=0.95, help="interval level (default 0.95)")
    prof.add_argument("--seed", type=int, default=0, help="seed of the resampling (default 0)")
    _add_run_options(prof)
    prof.set_defaults(func=cmd_batch_profile)

    re = sub.add_parser(
        "rescore",
        help="re-score an audit log's texts with the current scorer and a policy: which decisions change",
        description="Re-score the texts of every record that holds them (redacted ones are counted, not "
        "scored) and evaluate --policy: prints and writes OUT/rescore.json (changes by action and value), "
        "OUT/changed.jsonl (every changed record) and OUT/scores/ (the batch output).",
    )
    re.add_argument("log", help="audit log: JSONL (rotated segments included), SQLite, or a postgresql:// URL")
    re.add_argument("--policy", required=True, help="preset name or policy file")
    re.add_argument("--examples", type=int, default=5, help="changed records shown in the summary (default 5)")
    _add_run_options(re)
    re.set_defaults(func=cmd_batch_rescore)
