"""`guardrail train`, `cv` and `eval`: reproduce the value heads, cross-validate the recipe, measure quality.

``eval --data FILE`` measures on FULCRA-format rows; ``eval --external`` on the dev rows of the
external sources (``guardrail.training.external_eval``).

The recipe is ``guardrail.training.train.TrainConfig``: ``train`` and ``cv`` take its common
settings as named options and any other one as ``--set KEY=VALUE``. The training code (and its
optional dependencies) is imported only when one of these commands runs.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from guardrail.cli.io import CliError

DEFAULT_TRAIN_DATA = "../shared/data/fulcra/train.jsonl"


def _parse_settings(settings: Sequence[str] | None) -> dict[str, object]:
    """``KEY=VALUE`` recipe settings from ``--set``; a VALUE that parses as JSON is taken as JSON."""
    from guardrail.training.train import TrainConfig

    parsed: dict[str, object] = {}
    for item in settings or []:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise CliError(f"--set takes KEY=VALUE, got {item!r}")
        if key not in TrainConfig.model_fields:
            raise CliError(f"--set {key}: no such recipe setting (known: {', '.join(TrainConfig.model_fields)})")
        try:
            parsed[key] = json.loads(raw)
        except json.JSONDecodeError:
            parsed[key] = raw
    return parsed


def _recipe(settings: Sequence[str] | None = None, **overrides: object) -> Any:
    """The training recipe with the options the user gave (None = not given), its data checked.

    ``settings`` are ``--set KEY=VALUE`` strings for any ``TrainConfig`` field; the named options
    (``--epochs``, ``--seed`` ...) win over them.
    """
    from guardrail.training.train import TrainConfig

    values = _parse_settings(settings)
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        cfg = TrainConfig(**values)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"])
        raise CliError(f"--set {field}: {error['msg']} (got {error.get('input')!r})") from None
    if not (cfg.data_dir / "fulcra" / "train.jsonl").exists():
        raise CliError(f"no FULCRA data at {cfg.data_dir / 'fulcra' / 'train.jsonl'} (set --data-dir)")
    return cfg


def cmd_train(args: argparse.Namespace) -> int:
    from guardrail.training.train import train

    cfg = _recipe(
        args.settings,
        data_dir=args.data_dir,
        out_dir=args.out,
        epochs=args.epochs,
        seed=args.seed,
        final_fit=args.final_fit or None,
    )
    if cfg.external_per_class > 0 and not (cfg.data_dir / "external").is_dir():
        raise CliError(
            f"no external data at {cfg.data_dir / 'external'} (set --data-dir, or --set external_per_class=0 "
            "to train on FULCRA alone)"
        )
    train(cfg, log=lambda line: print(line, flush=True))
    return 0


def cmd_cv(args: argparse.Namespace) -> int:
    from guardrail.training.crossval import cross_validate, summarize_saved

    # Options left out are None here, so that cross_validate's defaults are the only ones.
    run_options = {"folds": args.folds, "train_fraction": args.train_fraction}
    if args.from_predictions is not None:
        given = [args.settings, args.seed, args.data_dir, *run_options.values()]
        if any(option is not None for option in given):
            raise CliError("--from-predictions re-reads a finished run: its recipe cannot be changed")
        try:
            summarize_saved(args.from_predictions, out=args.out, log=lambda line: print(line, flush=True))
        except (FileNotFoundError, ValueError) as exc:
            raise CliError(str(exc)) from None
        return 0
    cfg = _recipe(args.settings, data_dir=args.data_dir, seed=args.seed)
    if args.folds is not None and args.folds < 2:
        raise CliError(f"--folds must be at least 2, got {args.folds}")
    if args.train_fraction is not None and not 0.0 < args.train_fraction <= 1.0:
        raise CliError(f"--train-fraction must be in (0, 1], got {args.train_fraction}")
    cross_validate(
        cfg,
        out=args.out or Path("benchmarks/results/crossval.json"),
        log=lambda line: print(line, flush=True),
        **{name: value for name, value in run_options.items() if value is not None},
    )
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    if args.external:
        return _eval_external(args)
    fulcra_only = {
        "--data-dir": args.data_dir,
        "--precision": args.precision,
        "--out": args.out,
        "--limit": args.limit,
        "--policy": args.policy,
    }
    given = [option for option, value in fulcra_only.items() if value is not None]
    if given:
        raise CliError(f"{', '.join(given)} belong(s) to --external")
    if args.data is None:
        raise CliError("give --data FILE (FULCRA format), or --external for the external sources")
    from guardrail.training.quality import evaluate_quality, format_table

    data = Path(args.data)
    if not data.exists():
        raise CliError(f"no such data file: {data}")
    train_data_arg = DEFAULT_TRAIN_DATA if args.train_data is None else args.train_data
    train_data = Path(train_data_arg) if train_data_arg else None
    result = evaluate_quality(
        data, args.split or "all", train_data=train_data, weights_dir=args.weights, log=lambda s: print(s, flush=True)
    )
    print(format_table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


def _eval_external(args: argparse.Namespace) -> int:
    """`guardrail eval --external`: the shipped scorer and the TF-IDF baseline on the external dev rows."""
    given = [
        option
        for option, value in {
            "--data": args.data,
            "--split": args.split,
            "--train-data": args.train_data,
            "--json": args.json,
        }.items()
        if value is not None
    ]
    if given:
        raise CliError(f"{', '.join(given)} belong(s) to the FULCRA evaluation, not --external (see --help)")
    if args.limit is not None and args.limit < 2:
        raise CliError(f"--limit must be at least 2, got {args.limit}")
    if args.out is not None and not args.out.parent.is_dir():
        raise CliError(f"--out {args.out}: no such folder {args.out.parent}")
    from guardrail.training.external import ExternalDataError
    from guardrail.training.external_eval import evaluate_external
    from guardrail.training.external_table import format_external_table

    data_dir = args.data_dir or Path("../shared/data")
    precisions: list[Literal["int8", "fp32"]] = ["int8", "fp32"]
    if args.precision in ("int8", "fp32"):
        precisions = [args.precision]
    try:
        result = evaluate_external(
            data_dir,
            precisions,
            limit=args.limit,
            policy=args.policy or "default",
            weights_dir=args.weights,
            log=lambda s: print(s, flush=True),
        )
    except (FileNotFoundError, ExternalDataError) as exc:
        raise CliError(f"{exc} (set --data-dir)" if isinstance(exc, FileNotFoundError) else str(exc)) from None
    print(format_external_table(result))
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


def _add_recipe_settings(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--set",
        dest="settings",
        action="append",
        metavar="KEY=VALUE",
        help="any other setting of the recipe (TrainConfig in guardrail/training/recipe.py), "
        "e.g. --set touche_epochs=2; repeatable",
    )


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `guardrail train`, `cv` and `eval`."""
    train = commands.add_parser("train", help="reproduce the shipped value heads from ../shared/data")
    train.add_argument("--data-dir", type=Path, help="folder holding fulcra/ and toxigen/ (default ../shared/data)")
    train.add_argument("--out", type=Path, help="where to write the weights (default: the package's model/ folder)")
    train.add_argument("--epochs", type=int)
    train.add_argument("--seed", type=int)
    train.add_argument(
        "--final-fit", action="store_true", help="after choosing epochs and thresholds on dev, retrain on train + dev"
    )
    _add_recipe_settings(train)
    train.set_defaults(func=cmd_train)

    cv = commands.add_parser(
        "cv", help="k-fold cross-validation of the training recipe on train + dev, fp32 and int8 (~40-80 min)"
    )
    cv.add_argument("--data-dir", type=Path, help="folder holding fulcra/ and toxigen/ (default ../shared/data)")
    cv.add_argument("--folds", type=int, help="number of folds (default 5)")
    cv.add_argument("--seed", type=int)
    cv.add_argument(
        "--out",
        type=Path,
        help="where to write the figures (JSON; the predictions go beside it as .npz; default "
        "benchmarks/results/crossval.json, or the --from-predictions file)",
    )
    cv.add_argument(
        "--from-predictions",
        type=Path,
        nargs="+",
        metavar="RUN.json",
        help="recompute a finished run's figures from its saved predictions (RUN.npz beside it), no training; "
        "several runs: score the average of their predictions (an ensemble; needs --out)",
    )
    cv.add_argument(
        "--train-fraction",
        type=float,
        help="train each fold on this fraction of its rows (a point of the learning curve; default 1)",
    )
    _add_recipe_settings(cv)
    cv.set_defaults(func=cmd_cv)

    evaluate = commands.add_parser(
        "eval",
        help="measure quality on FULCRA-format data (--data), or on the external sources' dev rows (--external), "
        "model vs baselines",
    )
    evaluate.add_argument("--data", help="FULCRA-format JSONL file (required unless --external)")
    evaluate.add_argument(
        "--split",
        choices=["all", "train", "dev", "test"],
        help="keep only rows of one hash split (default all; use 'test' on the shared training file)",
    )
    evaluate.add_argument(
        "--train-data",
        help="FULCRA file whose train split fits the TF-IDF baseline (default ../shared/data/fulcra/train.jsonl; "
        "'' to skip it)",
    )
    evaluate.add_argument("--json", help="also write the figures to this JSON file")
    evaluate.add_argument("--weights", type=Path, help="weights folder to evaluate (default: the shipped model)")
    external = evaluate.add_argument_group(
        "external sources",
        "--external: per source of DATA_DIR/external, on its dev rows (split by prompt, see "
        "guardrail/training/external.py): violation AUC, and under the default policy the share of harmful "
        "responses blocked or rewritten and of benign ones allowed, int8 and fp32, beside a TF-IDF + "
        "logistic-regression baseline; and the value-polarity pair figure",
    )
    external.add_argument("--external", action="store_true", help="evaluate on the external sources' dev rows")
    external.add_argument("--data-dir", type=Path, help="folder holding external/ and fulcra/ (default ../shared/data)")
    external.add_argument("--precision", choices=["int8", "fp32", "both"], help="which model(s) to run (default both)")
    external.add_argument("--out", type=Path, help="also write the figures to this JSON file")
    external.add_argument(
        "--policy", help="the policy (preset name or YAML file) that decides each row (default: default)"
    )
    external.add_argument(
        "--limit",
        type=int,
        help="at most N dev rows per source (and 10 N training rows for the baseline): a quick check",
    )
    evaluate.set_defaults(func=cmd_eval)
