"""The classifier the scorer runs, built from the shipped weights: int8 on OpenVINO, or a torch model.

``weights.py`` reads and writes the files; this module turns their tensors into a model. torch,
the torch network and its quantization are imported only where a torch model is built, never for
int8 on OpenVINO.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

from guardrail.model.weights import ModelConfig, Pooling, calibration_of, read_tensors, trained_encoder

if TYPE_CHECKING:
    import torch

    from guardrail.model.inference import Classifier
    from guardrail.model.quantize import Engine


def load_classifier(
    directory: Path, config: ModelConfig, precision: str, engine: Engine = "auto"
) -> tuple[Classifier, str]:
    """The scorer's classifier for the weights in ``directory``, whose config ``read_config`` read:
    ``(model, precision)``."""
    return build_classifier(read_tensors(directory), config.num_layers, config.pooling, precision, engine)


def build_classifier(
    tensors: Mapping[str, ArrayLike | torch.Tensor],
    num_layers: int,
    pooling: Pooling,
    precision: str,
    engine: Engine = "auto",
) -> tuple[Classifier, str]:
    """The classifier the scorer runs, built from shipped ``tensors`` (numpy arrays or torch tensors):
    ``(model, precision)``.

    int8 on OpenVINO (``engine="auto"`` or ``"openvino"``): the graph is built from the packaged
    encoder's tensors and ``tensors`` (``openvino_int8.py``), without torch. Otherwise the packaged
    encoder plus the shipped updates, heads and any value queries, as a torch model in eval mode;
    with ``precision="int8"`` quantized by torch (``quantize.quantize_int8``, which reports "fp32"
    where this torch cannot quantize). "auto" falls back to torch where OpenVINO does not import
    (with a ``QuantizationUnavailableWarning``) or the weights carry no activation ranges for every
    layer (weights trained before they were shipped); "openvino" raises
    ``QuantizationUnavailableError`` there. Cross-validation builds its folds' models the same way,
    so its int8 figures are the scorer's.
    """
    if engine not in ("auto", "openvino", "torch"):
        raise ValueError(f"engine must be 'auto', 'openvino' or 'torch', got {engine!r}")
    if precision == "int8" and engine != "torch":
        from guardrail.model import openvino_int8
        from guardrail.model.openvino_runtime import import_problem

        arrays = {name: _numpy(value) for name, value in tensors.items()}
        problem, missing = import_problem(), []
        if problem is None:
            missing = openvino_int8.missing_ranges(calibration_of(arrays), num_layers)
            if not missing:
                return openvino_int8.compile_int8(arrays, num_layers, pooling), "int8"
        from guardrail.model.quantize import QuantizationUnavailableError, QuantizationUnavailableWarning

        reason = problem or f"the weights carry no activation ranges for {len(missing)} layers, e.g. '{missing[0]}'"
        if engine == "openvino":
            raise QuantizationUnavailableError(f"int8 on OpenVINO is unavailable: {reason}")
        if problem is not None:  # a broken install, not older weights: say so, the fallback is slower
            warnings.warn(f"{reason}; int8 runs on torch instead", QuantizationUnavailableWarning, stacklevel=3)
    return _torch_classifier(tensors, num_layers, pooling, precision)


def _numpy(value: ArrayLike | torch.Tensor) -> np.ndarray:
    detach = getattr(value, "detach", None)  # a torch tensor (training and cross-validation pass those)
    return np.asarray(detach().cpu().numpy() if detach is not None else value)


def _torch_classifier(
    tensors: Mapping[str, ArrayLike | torch.Tensor], num_layers: int, pooling: Pooling, precision: str
) -> tuple[Classifier, str]:
    import torch

    from guardrail.model.network import ValueClassifier, load_encoder
    from guardrail.model.quantize import quantize_int8

    as_torch = {
        name: value if isinstance(value, torch.Tensor) else torch.from_numpy(np.asarray(value))
        for name, value in tensors.items()
    }
    encoder = load_encoder(num_layers)
    packaged = {name: value.numpy() for name, value in encoder.state_dict().items()}
    arrays = {name: _numpy(value) for name, value in tensors.items()}
    encoder.load_state_dict({name: torch.from_numpy(v) for name, v in trained_encoder(packaged, arrays).items()})
    model = ValueClassifier(encoder, pooling=pooling)
    model.head.load_state_dict({"weight": as_torch["head.weight"], "bias": as_torch["head.bias"]})
    if model.value_queries is not None:
        if "value_queries" not in as_torch:
            raise ValueError("the weights use attention pooling but carry no 'value_queries'")
        model.value_queries.data.copy_(as_torch["value_queries"])
    model.eval()
    if precision == "int8":
        return quantize_int8(model, calibration_of(as_torch))
    return model, "fp32"
