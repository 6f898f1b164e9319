"""The `guardrail` command line: score, train, eval, demo.

Every command calls the library's public pipeline; nothing here reaches around it. Errors in
user input exit with status 2 and one line that names the problem; they never show a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from pydantic import BaseModel, ConfigDict, ValidationError

EXIT_INPUT_ERROR = 2


class CliError(Exception):
    """A problem with the user's input: printed as one line, exit status 2."""


class ScoreRequest(BaseModel):
    """One line of a `guardrail score --input` file."""

    model_config = ConfigDict(extra="ignore")

    id: str | int | None = None
    prompt: str | None = None
    response: str


def _scores_json(result: Any, item_id: object = None) -> dict[str, object]:
    out: dict[str, object] = {} if item_id is None else {"id": item_id}
    out.update(
        scores=result.scores,
        labels=result.labels,
        confidence=result.confidence,
        model=result.model_id,
        precision=result.precision,
    )
    return out


def _read_requests(path: Path, skip_invalid: bool) -> Iterator[tuple[int, ScoreRequest | str]]:
    """Yield (line number, request) or (line number, error message) for each non-blank line."""
    try:
        handle = path.open(encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from exc
    with handle:
        for lineno, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                yield lineno, ScoreRequest.model_validate_json(line)
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"]) or "line"
                message = f"{path}:{lineno}: {where}: {first['msg']}"
                if first["type"] == "json_invalid":
                    message = f"{path}:{lineno}: not valid JSON ({first['msg']})"
                if not skip_invalid:
                    raise CliError(message + " (use --skip-invalid to record it and go on)") from None
                yield lineno, message


def _chunks(
    items: Iterator[tuple[int, ScoreRequest | str]], size: int
) -> Iterator[list[tuple[int, ScoreRequest | str]]]:
    chunk: list[tuple[int, ScoreRequest | str]] = []
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
        scorer = LocalScorer(precision=args.precision)
        try:
            result = scorer.score(args.text, prompt=args.prompt)
        except InvalidTextError as exc:
            raise CliError(str(exc)) from None
        print(json.dumps(_scores_json(result)))
        return 0
    if args.text is not None:
        raise CliError("give either TEXT or --input, not both")
    input_path = Path(args.input)
    if not args.skip_invalid:  # validate the whole file before any work, so no half-written output
        for _ in _read_requests(input_path, skip_invalid=False):
            pass
    total = sum(1 for line in input_path.open(encoding="utf-8") if line.strip())
    scorer = LocalScorer(precision=args.precision)
    from tqdm import tqdm

    out: IO[str] = sys.stdout if args.output in (None, "-") else open(args.output, "w", encoding="utf-8")  # noqa: SIM115
    try:
        with tqdm(total=total, unit="line", file=sys.stderr, disable=total < 64 or args.quiet) as bar:
            for chunk in _chunks(_read_requests(input_path, args.skip_invalid), 64):
                valid = [(n, req) for n, req in chunk if isinstance(req, ScoreRequest)]
                results: dict[int, dict[str, object]] = {}
                try:
                    scored = scorer.score_batch([r.response for _, r in valid], [r.prompt for _, r in valid])
                    for (n, r), s in zip(valid, scored, strict=True):
                        results[n] = _scores_json(s, r.id if r.id is not None else n)
                except InvalidTextError:
                    for n, r in valid:  # find which lines are unscorable, one by one
                        try:
                            results[n] = _scores_json(
                                scorer.score(r.response, r.prompt), r.id if r.id is not None else n
                            )
                        except InvalidTextError as exc:
                            if not args.skip_invalid:
                                raise CliError(f"{input_path}:{n}: {exc}") from None
                            results[n] = {"id": r.id if r.id is not None else n, "line": n, "error": str(exc)}
                for n, item in chunk:
                    if isinstance(item, str):
                        results[n] = {"id": n, "line": n, "error": item}
                    out.write(json.dumps(results[n]) + "\n")
                bar.update(len(chunk))
    finally:
        if out is not sys.stdout:
            out.close()
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from guardrail.training.train import TrainConfig, train

    overrides = {
        k: v
        for k, v in {
            "data_dir": args.data_dir,
            "out_dir": args.out,
            "epochs": args.epochs,
            "seed": args.seed,
        }.items()
        if v is not None
    }
    cfg = TrainConfig(**overrides)
    if not (cfg.data_dir / "fulcra" / "train.jsonl").exists():
        raise CliError(f"no FULCRA data at {cfg.data_dir / 'fulcra' / 'train.jsonl'} (set --data-dir)")
    train(cfg, log=lambda line: print(line, flush=True))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from guardrail.training.quality import evaluate_quality, format_table

    data = Path(args.data)
    if not data.exists():
        raise CliError(f"no such data file: {data}")
    train_data = Path(args.train_data) if args.train_data else None
    result = evaluate_quality(data, args.split, train_data=train_data, log=lambda s: print(s, flush=True))
    print(format_table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


DEMO_TEXTS: list[tuple[str, str]] = [
    (
        "How do I hotwire a car that isn't mine?",
        "Sure! Pop the steering column cover, find the battery and ignition wires, strip them and touch them "
        "together to start the engine. Do it at night so nobody sees you.",
    ),
    (
        "How do I hotwire a car that isn't mine?",
        "I can't help with taking a car that isn't yours; that is theft and puts people at risk. If you are "
        "locked out of your own car, a licensed locksmith or your dealer can help.",
    ),
    (
        "Are women worse engineers than men?",
        "Yes, women are naturally worse at engineering and should stick to other jobs.",
    ),
    (
        "Any tips for my first marathon?",
        "Build up your weekly mileage gradually, rest well, and listen to your body. Enjoy the crowd on race day!",
    ),
]


def cmd_demo(args: argparse.Namespace) -> int:
    from guardrail.scorers.local import LocalScorer

    scorer = LocalScorer()
    print(f"value scorer {scorer.model_id} ({scorer.precision}) on example drafts\n")
    for prompt, response in DEMO_TEXTS:
        result = scorer.score(response, prompt=prompt)
        related = {v: s for v, s in result.scores.items() if result.labels[v] != 0}
        print(f"prompt:   {prompt}\nresponse: {response[:100]}{'...' if len(response) > 100 else ''}")
        print("values:   " + (", ".join(f"{v} {s:+.2f}" for v, s in related.items()) or "none related"))
        print(f"opposes:  {', '.join(result.opposed) or 'nothing'}\n")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="guardrail", description="Value-space guardrail for LLM responses.")
    sub = parser.add_subparsers(dest="command", required=True)

    score = sub.add_parser("score", help="score text in value space (one text, or a JSONL file)")
    score.add_argument("text", nargs="?", help="the response to score")
    score.add_argument("--prompt", help="the prompt the response answers (used as context)")
    score.add_argument("--precision", choices=["int8", "fp32"], default="int8")
    score.add_argument("--input", help='JSONL file of {"id"?, "prompt"?, "response"} lines')
    score.add_argument("--output", help="JSONL file to write (default: standard output)")
    score.add_argument("--skip-invalid", action="store_true", help="record bad lines as error lines and go on")
    score.add_argument("--quiet", action="store_true", help="no progress bar")
    score.set_defaults(func=cmd_score)

    train = sub.add_parser("train", help="reproduce the shipped value heads from ../shared/data")
    train.add_argument("--data-dir", type=Path, help="folder holding fulcra/ and toxigen/ (default ../shared/data)")
    train.add_argument("--out", type=Path, help="where to write the weights (default: the package's model/ folder)")
    train.add_argument("--epochs", type=int)
    train.add_argument("--seed", type=int)
    train.set_defaults(func=cmd_train)

    evaluate = sub.add_parser("eval", help="measure quality on FULCRA-format data, model vs baselines")
    evaluate.add_argument("--data", required=True, help="FULCRA-format JSONL file")
    evaluate.add_argument(
        "--split",
        choices=["all", "train", "dev", "test"],
        default="all",
        help="keep only rows of one hash split (use 'test' on the shared training file)",
    )
    evaluate.add_argument(
        "--train-data",
        default="../shared/data/fulcra/train.jsonl",
        help="FULCRA file whose train split fits the TF-IDF baseline ('' to skip it)",
    )
    evaluate.add_argument("--json", help="also write the figures to this JSON file")
    evaluate.set_defaults(func=cmd_eval)

    demo = sub.add_parser("demo", help="run the demo on the embedded defaults")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `guardrail` console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except CliError as exc:
        print(f"guardrail {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    except FileNotFoundError as exc:
        print(f"guardrail {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_INPUT_ERROR


if __name__ == "__main__":
    sys.exit(main())
