"""The int8 path: smoothing keeps the function, the shipped activation ranges let every block run int8 on
OpenVINO, and weights without them fall back to torch's dynamic quantization."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from guardrail import LocalScorer
from guardrail.model.openvino_runtime import OpenVinoClassifier
from guardrail.model.quantize import (
    QuantizationUnavailableError,
    QuantizationUnavailableWarning,
    SmoothedLinear,
    calibrate,
    count_quantized_linear,
    fuse_qkv,
    input_absmax,
    is_ffn_down,
    smooth,
)
from guardrail.model.weights import WEIGHTS_DIR, calibration_of, load_weights
from tests.samples import HARMFUL, HARMFUL_PROMPT


class Dense(nn.Module):
    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.dense = nn.Linear(n_in, n_out)


class FeedForward(nn.Module):
    """Shaped like a BERT feed-forward: ``intermediate.dense`` then ``output.dense``."""

    def __init__(self) -> None:
        super().__init__()
        self.intermediate = Dense(8, 32)
        self.output = Dense(32, 8)


class TinyClassifier(nn.Module):
    """Named like a ValueClassifier: the feed-forward under ``encoder``, then a head outside it."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = FeedForward()
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = nn.functional.gelu(self.encoder.intermediate.dense(x))
        out: torch.Tensor = self.head(self.encoder.output.dense(hidden))
        return out


def test_calibration_records_each_encoder_layers_input_range_per_channel() -> None:
    torch.manual_seed(0)
    model = TinyClassifier()
    inputs = [{"x": torch.randn(4, 8) * 3} for _ in range(5)]
    stats = calibrate(model, inputs)
    assert set(stats) == {"encoder.intermediate.dense", "encoder.output.dense"}, "the head is not the encoder's"
    seen = torch.cat([batch["x"] for batch in inputs])
    assert torch.equal(stats["encoder.intermediate.dense"], torch.stack([seen.amin(0), seen.amax(0)]))
    assert stats["encoder.output.dense"].shape == (2, 32)
    assert set(input_absmax(stats)) == {"encoder.output.dense"}


def test_smoothing_changes_the_layer_but_not_the_function() -> None:
    torch.manual_seed(0)
    model = TinyClassifier()
    inputs = [{"x": torch.randn(4, 8) * 3} for _ in range(5)]
    absmax = input_absmax(calibrate(model, inputs))
    assert absmax["encoder.output.dense"].shape == (32,)
    with torch.no_grad():
        before = model(**inputs[0])
        assert smooth(model, absmax) == 1
        after = model(**inputs[0])
    assert isinstance(model.encoder.output.dense, SmoothedLinear)
    assert torch.allclose(before, after, atol=1e-5)


def test_only_feed_forward_down_projections_count_as_such() -> None:
    assert is_ffn_down("encoder.encoder.layer.0.output.dense")
    assert not is_ffn_down("encoder.encoder.layer.0.attention.output.dense")
    assert not is_ffn_down("encoder.encoder.layer.0.intermediate.dense")


def copy_of_weights(tmp_path: object, keep: Any) -> Any:
    """The shipped weights in a temporary folder, keeping only the tensors ``keep(name, tensor)`` returns."""
    import shutil
    from pathlib import Path

    from safetensors.torch import load_file, save_file

    folder = Path(str(tmp_path)) / "w"
    shutil.copytree(WEIGHTS_DIR, folder, ignore=shutil.ignore_patterns("*.py", "__pycache__", "*.md"))
    file = folder / "value_heads.safetensors"
    kept = {k: keep(k, v) for k, v in load_file(str(file)).items()}
    save_file({k: v for k, v in kept.items() if v is not None}, str(file))
    return folder


def test_shipped_ranges_put_every_encoder_linear_in_int8_on_openvino(scorer: LocalScorer) -> None:
    tensors, config, _ = load_weights(WEIGHTS_DIR)
    stats = calibration_of(tensors)
    # Query, key, value, attention output, intermediate and output projections of every block.
    assert len(stats) == 6 * config.num_layers and all(v.shape[0] == 2 for v in stats.values())
    assert scorer.engine == "openvino" and isinstance(scorer.module, OpenVinoClassifier)
    # 6 int8 layers per block: query, key, value, attention output, intermediate, output.
    assert count_quantized_linear(scorer.module) == 6 * config.num_layers


def torch_module(scorer: LocalScorer) -> nn.Module:
    """The scorer's model, which these tests expect to be a torch module (fp32, or int8 on torch)."""
    assert isinstance(scorer.module, nn.Module), f"expected a torch model, got {type(scorer.module).__name__}"
    return scorer.module


def test_the_torch_engine_runs_every_encoder_linear_in_int8_too(scorer: LocalScorer) -> None:
    on_torch = LocalScorer(engine="torch", cache_size=0)
    layers = load_weights(WEIGHTS_DIR)[1].num_layers
    assert on_torch.engine == "torch" and on_torch.precision == "int8"
    assert count_quantized_linear(on_torch.module) == 4 * layers
    assert sum(isinstance(m, SmoothedLinear) for m in torch_module(on_torch).modules()) == layers
    a = on_torch.score(HARMFUL, prompt=HARMFUL_PROMPT)
    b = scorer.score(HARMFUL, prompt=HARMFUL_PROMPT)
    assert a.scores != b.scores, "two different int8 implementations"
    # ... that agree on every probability to about a tenth (0.10 measured on this text with scorer 2): the
    # labels may differ where a probability sits at its threshold
    probs = [(a.probabilities[v], b.probabilities[v]) for v in a.probabilities]
    assert max(abs(pa - pb) for x, y in probs for pa, pb in zip(x, y, strict=True)) < 0.15


def test_weights_without_statistics_run_int8_on_torch_with_the_down_projections_fp32(tmp_path: object) -> None:
    folder = copy_of_weights(tmp_path, lambda k, v: None if k.startswith("calib.") else v)
    older = LocalScorer(weights_dir=folder, cache_size=0)
    layers = load_weights(WEIGHTS_DIR)[1].num_layers
    assert older.precision == "int8" and older.engine == "torch"
    assert count_quantized_linear(older.module) == 3 * layers
    assert not any(isinstance(m, SmoothedLinear) for m in torch_module(older).modules())
    with pytest.raises(QuantizationUnavailableError, match="no activation ranges"):
        LocalScorer(weights_dir=folder, engine="openvino")


def test_weights_with_only_the_down_projections_maxima_still_smooth_them_on_torch(tmp_path: object) -> None:
    # The format shipped before the ranges of every layer: |max| per channel of the down-projections.
    folder = copy_of_weights(
        tmp_path, lambda k, v: (v.abs().amax(0) if is_ffn_down(k) else None) if k.startswith("calib.") else v
    )
    older = LocalScorer(weights_dir=folder, cache_size=0)
    layers = load_weights(WEIGHTS_DIR)[1].num_layers
    assert older.engine == "torch" and count_quantized_linear(older.module) == 4 * layers
    assert sum(isinstance(m, SmoothedLinear) for m in torch_module(older).modules()) == layers


def test_without_openvino_int8_falls_back_to_torch_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "openvino", None)  # what a missing or broken install looks like
    with pytest.warns(QuantizationUnavailableWarning, match="openvino package cannot be imported"):
        fallback = LocalScorer(cache_size=0)
    assert fallback.precision == "int8" and fallback.engine == "torch"
    assert count_quantized_linear(fallback.module) == 4 * load_weights(WEIGHTS_DIR)[1].num_layers
    with pytest.raises(QuantizationUnavailableError, match="openvino package cannot be imported"):
        LocalScorer(engine="openvino")


def test_the_openvino_classifier_refuses_a_padded_batch(scorer: LocalScorer) -> None:
    from guardrail.model.inference import pad_windows, window_probabilities

    assert isinstance(scorer.module, OpenVinoClassifier)
    windows = [
        {"input_ids": ids, "token_type_ids": [0] * len(ids), "attention_mask": [1] * len(ids)}
        for ids in ([101, 7592, 102], [101, 102])
    ]
    with pytest.raises(ValueError, match="unpadded windows only"):
        window_probabilities(scorer.module, pad_windows(windows, pad_id=0))
    ids = pad_windows(windows, pad_id=0)["input_ids"]
    with pytest.raises(ValueError, match="one unpadded window per call"):
        scorer.module.logits(ids, np.zeros_like(ids))


def test_the_lean_inference_pass_equals_transformers_forward(scorer_fp32: LocalScorer) -> None:
    from guardrail.model.network import encode, pad_batch
    from guardrail.model.tokenizer import load_tokenizer
    from guardrail.text import WindowPlan, make_windows

    tokenizer = load_tokenizer()
    texts = ["Short.", "A longer answer that gets padded less, about gardening and tea. " * 4]
    windows = [make_windows(tokenizer, t, "Any prompt?", WindowPlan())[0] for t in texts]
    batch = pad_batch(windows, tokenizer.pad_token_id)
    bert = torch_module(scorer_fp32).get_submodule("encoder")
    with torch.inference_mode():
        reference = bert(**batch).last_hidden_state
        lean = encode(bert, batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        single = encode(bert, **{k: v[1:] for k, v in batch.items()})
    real = batch["attention_mask"].bool()  # padded positions are never pooled
    assert torch.allclose(reference[real], lean[real], atol=1e-5)
    assert torch.allclose(reference[1], single[0], atol=1e-5)


def test_fused_query_key_value_compute_what_the_three_projections_did(scorer_fp32: LocalScorer) -> None:
    import copy

    from guardrail.model.network import encode, pad_batch
    from guardrail.model.tokenizer import load_tokenizer
    from guardrail.text import WindowPlan, make_windows

    tokenizer = load_tokenizer()
    window = make_windows(tokenizer, "Lock the door and keep your keys safe. " * 5, "Any tips?", WindowPlan())[0]
    batch = pad_batch([window], tokenizer.pad_token_id)
    bert = torch_module(scorer_fp32).get_submodule("encoder")
    fused = copy.deepcopy(bert)
    blocks: Any = fused.get_submodule("encoder.layer")
    assert fuse_qkv(fused) == len(blocks)
    attention: Any = blocks[0].attention.self
    assert not hasattr(attention, "query") and attention.qkv.out_features == 3 * attention.qkv.in_features
    with torch.inference_mode():
        assert torch.allclose(encode(bert, **batch), encode(fused, **batch), atol=1e-5)
