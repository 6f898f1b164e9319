"""The shipped weights: what training adds to the packaged encoder, and the files that hold it.

Two files beside this module: ``value_heads.safetensors`` (updates to the encoder's transformer
blocks and the ten heads, see ``trained_encoder``; activation statistics for int8,
see ``quantize.py``) and
``value_heads.json`` (architecture, window plan, decision thresholds, training provenance). The
model id is a hash of both, so every score names exactly the weights that produced it. ``build.py``
turns the tensors into the classifier the scorer runs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypeVar

import numpy as np
from numpy.typing import ArrayLike
from pydantic import BaseModel, ConfigDict, Field

from guardrail.text import PromptKeep, WindowPlan
from guardrail.values import VALUE_NAMES

if TYPE_CHECKING:  # torch is imported only where a torch model is built, never for int8 on OpenVINO
    import torch

WEIGHTS_DIR = Path(__file__).parent
WEIGHTS_FILE = "value_heads.safetensors"
CONFIG_FILE = "value_heads.json"

T = TypeVar("T")

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
    window_prompt_keep: PromptKeep = "start"
    thresholds: Thresholds = Field(default_factory=Thresholds)
    training: dict[str, object] = Field(default_factory=dict)

    @property
    def window_plan(self) -> WindowPlan:
        return WindowPlan(
            self.window_max_length, self.window_prompt_tokens, self.window_overlap, self.window_prompt_keep
        )


def model_id_for(weights_bytes: bytes, config: ModelConfig) -> str:
    """A short content hash naming one model: the weights file plus everything in the config that
    changes a score (architecture, window plan, thresholds). The training provenance (timings,
    per-epoch history) is left out, so a rerun of `guardrail train` reproduces the id itself."""
    # "pooling" and "window_prompt_keep" joined the config later; leaving out their original values
    # keeps older models' ids.
    left_out = {"training"} | ({"pooling"} if config.pooling == "all" else set())
    left_out |= {"window_prompt_keep"} if config.window_prompt_keep == "start" else set()
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


def trained_encoder(packaged: dict[str, np.ndarray], shipped: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The fine-tuned encoder's tensors: the packaged encoder's (name -> array) plus the shipped ones.

    Matrices ship as int8 per-row *updates* (``delta.<name>.q`` times ``delta.<name>.scale``), added
    to the packaged weights: 4x smaller than fp32 copies, and the rounding error applies to the small
    update, not to the weight itself. Vectors (biases, LayerNorm) ship whole as ``param.<name>``.
    """
    out = dict(packaged)
    for key, value in shipped.items():
        if key.startswith("delta.") and key.endswith(".q"):
            name = key[len("delta.") : -len(".q")]
            if name not in out or out[name].shape != value.shape:
                raise ValueError(f"shipped update '{name}' does not fit the packaged encoder")
            scale = shipped[f"delta.{name}.scale"].astype(np.float32)
            out[name] = out[name] + value.astype(np.float32) * scale[:, None]
        elif key.startswith("param."):
            name = key[len("param.") :]
            if name not in out or out[name].shape != value.shape:
                raise ValueError(f"shipped parameter '{name}' does not fit the packaged encoder")
            out[name] = value.astype(np.float32)
    return out


CALIBRATION_PREFIX = "calib."


def calibration_of(tensors: Mapping[str, T]) -> dict[str, T]:
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


def read_tensors(directory: Path = WEIGHTS_DIR) -> dict[str, np.ndarray]:
    """The shipped tensors in ``directory`` as numpy arrays (check the files with ``read_config`` first)."""
    from safetensors.numpy import load_file

    return load_file(str(directory / WEIGHTS_FILE))


def load_weights(directory: Path = WEIGHTS_DIR) -> tuple[dict[str, np.ndarray], ModelConfig, str]:
    """Read (tensors, config, model id) from ``directory``."""
    config, model_id = read_config(directory)
    return read_tensors(directory), config, model_id
