"""The default int8 path builds its OpenVINO graph from the shipped weights without torch: the graph
computes what the torch model computes, every build scores the same, and no scorer on it imports torch."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from guardrail.model.build import build_classifier
from guardrail.model.inference import pad_windows
from guardrail.model.openvino_int8 import build_graph, compile_int8
from guardrail.model.openvino_runtime import OpenVinoClassifier
from guardrail.model.tokenizer import load_tokenizer
from guardrail.model.weights import Pooling, load_weights
from guardrail.text import WindowPlan, make_windows
from tests.samples import HARMFUL, HARMFUL_PROMPT, REFUSAL

PAIRS = [
    (HARMFUL_PROMPT, HARMFUL),
    (HARMFUL_PROMPT, REFUSAL),
    (None, "Tea is best with a little milk."),
    ("How do I train for a marathon?", "Build up your weekly mileage slowly. " * 60),  # several windows
]


def windows() -> list[dict[str, np.ndarray]]:
    tokenizer = load_tokenizer()
    out = []
    for prompt, response in PAIRS:
        for window in make_windows(tokenizer, response, prompt, WindowPlan()):
            out.append(pad_windows([window], tokenizer.pad_token_id))
    return out


@pytest.mark.parametrize("pooling", ["all", "response", "attention"])
def test_the_graph_in_fp32_computes_what_the_torch_model_computes(pooling: Pooling) -> None:
    # Quantization aside, the graph written with OpenVINO's operators is network.encode + pooling + heads.
    import openvino

    tensors, config, _ = load_weights()
    if pooling == "attention":  # the shipped model pools by mean: give it queries that do not
        tensors["value_queries"] = np.random.default_rng(0).normal(0, 0.5, (10, 384)).astype(np.float32)
    graph = build_graph(tensors, config.num_layers, pooling, quantized=False)
    compiled = openvino.Core().compile_model(graph, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    on_openvino = OpenVinoClassifier(compiled)
    on_torch, precision = build_classifier(tensors, config.num_layers, pooling, "fp32")
    assert precision == "fp32" and isinstance(on_torch, torch.nn.Module)
    for batch in windows():
        with torch.inference_mode():
            expected = on_torch(**{k: torch.from_numpy(v) for k, v in batch.items()}).numpy()
        got = on_openvino.logits(batch["input_ids"], batch["token_type_ids"])
        assert np.abs(got - expected).max() < 1e-4


def test_every_build_of_the_int8_model_scores_exactly_the_same() -> None:
    # What an auditor relies on when a recorded score is computed again in another process.
    tensors, config, _ = load_weights()
    first, second = (compile_int8(tensors, config.num_layers) for _ in range(2))
    assert first.int8_layers() == second.int8_layers() == 6 * config.num_layers
    for batch in windows():
        ids, types = batch["input_ids"], batch["token_type_ids"]
        assert np.array_equal(first.logits(ids, types), second.logits(ids, types))


def test_the_default_scorer_never_imports_torch() -> None:
    # torch's import is most of a cold start (~2-3 s, ~190 MB of peak memory); int8 on OpenVINO runs without it.
    loader = (
        "import sys; from guardrail import LocalScorer; scorer = LocalScorer(cache_size=0); "
        "result = scorer.score('Thanks, that was helpful.', prompt='Any tips?'); "
        "print(scorer.engine, result.precision, 'torch' in sys.modules)"
    )
    run = subprocess.run([sys.executable, "-c", loader], capture_output=True, text=True, check=True, timeout=300)
    assert run.stdout.split() == ["openvino", "int8", "False"]
