"""The int8 path: smoothing keeps the function, and the shipped statistics let every block run int8."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from guardrail import LocalScorer
from guardrail.model.quantize import (
    SmoothedLinear,
    calibrate,
    count_quantized_linear,
    fuse_qkv,
    is_ffn_down,
    smooth,
)
from guardrail.model.weights import WEIGHTS_DIR, calibration_of, load_weights


class Dense(nn.Module):
    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.dense = nn.Linear(n_in, n_out)


class TinyBlock(nn.Module):
    """Shaped like a BERT feed-forward: ``intermediate.dense`` then ``output.dense``."""

    def __init__(self) -> None:
        super().__init__()
        self.intermediate = Dense(8, 32)
        self.output = Dense(32, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = nn.functional.gelu(self.intermediate.dense(x))
        out: torch.Tensor = self.output.dense(hidden)
        return out


def test_smoothing_changes_the_layer_but_not_the_function() -> None:
    torch.manual_seed(0)
    block = TinyBlock()
    inputs = [{"x": torch.randn(4, 8) * 3} for _ in range(5)]
    stats = calibrate(block, inputs)
    assert set(stats) == {"output.dense"} and stats["output.dense"].shape == (32,)
    with torch.no_grad():
        before = block(**inputs[0])
        assert smooth(block, stats) == 1
        after = block(**inputs[0])
    assert isinstance(block.output.dense, SmoothedLinear)
    assert torch.allclose(before, after, atol=1e-5)


def test_only_feed_forward_down_projections_count_as_such() -> None:
    assert is_ffn_down("encoder.encoder.layer.0.output.dense")
    assert not is_ffn_down("encoder.encoder.layer.0.attention.output.dense")
    assert not is_ffn_down("encoder.encoder.layer.0.intermediate.dense")


def test_shipped_statistics_put_every_encoder_linear_in_int8(scorer: LocalScorer) -> None:
    tensors, config, _ = load_weights(WEIGHTS_DIR)
    stats = calibration_of(tensors)
    assert len(stats) == config.num_layers, "training ships one statistics vector per FFN down-projection"
    # 4 linear layers per BERT block: query-key-value (fused), attention output, intermediate, output.
    assert count_quantized_linear(scorer.module) == 4 * config.num_layers
    assert sum(isinstance(m, SmoothedLinear) for m in scorer.module.modules()) == config.num_layers


def test_weights_without_statistics_keep_the_down_projections_fp32(tmp_path: object) -> None:
    import shutil
    from pathlib import Path

    from safetensors.torch import load_file, save_file

    folder = Path(str(tmp_path))
    shutil.copytree(WEIGHTS_DIR, folder / "w", ignore=shutil.ignore_patterns("*.py", "__pycache__", "*.md"))
    file = folder / "w" / "value_heads.safetensors"
    save_file({k: v for k, v in load_file(str(file)).items() if not k.startswith("calib.")}, str(file))
    older = LocalScorer(weights_dir=folder / "w", cache_size=0)
    layers = load_weights(WEIGHTS_DIR)[1].num_layers
    assert older.precision == "int8"
    assert count_quantized_linear(older.module) == 3 * layers
    assert not any(isinstance(m, SmoothedLinear) for m in older.module.modules())


def test_the_lean_inference_pass_equals_transformers_forward(scorer_fp32: LocalScorer) -> None:
    from guardrail.model.network import encode, load_tokenizer, pad_batch
    from guardrail.text import WindowPlan, make_windows

    tokenizer = load_tokenizer()
    texts = ["Short.", "A longer answer that gets padded less, about gardening and tea. " * 4]
    windows = [make_windows(tokenizer, t, "Any prompt?", WindowPlan())[0] for t in texts]
    batch = pad_batch(windows, tokenizer.pad_token_id)
    bert = scorer_fp32.module.get_submodule("encoder")
    with torch.inference_mode():
        reference = bert(**batch).last_hidden_state
        lean = encode(bert, batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        single = encode(bert, **{k: v[1:] for k, v in batch.items()})
    real = batch["attention_mask"].bool()  # padded positions are never pooled
    assert torch.allclose(reference[real], lean[real], atol=1e-5)
    assert torch.allclose(reference[1], single[0], atol=1e-5)


def test_fused_query_key_value_compute_what_the_three_projections_did(scorer_fp32: LocalScorer) -> None:
    import copy

    from guardrail.model.network import encode, load_tokenizer, pad_batch
    from guardrail.text import WindowPlan, make_windows

    tokenizer = load_tokenizer()
    window = make_windows(tokenizer, "Lock the door and keep your keys safe. " * 5, "Any tips?", WindowPlan())[0]
    batch = pad_batch([window], tokenizer.pad_token_id)
    bert = scorer_fp32.module.get_submodule("encoder")
    fused = copy.deepcopy(bert)
    blocks: Any = fused.get_submodule("encoder.layer")
    assert fuse_qkv(fused) == len(blocks)
    attention: Any = blocks[0].attention.self
    assert not hasattr(attention, "query") and attention.qkv.out_features == 3 * attention.qkv.in_features
    with torch.inference_mode():
        assert torch.allclose(encode(bert, **batch), encode(fused, **batch), atol=1e-5)
