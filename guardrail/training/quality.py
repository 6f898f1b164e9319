"""`guardrail eval`: the model (int8 and fp32, same run) against two baselines on the same rows."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np

from guardrail.training.baselines import pyvalues_dictionary, tfidf_logreg
from guardrail.training.data import Example, read_fulcra, split_of
from guardrail.training.metrics import FREQUENT_VALUES, expected_calibration_error, quality_metrics
from guardrail.values import VALUE_NAMES

SplitChoice = Literal["all", "train", "dev", "test"]
COLUMNS = (
    "violation_f1",
    *(f"macro_f1_{v}" for v in FREQUENT_VALUES),
    "frequent_macro_f1",
    "presence_micro_f1",
)


def _gold(examples: list[Example]) -> np.ndarray:
    return np.array([[e.label(i) or 0 for i in range(len(VALUE_NAMES))] for e in examples])


def evaluate_quality(
    data: Path,
    split: SplitChoice = "all",
    train_data: Path | None = None,
    weights_dir: Path | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, object]:
    """Score ``data`` (FULCRA format) with every system and return {system: metrics} plus row counts.

    The model rows also carry ``ece`` (expected calibration error of the confidence of each value's
    label, over all ten values; ``ece_frequent`` over the four frequent ones): the confidence the
    policies' ``uncertain`` condition reads.

    ``split`` keeps only rows of one hash split (use "test" on the shared training file: those
    rows were never trained on nor used for tuning). The TF-IDF baseline is fitted on the
    train split of ``train_data``.
    """
    from guardrail.scorers.local import LocalScorer

    examples, report = read_fulcra(data)
    log(report.summary())
    if split != "all":
        examples = [e for e in examples if split_of(e.key) == split]
    if not examples:
        raise ValueError(f"no rows of {data} fall in split '{split}'")
    gold = _gold(examples)
    log(f"evaluating on {len(examples)} rows ({int((gold == -1).any(1).sum())} with a violation), split '{split}'")

    results: dict[str, dict[str, float]] = {}
    pairs_r = [e.response for e in examples]
    pairs_p = [e.prompt for e in examples]
    for precision in ("int8", "fp32"):
        scorer = LocalScorer(precision=precision, weights_dir=weights_dir, cache_size=0)
        scored = scorer.score_batch(pairs_r, pairs_p)
        pred = np.array([[s.labels[v] for v in VALUE_NAMES] for s in scored])
        confidence = np.array([[s.confidence[v] for v in VALUE_NAMES] for s in scored])
        frequent = [VALUE_NAMES.index(v) for v in FREQUENT_VALUES]
        results[f"model {scorer.precision} ({scorer.engine})"] = {
            **quality_metrics(gold, pred),
            "ece": expected_calibration_error(confidence, pred == gold),
            "ece_frequent": expected_calibration_error(confidence[:, frequent], pred[:, frequent] == gold[:, frequent]),
        }
        model_id = scorer.model_id
    if train_data is not None:
        train_examples, _ = read_fulcra(train_data)
        keys = {e.key for e in examples}
        fit_on = [e for e in train_examples if split_of(e.key) == "train" and e.key not in keys]
        results["tfidf+logreg"] = quality_metrics(gold, tfidf_logreg(fit_on, examples))
    results["pyvalues dictionary"] = quality_metrics(gold, pyvalues_dictionary(examples))
    return {"rows": len(examples), "split": split, "model_id": model_id, "metrics": results}


def format_table(result: dict[str, object]) -> str:
    """A plain-text table, one row per system."""
    metrics: dict[str, dict[str, float]] = result["metrics"]  # type: ignore[assignment]
    short = {"violation_f1": "viol F1", "frequent_macro_f1": "freq mF1", "presence_micro_f1": "pres F1"}
    names = [short.get(c, c.removeprefix("macro_f1_")[:6] + " mF1") for c in COLUMNS]
    lines = [f"{'system':<22}" + "".join(f"{n:>12}" for n in names) + f"{'ECE':>8}"]
    for system, m in metrics.items():
        ece = f"{m['ece']:>8.3f}" if "ece" in m else f"{'-':>8}"
        lines.append(f"{system:<22}" + "".join(f"{m[c]:>12.3f}" for c in COLUMNS) + ece)
    lines.append("ECE: expected calibration error of each value's confidence (10 bins, all ten values)")
    return "\n".join(lines)
