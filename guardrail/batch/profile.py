"""Value profiles of scored corpora, grouped by a field, with bootstrap confidence intervals.

``profile`` reads score lines (a `batch score` output folder, or files of `guardrail score`
output) without scoring anything. Per group and value it reports the mean score and the shares of
responses opposing (label -1) and supporting (label +1) the value, each with a percentile
bootstrap interval. The mean's interval resamples rows (in chunks, so memory stays bounded); a
share's bootstrap distribution is exactly Binomial(n, share) / n, which is drawn directly. Error
lines (``{"error": ...}``) are counted, not profiled.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from guardrail.batch.inputs import BatchError
from guardrail.batch.shards import MANIFEST, output_files, read_json_lines
from guardrail.values import VALUE_NAMES

NO_GROUP = "all"
MISSING = "(none)"


def score_files(sources: Sequence[str | Path]) -> list[Path]:
    """The score files behind ``sources``: a `batch score` folder's shards, or files as given."""
    files: list[Path] = []
    for source in sources:
        path = Path(source)
        if path.is_dir():
            if not (path / MANIFEST).exists():
                raise BatchError(f"{path} holds no {MANIFEST}: give a `guardrail batch score` output folder")
            files.extend(output_files(path))
        elif path.is_file():
            files.append(path)
        else:
            raise BatchError(f"{path}: no such file or folder")
    return files


def group_of(line: dict[str, Any], by: str | None) -> str:
    """The group of a score line: its kept input field ``by`` (``fields``), else its own key ``by``."""
    if by is None:
        return NO_GROUP
    fields = line.get("fields")
    value = fields.get(by) if isinstance(fields, dict) and by in fields else line.get(by)
    return MISSING if value is None else str(value)


def _vectors(path: Path, lineno: int, line: dict[str, Any]) -> tuple[list[float], list[int]]:
    scores, labels = line.get("scores"), line.get("labels")
    if not isinstance(scores, dict) or not isinstance(labels, dict):
        raise BatchError(f"{path}:{lineno}: no scores (is it `guardrail score` or `batch score` output?)")
    try:
        values = [float(scores[v]) for v in VALUE_NAMES]
        marks = [int(labels[v]) for v in VALUE_NAMES]
    except (KeyError, TypeError, ValueError) as exc:
        raise BatchError(f"{path}:{lineno}: scores or labels lack a value or hold a non-number ({exc})") from None
    if not all(math.isfinite(x) for x in values):
        raise BatchError(f"{path}:{lineno}: a score is not a finite number")
    return values, marks


def read_groups(files: Sequence[Path], by: str | None) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], int]:
    """Per group, the scores (n x 10) and labels (n x 10) of its lines, and the number of error lines."""
    scores: dict[str, array[float]] = {}
    labels: dict[str, array[int]] = {}
    errors = 0
    for path in files:
        for lineno, line in read_json_lines(path):
            if "error" in line and "scores" not in line:
                errors += 1
                continue
            values, marks = _vectors(path, lineno, line)
            group = group_of(line, by)
            scores.setdefault(group, array("d")).extend(values)
            labels.setdefault(group, array("b")).extend(marks)
    k = len(VALUE_NAMES)
    return {
        g: (np.frombuffer(scores[g], dtype=np.float64).reshape(-1, k), np.frombuffer(labels[g], np.int8).reshape(-1, k))
        for g in sorted(scores)
    }, errors


def bootstrap_means(values: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Column means of ``resamples`` row resamples of ``values`` (n x k): a (resamples x k) array."""
    n = len(values)
    out = np.empty((resamples, values.shape[1]))
    step = max(1, 1_000_000 // n)  # resamples per chunk: at most ~1M rows gathered at once
    for start in range(0, resamples, step):
        count = min(step, resamples - start)
        rows = rng.integers(0, n, size=(count, n))
        out[start : start + count] = values[rows].mean(axis=1)
    return out


def _interval(samples: np.ndarray, confidence: float) -> np.ndarray:
    """Percentile interval per column: a (2 x k) array of (low, high)."""
    tail = (1.0 - confidence) / 2.0
    interval: np.ndarray = np.quantile(samples, [tail, 1.0 - tail], axis=0)
    return interval


def _rounded(x: float) -> float:
    return round(float(x), 6)


def group_profile(
    scores: np.ndarray, labels: np.ndarray, resamples: int, confidence: float, rng: np.random.Generator
) -> dict[str, Any]:
    """The profile of one group: its size and, per value, mean / opposing / supporting with intervals."""
    n = len(scores)
    mean = scores.mean(axis=0)
    mean_ci = _interval(bootstrap_means(scores, resamples, rng), confidence)
    out: dict[str, Any] = {"n": n, "values": {}}
    for label, name in ((-1, "opposing"), (1, "supporting")):
        share = (labels == label).mean(axis=0)
        draws = rng.binomial(n, share, size=(resamples, len(share))) / n
        interval = _interval(draws, confidence)
        for i, value in enumerate(VALUE_NAMES):
            entry = out["values"].setdefault(
                value, {"mean": _rounded(mean[i]), "mean_ci": [_rounded(mean_ci[0, i]), _rounded(mean_ci[1, i])]}
            )
            entry[name] = _rounded(share[i])
            entry[f"{name}_ci"] = [_rounded(interval[0, i]), _rounded(interval[1, i])]
    return out


def profile(
    sources: Sequence[str | Path],
    by: str | None = None,
    *,
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """The value profile of the score lines in ``sources``, grouped by the field ``by`` (or one group).

    ``by`` is looked up in each line's ``fields`` (what `batch score --keep` carried over), else
    among the line's own keys (e.g. ``model``: the scorer's model id). A fixed ``seed`` makes the
    intervals reproducible.
    """
    if resamples < 1:
        raise BatchError(f"resamples must be 1 or more, got {resamples}")
    if not 0.0 < confidence < 1.0:
        raise BatchError(f"confidence must be between 0 and 1, got {confidence}")
    files = score_files(sources)
    groups, errors = read_groups(files, by)
    if not groups:
        raise BatchError("no scored lines to profile in " + ", ".join(str(s) for s in sources))
    rng = np.random.default_rng(seed)
    return {
        "by": by,
        "confidence": confidence,
        "resamples": resamples,
        "seed": seed,
        "sources": [str(s) for s in sources],
        "lines": sum(len(s) for s, _ in groups.values()),
        "error_lines": errors,
        "groups": {g: group_profile(s, lab, resamples, confidence, rng) for g, (s, lab) in groups.items()},
    }


def iter_values(result: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(group, value, entry) for every group and value of a profile, in order."""
    for group, data in result["groups"].items():
        for value in VALUE_NAMES:
            yield group, value, data["values"][value]
