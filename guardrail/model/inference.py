"""From (prompt, response) pairs to class probabilities: windows in, one (10, 3) array per pair out.

Torch is not imported here. The default model, int8 compiled for OpenVINO (``openvino_runtime``),
runs on numpy arrays, so a scorer on it never loads torch.
torch models (fp32, int8 on torch, models in training) are called through torch, which is imported
then.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeAlias

import numpy as np

from guardrail.model.openvino_runtime import OpenVinoClassifier
from guardrail.text import WindowPlan, make_windows
from guardrail.values import VALUE_NAMES

if TYPE_CHECKING:
    from torch import nn

    from guardrail.model.tokenizer import Tokenizer

Classifier: TypeAlias = "nn.Module | OpenVinoClassifier"
"""A model the scorer runs: a torch module (``network.ValueClassifier``, possibly quantized by torch)
or the int8 model compiled for OpenVINO."""

CLASSES = (-1, 0, 1)
"""Head output order: oppose, unrelated, support."""


def pad_windows(windows: list[dict[str, list[int]]], pad_id: int) -> dict[str, np.ndarray]:
    """Right-pad token windows into int64 arrays (batch, longest window) for one forward pass."""
    width = max(len(w["input_ids"]) for w in windows)
    out: dict[str, np.ndarray] = {}
    for name, fill in (("input_ids", pad_id), ("token_type_ids", 0), ("attention_mask", 0)):
        out[name] = np.array([w[name] + [fill] * (width - len(w[name])) for w in windows], dtype=np.int64)
    return out


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, in float32."""
    shifted = logits.astype(np.float32, copy=False) - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    out: np.ndarray = exp / exp.sum(axis=-1, keepdims=True)
    return out


def aggregate_windows(window_probs: np.ndarray) -> np.ndarray:
    """Combine (windows, 10, 3) probabilities of one text into (10, 3).

    The strongest opposition in any window wins, so a violating passage inside a long, otherwise
    benign response is not averaged away; support takes the strongest window too, capped so that
    the three probabilities still sum to 1. (``network.aggregate_windows`` is the same rule in
    torch, differentiable, for training on every window.)
    """
    oppose = window_probs[:, :, 0].max(axis=0)
    support = np.minimum(window_probs[:, :, 2].max(axis=0), 1.0 - oppose)
    unrelated = np.maximum(1.0 - oppose - support, 0.0)
    return np.stack([oppose, unrelated, support], axis=-1)


def window_probabilities(model: Classifier, batch: dict[str, np.ndarray]) -> np.ndarray:
    """Class probabilities (windows, 10, 3) of a padded batch (``pad_windows``)."""
    if isinstance(model, OpenVinoClassifier):
        if not batch["attention_mask"].all():
            raise ValueError("the OpenVINO int8 classifier scores unpadded windows only (one window per call)")
        return softmax(model.logits(batch["input_ids"], batch["token_type_ids"]))
    import torch

    with torch.inference_mode():
        logits = model(**{name: torch.from_numpy(array) for name, array in batch.items()})
        probs: np.ndarray = torch.softmax(logits.float(), dim=-1).numpy()
        return probs


def predict_proba(
    model: Classifier,
    tokenizer: Tokenizer,
    pairs: list[tuple[str | None, str]],
    plan: WindowPlan,
    batch_size: int = 16,
) -> tuple[np.ndarray, list[int]]:
    """Class probabilities (N, 10, 3), float32, for (prompt, response) pairs, and each pair's window count.

    Every window of every response is scored; windows are sorted by length before batching so
    padding stays small.
    """
    windows: list[dict[str, list[int]]] = []
    counts: list[int] = []
    for prompt, response in pairs:
        mine = make_windows(tokenizer, response, prompt, plan)
        windows.extend(mine)
        counts.append(len(mine))
    order = sorted(range(len(windows)), key=lambda j: len(windows[j]["input_ids"]))
    probs = np.empty((len(windows), len(VALUE_NAMES), len(CLASSES)), dtype=np.float32)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        probs[idx] = window_probabilities(model, pad_windows([windows[j] for j in idx], tokenizer.pad_token_id))
    # A pair's windows are consecutive rows of ``probs``.
    ends = np.cumsum(counts)
    parts = [aggregate_windows(probs[end - count : end]) for count, end in zip(counts, ends, strict=True)]
    return (np.stack(parts) if parts else probs), counts
