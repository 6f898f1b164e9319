"""The training losses: class-weighted likelihood of admitted classes, and the optional extra terms.

Every target is an allowed-class mask (see ``data.py``), so exact FULCRA labels and weak ToxiGen
or Touché labels share one formula: the negative log-likelihood of the classes a label admits,
weighted per value and class (``class_weights``). The recipe may add a loss on "opposes any value"
(``violation_loss``) and an auxiliary head on FULCRA's value items (``ItemTask``); both train only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from guardrail.model.network import aggregate_windows
from guardrail.training.data import Example
from guardrail.training.recipe import TrainConfig
from guardrail.values import VALUE_NAMES


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


def violation_loss(
    log_probs: torch.Tensor, masks: torch.Tensor, sample_w: torch.Tensor, harmful: torch.Tensor | None = None
) -> torch.Tensor:
    """BCE of P(opposes any value) = 1 - prod(1 - P_i(oppose)) against the gold "violates".

    A row violates when some value admits only "oppose"; it does not when no value admits
    "oppose". Rows in between (weak labels that leave opposition open) are left out, unless
    ``harmful`` (1 / 0 per row, -1 where unjudged) gives a source's own judgement, which wins.
    """
    only_oppose = masks[..., 0] & ~masks[..., 1] & ~masks[..., 2]
    violates = only_oppose.any(-1)
    known = violates | ~masks[..., 0].any(-1)
    if harmful is not None:
        judged = harmful >= 0
        violates = torch.where(judged, harmful == 1, violates)
        known = known | judged
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
