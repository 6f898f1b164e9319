"""int8 quantization of the classifier, in one place so that the method can change.

Method: dynamic quantization of the encoder's linear layers (int8 weights per output channel,
symmetric; activations quantized per batch at run time), except two kinds that stay fp32:

- the feed-forward down-projections (``encoder.layer.N.output.dense``): BERT's FFN activations
  have outliers that per-tensor int8 activations clip. Quantizing them too moved individual scores
  by up to 0.79 and cost 0.06 violation F1 on the held-out split; keeping them fp32 brought int8
  to within 0.01 of fp32 (max score change 0.20);
- the heads (30 outputs: nothing to gain, and their error lands directly on the logits).

Measured on this project's 2-core machines (see benchmarks/), torchao's int8 path was no faster
than fp32 in eager mode and ONNX Runtime was slower at 256 tokens.

``torch.ao.quantization.quantize_dynamic`` is deprecated in favour of torchao. If a future torch
drops it, ``quantize_int8`` warns with ``QuantizationUnavailableWarning`` and returns the fp32
model, and the scorer reports ``precision="fp32"``: slower, never silently wrong. The test suite
checks that the int8 path really produces quantized layers, so the day the API goes, CI says so.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn


class QuantizationUnavailableWarning(RuntimeWarning):
    """int8 was asked for but this torch build cannot provide it; the model runs in fp32."""


def quantize_int8(model: nn.Module) -> tuple[nn.Module, str]:
    """Return ``(model, precision)``: the int8-quantized model and "int8", or the input and "fp32"."""
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
    targets = {
        name: qconfig for name, module in model.named_modules() if isinstance(module, nn.Linear) and keep_int8(name)
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # documented above
        warnings.simplefilter("ignore", FutureWarning)
        warnings.filterwarnings("ignore", message=".*quantize_per_(tensor|channel).*")
        quantized = quantize_dynamic(  # type: ignore[no-untyped-call]
            model, targets, dtype=torch.qint8, mapping={nn.Linear: DynamicQuantizedLinear}
        )
    return quantized, "int8"


def keep_int8(name: str) -> bool:
    """Whether the linear layer called ``name`` is quantized (see the module docstring)."""
    is_ffn_down = name.endswith(".output.dense") and ".attention." not in name
    return name.startswith("encoder.") and not is_ffn_down


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
