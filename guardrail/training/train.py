"""`guardrail train`: reproduce the shipped value heads from ../shared/data on a 2-core CPU.

Recipe: the packaged all-MiniLM-L6-v2 encoder cut to its first ``num_layers`` blocks, all of
those blocks fine-tuned (the token embeddings stay frozen, so they need not ship), one linear
head giving ten 3-way distributions from the mean-pooled encoding. LoRA adapters were tried
first and lost to TF-IDF on the held-out split; fine-tuning the whole blocks did not.

Loss: class-weighted negative log-likelihood of the classes each target admits (see
``data.py``), so exact FULCRA labels and weak ToxiGen labels share one formula. Decision
thresholds are either part of the recipe (chosen by cross-validation, ``crossval.py``) or tuned on
the dev split together with the epoch. The test split is never touched here.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel

from guardrail.model.inference import predict_proba
from guardrail.model.network import ValueClassifier, aggregate_windows, load_encoder, pad_batch, quantize_delta
from guardrail.model.quantize import calibrate
from guardrail.model.tokenizer import ENCODER_PACKAGE, load_tokenizer
from guardrail.model.weights import CALIBRATION_PREFIX, WEIGHTS_DIR, ModelConfig, Pooling, Thresholds, save_weights
from guardrail.text import WindowPlan, make_windows
from guardrail.training.data import Example, read_fulcra, read_touche, read_toxigen, refusal_counterfactuals, split_of
from guardrail.training.metrics import quality_metrics, tune_thresholds
from guardrail.values import VALUE_NAMES


class TrainConfig(BaseModel):
    """Hyper-parameters of `guardrail train` (defaults reproduce the shipped weights)."""

    data_dir: Path = Path("../shared/data")
    out_dir: Path = WEIGHTS_DIR
    seed: int = 13
    num_layers: int = 4
    epochs: int = 6
    batch_size: int = 16
    lr_encoder: float = 8e-5
    lr_head: float = 2e-3
    weight_decay: float = 0.01
    max_length: int = 256
    use_toxigen: bool = True
    toxigen_weight: float = 0.5
    threads: int = 2
    final_fit: bool = False
    """Ship a model trained on train + dev. With tuned thresholds, stage 1 first picks the epoch
    and thresholds on dev; with fixed ``thresholds`` it trains on train + dev straight away."""
    thresholds: Thresholds | None = None
    """Fixed decision thresholds (chosen by ``guardrail cv``), or None to tune them on dev."""
    ema_decay: float = 0.0
    """Evaluate and ship an exponential moving average of the weights (decay per step); 0 = off."""
    all_windows: bool = False
    """Train on every window of a long response, aggregated as at inference (the strongest
    opposition of any window wins), instead of its first window only."""
    item_weight: float = 0.0
    """Weight of an auxiliary loss on FULCRA's fine-grained value items ("be honest: -1"): a second
    head, used in training only, predicts oppose / unrelated / support for each item seen at least
    ``item_min_count`` times in the training rows. 0 turns it off; nothing of it ships."""
    item_min_count: int = 20
    touche_epochs: int = 0
    """Epochs of intermediate training on Touché23 value *presence* (7,289 arguments; an invoked
    value admits oppose or support) before FULCRA; 0 = off."""
    pooling: Pooling = "all"
    """How the heads read the tokens: the mean of every token of a window ("all"), of the response's
    tokens only ("response"; the prompt still reaches them through attention), or one learned
    attention per value ("attention"). See ``weights.Pooling``."""
    prompt_dropout: float = 0.0
    """Probability, per FULCRA row and epoch, of training on the response without its prompt: a
    regularizer against reading the prompt's topic instead of the response's stance. 0 = off."""
    label_smoothing: float = 0.0
    """Share of each value's loss spread evenly over the three classes (the labels are noisy); 0 = off."""
    refusal_weight: float = 0.0
    """Sample weight of synthetic counterfactual rows: the prompt of each training row that opposes a
    value, answered by a stock refusal and labelled "opposes nothing" (``data.refusal_counterfactuals``).
    0 = off."""
    violation_weight: float = 0.0
    """Weight of an extra loss on "opposes any value": binary cross-entropy of the noisy-OR of the
    ten P(oppose) against whether the row opposes a value (rows whose oppose targets are all
    known). 0 turns it off."""


@dataclass
class Checkpoint:
    """The best epoch so far: its trainable weights, tuned thresholds and validation metrics."""

    epoch: int
    score: float
    thresholds: Thresholds
    metrics: dict[str, float]
    state: dict[str, torch.Tensor]


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def class_weights(examples: list[Example]) -> torch.Tensor:
    """(10, 3) weights: rarer classes of a value weigh more (square-root balancing, capped at 8)."""
    counts = torch.ones(len(VALUE_NAMES), 3)
    for ex in examples:
        for i in range(len(VALUE_NAMES)):
            label = ex.label(i)
            if label is not None:
                counts[i, label + 1] += 1
    total = counts.sum(1, keepdim=True)
    return (total / (3 * counts)).sqrt().clamp(max=8.0)


def gold_labels(examples: list[Example]) -> np.ndarray:
    return np.array([[ex.label(i) or 0 for i in range(len(VALUE_NAMES))] for ex in examples])


HEAD_PREFIXES = ("head.", "value_queries")
"""What the classifier trains beside the encoder: the heads and (attention pooling) the value queries."""


def trained_state(model: ValueClassifier) -> dict[str, torch.Tensor]:
    """A copy of what training changes: the transformer blocks, the heads and any value queries."""
    prefixes = ("encoder.encoder.layer.", *HEAD_PREFIXES)
    return {k: v.detach().clone() for k, v in model.state_dict().items() if k.startswith(prefixes)}


def shippable_tensors(state: dict[str, torch.Tensor], num_layers: int) -> dict[str, torch.Tensor]:
    """What ships: int8 updates of the fine-tuned matrices, whole vectors, the head and any value queries."""
    base = dict(load_encoder(num_layers).named_parameters())
    tensors: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith(HEAD_PREFIXES):
            tensors[key] = value
            continue
        name = key.removeprefix("encoder.")  # ValueClassifier.encoder -> BertModel parameter names
        if value.dim() == 2:
            q, scale = quantize_delta(value - base[name].detach())
            tensors[f"delta.{name}.q"], tensors[f"delta.{name}.scale"] = q, scale
        else:
            tensors[f"param.{name}"] = value
    return tensors


def exported_tensors(
    model: ValueClassifier, items: list[Item], pad_id: int, num_layers: int
) -> dict[str, torch.Tensor]:
    """Everything that ships for ``model``: ``shippable_tensors`` plus the activation ranges of its
    encoder's linear layers over the first windows of its training ``items``, which int8 needs
    (quantize.py). Windows pass one at a time, unpadded, as int8 inference sees them."""
    tensors = shippable_tensors(trained_state(model), num_layers)
    calib_batches = (pad_batch([item[0][0]], pad_id) for item in items)
    for name, ranges in calibrate(model, calib_batches).items():
        tensors[f"{CALIBRATION_PREFIX}{name}"] = ranges
    return tensors


def check_shipped(
    out_dir: Path,
    pairs: list[tuple[str | None, str]],
    gold: np.ndarray,
    expected: dict[str, float],
    log: Callable[[str], None],
) -> None:
    """Reload what was written, through the real scorer, and make sure it reproduces the best epoch."""
    from guardrail.scorers.local import LocalScorer

    metrics = {}
    for precision in ("fp32", "int8"):
        scorer = LocalScorer(precision=precision, weights_dir=out_dir, cache_size=0)
        results = scorer.score_batch([r for _, r in pairs], [p for p, _ in pairs])
        metrics[precision] = quality_metrics(gold, np.array([[s.labels[v] for v in VALUE_NAMES] for s in results]))
    got, int8 = metrics["fp32"], metrics["int8"]
    log(
        f"reloaded weights: dev violation F1 {got['violation_f1']:.3f} (trained {expected['violation_f1']:.3f}), "
        f"frequent macro F1 {got['frequent_macro_f1']:.3f} (trained {expected['frequent_macro_f1']:.3f}); "
        f"int8: {int8['violation_f1']:.3f} / {int8['frequent_macro_f1']:.3f}"
    )
    if abs(got["frequent_macro_f1"] - expected["frequent_macro_f1"]) > 0.03:
        raise RuntimeError("the written weights do not reproduce the trained model; refusing to ship them")


def violation_loss(log_probs: torch.Tensor, masks: torch.Tensor, sample_w: torch.Tensor) -> torch.Tensor:
    """BCE of P(opposes any value) = 1 - prod(1 - P_i(oppose)) against the gold "violates".

    A row violates when some value admits only "oppose"; it does not when no value admits
    "oppose". Rows in between (weak labels that leave opposition open) are left out.
    """
    only_oppose = masks[..., 0] & ~masks[..., 1] & ~masks[..., 2]
    violates = only_oppose.any(-1)
    known = violates | ~masks[..., 0].any(-1)
    # log P(no value opposed) = sum_i log(1 - P_i(oppose)), computed stably from log-probabilities.
    log_clean = torch.log1p(-log_probs[..., 0].exp().clamp(max=1 - 1e-6)).sum(-1)
    log_violate = torch.log1p(-log_clean.exp().clamp(max=1 - 1e-6))
    nll = -torch.where(violates, log_violate, log_clean)
    w = sample_w * known.float()
    return (w * nll).sum() / w.sum().clamp(min=1.0)


def admitted_log_likelihood(log_probs: torch.Tensor, masks: torch.Tensor, smoothing: float = 0.0) -> torch.Tensor:
    """Per row and value (B, 10): the log-probability of the classes the label admits (one for an
    exact label, two for a weak one such as Touché's "present").

    With ``smoothing`` > 0 that share of it is replaced by the mean log-probability of all three
    classes: a noisy label is not trusted all the way to probability 1.
    """
    admitted = torch.logsumexp(log_probs.masked_fill(~masks, -1e4), dim=-1)
    if smoothing > 0:
        admitted = (1 - smoothing) * admitted + smoothing * log_probs.mean(-1)
    return admitted


Item = tuple[list[dict[str, list[int]]], Example, float]  # windows trained on, example, sample weight


def row_log_probs(logits: torch.Tensor, counts: list[int]) -> torch.Tensor:
    """Per-row log class probabilities (B, 10, 3) from the logits of the rows' windows.

    A row with one window gets its log-softmax; a row with several gets the log of the
    windows' probabilities combined as inference combines them (``aggregate_windows``).
    """
    if all(c == 1 for c in counts):
        return torch.log_softmax(logits, dim=-1)
    rows = []
    for part in torch.split(logits, counts):
        if len(part) == 1:
            rows.append(torch.log_softmax(part[0], dim=-1))
        else:
            rows.append(aggregate_windows(torch.softmax(part, dim=-1)).clamp(min=1e-7).log())
    return torch.stack(rows)


@dataclass
class ItemTask:
    """The auxiliary item target (``TrainConfig.item_weight``): its head, item names and class weights."""

    names: list[str]
    head: torch.nn.Linear
    weights: torch.Tensor  # (items, 3)
    weight: float

    def targets(self, examples: list[Example]) -> torch.Tensor:
        """(B, items) class index (0 oppose, 1 unrelated, 2 support); -100 where a row has no item labels."""
        out = torch.full((len(examples), len(self.names)), -100, dtype=torch.long)
        for r, ex in enumerate(examples):
            if ex.source != "fulcra":
                continue
            out[r] = 1
            for name, label in ex.items:
                if name in self.names:
                    out[r, self.names.index(name)] = label + 1
        return out

    def loss(self, pooled: torch.Tensor, dropout: torch.nn.Module, examples: list[Example]) -> torch.Tensor:
        logits = self.head(dropout(pooled)).view(len(examples), len(self.names), 3)
        target = self.targets(examples)
        known = target >= 0
        nll = -torch.log_softmax(logits, -1).gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        w = self.weights.gather(1, target.clamp(min=0).T).T * known.float()  # (B, items)
        return (w * nll).sum() / w.sum().clamp(min=1.0)


def item_task(cfg: TrainConfig, rows: list[Example], width: int) -> ItemTask | None:
    if cfg.item_weight <= 0:
        return None
    if cfg.all_windows:
        raise ValueError("item_weight needs one window per row (all_windows=False)")
    if cfg.pooling == "attention":
        raise ValueError("item_weight needs one pooled encoding per row (pooling 'all' or 'response')")
    counts: dict[str, int] = {}
    for ex in rows:
        for name, _ in ex.items:
            counts[name] = counts.get(name, 0) + 1
    names = sorted(n for n, c in counts.items() if c >= cfg.item_min_count)
    class_counts = torch.ones(len(names), 3)
    for ex in rows:
        if ex.source == "fulcra":
            class_counts[:, 1] += 1
            for name, label in ex.items:
                if name in names:
                    class_counts[names.index(name), 1] -= 1
                    class_counts[names.index(name), label + 1] += 1
    weights = (class_counts.sum(1, keepdim=True) / (3 * class_counts)).sqrt().clamp(max=8.0)
    return ItemTask(names, torch.nn.Linear(width, 3 * len(names)), weights, cfg.item_weight)


def fit(
    cfg: TrainConfig,
    rows: list[Example],
    aux: list[Example],
    tokenizer: Any,
    plan: WindowPlan,
    epochs: int,
    after_epoch: Callable[[int, ValueClassifier, float], None],
) -> tuple[ValueClassifier, list[Item]]:
    """Fine-tune a fresh model on FULCRA ``rows`` plus weak ``aux`` rows for ``epochs`` epochs.

    The learning-rate schedule always spans ``cfg.epochs``, so stopping after fewer epochs gives
    exactly the model an early-stopping run had at that epoch. Returns the model (in eval mode)
    and the training items.
    """
    set_seed(cfg.seed)
    encoder = load_encoder(cfg.num_layers)
    for name, param in encoder.named_parameters():
        param.requires_grad = name.startswith("encoder.layer.")
    model = ValueClassifier(encoder, pooling=cfg.pooling)

    # By default training sees the first window of each response; inference aggregates over all
    # windows. With ``all_windows`` training aggregates the same way (multiple-instance learning:
    # the label describes the whole response, and a later window may hold what earned it).
    keep = slice(None) if cfg.all_windows else slice(1)
    items: list[Item] = [(make_windows(tokenizer, e.response, e.prompt, plan)[keep], e, 1.0) for e in rows]
    bare = (
        {j: make_windows(tokenizer, e.response, None, plan)[keep] for j, e in enumerate(rows) if e.prompt}
        if cfg.prompt_dropout > 0
        else {}
    )
    items += [(make_windows(tokenizer, e.response, None, plan)[keep], e, cfg.toxigen_weight) for e in aux]
    if cfg.refusal_weight > 0:
        items += [
            (make_windows(tokenizer, e.response, e.prompt, plan)[keep], e, cfg.refusal_weight)
            for e in refusal_counterfactuals(rows)
        ]
    weights = class_weights(rows)

    if cfg.touche_epochs > 0:
        model.load_state_dict(presence_pretrained(cfg, tokenizer, plan), strict=False)
        set_seed(cfg.seed + 1)  # the same FULCRA stage whether the presence stage ran or came from the cache
    task = item_task(cfg, rows, model.head.in_features)
    extra = list(task.head.parameters()) if task else []
    optimizer, scheduler = _optimizer(cfg, model, math.ceil(len(items) / cfg.batch_size) * cfg.epochs, extra)
    rng = random.Random(cfg.seed)
    trainable = [p for p in model.parameters() if p.requires_grad]
    average = [p.detach().clone() for p in trainable] if cfg.ema_decay > 0 else []
    for epoch in range(1, epochs + 1):
        epoch_loss = _train_epoch(
            cfg, model, items, weights, optimizer, scheduler, rng, tokenizer.pad_token_id, average, task, bare
        )
        model.eval()
        live = [p.detach().clone() for p in trainable] if average else []
        _load(trainable, average)  # evaluate (and, after the last epoch, ship) the averaged weights
        after_epoch(epoch, model, epoch_loss)
        if epoch < epochs:
            _load(trainable, live)
    return model, items


def _optimizer(
    cfg: TrainConfig, model: ValueClassifier, total_steps: int, extra_heads: list[torch.nn.Parameter] | None = None
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """AdamW over the trainable blocks and the head(s); linear warm-up (6%) then linear decay to 0."""
    blocks = [p for p in model.encoder.parameters() if p.requires_grad]
    groups: list[dict[str, Any]] = [
        {"params": blocks, "lr": cfg.lr_encoder},
        {"params": [p for name, p in model.named_parameters() if not name.startswith("encoder.")], "lr": cfg.lr_head},
    ]
    if extra_heads:
        groups.append({"params": extra_heads, "lr": cfg.lr_head})
    optimizer = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    warmup = max(1, int(0.06 * total_steps))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (total_steps - s) / max(1, total_steps - warmup)))
    )
    return optimizer, scheduler


def _train_epoch(
    cfg: TrainConfig,
    model: ValueClassifier,
    items: list[Item],
    weights: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    rng: random.Random,
    pad_id: int,
    average: list[torch.Tensor],
    task: ItemTask | None = None,
    bare: dict[int, list[dict[str, list[int]]]] | None = None,
) -> float:
    """One pass over ``items``; returns the mean loss. ``average`` (if any) is the EMA of the weights;
    ``bare`` holds the prompt-free windows of items that ``cfg.prompt_dropout`` may swap in."""
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    # Length-bucketed shuffling: sort by length, cut into batches, shuffle the batches.
    order = sorted(range(len(items)), key=lambda j: _tokens(items[j]) + rng.random() * 8)
    batches = [order[i : i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
    rng.shuffle(batches)
    epoch_loss = 0.0
    for idx in batches:
        seen = [bare[j] if bare and j in bare and rng.random() < cfg.prompt_dropout else items[j][0] for j in idx]
        batch = pad_batch([w for windows in seen for w in windows], pad_id)
        masks = torch.tensor([items[j][1].targets for j in idx], dtype=torch.bool)  # (B, 10, 3)
        sample_w = torch.tensor([items[j][2] for j in idx])
        if task is None:
            log_probs = row_log_probs(model(**batch), [len(windows) for windows in seen])
        else:
            pooled = model.pool(**batch)
            log_probs = torch.log_softmax(model.classify(pooled), dim=-1)
        admitted = admitted_log_likelihood(log_probs, masks, cfg.label_smoothing)  # (B, 10)
        exact = masks.sum(-1) == 1
        w = torch.where(exact, (weights.unsqueeze(0) * masks.float()).sum(-1), torch.ones_like(admitted))
        w = w * (masks.sum(-1) < 3).float() * sample_w.unsqueeze(1)
        loss = -(w * admitted).sum() / w.sum().clamp(min=1.0)
        if cfg.violation_weight > 0:
            loss = loss + cfg.violation_weight * violation_loss(log_probs, masks, sample_w)
        if task is not None:
            loss = loss + task.weight * task.loss(pooled, model.dropout, [items[j][1] for j in idx])
        optimizer.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        if average:
            with torch.no_grad():
                for avg, param in zip(average, trainable, strict=True):
                    avg.lerp_(param, 1.0 - cfg.ema_decay)
        epoch_loss += float(loss.detach()) * len(idx)
    return epoch_loss / len(items)


_PRESENCE_CACHE: dict[str, dict[str, torch.Tensor]] = {}


def presence_pretrained(cfg: TrainConfig, tokenizer: Any, plan: WindowPlan) -> dict[str, torch.Tensor]:
    """Trainable weights after ``cfg.touche_epochs`` epochs on Touché23 value presence (intermediate task).

    The stage does not depend on FULCRA, so cross-validation trains it once and every fold starts
    from the same weights (cached per process, keyed by what the stage depends on).
    """
    key = json.dumps(
        {
            k: str(v)
            for k, v in cfg.model_dump(
                include={
                    "seed",
                    "num_layers",
                    "pooling",
                    "touche_epochs",
                    "max_length",
                    "lr_encoder",
                    "lr_head",
                    "weight_decay",
                    "batch_size",
                    "data_dir",
                }
            ).items()
        },
        sort_keys=True,
    )
    if key not in _PRESENCE_CACHE:
        set_seed(cfg.seed)
        encoder = load_encoder(cfg.num_layers)
        for name, param in encoder.named_parameters():
            param.requires_grad = name.startswith("encoder.layer.")
        model = ValueClassifier(encoder, pooling=cfg.pooling)
        rows, _ = read_touche(cfg.data_dir / "touche23")
        items: list[Item] = [(make_windows(tokenizer, e.response, e.prompt, plan)[:1], e, 1.0) for e in rows]
        optimizer, scheduler = _optimizer(cfg, model, math.ceil(len(items) / cfg.batch_size) * cfg.touche_epochs)
        rng = random.Random(cfg.seed)
        presence_cfg = cfg.model_copy(update={"violation_weight": 0.0})
        for _ in range(cfg.touche_epochs):
            _train_epoch(
                presence_cfg, model, items, class_weights(rows), optimizer, scheduler, rng, tokenizer.pad_token_id, []
            )
        _PRESENCE_CACHE[key] = trained_state(model)
    return _PRESENCE_CACHE[key]


def _tokens(item: Item) -> int:
    return sum(len(w["input_ids"]) for w in item[0])


def _load(params: list[torch.nn.Parameter], values: list[torch.Tensor]) -> None:
    if not values:
        return
    with torch.no_grad():
        for param, value in zip(params, values, strict=True):
            param.copy_(value)


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
        metrics = quality_metrics(dev_gold, thresholds.apply(probs))
        score = metrics["violation_f1"] + metrics["frequent_macro_f1"]
        run.history.append({"epoch": epoch, "loss": loss, **{k: round(v, 4) for k, v in metrics.items()}})
        log(
            f"epoch {epoch}/{cfg.epochs} loss {loss:.4f} dev violation F1 {metrics['violation_f1']:.3f} "
            f"frequent macro F1 {metrics['frequent_macro_f1']:.3f} presence F1 {metrics['presence_micro_f1']:.3f} "
            f"({time.perf_counter() - started:.0f}s)"
        )
        if best is None or score > best.score:
            best = Checkpoint(epoch, score, thresholds, metrics, trained_state(model))

    model, items = fit(cfg, train_set, aux, tokenizer, plan, cfg.epochs, on_dev)
    assert best is not None, "at least one epoch ran"
    chosen: Checkpoint = best
    model.load_state_dict(chosen.state, strict=False)
    if cfg.final_fit:
        rows = len(train_set) + len(dev_set)
        log(f"stage 2: retraining on train + dev ({rows} FULCRA rows) for {chosen.epoch} epochs")

        def on_final(epoch: int, _model: ValueClassifier, loss: float) -> None:
            log(f"final fit epoch {epoch}/{chosen.epoch} loss {loss:.4f} ({time.perf_counter() - started:.0f}s)")

        model, items = fit(cfg, train_set + dev_set, aux, tokenizer, plan, chosen.epoch, on_final)
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

    model, items = fit(cfg, rows, aux, tokenizer, plan, cfg.epochs, on_epoch)
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

    tokenizer = load_tokenizer()
    plan = WindowPlan(max_length=cfg.max_length)
    dev_pairs = [(e.prompt, e.response) for e in dev_set]
    dev_gold = gold_labels(dev_set)
    history: list[dict[str, object]] = []
    run = Run(cfg, train_set, dev_set, aux, tokenizer, plan, history, started, log)
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
