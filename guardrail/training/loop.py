"""The training loop: batching, optimisation and the optional Touché presence stage.

``fit`` trains a fresh classifier on prepared rows (``data.training_items``) with the recipe's
losses (``losses.py``): length-bucketed shuffled batches, AdamW with a linear warm-up and decay,
gradient clipping and an optional moving average of the weights. Every random draw comes from the
recipe's seed in a fixed order, so a run reproduces the shipped weights bit for bit.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from guardrail.model.network import ValueClassifier, load_encoder, pad_batch
from guardrail.text import WindowPlan, make_windows
from guardrail.training.context import stands_alone, swapped_prompt
from guardrail.training.counter_speech import counter_speech_examples
from guardrail.training.data import Example, Item, Window, read_touche, training_items
from guardrail.training.drafts import read_prompts
from guardrail.training.export import trained_state
from guardrail.training.losses import (
    ItemTask,
    admitted_log_likelihood,
    class_weights,
    item_task,
    row_log_probs,
    violation_loss,
)
from guardrail.training.recipe import TrainConfig


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def fit(
    cfg: TrainConfig,
    rows: list[Example],
    aux: list[Example],
    tokenizer: Any,
    plan: WindowPlan,
    epochs: int,
    after_epoch: Callable[[int, ValueClassifier, float], None],
    external: Sequence[Example] = (),
    drafts: Sequence[Example] = (),
) -> tuple[ValueClassifier, list[Item]]:
    """Fine-tune a fresh model on FULCRA ``rows``, weak ``aux`` rows, ``external`` judged responses
    (with their prompts, weight ``cfg.external_weight``) and SmolLM2's ``drafts`` (``drafts.py``,
    weight ``cfg.drafts_weight``) for ``epochs`` epochs.

    The learning-rate schedule always spans ``cfg.epochs``, so stopping after fewer epochs gives
    exactly the model an early-stopping run had at that epoch. Returns the model (in eval mode)
    and the training items.
    """
    set_seed(cfg.seed)
    encoder = load_encoder(cfg.num_layers)
    for name, param in encoder.named_parameters():
        param.requires_grad = name.startswith("encoder.layer.")
    model = ValueClassifier(encoder, pooling=cfg.pooling)

    items, bare = training_items(cfg, rows, aux, tokenizer, plan)
    keep = slice(None) if cfg.all_windows else slice(1)
    items += [
        (make_windows(tokenizer, e.response, e.prompt, plan)[keep], e, cfg.external_weight * e.weight) for e in external
    ]
    items += [(make_windows(tokenizer, e.response, e.prompt, plan)[keep], e, cfg.drafts_weight) for e in drafts]
    if cfg.use_toxigen and cfg.counter_speech_weight > 0:
        counter = counter_speech_examples(cfg.data_dir / "toxigen" / "statements.jsonl")
        weight = cfg.counter_speech_weight
        items += [(make_windows(tokenizer, e.response, e.prompt, plan)[keep], e, weight) for e in counter]
    weights = class_weights(rows + list(external))
    swapped: dict[int, list[Window]] = {}
    if cfg.context_swap > 0:
        everyday = read_prompts()
        swapped = {
            j: make_windows(tokenizer, e.response, swapped_prompt(e, everyday), plan)[keep]
            for j, (_, e, _) in enumerate(items)
            if stands_alone(e)
        }

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
            cfg, model, items, weights, optimizer, scheduler, rng, tokenizer.pad_token_id, average, task, bare, swapped
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
    bare: dict[int, list[Window]] | None = None,
    swapped: dict[int, list[Window]] | None = None,
) -> float:
    """One pass over ``items``; returns the mean loss. ``average`` (if any) is the EMA of the weights;
    ``bare`` holds the prompt-free windows of items that ``cfg.prompt_dropout`` may swap in, ``swapped``
    the windows under another context that ``cfg.context_swap`` may swap in."""
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    # Length-bucketed shuffling: sort by length, cut into batches, shuffle the batches.
    order = sorted(range(len(items)), key=lambda j: _tokens(items[j]) + rng.random() * 8)
    batches = [order[i : i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
    rng.shuffle(batches)
    epoch_loss = 0.0
    for idx in batches:
        seen = [_windows(cfg, items, j, rng, bare, swapped) for j in idx]
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
            harmful = torch.tensor([-1 if items[j][1].harmful is None else items[j][1].harmful for j in idx])
            loss = loss + cfg.violation_weight * violation_loss(log_probs, masks, sample_w, harmful)
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


def _windows(
    cfg: TrainConfig,
    items: list[Item],
    j: int,
    rng: random.Random,
    bare: dict[int, list[Window]] | None,
    swapped: dict[int, list[Window]] | None,
) -> list[Window]:
    """The windows item ``j`` is trained on this time. A draw is made only for an item that has an
    alternative, so with both options off the random sequence (and the weights) stay as before."""
    if bare and j in bare and rng.random() < cfg.prompt_dropout:
        return bare[j]
    if swapped and j in swapped and rng.random() < cfg.context_swap:
        return swapped[j]
    return items[j][0]


def _tokens(item: Item) -> int:
    return sum(len(w["input_ids"]) for w in item[0])


def _load(params: list[torch.nn.Parameter], values: list[torch.Tensor]) -> None:
    if not values:
        return
    with torch.no_grad():
        for param, value in zip(params, values, strict=True):
            param.copy_(value)
