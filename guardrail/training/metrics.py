"""The quality metrics the project reports, and threshold tuning on a validation split.

- violation F1: binary F1 of "the response opposes at least one value" (any label -1);
- frequent-value macro F1: for security, conformity, benevolence and universalism, the 3-class
  (-1/0/+1) macro F1 of each, averaged over the four;
- presence micro F1: micro F1 of "value is related" (label != 0) over all ten values.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from sklearn.metrics import f1_score

from guardrail.model.weights import Thresholds
from guardrail.values import VALUE_NAMES

FREQUENT_VALUES = ("security", "conformity", "benevolence", "universalism")


def quality_metrics(gold: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """Metrics for label matrices (N, 10) with entries in {-1, 0, 1}."""
    out: dict[str, float] = {}
    out["violation_f1"] = float(f1_score((gold == -1).any(1), (pred == -1).any(1), zero_division=0))
    per_value = []
    for name in FREQUENT_VALUES:
        i = VALUE_NAMES.index(name)
        f1 = float(f1_score(gold[:, i], pred[:, i], labels=[-1, 0, 1], average="macro", zero_division=0))
        out[f"macro_f1_{name}"] = f1
        per_value.append(f1)
    out["frequent_macro_f1"] = float(np.mean(per_value))
    out["presence_micro_f1"] = float(f1_score((gold != 0).ravel(), (pred != 0).ravel(), zero_division=0))
    return out


def _smoothed_argmax(grid: list[float], scores: list[float]) -> float:
    """The grid point whose neighbourhood (itself and one step either side) scores best on average.

    Validation splits here hold a few dozen positives; a lone lucky threshold is noise, a
    plateau is signal.
    """
    arr = np.array(scores, dtype=float)
    padded = np.concatenate([arr[:1], arr, arr[-1:]])
    smooth = (padded[:-2] + padded[1:-1] + padded[2:]) / 3
    return grid[int(np.argmax(smooth))]


GRID = [round(x, 2) for x in np.arange(0.3, 0.71, 0.05)]


def tune_thresholds(probs: ArrayLike, gold: np.ndarray) -> Thresholds:
    """Choose decision thresholds on a validation split, conservatively.

    Thresholds stay within [0.3, 0.7] and are picked by the smoothed objective. Support
    thresholds are tuned per value for support-detection F1 (values with fewer than ten validation
    positives keep 0.5). Opposition is rare, too rare to tune ten thresholds without fitting noise,
    so one shared oppose threshold is tuned for violation F1 plus frequent-value macro F1.
    """
    p = np.asarray(probs)
    support: dict[str, float] = {}
    for i, name in enumerate(VALUE_NAMES):
        positives = gold[:, i] == 1
        if positives.sum() < 10:
            support[name] = 0.5
            continue
        support[name] = _smoothed_argmax(GRID, [f1_score(positives, p[:, i, 2] >= t, zero_division=0) for t in GRID])
    objectives = []
    for t in GRID:
        m = quality_metrics(gold, Thresholds(oppose=dict.fromkeys(VALUE_NAMES, t), support=support).apply(probs))
        objectives.append(m["violation_f1"] + m["frequent_macro_f1"])
    return Thresholds(oppose=dict.fromkeys(VALUE_NAMES, _smoothed_argmax(GRID, objectives)), support=support)
