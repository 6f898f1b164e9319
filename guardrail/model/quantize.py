"""int8 quantization of the classifier, in one place so that the method can change.

Method: int8 weights per output channel (symmetric) for every linear layer of the encoder, on one
of two engines (``build.build_classifier``'s ``engine`` chooses):

- OpenVINO (the default): activations quantized with *static* scales, from the input range of
  each layer that ``guardrail train`` measures on its training windows and ships (``calib.*``
  tensors, per channel, ~110 KB in all); OpenVINO fuses the quantization into its int8 kernels.
  See ``openvino_int8.py``, which builds that graph without torch.
- torch (``torch.ao`` dynamic quantization, ``quantize_int8`` here): activations quantized per
  pass at run time. Used for weights without the ranges of every layer, or where openvino does
  not import, and on request.

The ten heads stay fp32 on both (30 outputs: nothing to gain, and their error lands directly on
the logits).

The feed-forward down-projections (``encoder.layer.N.output.dense``) need one more step. Their
inputs (GELU outputs) are mostly near zero with a few channels reaching 15-25, and one int8
scale per tensor then rounds the small values away: quantized as they are, they moved
individual scores by up to 0.47 and cost 0.04 violation F1 on the held-out split. So they are
*smoothed* first (SmoothQuant, Xiao et al. 2023): input channel j is divided by
``s_j = absmax(x_j) ** a / absmax(W_j) ** (1 - a)`` and the weight column multiplied by it. The
function is unchanged in exact arithmetic; the activation range moves into the weights, whose
scale is per output channel. Weights without these statistics keep the down-projections in fp32
on torch (slower, same parity).

Measured on this project's 2-core machines (see benchmarks/): OpenVINO's int8 forward pass was
~1.6x faster than torch's dynamic int8 in the same run, with a smaller gap to fp32; torchao's
int8 path was no faster than fp32 in eager mode and ONNX Runtime was slower at 256 tokens.

``torch.ao.quantization.quantize_dynamic`` is deprecated in favour of torchao. If a future torch
drops it, the torch engine warns with ``QuantizationUnavailableWarning`` and returns the fp32
model, and the scorer reports ``precision="fp32"``: slower, never silently wrong. The test suite
checks that the default int8 path runs on OpenVINO with every encoder layer in int8, and that the
torch engine really produces quantized layers, so the day either goes, CI says so.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import TYPE_CHECKING, Literal

import torch
from torch import nn

from guardrail.model.openvino_int8 import SMOOTHING_ALPHA

if TYPE_CHECKING:
    from guardrail.model.openvino_runtime import OpenVinoClassifier


class QuantizationUnavailableWarning(RuntimeWarning):
    """The preferred int8 path is unavailable here; the model runs on a fallback the message names."""


class QuantizationUnavailableError(RuntimeError):
    """The int8 engine asked for by name cannot run these weights here."""


class SmoothedLinear(nn.Module):
    """``linear(x)`` computed as ``linear'(x / s)`` with ``linear'`` = linear's columns times ``s``."""

    inverse_scale: torch.Tensor

    def __init__(self, linear: nn.Linear, scale: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("inverse_scale", (1.0 / scale).detach().clone())
        self.linear = nn.Linear(linear.in_features, linear.out_features, bias=linear.bias is not None)
        with torch.no_grad():
            self.linear.weight.copy_(linear.weight * scale.unsqueeze(0))
            if linear.bias is not None:
                self.linear.bias.copy_(linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.linear(x * self.inverse_scale)
        return out


def is_encoder_linear(name: str) -> bool:
    """Whether the module called ``name`` (in a ``ValueClassifier``) belongs to the encoder's blocks."""
    return name.startswith("encoder.")


def is_ffn_down(name: str) -> bool:
    """Whether the module called ``name`` is a transformer block's feed-forward down-projection."""
    parts = name.split(".")
    return parts[-2:] == ["output", "dense"] and "attention" not in parts


def calibrate(model: nn.Module, batches: Iterable[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Per-input-channel (min, max) of the input of every linear layer of the encoder, over ``batches``.

    Keys are module names in ``model``, values have shape (2, in_features): row 0 the minimum, row
    1 the maximum. Padding positions count too: the layers see them, even though mean pooling
    ignores their outputs later. The FFN down-projections' ranges set their smoothing (see
    ``input_absmax``); every layer's range sets its static int8 scale on OpenVINO.
    """
    stats: dict[str, torch.Tensor] = {}

    def observe(name: str) -> object:
        def hook(_module: nn.Module, inputs: tuple[torch.Tensor, ...], _output: torch.Tensor) -> None:
            x = inputs[0].detach().reshape(-1, inputs[0].shape[-1])
            seen = torch.stack([x.amin(dim=0), x.amax(dim=0)])
            if name in stats:
                seen = torch.stack([torch.minimum(stats[name][0], seen[0]), torch.maximum(stats[name][1], seen[1])])
            stats[name] = seen

        return hook

    handles = [
        module.register_forward_hook(observe(name))  # type: ignore[arg-type]
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and is_encoder_linear(name)
    ]
    try:
        with torch.inference_mode():
            for batch in batches:
                model(**batch)
    finally:
        for handle in handles:
            handle.remove()
    return stats


def input_absmax(stats: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per-channel max |input| of each FFN down-projection, from ``calibrate``'s ranges.

    Weights trained before ranges were shipped carry the absolute maxima themselves (shape
    (in_features,)), which pass through unchanged.
    """
    return {
        name: value.abs().amax(dim=0) if value.dim() == 2 else value
        for name, value in stats.items()
        if is_ffn_down(name)
    }


def smooth(model: nn.Module, input_absmax: dict[str, torch.Tensor], alpha: float = SMOOTHING_ALPHA) -> int:
    """Replace each FFN down-projection that has statistics by a ``SmoothedLinear``; return how many."""
    replaced = 0
    for name, module in list(model.named_modules()):
        if not (isinstance(module, nn.Linear) and is_ffn_down(name) and name in input_absmax):
            continue
        absmax = input_absmax[name]
        if absmax.shape != (module.in_features,):
            raise ValueError(f"calibration statistics for '{name}' do not fit the layer")
        with torch.no_grad():  # openvino_int8.smoothing_scale is the same formula on numpy arrays
            weight_absmax = module.weight.abs().amax(dim=0).clamp(min=1e-5)
            scale = (absmax.clamp(min=1e-5) ** alpha / weight_absmax ** (1 - alpha)).clamp(min=1e-5)
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, SmoothedLinear(module, scale))
        replaced += 1
    return replaced


def fuse_qkv(model: nn.Module) -> int:
    """Replace each attention block's query, key and value projections by one ``qkv`` layer.

    The three read the same input. Dynamically quantized apart, that input is quantized three
    times and three small matrix products run; fused, once and one. Per-output-channel weight
    scales and the per-pass activation scale are the same either way, so the int8 arithmetic is
    too. Only ``network.encode`` knows the fused layout, so this is for inference only. Returns
    how many blocks were fused.
    """
    fused = 0
    for module in list(model.modules()):
        parts = [getattr(module, name, None) for name in ("query", "key", "value")]
        if not all(isinstance(p, nn.Linear) and p.bias is not None for p in parts):
            continue
        linears: list[nn.Linear] = parts  # type: ignore[assignment]
        qkv = nn.Linear(linears[0].in_features, sum(p.out_features for p in linears))
        with torch.no_grad():
            qkv.weight.copy_(torch.cat([p.weight for p in linears]))
            qkv.bias.copy_(torch.cat([p.bias for p in linears]))
        module.qkv = qkv
        for name in ("query", "key", "value"):
            delattr(module, name)
        fused += 1
    return fused


Engine = Literal["auto", "openvino", "torch"]
"""Which int8 implementation runs: OpenVINO with static activation scales (the default where it
can), torch's dynamic quantization, or "auto" (OpenVINO, else torch)."""


def quantize_int8(
    model: nn.Module, stats: dict[str, torch.Tensor] | None = None, alpha: float = SMOOTHING_ALPHA
) -> tuple[nn.Module, str]:
    """int8 on torch: ``(model, precision)``, the int8 model and "int8", or the input and "fp32".

    ``stats`` are ``calibrate``'s activation ranges, shipped with the weights. The FFN
    down-projections are smoothed with them (without them those layers stay fp32), the query, key
    and value projections are fused (``fuse_qkv``), and torch's dynamic quantization takes every
    encoder linear layer to int8 (activation scales measured per pass). ``model`` is converted in
    place: its only caller discards the fp32 model, and quantizing a copy held both in memory at
    start-up. int8 on OpenVINO, the default, builds its own graph instead (``openvino_int8.py``);
    ``build.build_classifier`` chooses between the two.
    """
    absmax = input_absmax(stats or {})
    if absmax:
        smooth(model, absmax, alpha)
    fuse_qkv(model)
    return _torch_dynamic_int8(model)


def _torch_dynamic_int8(model: nn.Module) -> tuple[nn.Module, str]:
    """torch's dynamic quantization of every encoder linear layer except unsmoothed FFN down-projections."""
    try:
        from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear
        from torch.ao.quantization import quantize_dynamic
        from torch.ao.quantization.observer import PerChannelMinMaxObserver, PlaceholderObserver
        from torch.ao.quantization.qconfig import QConfig
    except ImportError as exc:  # pragma: no cover - depends on a future torch
        warnings.warn(
            f"int8 quantization is unavailable in torch {torch.__version__} ({exc}); scoring runs in fp32",
            QuantizationUnavailableWarning,
            stacklevel=3,
        )
        return model, "fp32"

    engines = torch.backends.quantized.supported_engines
    if "fbgemm" in engines:
        torch.backends.quantized.engine = "fbgemm"
    elif "qnnpack" in engines:  # pragma: no cover - ARM machines
        torch.backends.quantized.engine = "qnnpack"
    else:  # pragma: no cover
        warnings.warn(
            "no quantized engine in this torch build; scoring runs in fp32",
            QuantizationUnavailableWarning,
            stacklevel=3,
        )
        return model, "fp32"

    # reduce_range=False (full 8-bit activations) is only exact on CPUs with VNNI; fbgemm's
    # default reduce_range guards older CPUs against overflow, so keep it there.
    full_range = cpu_has_vnni()
    activation = PlaceholderObserver.with_args(
        dtype=torch.quint8,
        quant_min=0,
        quant_max=255 if full_range else 127,
        is_dynamic=True,
    )
    weight = PerChannelMinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_channel_symmetric)
    qconfig = QConfig(activation=activation, weight=weight)  # type: ignore[no-untyped-call]
    # A SmoothedLinear's inner layer is called "...output.dense.linear": keep_int8 accepts it.
    targets = {
        name: qconfig for name, module in model.named_modules() if isinstance(module, nn.Linear) and keep_int8(name)
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # documented above
        warnings.simplefilter("ignore", FutureWarning)
        warnings.filterwarnings("ignore", message=".*quantize_per_(tensor|channel).*")
        quantized = quantize_dynamic(  # type: ignore[no-untyped-call]
            model, targets, dtype=torch.qint8, mapping={nn.Linear: DynamicQuantizedLinear}, inplace=True
        )
    return quantized, "int8"


def keep_int8(name: str) -> bool:
    """Whether the linear layer called ``name`` is quantized: the encoder's, except unsmoothed FFN down-projections."""
    return is_encoder_linear(name) and not is_ffn_down(name)


def cpu_has_vnni() -> bool:
    """Whether this CPU has VNNI instructions (read from /proc/cpuinfo; False where unknown)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_vnni" in flags or "avx_vnni" in flags


def count_quantized_linear(model: nn.Module | OpenVinoClassifier) -> int:
    """How many linear layers of ``model`` run in int8 (torch's dynamic quantization, or on OpenVINO)."""
    from guardrail.model.openvino_runtime import OpenVinoClassifier

    if isinstance(model, OpenVinoClassifier):
        return model.int8_layers()
    try:
        from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear
    except ImportError:  # pragma: no cover
        return 0
    return sum(isinstance(m, DynamicQuantizedLinear) for m in model.modules())
