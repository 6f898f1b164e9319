"""Running the int8 model compiled for OpenVINO, and reading it from the compiled-model cache.

Nothing here imports torch: a scorer whose int8 model is in the cache (every load after a
machine's first) runs on numpy arrays and never pays torch's import (~2-3 s and ~190 MB of a
start). Converting the model in the first place needs torch and lives in ``openvino_int8.py``.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np

from guardrail.model import compiled_cache

IR_FILE = "model.xml"
RECIPE = "openvino-int8"
"""What the cache entries hold; the entry key adds the model id, library versions and the code that builds it."""


def import_problem() -> str | None:
    """Why the openvino package cannot be used here, or None when it imports."""
    try:
        import openvino  # noqa: F401
    except ImportError as exc:
        return f"the openvino package cannot be imported ({exc})"
    return None


class OpenVinoClassifier:
    """The compiled int8 classifier: logits (1, 10, 3) of one unpadded window per call.

    Thread-safe (one inference at a time). ``from_cache`` says whether it was read from the
    compiled-model cache rather than converted.
    """

    def __init__(self, compiled: Any, from_cache: bool = False) -> None:
        import openvino

        self.compiled = compiled
        self.from_cache = from_cache
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


def compile_ir(folder: Path, from_cache: bool = False) -> OpenVinoClassifier:
    """Read the IR in ``folder`` and compile it for this CPU.

    Where torch is loaded, OpenVINO uses as many threads as torch does (a host app may have set
    them); otherwise OpenVINO's latency default, one thread per physical core, which is torch's
    default too.
    """
    import openvino

    config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
    torch = sys.modules.get("torch")
    if torch is not None:
        config["INFERENCE_NUM_THREADS"] = torch.get_num_threads()
    core = openvino.Core()
    return OpenVinoClassifier(core.compile_model(core.read_model(folder / IR_FILE), "CPU", config), from_cache)


def cache_entry(model_id: str) -> str:
    """The compiled-model cache entry of ``model_id``'s int8 model on OpenVINO (see ``compiled_cache``)."""
    return compiled_cache.entry_name(model_id, RECIPE)


def load_cached_int8(model_id: str) -> OpenVinoClassifier | None:
    """``model_id``'s int8 model on OpenVINO from the compiled-model cache, or None (no entry, no
    openvino, unreadable).

    An entry exists only where ``quantize.quantize_int8`` compiled that model on OpenVINO before,
    with the same code and libraries, so a hit needs neither torch, the encoder nor the weights.
    """
    if import_problem() is not None:
        return None
    folder = compiled_cache.find(cache_entry(model_id))
    if folder is None:
        return None
    try:
        return compile_ir(folder, from_cache=True)
    except RuntimeError:  # written by an openvino that reads differently: build it again
        compiled_cache.discard(folder)
        return None
