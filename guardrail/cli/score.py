"""`guardrail score`: value scores of one text, or of every line of a JSONL file.

The file is validated before any work (or its bad lines written as error lines with
``--skip-invalid``), then scored in chunks of 64 lines with one batch call each, in input order.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path

from guardrail.cli.io import (
    INPUT_HELP,
    SKIP_INVALID_HELP,
    CliError,
    check_target,
    input_lines,
    open_output,
    read_requests,
)
from guardrail.score_lines import ErrorLine, ScoreRequest, score_line
from guardrail.text import normalize_text


def _chunks(
    items: Iterator[tuple[int, ScoreRequest | ErrorLine]], size: int
) -> Iterator[list[tuple[int, ScoreRequest | ErrorLine]]]:
    chunk: list[tuple[int, ScoreRequest | ErrorLine]] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def cmd_score(args: argparse.Namespace) -> int:
    from guardrail.scorers.local import LocalScorer
    from guardrail.text import InvalidTextError

    if args.input is None:
        if args.text is None:
            raise CliError("give a TEXT to score, or --input FILE.jsonl")
        if args.output is not None:
            raise CliError("--output goes with --input; the score of one TEXT is printed")
        try:
            normalize_text(args.text)  # refused before the model loads
        except InvalidTextError as exc:
            raise CliError(str(exc)) from None
        scorer = LocalScorer(precision=args.precision)
        try:
            result = scorer.score(args.text, prompt=args.prompt)
        except InvalidTextError as exc:
            raise CliError(str(exc)) from None
        print(json.dumps(score_line(result)))
        return 0
    if args.text is not None:
        raise CliError("give either TEXT or --input, not both")
    input_path = Path(args.input)
    check_target("--output", args.output, ("--input", args.input))
    if not args.skip_invalid:  # validate the whole file before any work, so no half-written output
        for _ in read_requests(input_path, skip_invalid=False):
            pass
    total = sum(1 for _ in input_lines(input_path))
    out = open_output(args.output)
    try:
        scorer = LocalScorer(precision=args.precision)
        from tqdm import tqdm

        with tqdm(total=total, unit="line", file=sys.stderr, disable=total < 64 or args.quiet) as bar:
            for chunk in _chunks(read_requests(input_path, args.skip_invalid), 64):
                valid = [(n, req) for n, req in chunk if isinstance(req, ScoreRequest)]
                scored = scorer.score_batch([r.response for _, r in valid], [r.prompt for _, r in valid])
                results = {
                    n: score_line(s, r.id if r.id is not None else n) for (n, r), s in zip(valid, scored, strict=True)
                }
                for n, item in chunk:
                    if not isinstance(item, ScoreRequest):
                        results[n] = item
                    out.write(json.dumps(results[n]) + "\n")
                bar.update(len(chunk))
    finally:
        if out is not sys.stdout:
            out.close()
    return 0


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `guardrail score`."""
    score = commands.add_parser("score", help="score text in value space (one text, or a JSONL file)")
    score.add_argument("text", nargs="?", help="the response to score")
    score.add_argument("--prompt", help="the prompt the response answers (used as context)")
    score.add_argument(
        "--precision",
        choices=["int8", "fp32"],
        default="int8",
        help="int8 (default): the quantized model, as the guard uses it; fp32: the full-precision weights",
    )
    score.add_argument("--input", help=INPUT_HELP)
    score.add_argument(
        "--output",
        help='JSONL file of {"id", "scores", "labels", "confidence", "model", ...} lines, in input order '
        "(default: standard output; never the --input file)",
    )
    score.add_argument("--skip-invalid", action="store_true", help=SKIP_INVALID_HELP)
    score.add_argument("--quiet", action="store_true", help="no progress bar")
    score.set_defaults(func=cmd_score)
