"""int8 on OpenVINO: the classifier's graph built from the shipped weights, with static activation scales.

torch's dynamic quantization measures every activation's range on every pass and runs each linear
layer as a separate quantize / int8 matmul / dequantize step. Here each encoder linear layer's input
range comes from the activation ranges ``guardrail train`` measures on its training windows and ships
(``quantize.calibrate``), so scales are fixed, and OpenVINO's CPU plugin fuses the quantization into
its int8 kernels.

The graph is written out here with OpenVINO's operators, from numpy arrays: the packaged encoder's
tensors (read from its safetensors file), plus the shipped updates, smoothed down-projections, heads
and ranges. No torch, no transformers, no tracing: a scorer builds and compiles it in about a second
and never imports torch. ``network.encode`` is the same computation in torch (a test checks that the
two agree in fp32).

Quantization: per-tensor, asymmetric uint8 activations over the shipped range (with zero inside it),
symmetric int8 weights per output channel, as FakeQuantize operators on the inputs and int8 constants
for the weights. Only the encoder's linear layers are int8: embeddings, attention, LayerNorm, GELU,
pooling and the ten heads run in fp32. The graph scores one unpadded window per call, as the int8
scorer always does (it takes no attention mask).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from guardrail.model.inference import CLASSES
from guardrail.model.openvino_runtime import OpenVinoClassifier, compile_model
from guardrail.model.tokenizer import encoder_path
from guardrail.model.weights import calibration_of, trained_encoder
from guardrail.values import VALUE_NAMES

SMOOTHING_ALPHA = 0.9
"""How much of a down-projection's activation range moves into its weights (0: none, 1: all); see
``quantize``."""

LINEARS = (
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "intermediate.dense",
    "output.dense",
)
"""The linear layers of one transformer block, under ``encoder.layer.N.``."""

CALIBRATION_MODULE = "encoder.{}"
"""How ``calibrate`` names a layer's ranges: its module name inside a ``ValueClassifier``."""


def missing_ranges(calibration: Mapping[str, np.ndarray], num_layers: int) -> list[str]:
    """The encoder linear layers whose per-channel input range (shape (2, in)) is not in ``calibration``."""
    names = [f"encoder.layer.{i}.{linear}" for i in range(num_layers) for linear in LINEARS]
    found = {n: calibration.get(CALIBRATION_MODULE.format(n)) for n in names}
    return [n for n, seen in found.items() if seen is None or seen.ndim != 2]


def encoder_tensors(num_layers: int) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The packaged encoder's embeddings and first ``num_layers`` blocks (name -> float32 array), and
    its config. Only those tensors are read from the package's safetensors file."""
    from safetensors import safe_open

    folder = encoder_path()
    config = json.loads((folder / "config.json").read_text())
    if not 1 <= num_layers <= int(config["num_hidden_layers"]):
        raise ValueError(f"num_layers must be in 1..{config['num_hidden_layers']}, got {num_layers}")
    wanted = ("embeddings.", *(f"encoder.layer.{i}." for i in range(num_layers)))
    with safe_open(str(folder / "model.safetensors"), framework="np") as f:
        tensors = {k: f.get_tensor(k).astype(np.float32) for k in f.keys() if k.startswith(wanted)}  # noqa: SIM118 - safe_open is no dict
    return tensors, config


def smoothing_scale(input_absmax: np.ndarray, weight: np.ndarray, alpha: float) -> np.ndarray:
    """SmoothQuant's per-input-channel ``s``: ``absmax(x) ** a / absmax(W) ** (1 - a)`` (see ``quantize.smooth``)."""
    weight_absmax = np.maximum(np.abs(weight).max(axis=0), np.float32(1e-5))
    s = np.maximum(input_absmax, np.float32(1e-5)) ** np.float32(alpha) / weight_absmax ** np.float32(1 - alpha)
    out: np.ndarray = np.maximum(s, np.float32(1e-5)).astype(np.float32)
    return out


def activation_grid(low: float, high: float) -> tuple[np.float32, np.float32]:
    """The uint8 grid over ``[low, high]`` widened to hold zero: its exact (first, last) step.

    Zero stays exactly representable (a zero point), as in ``torch.fake_quantize_per_tensor_affine``.
    """
    low, high = min(low, 0.0), max(high, 0.0)
    scale = max(high - low, 1e-8) / 255.0
    zero_point = round(-low / scale)
    return np.float32(-zero_point * scale), np.float32((255 - zero_point) * scale)


def int8_weight(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per output channel: (int8 values, float32 scales (out, 1))."""
    scale = np.maximum(np.abs(weight).max(axis=1) / np.float32(127.0), np.float32(1e-12)).astype(np.float32)
    values = np.clip(np.round(weight / scale[:, None]), -127, 127).astype(np.int8)
    return values, scale[:, None]


def build_graph(
    shipped: Mapping[str, np.ndarray],
    num_layers: int,
    pooling: str = "all",
    alpha: float = SMOOTHING_ALPHA,
    quantized: bool = True,
) -> Any:
    """The classifier as an ``openvino.Model``: inputs ``input_ids`` and ``token_type_ids`` (1, tokens),
    output logits (1, 10, 3).

    ``shipped`` are the shipped tensors as numpy arrays; their ranges must cover every encoder linear
    layer (``missing_ranges``). ``quantized=False`` builds the same graph in fp32 (smoothing included,
    which is exact there), for tests that compare it with the torch model.
    """
    import openvino.opset13 as ops
    from openvino import Model

    ranges = calibration_of(shipped)
    missing = missing_ranges(ranges, num_layers)
    if missing:
        raise ValueError(f"the weights carry no activation ranges for {len(missing)} layers, e.g. '{missing[0]}'")
    packaged, config = encoder_tensors(num_layers)
    weights = trained_encoder(packaged, shipped)
    heads, width = int(config["num_attention_heads"]), int(config["hidden_size"])
    eps = float(config["layer_norm_eps"])
    if config.get("hidden_act") != "gelu" or config.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError("the packaged encoder is not the BERT variant this graph is written for")

    def constant(array: np.ndarray) -> Any:
        return ops.constant(np.ascontiguousarray(array))

    def layer_norm(x: Any, name: str) -> Any:
        normed = ops.mvn(x, np.array([-1], np.int32), True, eps, "inside_sqrt")
        return ops.add(ops.multiply(normed, constant(weights[f"{name}.weight"])), constant(weights[f"{name}.bias"]))

    def linear(x: Any, name: str, smoothing: np.ndarray | None = None) -> Any:
        weight = weights[f"{name}.weight"]
        if smoothing is not None:  # x arrives divided by s; the weight's columns are multiplied by it
            weight = (weight * smoothing[None, :]).astype(np.float32)
        if quantized:
            seen = ranges[CALIBRATION_MODULE.format(name)]
            if smoothing is not None:
                seen = seen / smoothing[None, :]
            first, last = activation_grid(float(seen[0].min()), float(seen[1].max()))
            bound = [np.full((1, 1, 1), v, np.float32) for v in (first, last)]
            x = ops.fake_quantize(x, *bound, *bound, 256)
            values, scale = int8_weight(weight)
            matrix = ops.multiply(ops.convert(constant(values), np.float32), constant(scale))
        else:
            matrix = constant(weight)
        return ops.add(ops.matmul(x, matrix, False, True), constant(weights[f"{name}.bias"]))

    def split_heads(x: Any) -> Any:
        return ops.transpose(ops.reshape(x, np.array([1, -1, heads, width // heads]), False), np.array([0, 2, 1, 3]))

    input_ids = ops.parameter([1, -1], np.int64, name="input_ids")
    token_type_ids = ops.parameter([1, -1], np.int64, name="token_type_ids")
    length = ops.gather(ops.shape_of(input_ids), np.array([1]), np.int64(0))
    positions = ops.slice(
        constant(weights["embeddings.position_embeddings.weight"]), np.array([0]), length, np.array([1]), np.array([0])
    )
    hidden = ops.add(
        ops.add(
            ops.gather(constant(weights["embeddings.word_embeddings.weight"]), input_ids, np.int64(0)),
            ops.gather(constant(weights["embeddings.token_type_embeddings.weight"]), token_type_ids, np.int64(0)),
        ),
        positions,
    )
    hidden = layer_norm(hidden, "embeddings.LayerNorm")
    for i in range(num_layers):
        block = f"encoder.layer.{i}"
        q, k, v = (split_heads(linear(hidden, f"{block}.attention.self.{p}")) for p in ("query", "key", "value"))
        context = ops.scaled_dot_product_attention(q, k, v, causal=False)
        context = ops.reshape(ops.transpose(context, np.array([0, 2, 1, 3])), np.array([1, -1, width]), False)
        attended = ops.add(linear(context, f"{block}.attention.output.dense"), hidden)
        hidden = layer_norm(attended, f"{block}.attention.output.LayerNorm")
        inner = ops.gelu(linear(hidden, f"{block}.intermediate.dense"), "erf")
        down = f"{block}.output.dense"
        absmax = np.abs(ranges[CALIBRATION_MODULE.format(down)]).max(axis=0)
        s = smoothing_scale(absmax, weights[f"{down}.weight"], alpha)
        inner = ops.multiply(inner, constant((np.float32(1.0) / s)[None, None, :]))
        hidden = layer_norm(ops.add(linear(inner, down, smoothing=s), hidden), f"{block}.output.LayerNorm")

    logits = _heads(ops, hidden, token_type_ids, shipped, pooling)
    return Model([logits], [input_ids, token_type_ids], "value-classifier")


def _heads(ops: Any, hidden: Any, token_type_ids: Any, shipped: Mapping[str, np.ndarray], pooling: str) -> Any:
    """Pooling (``network.ValueClassifier.pool``) and the ten heads: logits (1, 10, 3)."""
    values, classes = len(VALUE_NAMES), len(CLASSES)
    weight, bias = shipped["head.weight"].astype(np.float32), shipped["head.bias"].astype(np.float32)
    if pooling == "attention":  # one learned query per value; each head reads its own weighted average
        queries = ops.constant(np.ascontiguousarray(shipped["value_queries"], dtype=np.float32))
        scores = ops.softmax(ops.matmul(queries, hidden, False, True), -1)  # (1, 10, tokens)
        per_value = ops.unsqueeze(ops.matmul(scores, hidden, False, False), np.array([2]))  # (1, 10, 1, width)
        head = ops.constant(np.ascontiguousarray(weight.reshape(values, classes, -1)))
        logits = ops.reduce_sum(ops.multiply(per_value, head), np.array([-1]), False)
        return ops.add(logits, ops.constant(bias.reshape(values, classes)))
    if pooling == "response":  # the response's tokens (type 1); a window without a prompt has none: all
        mask = ops.convert(token_type_ids, np.float32)
        has_response = ops.greater(ops.reduce_sum(mask, np.array([1]), True), np.float32(0.0))
        mask = ops.unsqueeze(
            ops.select(has_response, mask, ops.add(ops.multiply(mask, np.float32(0.0)), np.float32(1.0))),
            np.array([-1]),
        )
        pooled = ops.divide(
            ops.reduce_sum(ops.multiply(hidden, mask), np.array([1]), False), ops.reduce_sum(mask, np.array([1]), False)
        )
    elif pooling == "all":
        pooled = ops.reduce_mean(hidden, np.array([1]), False)
    else:
        raise ValueError(f"unknown pooling {pooling!r}")
    logits = ops.add(ops.matmul(pooled, ops.constant(np.ascontiguousarray(weight)), False, True), ops.constant(bias))
    return ops.reshape(logits, np.array([-1, values, classes]), False)


def compile_int8(
    shipped: Mapping[str, np.ndarray], num_layers: int, pooling: str = "all", alpha: float = SMOOTHING_ALPHA
) -> OpenVinoClassifier:
    """The int8 classifier for the shipped tensors (numpy arrays), compiled for this CPU."""
    return compile_model(build_graph(shipped, num_layers, pooling, alpha))
