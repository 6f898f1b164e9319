"""The shipped weights: what training adds to the packaged encoder, and how they load.

Two files beside this module: ``value_heads.safetensors`` (updates to the encoder's transformer
blocks and the ten heads, see ``network.apply_trained_weights``; activation statistics for int8,
see ``quantize.py``) and
``value_heads.json`` (architecture, window plan, decision thresholds, training provenance). The
model id is a hash of both, so every score names exactly the weights that produced it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from numpy.typing import ArrayLike
from pydantic import BaseModel, ConfigDict, Field

from guardrail.model import compiled_cache
from guardrail.model.openvino_runtime import cache_entry, load_cached_int8
from guardrail.text import WindowPlan
from guardrail.values import VALUE_NAMES

if TYPE_CHECKING:  # torch is imported only where a model is built, never on a compiled-model cache hit
    import torch

    from guardrail.model.inference import Classifier
    from guardrail.model.quantize import Engine

WEIGHTS_DIR = Path(__file__).parent
WEIGHTS_FILE = "value_heads.safetensors"
CONFIG_FILE = "value_heads.json"

Pooling = Literal["all", "response", "attention"]
"""How token states become what the heads read. "all": the mean of every token of the window.
"response": the mean of the response's tokens only (token type 1; a window without a prompt has
none, and then every token counts). "attention": one learned attention over the tokens per value,
so each head reads the passage that matters to its value (its queries start at zero, which is
"all")."""


class Thresholds(BaseModel):
    """Per-value decision thresholds on class probabilities, tuned on a validation split.

    A value is labelled -1 when P(oppose) >= ``oppose[value]``, else +1 when
    P(support) >= ``support[value]``, else 0.
    """

    model_config = ConfigDict(frozen=True)

    oppose: dict[str, float] = Field(default_factory=lambda: dict.fromkeys(VALUE_NAMES, 0.5))
    support: dict[str, float] = Field(default_factory=lambda: dict.fromkeys(VALUE_NAMES, 0.5))

    def apply(self, probs: ArrayLike) -> np.ndarray:
        """Labels (N, 10), int64 in {-1, 0, 1}, from probabilities (N, 10, 3) (numpy, or a CPU tensor)."""
        p = np.asarray(probs)
        t_opp = np.array([self.oppose[v] for v in VALUE_NAMES], dtype=np.float32)
        t_sup = np.array([self.support[v] for v in VALUE_NAMES], dtype=np.float32)
        labels = np.zeros(p.shape[:2], dtype=np.int64)
        labels[p[..., 2] >= t_sup] = 1
        labels[p[..., 0] >= t_opp] = -1
        return labels


class ModelConfig(BaseModel):
    """Everything needed to rebuild the classifier from the encoder package plus our weights."""

    encoder_package: str
    encoder_version: str
    num_layers: int
    pooling: Pooling = "all"
    window_max_length: int = 256
    window_prompt_tokens: int = 64
    window_overlap: int = 32
    thresholds: Thresholds = Field(default_factory=Thresholds)
    training: dict[str, object] = Field(default_factory=dict)

    @property
    def window_plan(self) -> WindowPlan:
        return WindowPlan(self.window_max_length, self.window_prompt_tokens, self.window_overlap)


def model_id_for(weights_bytes: bytes, config: ModelConfig) -> str:
    """A short content hash naming one model: the weights file plus everything in the config that
    changes a score (architecture, window plan, thresholds). The training provenance (timings,
    per-epoch history) is left out, so a rerun of `guardrail train` reproduces the id itself."""
    # "pooling" joined the config later; leaving out its original value keeps older models' ids.
    left_out = {"training"} | ({"pooling"} if config.pooling == "all" else set())
    scoring = json.dumps(config.model_dump(mode="json", exclude=left_out), sort_keys=True).encode()
    digest = hashlib.sha256(weights_bytes + b"\0" + scoring).hexdigest()
    return f"minilm-values-{digest[:12]}"


def save_weights(directory: Path, tensors: dict[str, torch.Tensor], config: ModelConfig) -> str:
    """Write the safetensors file and its config; return the new model id."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(directory / WEIGHTS_FILE))
    (directory / CONFIG_FILE).write_text(json.dumps(config.model_dump(), indent=2, sort_keys=True) + "\n")
    return model_id_for((directory / WEIGHTS_FILE).read_bytes(), config)


CALIBRATION_PREFIX = "calib."


def calibration_of(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The activation statistics shipped for int8 (``calib.<module>``), keyed by module name."""
    return {k.removeprefix(CALIBRATION_PREFIX): v for k, v in tensors.items() if k.startswith(CALIBRATION_PREFIX)}


class WeightsMissingError(FileNotFoundError):
    """The trained weights are not where the scorer looks for them."""


def read_config(directory: Path = WEIGHTS_DIR) -> tuple[ModelConfig, str]:
    """Read (config, model id) from ``directory``, without loading the tensors."""
    wpath, cpath = directory / WEIGHTS_FILE, directory / CONFIG_FILE
    if not wpath.exists() or not cpath.exists():
        raise WeightsMissingError(
            f"no trained value heads in {directory} (expected {WEIGHTS_FILE} and {CONFIG_FILE}); "
            "run `guardrail train` to produce them"
        )
    config = ModelConfig.model_validate_json(cpath.read_bytes())
    return config, model_id_for(wpath.read_bytes(), config)


def read_tensors(directory: Path = WEIGHTS_DIR) -> dict[str, torch.Tensor]:
    """The shipped tensors in ``directory`` (check the files with ``read_config`` first)."""
    from safetensors.torch import load_file

    return load_file(str(directory / WEIGHTS_FILE))


def load_weights(directory: Path = WEIGHTS_DIR) -> tuple[dict[str, torch.Tensor], ModelConfig, str]:
    """Read (tensors, config, model id) from ``directory``."""
    config, model_id = read_config(directory)
    return read_tensors(directory), config, model_id


def load_classifier(
    directory: Path, config: ModelConfig, model_id: str, precision: str, engine: Engine = "auto"
) -> tuple[Classifier, str]:
    """The scorer's classifier for the weights in ``directory`` (read by ``read_config``): ``(model, precision)``.

    An int8 model compiled for OpenVINO earlier comes from the compiled-model cache: no tensors,
    no encoder, no torch. Otherwise the model is built (``build_classifier``), and stored there.
    """
    if precision == "int8" and engine != "torch":
        cached = load_cached_int8(model_id)  # a hit never touches the lock (the folder may be read-only)
        if cached is not None:
            return cached, "int8"
    tensors = read_tensors(directory)  # the config and id are read already: the file is not hashed twice
    return build_classifier(tensors, config.num_layers, config.pooling, precision, engine, model_id)


def build_classifier(
    tensors: dict[str, torch.Tensor],
    num_layers: int,
    pooling: Pooling,
    precision: str,
    engine: Engine = "auto",
    model_id: str | None = None,
) -> tuple[Classifier, str]:
    """The classifier the scorer runs, built from shipped ``tensors``: ``(model, precision)``.

    The packaged encoder plus the shipped updates, heads and any value queries, in eval mode;
    with ``precision="int8"`` quantized by ``quantize.quantize_int8`` on ``engine`` (which reports
    "fp32" where this torch cannot quantize). Cross-validation builds its folds' models the same
    way, so its int8 figures are the scorer's. With ``model_id`` (the id of ``tensors``), an int8
    model compiled on OpenVINO comes from, or goes into, the compiled-model cache.
    """
    if precision == "int8" and engine != "torch" and model_id is not None:
        with compiled_cache.exclusive(cache_entry(model_id)):  # workers starting together convert once
            cached = load_cached_int8(model_id)  # stored by another worker while we waited?
            if cached is not None:
                return cached, "int8"
            return _built(tensors, num_layers, pooling, precision, engine, model_id)
    return _built(tensors, num_layers, pooling, precision, engine, model_id)


def _built(
    tensors: dict[str, torch.Tensor],
    num_layers: int,
    pooling: Pooling,
    precision: str,
    engine: Engine,
    model_id: str | None,
) -> tuple[Classifier, str]:
    from guardrail.model.network import ValueClassifier, apply_trained_weights, load_encoder
    from guardrail.model.quantize import quantize_int8

    encoder = load_encoder(num_layers)
    apply_trained_weights(encoder, tensors)
    model = ValueClassifier(encoder, pooling=pooling)
    model.head.load_state_dict({"weight": tensors["head.weight"], "bias": tensors["head.bias"]})
    if model.value_queries is not None:
        if "value_queries" not in tensors:
            raise ValueError("the weights use attention pooling but carry no 'value_queries'")
        model.value_queries.data.copy_(tensors["value_queries"])
    model.eval()
    if precision == "int8":
        return quantize_int8(model, calibration_of(tensors), engine=engine, model_id=model_id)
    return model, "fp32"
