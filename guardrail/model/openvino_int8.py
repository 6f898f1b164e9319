"""int8 on OpenVINO: static activation scales, measured in training, and fused int8 kernels.

torch's dynamic quantization measures every activation's range on every pass and runs each
linear layer as a separate quantize / int8 matmul / dequantize step. Here each encoder linear
layer's input range comes from the activation ranges ``guardrail train`` measures on its training
windows and ships (``quantize.calibrate``), so scales are fixed, and OpenVINO's CPU plugin fuses
the quantization into its int8 kernels. The model is expressed in torch with fake-quantize
operators (per-tensor, asymmetric uint8 activations; per-output-channel symmetric int8 weights),
converted once at load time and compiled for this CPU.

Only linear layers of the encoder change: attention, LayerNorm, GELU and the ten heads run in
fp32, as on torch. The model scores one unpadded window per call, as the int8 scorer always does
(the converted graph takes no attention mask).

The converted model is always saved as OpenVINO IR and compiled from those files (saving stores the
weights as int8, which moves logits by up to ~5e-7 against compiling the in-memory conversion), so a
model converted now and one read back from the disk cache (``compiled_cache.py``) compute the same
numbers. Running the compiled model, and reading it back from the cache, is ``openvino_runtime.py``
(no torch there).
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

from guardrail.model import compiled_cache
from guardrail.model.openvino_runtime import IR_FILE, OpenVinoClassifier, compile_ir
from guardrail.model.quantize import SmoothedLinear, is_encoder_linear


class FakeQuantLinear(nn.Module):
    """``linear(x)`` with ``x`` rounded to uint8 steps over ``[low, high]`` and the weight to int8 per row.

    OpenVINO reads the two fake-quantize operators as int8 arithmetic. ``low`` <= 0 <= ``high``,
    so zero stays exact (padding-free windows never need it, but a zero bias term does).
    """

    weight_scale: torch.Tensor
    weight_zero: torch.Tensor

    def __init__(self, linear: nn.Linear, low: float, high: float) -> None:
        super().__init__()
        self.linear = linear
        low, high = min(low, 0.0), max(high, 0.0)
        self.scale = max(high - low, 1e-8) / 255.0
        self.zero_point = round(-low / self.scale)
        weight = linear.weight.detach()
        self.register_buffer("weight_scale", (weight.abs().amax(dim=1) / 127.0).clamp(min=1e-12))
        self.register_buffer("weight_zero", torch.zeros(weight.shape[0], dtype=torch.int32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.fake_quantize_per_tensor_affine(x, self.scale, self.zero_point, 0, 255)
        weight = torch.fake_quantize_per_channel_affine(
            self.linear.weight, self.weight_scale, self.weight_zero, 0, -127, 127
        )
        out: torch.Tensor = nn.functional.linear(x, weight, self.linear.bias)
        return out


def layer_ranges(model: nn.Module, stats: dict[str, torch.Tensor]) -> tuple[dict[str, tuple[float, float]], list[str]]:
    """Per-tensor input range of every encoder linear layer of the smoothed ``model``.

    ``stats`` hold per-channel (min, max) per layer of the model as trained (``calibrate``). A
    smoothed down-projection reads its input times the smoothing's inverse scale. Returns (ranges,
    names of layers without statistics).
    """
    modules = dict(model.named_modules())
    ranges: dict[str, tuple[float, float]] = {}
    missing: list[str] = []
    for name, module in modules.items():
        if not (isinstance(module, nn.Linear) and is_encoder_linear(name)):
            continue
        parent_name = name.rpartition(".")[0]
        parent = modules.get(parent_name)
        key, factor = name, None
        if isinstance(parent, SmoothedLinear):
            key, factor = parent_name, parent.inverse_scale
        seen = stats.get(key)
        if seen is None or seen.dim() != 2 or seen.shape[1] != module.in_features:
            missing.append(name)
            continue
        low, high = (seen[0], seen[1]) if factor is None else (seen[0] * factor, seen[1] * factor)
        ranges[name] = (float(low.min()), float(high.max()))
    return ranges, missing


class _Unpadded(nn.Module):
    """The classifier as OpenVINO converts it: one unpadded window, no attention mask."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.model(input_ids, torch.ones_like(input_ids), token_type_ids)
        return out


def compile_int8(
    model: nn.Module, ranges: dict[str, tuple[float, float]], cache_as: str | None = None
) -> OpenVinoClassifier:
    """Convert the smoothed fp32 ``model`` into an int8 OpenVINO model for this CPU.

    ``ranges`` are ``layer_ranges``' input ranges, one per encoder linear layer. With ``cache_as``
    (an entry name, see ``compiled_cache``) the converted model is stored in the compiled-model
    cache for ``openvino_runtime.load_cached_int8``. ``model`` is changed in place and can be dropped afterwards: the
    compiled model holds its own weights.
    """
    import openvino

    modules = dict(model.named_modules())
    for name, (low, high) in ranges.items():
        parent_name, _, child = name.rpartition(".")
        setattr(modules[parent_name], child, FakeQuantLinear(modules[name], low, high))
    example = (torch.tensor([[101, 7592, 102]]), torch.zeros(1, 3, dtype=torch.long))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracing notes the mask branch it fixes: no mask, as documented
        converted = openvino.convert_model(_Unpadded(model).eval(), example_input=example)

    def write(folder: Path) -> None:
        openvino.save_model(converted, folder / IR_FILE, compress_to_fp16=False)

    stored = compiled_cache.store(cache_as, write, {"openvino": openvino.get_version()}) if cache_as else None
    if stored is not None:
        try:
            return compile_ir(stored)
        except (OSError, RuntimeError):  # removed or changed by another process meanwhile: use a private copy
            pass
    with tempfile.TemporaryDirectory(prefix="guardrail-ir-") as folder:
        write(Path(folder))
        return compile_ir(Path(folder))
