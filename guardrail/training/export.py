"""What ships from a trained model, and the check that the written files reproduce it.

Only what training changes ships (``trained_state``): int8 per-row updates of the fine-tuned
matrices, whole vectors, the heads and any value queries (``shippable_tensors``), plus the
activation ranges that int8 inference needs (``exported_tensors``). ``check_shipped`` reloads the
files through the real scorer before `guardrail train` reports success.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from guardrail.model.network import ValueClassifier, load_encoder, pad_batch, quantize_delta
from guardrail.model.quantize import calibrate
from guardrail.model.weights import CALIBRATION_PREFIX
from guardrail.training.data import Item
from guardrail.training.metrics import quality_metrics
from guardrail.values import VALUE_NAMES

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
