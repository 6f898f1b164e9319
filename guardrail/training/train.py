"""`guardrail train`: reproduce the shipped value heads from ../shared/data on a 2-core CPU.

The recipe is ``recipe.TrainConfig``, the rows ``data.py``, the losses ``losses.py``, the loop
``loop.fit`` and what ships ``export.py``; this module runs them in one of two ways. Decision
thresholds are either part of the recipe (chosen by cross-validation, ``crossval.py``) or tuned on
the dev split together with the epoch. The test split is never touched here.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import numpy as np
import torch

from guardrail.model.inference import predict_proba
from guardrail.model.network import ValueClassifier
from guardrail.model.tokenizer import ENCODER_PACKAGE, load_tokenizer
from guardrail.model.weights import ModelConfig, Thresholds, save_weights
from guardrail.text import WindowPlan
from guardrail.training.data import Example, Item, gold_labels, read_fulcra, read_toxigen, split_of
from guardrail.training.drafts import helpful_examples, risky_examples, terse_examples
from guardrail.training.export import check_shipped, exported_tensors, trained_state
from guardrail.training.external_train import ExternalTraining, external_training_rows
from guardrail.training.loop import fit
from guardrail.training.metrics import policy_rates, quality_metrics, tune_policy_thresholds, tune_thresholds
from guardrail.training.recipe import TrainConfig

__all__ = ["TrainConfig", "train"]


@dataclass
class Checkpoint:
    """The best epoch so far: its trainable weights, tuned thresholds and validation metrics."""

    epoch: int
    score: float
    thresholds: Thresholds
    metrics: dict[str, float]
    state: dict[str, torch.Tensor]


Log = Callable[[str], None]


@dataclass
class Run:
    """What both ways of training share: recipe, data, tokenizer and window plan, and the log."""

    cfg: TrainConfig
    train_set: list[Example]
    dev_set: list[Example]
    aux: list[Example]
    tokenizer: Any
    plan: WindowPlan
    history: list[dict[str, object]]
    started: float
    log: Log
    external: ExternalTraining = field(default_factory=lambda: ExternalTraining([], []))
    drafts: list[Example] = field(default_factory=list)


def _tune_on_slice(run: Run, model: ValueClassifier, base: Thresholds) -> tuple[Thresholds, dict[str, float]]:
    """Re-tune the default policy values' oppose thresholds on the external tuning slice."""
    tune = run.external.tune
    probs, _ = predict_proba(model, run.tokenizer, [(e.prompt, e.response) for e in tune], run.plan, batch_size=32)
    p_oppose = np.asarray(probs)[..., 0]
    harmful = np.array([e.harmful for e in tune])
    sources = np.array([e.source for e in tune])
    oppose = {**base.oppose, **tune_policy_thresholds(p_oppose, harmful, sources, run.cfg.min_allowed)}
    return Thresholds(oppose=oppose, support=base.support), policy_rates(p_oppose, harmful, sources, oppose)


def _fit_tuned_on_dev(run: Run) -> tuple[ValueClassifier, list[Item], Checkpoint]:
    """Train on the train split; pick the epoch and tune thresholds on dev (then, with
    ``cfg.final_fit``, retrain on train + dev for that many epochs)."""
    cfg, tokenizer, plan, log, started = run.cfg, run.tokenizer, run.plan, run.log, run.started
    train_set, dev_set, aux = run.train_set, run.dev_set, run.aux
    dev_pairs = [(e.prompt, e.response) for e in dev_set]
    dev_gold = gold_labels(dev_set)
    best: Checkpoint | None = None

    def on_dev(epoch: int, model: ValueClassifier, loss: float) -> None:
        nonlocal best
        probs, _ = predict_proba(model, tokenizer, dev_pairs, plan, batch_size=32)
        thresholds = tune_thresholds(probs, dev_gold)
        rates: dict[str, float] = {}
        if run.external.tune:
            thresholds, rates = _tune_on_slice(run, model, thresholds)
        metrics = {**quality_metrics(dev_gold, thresholds.apply(probs)), **rates}
        score = metrics["violation_f1"] + metrics["frequent_macro_f1"] + sum(rates.values())
        run.history.append({"epoch": epoch, "loss": loss, **{k: round(v, 4) for k, v in metrics.items()}})
        tuned = f" tuning slice caught {rates['caught']:.3f} allowed {rates['allowed']:.3f}" if rates else ""
        log(
            f"epoch {epoch}/{cfg.epochs} loss {loss:.4f} dev violation F1 {metrics['violation_f1']:.3f} "
            f"frequent macro F1 {metrics['frequent_macro_f1']:.3f} presence F1 {metrics['presence_micro_f1']:.3f}"
            f"{tuned} ({time.perf_counter() - started:.0f}s)"
        )
        if best is None or score > best.score:
            best = Checkpoint(epoch, score, thresholds, metrics, trained_state(model))

    model, items = fit(cfg, train_set, aux, tokenizer, plan, cfg.epochs, on_dev, run.external.train, run.drafts)
    assert best is not None, "at least one epoch ran"
    chosen: Checkpoint = best
    model.load_state_dict(chosen.state, strict=False)
    if cfg.final_fit:
        rows = len(train_set) + len(dev_set)
        log(f"stage 2: retraining on train + dev ({rows} FULCRA rows) for {chosen.epoch} epochs")

        def on_final(epoch: int, _model: ValueClassifier, loss: float) -> None:
            log(f"final fit epoch {epoch}/{chosen.epoch} loss {loss:.4f} ({time.perf_counter() - started:.0f}s)")

        model, items = fit(
            cfg, train_set + dev_set, aux, tokenizer, plan, chosen.epoch, on_final, run.external.train, run.drafts
        )
    return model, items, chosen


def _fit_with_fixed_thresholds(run: Run, thresholds: Thresholds) -> tuple[ValueClassifier, list[Item], Checkpoint]:
    """Train for ``cfg.epochs`` with thresholds chosen beforehand (by ``guardrail cv``).

    With ``cfg.final_fit`` the model trains on train + dev and no split is left to report on (the
    cross-validation is the estimate); otherwise dev figures are logged after each epoch.
    """
    cfg, tokenizer, plan, log, started = run.cfg, run.tokenizer, run.plan, run.log, run.started
    train_set, dev_set, aux = run.train_set, run.dev_set, run.aux
    rows = train_set + dev_set if cfg.final_fit else train_set
    dev_pairs = [(e.prompt, e.response) for e in dev_set]
    dev_gold = gold_labels(dev_set)
    last: dict[str, float] = {}
    log(f"training on {len(rows)} FULCRA rows for {cfg.epochs} epochs with the recipe's thresholds")

    def on_epoch(epoch: int, model: ValueClassifier, loss: float) -> None:
        nonlocal last
        entry: dict[str, object] = {"epoch": epoch, "loss": loss}
        line = f"epoch {epoch}/{cfg.epochs} loss {loss:.4f}"
        if not cfg.final_fit:
            probs, _ = predict_proba(model, tokenizer, dev_pairs, plan, batch_size=32)
            last = quality_metrics(dev_gold, thresholds.apply(probs))
            entry.update({k: round(v, 4) for k, v in last.items()})
            line += f" dev violation F1 {last['violation_f1']:.3f} frequent macro F1 {last['frequent_macro_f1']:.3f}"
        run.history.append(entry)
        log(f"{line} ({time.perf_counter() - started:.0f}s)")

    model, items = fit(cfg, rows, aux, tokenizer, plan, cfg.epochs, on_epoch, run.external.train, run.drafts)
    return model, items, Checkpoint(cfg.epochs, 0.0, thresholds, last, {})


def train(cfg: TrainConfig, log: Callable[[str], None] = print) -> dict[str, object]:
    """Train, write the weights to ``cfg.out_dir``, reload and check them; return a summary.

    With ``cfg.thresholds`` fixed (chosen by ``guardrail cv``), the model trains for ``cfg.epochs``
    on the train split, or on train + dev with ``cfg.final_fit``. Without them, stage 1 trains on
    the train split and picks the epoch and the thresholds on dev; ``cfg.final_fit`` then retrains
    on train + dev for that many epochs. The test split is never touched.
    """
    started = time.perf_counter()
    torch.set_num_threads(cfg.threads)

    fulcra, report = read_fulcra(cfg.data_dir / "fulcra" / "train.jsonl")
    log(report.summary())
    train_set = [e for e in fulcra if split_of(e.key) == "train"]
    dev_set = [e for e in fulcra if split_of(e.key) == "dev"]
    aux: list[Example] = []
    if cfg.use_toxigen:
        aux, aux_report = read_toxigen(cfg.data_dir / "toxigen" / "statements.jsonl")
        log(aux_report.summary())
    log(f"train {len(train_set)} FULCRA + {len(aux)} ToxiGen rows; dev {len(dev_set)} rows (test split untouched)")
    external = ExternalTraining([], [])
    if cfg.external_per_class > 0:
        external = external_training_rows(
            cfg.data_dir,
            cfg.external_per_class,
            cfg.balance_external,
            cfg.skip_external,
            cfg.violation_only_external,
        )
        log(f"external: {len(external.train)} train rows; tuning slice {len(external.tune)} rows (dev rows untouched)")
    drafts: list[Example] = []
    if cfg.external_per_class and cfg.drafts_weight:
        drafts = helpful_examples() + risky_examples(cfg.data_dir, visible_only=cfg.drafts_visible_harm_only)
        if cfg.terse_drafts:
            drafts += terse_examples(cfg.data_dir, visible_only=cfg.drafts_visible_harm_only)
    if drafts:
        harmful = sum(e.harmful == 1 for e in drafts)
        log(f"SmolLM2 drafts: {len(drafts)} rows ({harmful} complying with a risky prompt)")

    tokenizer = load_tokenizer()
    plan = WindowPlan(max_length=cfg.max_length, prompt_keep=cfg.prompt_keep)
    dev_pairs = [(e.prompt, e.response) for e in dev_set]
    dev_gold = gold_labels(dev_set)
    history: list[dict[str, object]] = []
    run = Run(cfg, train_set, dev_set, aux, tokenizer, plan, history, started, log, external, drafts)
    if cfg.thresholds is None:
        model, items, chosen = _fit_tuned_on_dev(run)
    else:
        model, items, chosen = _fit_with_fixed_thresholds(run, cfg.thresholds)
    tensors = exported_tensors(model, items, tokenizer.pad_token_id, cfg.num_layers)
    config = ModelConfig(
        encoder_package=ENCODER_PACKAGE,
        encoder_version=metadata.version(ENCODER_PACKAGE),
        num_layers=cfg.num_layers,
        pooling=cfg.pooling,
        window_max_length=plan.max_length,
        window_prompt_tokens=plan.prompt_tokens,
        window_overlap=plan.overlap,
        window_prompt_keep=plan.prompt_keep,
        thresholds=chosen.thresholds,
        training={
            "recipe": json.loads(cfg.model_dump_json(exclude={"out_dir"})),
            "best_epoch": chosen.epoch,
            "dev_metrics": {k: round(v, 4) for k, v in chosen.metrics.items()},
            "history": history,
            "data": report.summary(),
            "seconds": round(time.perf_counter() - started, 1),
            "torch": torch.__version__,
        },
    )
    model_id = save_weights(cfg.out_dir, tensors, config)
    # Reload through the real scorer and compare with the in-memory model on the dev rows (which
    # stage 2 trained on: this checks the files, not generalisation).
    probs, _ = predict_proba(model, tokenizer, dev_pairs, plan, batch_size=32)
    expected = quality_metrics(dev_gold, chosen.thresholds.apply(probs))
    check_shipped(cfg.out_dir, dev_pairs, dev_gold, expected, log)
    log(f"best epoch {chosen.epoch}; wrote {cfg.out_dir} as {model_id} in {time.perf_counter() - started:.0f}s")
    return {"model_id": model_id, "best_epoch": chosen.epoch, "dev_metrics": chosen.metrics}
