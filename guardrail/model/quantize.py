"""int8 quantization of the classifier, in one place so that the method can change.

Method: dynamic quantization of every linear layer of the encoder (int8 weights per output
channel, symmetric; activations quantized per batch at run time). The ten heads stay fp32 (30
outputs: nothing to gain, and their error lands directly on the logits).

The feed-forward down-projections (``encoder.layer.N.output.dense``) need one more step. Their
inputs (GELU outputs) are mostly near zero with a few channels reaching 15-25, and one int8
scale per tensor then rounds the small values away: quantized as they are, they moved
individual scores by up to 0.47 and cost 0.04 violation F1 on the held-out split. So they are
*smoothed* first (SmoothQuant, Xiao et al. 2023): input channel j is divided by
``s_j = absmax(x_j) ** a / absmax(W_j) ** (1 - a)`` and the weight column multiplied by it. The
function is unchanged in exact arithmetic; the activation range moves into the weights, whose
scale is per output channel. ``absmax(x_j)`` is measured by ``guardrail train`` on training
windows and shipped with the weights (``calib.*`` tensors, 6 KB a layer). Weights without these
statistics keep the down-projections in fp32 (slower, same parity).

Measured on this project's 2-core machines (see benchmarks/), torchao's int8 path was no faster
than fp32 in eager mode and ONNX Runtime was slower at 256 tokens.

``torch.ao.quantization.quantize_dynamic`` is deprecated in favour of torchao. If a future torch
drops it, ``quantize_int8`` warns with ``QuantizationUnavailableWarning`` and returns the fp32
model, and the scorer reports ``precision="fp32"``: slower, never silently wrong. The test suite
checks that the int8 path really produces quantized layers, so the day the API goes, CI says so.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable

import torch
from torch import nn

SMOOTHING_ALPHA = 0.9
"""How much of the activation range moves into the weights (0: none, 1: all); see module doc."""


class QuantizationUnavailableWarning(RuntimeWarning):
    """int8 was asked for but this torch build cannot provide it; the model runs in fp32."""


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


def is_ffn_down(name: str) -> bool:
    """Whether the module called ``name`` is a transformer block's feed-forward down-projection."""
    parts = name.split(".")
    return parts[-2:] == ["output", "dense"] and "attention" not in parts


def calibrate(model: nn.Module, batches: Iterable[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Per-input-channel max |activation| of every FFN down-projection, over ``batches``.

    Keys are module names in ``model``. Padding positions count too: the layer sees them, even
    though mean pooling ignores their outputs later.
    """
    stats: dict[str, torch.Tensor] = {}

    def observe(name: str) -> object:
        def hook(_module: nn.Module, inputs: tuple[torch.Tensor, ...], _output: torch.Tensor) -> None:
            x = inputs[0].detach()
            seen = x.abs().reshape(-1, x.shape[-1]).amax(dim=0)
            stats[name] = torch.maximum(stats[name], seen) if name in stats else seen

        return hook

    handles = [
        module.register_forward_hook(observe(name))  # type: ignore[arg-type]
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and is_ffn_down(name)
    ]
    try:
        with torch.inference_mode():
            for batch in batches:
                model(**batch)
    finally:
        for handle in handles:
            handle.remove()
    return stats


def smooth(model: nn.Module, input_absmax: dict[str, torch.Tensor], alpha: float = SMOOTHING_ALPHA) -> int:
    """Replace each FFN down-projection that has statistics by a ``SmoothedLinear``; return how many."""
    replaced = 0
    for name, module in list(model.named_modules()):
        if not (isinstance(module, nn.Linear) and is_ffn_down(name) and name in input_absmax):
            continue
        absmax = input_absmax[name]
        if absmax.shape != (module.in_features,):
            raise ValueError(f"calibration statistics for '{name}' do not fit the layer")
        with torch.no_grad():
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


def quantize_int8(
    model: nn.Module, input_absmax: dict[str, torch.Tensor] | None = None, alpha: float = SMOOTHING_ALPHA
) -> tuple[nn.Module, str]:
    """Return ``(model, precision)``: the int8-quantized model and "int8", or the input and "fp32".

    ``input_absmax`` (from ``calibrate``, shipped with the weights) lets the FFN down-projections
    be smoothed and quantized; without it they stay fp32. ``model`` is converted in place: its
    only caller discards the fp32 model, and quantizing a copy held both in memory at start-up.
    """
    try:
        from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear
        from torch.ao.quantization import quantize_dynamic
        from torch.ao.quantization.observer import PerChannelMinMaxObserver, PlaceholderObserver
        from torch.ao.quantization.qconfig import QConfig
    except ImportError as exc:  # pragma: no cover - depends on a future torch
        warnings.warn(
            f"int8 quantization is unavailable in torch {torch.__version__} ({exc}); scoring runs in fp32",
            QuantizationUnavailableWarning,
            stacklevel=2,
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
            stacklevel=2,
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
    if input_absmax:
        smooth(model, input_absmax, alpha)
    fuse_qkv(model)
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
    return name.startswith("encoder.") and not is_ffn_down(name)


def cpu_has_vnni() -> bool:
    """Whether this CPU has VNNI instructions (read from /proc/cpuinfo; False where unknown)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_vnni" in flags or "avx_vnni" in flags


def count_quantized_linear(model: nn.Module) -> int:
    """How many layers of ``model`` run as dynamically quantized int8 linear layers."""
    try:
        from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear
    except ImportError:  # pragma: no cover
        return 0
    return sum(isinstance(m, DynamicQuantizedLinear) for m in model.modules())
