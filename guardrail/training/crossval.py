"""`guardrail cv`: k-fold cross-validation of the training recipe on the train + dev splits.

The dev split holds 17 violations, so a recipe's dev figures (and the thresholds tuned on them)
move by ~0.04 violation F1 per flipped row. Cross-validation scores every train + dev row (1,088
rows, 137 violations) with a model that did not train on it and pools those out-of-fold
predictions: a recipe comparison, or a threshold choice, on eight times as many violations.
The test split is never touched.

Reported per epoch, on the pooled out-of-fold predictions:
- ``nested``: each fold's rows are labelled with thresholds tuned on the *other* folds'
  out-of-fold predictions, so no row helps choose its own threshold (the honest estimate);
- ``tuned``: thresholds tuned on all out-of-fold predictions (the thresholds a final model would
  ship with; its figures are slightly optimistic);
- ``shipped``: the thresholds of the shipped model, for comparison;
- ``violation_average_precision``: how well the top P(oppose) ranks violating rows first, with no
  threshold at all;
- ``best_threshold``: the violation F1 of the best shared oppose threshold, chosen with hindsight
  on all rows: a ceiling on what tuning that threshold could ever give these predictions.

For the last epoch, each fold's model is also exported as ``guardrail train`` ships a model (int8
weight updates, activation ranges) and rebuilt as the scorer builds it, in fp32 and in int8
(``scorer``): the int8 / fp32 parity of the shipped *recipe*, measured on every out-of-fold row
(137 violations) instead of the test split's 37.

A finished run's figures can be recomputed from its saved predictions without training again,
and several runs' predictions averaged into an ensemble (``summarize_saved``,
``guardrail cv --from-predictions RUN.json ...``).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import average_precision_score, precision_recall_curve

from guardrail.model.build import build_classifier
from guardrail.model.inference import predict_proba
from guardrail.model.network import ValueClassifier
from guardrail.model.tokenizer import load_tokenizer
from guardrail.model.weights import WEIGHTS_DIR, Thresholds, load_weights
from guardrail.text import WindowPlan
from guardrail.training.baselines import tfidf_proba
from guardrail.training.data import Example, gold_labels, read_fulcra, read_toxigen, split_of
from guardrail.training.export import exported_tensors
from guardrail.training.loop import fit
from guardrail.training.metrics import quality_metrics, tune_thresholds
from guardrail.training.recipe import TrainConfig


def _bucket(purpose: str, key: str, buckets: int) -> int:
    """A row's bucket in ``range(buckets)``: a hash of its key salted by ``purpose``, so that folds,
    fractions and the train/dev/test split are drawn independently of each other."""
    return int(hashlib.sha256(f"{purpose}|{key}".encode()).hexdigest(), 16) % buckets


def fold_of(key: str, folds: int) -> int:
    """A row's fold: a hash of its key, independent of the train/dev/test split hash."""
    return _bucket("fold", key, folds)


def in_fraction(key: str, fraction: float) -> bool:
    """Whether a row belongs to the first ``fraction`` of the data, by a hash of its key.

    Nested: every row kept at a fraction is kept at any larger one, so a learning curve adds
    rows instead of drawing a new sample at each point.
    """
    return _bucket("fraction", key, 10_000) < round(fraction * 10_000)


def row_id(key: str) -> str:
    """A row's name in the saved predictions: the SHA-256 of its key (the dialogue)."""
    return hashlib.sha256(key.encode()).hexdigest()


def _rounded(metrics: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 4) for k, v in metrics.items()}


def cross_validate(
    cfg: TrainConfig,
    folds: int = 5,
    first_epoch: int = 3,
    out: Path | None = None,
    log: Callable[[str], None] = print,
    train_fraction: float = 1.0,
) -> dict[str, object]:
    """Run ``folds``-fold cross-validation of ``cfg``'s recipe; return (and write to ``out``) the figures.

    Out-of-fold probabilities are kept for every epoch from ``first_epoch`` on; with ``out``
    they are also saved beside it (``.npz``) for later analysis. With ``train_fraction`` < 1 each
    fold's model trains on only that fraction of its FULCRA rows (``in_fraction``) and is scored
    on the same held-out fold as always: a point of the learning curve.
    """
    if not 0.0 < train_fraction <= 1.0:
        raise ValueError(f"train_fraction must be in (0, 1], got {train_fraction}")
    started = time.perf_counter()
    torch.set_num_threads(cfg.threads)
    fulcra, report = read_fulcra(cfg.data_dir / "fulcra" / "train.jsonl")
    rows = [e for e in fulcra if split_of(e.key) != "test"]
    aux: list[Example] = []
    if cfg.use_toxigen:
        aux, _ = read_toxigen(cfg.data_dir / "toxigen" / "statements.jsonl")
    fold = np.array([fold_of(e.key, folds) for e in rows])
    gold = gold_labels(rows)
    log(
        f"{folds}-fold cross-validation on {len(rows)} train + dev rows "
        f"({int((gold == -1).any(1).sum())} with a violation; test split untouched)"
    )

    tokenizer = load_tokenizer()
    plan = WindowPlan(max_length=cfg.max_length, prompt_keep=cfg.prompt_keep)
    epochs = list(range(first_epoch, cfg.epochs + 1))
    oof = {e: torch.full((len(rows), 10, 3), float("nan")) for e in epochs}
    scorer = {p: torch.full((len(rows), 10, 3), float("nan")) for p in PRECISIONS}
    for k in range(folds):
        held = np.flatnonzero(fold == k)
        pairs = [(rows[i].prompt, rows[i].response) for i in held]

        def on_epoch(epoch: int, model: ValueClassifier, loss: float) -> None:
            if epoch in oof:
                probs, _ = predict_proba(model, tokenizer, pairs, plan, batch_size=32)  # noqa: B023 - called in-loop
                oof[epoch][torch.from_numpy(held)] = torch.from_numpy(probs)  # noqa: B023
            log(f"fold {k + 1}/{folds} epoch {epoch} loss {loss:.4f} ({time.perf_counter() - started:.0f}s)")  # noqa: B023

        fit_rows = [rows[i] for i in np.flatnonzero(fold != k) if in_fraction(rows[i].key, train_fraction)]
        log(f"fold {k + 1}/{folds}: training on {len(fit_rows)} FULCRA rows, scoring {len(held)}")
        model, items = fit(cfg, fit_rows, aux, tokenizer, plan, cfg.epochs, on_epoch)
        tensors = exported_tensors(model, items, tokenizer.pad_token_id, cfg.num_layers)
        for precision in PRECISIONS:
            built, got = build_classifier(tensors, cfg.num_layers, cfg.pooling, precision)
            if got != precision:
                raise RuntimeError(f"the scorer could not build a {precision} model here (it gave {got})")
            # As the scorer runs them: int8 one window per pass, fp32 in batches.
            probs, _ = predict_proba(built, tokenizer, pairs, plan, batch_size=1 if precision == "int8" else 32)
            scorer[precision][torch.from_numpy(held)] = torch.from_numpy(probs)

    baseline = tfidf_out_of_fold(rows, fold, train_fraction)
    if out is not None:  # the raw predictions first: the analysis below can be redone from them
        out.parent.mkdir(parents=True, exist_ok=True)
        arrays = {f"epoch{e}": oof[e].numpy() for e in epochs}
        # Rows are named by a hash of their dialogue: the predictions file carries no data text.
        arrays.update({f"scorer_{p}": scorer[p].numpy() for p in PRECISIONS})
        arrays.update(gold=gold, fold=fold, tfidf=baseline, keys=np.array([row_id(e.key) for e in rows]))
        np.savez_compressed(out.with_suffix(".npz"), **arrays)  # type: ignore[arg-type]
        log(f"wrote the out-of-fold predictions to {out.with_suffix('.npz')}")
    recipe = json.loads(cfg.model_dump_json(exclude={"out_dir"}))
    seconds = time.perf_counter() - started
    return summarize(
        oof, gold, fold, recipe, report.summary(), seconds, out, log, baseline, train_fraction, (cfg.epochs, scorer)
    )


def tfidf_out_of_fold(rows: list[Example], fold: np.ndarray, train_fraction: float = 1.0) -> np.ndarray:
    """The TF-IDF + logistic regression baseline's class probabilities (N, 10, 3) for every row,
    from the same folds and the same fraction of their rows."""
    probs = np.zeros((len(rows), 10, 3))
    for k in range(int(fold.max()) + 1):
        held = np.flatnonzero(fold == k)
        fit_rows = [rows[i] for i in np.flatnonzero(fold != k) if in_fraction(rows[i].key, train_fraction)]
        probs[held] = tfidf_proba(fit_rows, [rows[i] for i in held])
    return probs


ENSEMBLE_WEIGHTS = (0.2, 0.35, 0.5)


PRECISIONS = ("fp32", "int8")


def _nested_thresholds(probs: torch.Tensor, gold: np.ndarray, fold: np.ndarray) -> list[Thresholds]:
    """For each fold, thresholds tuned on the other folds' predictions."""
    others = [torch.from_numpy(fold != k) for k in range(int(fold.max()) + 1)]
    return [tune_thresholds(probs[rows], gold[rows.numpy()]) for rows in others]


def _nested(
    probs: torch.Tensor, gold: np.ndarray, fold: np.ndarray, thresholds: list[Thresholds] | None = None
) -> np.ndarray:
    """Labels for every row from thresholds tuned on the other folds' predictions
    (``_nested_thresholds`` of ``probs`` unless given)."""
    thresholds = thresholds or _nested_thresholds(probs, gold, fold)
    pred = np.zeros_like(gold)
    for k, tuned in enumerate(thresholds):
        mine = fold == k
        pred[mine] = tuned.apply(probs[torch.from_numpy(mine)])
    return pred


def _violation_ap(probs: torch.Tensor, gold: np.ndarray) -> float:
    """Threshold-free: how well P(oppose) of the most-opposed value ranks violating rows first."""
    return float(average_precision_score((gold == -1).any(1), probs[..., 0].amax(1).numpy()))


def threshold_ceiling(probs: torch.Tensor, gold: np.ndarray) -> dict[str, float]:
    """The best violation F1 any shared oppose threshold reaches on ``probs``, and that threshold.

    With one oppose threshold for all ten values (as ``tune_thresholds`` chooses), a row is called
    violating when its highest P(oppose) reaches it, so every threshold is a cut of that score.
    Chosen with hindsight on the very rows it is scored on: an upper bound, not an estimate.
    """
    violates = (gold == -1).any(1)
    precision, recall, cuts = precision_recall_curve(violates, probs[..., 0].amax(1).numpy())
    # The curve's last point (recall 0) has no threshold.
    f1 = 2 * precision[:-1] * recall[:-1] / np.maximum(precision[:-1] + recall[:-1], 1e-12)
    best = int(np.argmax(f1))
    return {"violation_f1": round(float(f1[best]), 4), "oppose_threshold": round(float(cuts[best]), 4)}


def ensemble_figures(
    probs: torch.Tensor, baseline: np.ndarray, gold: np.ndarray, fold: np.ndarray
) -> dict[str, object]:
    """Mix the model's and the TF-IDF baseline's out-of-fold probabilities,
    ``(1 - w) * model + w * tfidf``, and score each mix with nested thresholds."""
    figures: dict[str, object] = {}
    for w in ENSEMBLE_WEIGHTS:
        mixed = (1 - w) * probs + w * torch.from_numpy(baseline).float()
        entry = _rounded(quality_metrics(gold, _nested(mixed, gold, fold)))
        entry["violation_average_precision"] = round(_violation_ap(mixed, gold), 4)
        figures[f"tfidf_weight_{w}"] = entry
    return figures


def scorer_figures(scorer: dict[str, torch.Tensor], gold: np.ndarray, fold: np.ndarray) -> dict[str, object]:
    """Figures of the folds' models as the scorer runs them, per precision, and int8 / fp32 parity.

    Both precisions are labelled with the same nested thresholds, tuned on fp32 (as shipped).
    Parity: the mean and largest |int8 - fp32| gap of a score (P(support) - P(oppose)) over all
    rows and values, and the rows whose violation call (opposes any value) differs.
    """
    fp32, int8 = scorer["fp32"], scorer["int8"]
    thresholds = _nested_thresholds(fp32, gold, fold)  # tuned once, applied to both precisions
    labels = {p: _nested(scorer[p], gold, fold, thresholds) for p in PRECISIONS}
    figures: dict[str, dict[str, Any]] = {}
    for precision in PRECISIONS:
        entry: dict[str, Any] = _rounded(quality_metrics(gold, labels[precision]))
        entry["violation_average_precision"] = round(_violation_ap(scorer[precision], gold), 4)
        entry["best_threshold"] = threshold_ceiling(scorer[precision], gold)
        figures[precision] = entry
    gap = ((int8[..., 2] - int8[..., 0]) - (fp32[..., 2] - fp32[..., 0])).abs()
    calls = {p: (labels[p] == -1).any(1) for p in PRECISIONS}
    parity: dict[str, Any] = {
        "mean_abs_score_gap": round(float(gap.mean()), 4),
        "max_abs_score_gap": round(float(gap.max()), 4),
        "violation_calls_differ": int((calls["fp32"] != calls["int8"]).sum()),
    }
    for name in ("violation_f1", "frequent_macro_f1", "presence_micro_f1"):
        parity[f"{name}_int8_minus_fp32"] = round(figures["int8"][name] - figures["fp32"][name], 4)
    return {**figures, "parity": parity}


def summarize(
    oof: dict[int, torch.Tensor],
    gold: np.ndarray,
    fold: np.ndarray,
    recipe: dict[str, object],
    data_summary: str,
    seconds: float,
    out: Path | None,
    log: Callable[[str], None] = print,
    baseline: np.ndarray | None = None,
    train_fraction: float = 1.0,
    scorer: tuple[int, dict[str, torch.Tensor]] | None = None,
) -> dict[str, object]:
    """Metrics of pooled out-of-fold predictions, per epoch (see the module docstring), of
    the ``baseline``'s out-of-fold probabilities (N, 10, 3) when given: alone, and mixed with the
    model's (``ensemble_with_tfidf``), and of ``scorer`` (epoch, predictions per precision of the
    models as the scorer builds them) when given (``scorer_figures``)."""
    folds = int(fold.max()) + 1
    _, shipped_config, shipped_id = load_weights(WEIGHTS_DIR)
    per_epoch: list[dict[str, object]] = []
    for epoch, probs in sorted(oof.items()):
        tuned = tune_thresholds(probs, gold)
        ap = _violation_ap(probs, gold)
        ceiling = threshold_ceiling(probs, gold)
        entry: dict[str, object] = {
            "epoch": epoch,
            "violation_average_precision": round(ap, 4),
            "nested": _rounded(quality_metrics(gold, _nested(probs, gold, fold))),
            "tuned": _rounded(quality_metrics(gold, tuned.apply(probs))),
            "shipped": _rounded(quality_metrics(gold, shipped_config.thresholds.apply(probs))),
            "best_threshold": ceiling,
            "tuned_thresholds": json.loads(tuned.model_dump_json()),
        }
        per_epoch.append(entry)
        log(
            f"epoch {epoch}: violation F1 / frequent macro F1 nested "
            f"{entry['nested']['violation_f1']:.3f} / {entry['nested']['frequent_macro_f1']:.3f}, "  # type: ignore[index]
            f"tuned {entry['tuned']['violation_f1']:.3f} / {entry['tuned']['frequent_macro_f1']:.3f}, "  # type: ignore[index]
            f"shipped thresholds {entry['shipped']['violation_f1']:.3f} / "  # type: ignore[index]
            f"{entry['shipped']['frequent_macro_f1']:.3f}; tuned oppose threshold "  # type: ignore[index]
            f"{tuned.oppose['security']:.2f}; violation average precision {ap:.3f}; best threshold "
            f"{ceiling['oppose_threshold']:.2f} gives violation F1 {ceiling['violation_f1']:.3f} at most"
        )
        if baseline is not None:
            entry["ensemble_with_tfidf"] = mixes = ensemble_figures(probs, baseline, gold, fold)
            for name, figures in mixes.items():
                log(
                    f"  {name}: nested {figures['violation_f1']:.3f} / {figures['frequent_macro_f1']:.3f}, "  # type: ignore[index]
                    f"violation average precision {figures['violation_average_precision']:.3f}"  # type: ignore[index]
                )
    result: dict[str, object] = {
        "folds": folds,
        "rows": len(gold),
        "violations": int((gold == -1).any(1).sum()),
        "train_fraction": train_fraction,
        "recipe": recipe,
        "shipped_model": shipped_id,
        "data": data_summary,
        "per_epoch": per_epoch,
        "seconds": round(seconds, 1),
    }
    if baseline is not None:
        result["tfidf_logreg"] = _rounded(quality_metrics(gold, baseline.argmax(2) - 1))
        log(
            f"TF-IDF + logistic regression, same folds: violation F1 {result['tfidf_logreg']['violation_f1']:.3f} / "  # type: ignore[index]
            f"frequent macro F1 {result['tfidf_logreg']['frequent_macro_f1']:.3f}"  # type: ignore[index]
        )
    if scorer is not None:
        epoch, predictions = scorer
        result["scorer"] = {"epoch": epoch, **scorer_figures(predictions, gold, fold)}
        parity = result["scorer"]["parity"]  # type: ignore[index]
        for precision in PRECISIONS:
            figures = result["scorer"][precision]  # type: ignore[index]
            log(
                f"as the scorer runs it, {precision}, epoch {epoch}: nested {figures['violation_f1']:.3f} / "
                f"{figures['frequent_macro_f1']:.3f}, violation average precision "
                f"{figures['violation_average_precision']:.3f}"
            )
        log(
            f"int8 - fp32: violation F1 {parity['violation_f1_int8_minus_fp32']:+.3f}, frequent macro F1 "
            f"{parity['frequent_macro_f1_int8_minus_fp32']:+.3f}; score gap mean {parity['mean_abs_score_gap']:.4f} "
            f"max {parity['max_abs_score_gap']:.3f}; violation calls differ on {parity['violation_calls_differ']} rows"
        )
    if out is not None:
        out.write_text(json.dumps(result, indent=2) + "\n")
        log(f"wrote {out}")
    return result


def read_run(run: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """A finished run's figures (its JSON) and its saved out-of-fold predictions (the ``.npz`` beside it)."""
    predictions = run.with_suffix(".npz")
    if not predictions.exists():
        raise FileNotFoundError(f"{run} has no saved predictions beside it ({predictions.name})")
    try:
        figures = json.loads(run.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{run} is not JSON: {exc}") from None
    with np.load(predictions) as npz:
        saved = {name: npz[name] for name in npz.files}
    lacking = [key for key in ("recipe", "data", "seconds") if key not in figures]
    lacking += [f"{predictions.name}:{name}" for name in ("gold", "fold", "tfidf", "keys") if name not in saved]
    if lacking:
        raise ValueError(f"{run} is not a finished cross-validation run: it lacks {', '.join(lacking)}")
    return figures, saved


def summarize_saved(
    runs: Sequence[Path], out: Path | None = None, log: Callable[[str], None] = print
) -> dict[str, object]:
    """Recompute finished runs' figures from their predictions, without training again.

    Each of ``runs`` is the JSON a ``cross_validate`` run wrote; its out-of-fold predictions
    (``.npz``) lie beside it. One run: its figures are rewritten to ``out`` (default: the run's own
    file) by today's ``summarize``, so an analysis added later reaches old runs too; the recipe,
    data summary and training time are kept as recorded, and every old figure that changed is
    logged. Several runs: their probabilities are averaged, epoch by epoch, which scores the
    ensemble of their models; they must have scored the same rows in the same folds, and the
    figures go to ``out``, which is then required.
    """
    if not runs:
        raise ValueError("no run to summarize")
    if len(runs) > 1 and out is None:
        raise ValueError("averaging several runs needs a file for the figures (--out)")
    read = [read_run(run) for run in runs]
    first, saved = read[0]
    # Runs from before --train-fraction record none: they trained on every row.
    fractions = {figures.get("train_fraction", 1.0) for figures, _ in read}
    for run, (_, other) in zip(runs[1:], read[1:], strict=True):
        if not (np.array_equal(other["keys"], saved["keys"]) and np.array_equal(other["fold"], saved["fold"])):
            raise ValueError(f"{run} scored other rows or folds than {runs[0]}: their predictions cannot be averaged")
    if len(fractions) > 1:
        raise ValueError(f"the runs trained on different fractions of the rows ({sorted(fractions)})")
    epochs = set.intersection(*({name for name in arrays if name.startswith("epoch")} for _, arrays in read))
    oof = {
        int(name[len("epoch") :]): torch.from_numpy(np.mean([arrays[name] for _, arrays in read], axis=0))
        for name in sorted(epochs)
    }
    # Runs from before the scorer-path predictions have none; an ensemble's needs every run's.
    has_scorer = all(f"scorer_{p}" in arrays for _, arrays in read for p in PRECISIONS)
    scorer = (
        (
            int(first["recipe"]["epochs"]),  # cross_validate exports each fold's last epoch
            {p: torch.from_numpy(np.mean([arrays[f"scorer_{p}"] for _, arrays in read], axis=0)) for p in PRECISIONS},
        )
        if has_scorer
        else None
    )
    recipe = (
        first["recipe"]
        if len(runs) == 1
        else {"mean_of": {str(run): f["recipe"] for run, (f, _) in zip(runs, read, strict=True)}}
    )
    result = summarize(
        oof,
        saved["gold"],
        saved["fold"],
        recipe,
        first["data"],
        sum(figures["seconds"] for figures, _ in read),
        None,
        log,
        saved["tfidf"],
        fractions.pop(),
        scorer,
    )
    if len(runs) == 1:
        for path, old, new in _changed(first, result):
            log(f"changed: {path} {old} -> {new}")
    target = out or runs[0]
    target.write_text(json.dumps(result, indent=2) + "\n")
    log(f"wrote {target}")
    return result


def _changed(old: object, new: object, path: str = "") -> list[tuple[str, object, object]]:
    """Where ``new`` differs from ``old`` at a key or index that ``old`` has (new keys are not changes)."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [c for key in old for c in _changed(old[key], new.get(key), f"{path}.{key}" if path else key)]
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [c for i, (a, b) in enumerate(zip(old, new, strict=True)) for c in _changed(a, b, f"{path}[{i}]")]
    return [] if old == new else [(path, old, new)]
