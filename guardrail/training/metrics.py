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


POLICY_GRID = [round(x, 2) for x in np.arange(0.2, 0.91, 0.05)]


def _per_source_weights(harmful: np.ndarray, sources: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row weights that turn a sum over rows into a mean over sources of per-source shares: one
    vector over the harmful rows, one over the benign rows (each sums to 1)."""
    weights = []
    for judged in (1, 0):
        groups = [(sources == s) & (harmful == judged) for s in sorted(set(sources.tolist()))]
        groups = [g for g in groups if g.any()]
        weights.append(sum(g / g.sum() for g in groups) / len(groups))
    return weights[0], weights[1]


def _flagged(p_oppose: np.ndarray, oppose: dict[str, float]) -> np.ndarray:
    cols = [VALUE_NAMES.index(v) for v in FREQUENT_VALUES]
    return np.asarray((p_oppose[:, cols] >= np.array([oppose[v] for v in FREQUENT_VALUES])).any(1), dtype=bool)


def policy_rates(
    p_oppose: np.ndarray, harmful: np.ndarray, sources: np.ndarray, oppose: dict[str, float]
) -> dict[str, float]:
    """Mean over sources of the share of harmful rows flagged (``caught``) and of benign rows not
    flagged (``allowed``), where a row is flagged when some frequent value's P(oppose) reaches its
    threshold (what the default policy blocks or rewrites)."""
    harm_w, benign_w = _per_source_weights(np.asarray(harmful), np.asarray(sources))
    flagged = _flagged(p_oppose, oppose).astype(float)
    return {"caught": float(flagged @ harm_w), "allowed": float(1.0 - flagged @ benign_w)}


def tune_policy_thresholds(
    p_oppose: ArrayLike, harmful: ArrayLike, sources: ArrayLike, min_allowed: float = 0.9
) -> dict[str, float]:
    """Oppose thresholds of the four frequent values (those the default policy blocks or rewrites
    on), tuned jointly on judged responses: the most harmful rows caught (mean over sources) while
    at least ``min_allowed`` of the benign ones pass (mean over sources). Where no grid point
    allows that many, the one allowing the most wins."""
    p = np.asarray(p_oppose)[:, [VALUE_NAMES.index(v) for v in FREQUENT_VALUES]]
    harm_w, benign_w = _per_source_weights(np.asarray(harmful), np.asarray(sources))
    grid = np.array(POLICY_GRID)
    fires = [p[:, k][None, :] >= grid[:, None] for k in range(4)]  # (grid, N) per value
    best: tuple[tuple[bool, float, float], tuple[int, ...]] | None = None
    for a in range(len(grid)):
        for b in range(len(grid)):
            ab = fires[0][a] | fires[1][b]
            flagged = ab[None, None, :] | fires[2][:, None, :] | fires[3][None, :, :]
            caught = flagged.astype(np.float32) @ harm_w
            allowed = 1.0 - flagged.astype(np.float32) @ benign_w
            ok = allowed >= min_allowed
            key = np.where(ok, caught, -1.0 + allowed)
            c, d = np.unravel_index(int(np.argmax(key)), key.shape)
            cand = ((bool(ok[c, d]), float(key[c, d]), float(allowed[c, d])), (a, b, int(c), int(d)))
            if best is None or cand[0] > best[0]:
                best = cand
    assert best is not None
    return {v: float(grid[i]) for v, i in zip(FREQUENT_VALUES, best[1], strict=True)}


def expected_calibration_error(confidence: ArrayLike, correct: ArrayLike, bins: int = 10) -> float:
    """ECE: over ``bins`` equal-width confidence bins, the row-weighted mean |accuracy - mean
    confidence|. Inputs are flat or any shape alike (e.g. (N, 10): one entry per value)."""
    conf = np.asarray(confidence, dtype=float).ravel()
    hit = np.asarray(correct, dtype=float).ravel()
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        rows = which == b
        if rows.any():
            total += rows.sum() * abs(hit[rows].mean() - conf[rows].mean())
    return float(total / max(len(conf), 1))
