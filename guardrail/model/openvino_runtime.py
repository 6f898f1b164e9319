"""Running the int8 model compiled for OpenVINO, on numpy arrays.

Nothing here imports torch, and neither does building the model (``openvino_int8.py``): a scorer
on the default int8 path never pays torch's import (~2-3 s and ~190 MB of a start).
"""

from __future__ import annotations

import sys
import threading
from typing import Any

import numpy as np


def import_problem() -> str | None:
    """Why the openvino package cannot be used here, or None when it imports."""
    try:
        import openvino  # noqa: F401
    except ImportError as exc:
        return f"the openvino package cannot be imported ({exc})"
    return None


class OpenVinoClassifier:
    """The compiled int8 classifier: logits (1, 10, 3) of one unpadded window per call.

    Thread-safe (one inference at a time).
    """

    def __init__(self, compiled: Any) -> None:
        import openvino

        self.compiled = compiled
        self._request = compiled.create_infer_request()
        self._tensor = openvino.Tensor  # copies its array: the request never reads memory we free
        self._lock = threading.Lock()

    def logits(self, input_ids: np.ndarray, token_type_ids: np.ndarray) -> np.ndarray:
        """Logits (1, 10, 3) of one window: ``input_ids`` and ``token_type_ids`` of shape (1, tokens)."""
        if input_ids.ndim != 2 or input_ids.shape[0] != 1 or token_type_ids.shape != input_ids.shape:
            raise ValueError(
                f"the OpenVINO int8 classifier scores one unpadded window per call, got shape {input_ids.shape}"
            )
        with self._lock:
            # Setting tensors directly skips the generic input dispatch of ``infer(inputs)`` (~0.3 ms a call).
            self._request.set_input_tensor(0, self._tensor(input_ids.astype(np.int64, copy=False)))
            self._request.set_input_tensor(1, self._tensor(token_type_ids.astype(np.int64, copy=False)))
            self._request.infer()
            out: np.ndarray = self._request.get_output_tensor(0).data.copy()
            return out

    def int8_layers(self) -> int:
        """How many fully connected layers the compiled model runs with int8 inputs."""
        count = 0
        for op in self.compiled.get_runtime_model().get_ordered_ops():
            info = op.get_rt_info()
            kind, precision = info["layerType"].astype(str), info["runtimePrecision"].astype(str)
            if kind == "FullyConnected" and precision in ("u8", "i8"):
                count += 1
        return count


def compile_model(model: Any) -> OpenVinoClassifier:
    """Compile ``model`` (an ``openvino.Model``) for this CPU.

    Where torch is loaded, OpenVINO uses as many threads as torch does (a host app may have set
    them); otherwise OpenVINO's latency default, one thread per physical core, which is torch's
    default too.
    """
    import openvino

    config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
    torch = sys.modules.get("torch")
    if torch is not None:
        config["INFERENCE_NUM_THREADS"] = torch.get_num_threads()
    return OpenVinoClassifier(openvino.Core().compile_model(model, "CPU", config))
