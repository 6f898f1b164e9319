"""The default scorer: the quantized local value classifier, on CPU, offline."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from cachetools import LRUCache

from guardrail.model.build import load_classifier
from guardrail.model.inference import CLASSES, Classifier, predict_proba
from guardrail.model.openvino_runtime import OpenVinoClassifier
from guardrail.model.tokenizer import load_tokenizer
from guardrail.model.weights import WEIGHTS_DIR, read_config
from guardrail.score import ValueScores
from guardrail.text import InvalidTextError, normalize_text
from guardrail.values import VALUE_NAMES

if TYPE_CHECKING:
    from guardrail.model.quantize import Engine

Precision = Literal["int8", "fp32"]

_INFERENCE: tuple[concurrent.futures.ThreadPoolExecutor, int, int] | None = None  # executor, thread id, pid
_INFERENCE_LOCK = threading.Lock()


def inference_thread() -> tuple[concurrent.futures.ThreadPoolExecutor, int]:
    """The one thread (executor and thread id) on which every LocalScorer of this process runs its model.

    torch's OpenMP thread team belongs to the calling thread, and on 2 cores two teams slow each
    other down for good: a forward pass measured 5.5 ms on the thread that built the model and
    10-11 ms on it once another thread had run torch work too. Loading and inference of all
    scorers therefore share this thread (torch or not: fp32 and the torch engine run on torch, and a
    host app may use torch too); calls from any other thread hand their work to it.
    """
    global _INFERENCE
    with _INFERENCE_LOCK:
        # A forked child (pre-forking servers) inherits the executor but not its thread: start anew.
        if _INFERENCE is None or _INFERENCE[2] != os.getpid():
            executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="guardrail-infer")
            _INFERENCE = (executor, executor.submit(threading.get_ident).result(), os.getpid())
        return _INFERENCE[0], _INFERENCE[1]


def engine_version(model: Classifier) -> str:
    """What runs ``model``'s arithmetic, and its version: "openvino X" or "torch X"."""
    if isinstance(model, OpenVinoClassifier):
        import openvino

        return f"openvino {openvino.get_version().split('-')[0]}"
    import torch

    return f"torch {torch.__version__}"


class LocalScorer:
    """Scores responses in value space with the shipped classifier; one forward pass per window.

    >>> scorer = LocalScorer()                  # int8, the default
    >>> result = scorer.score("Sure, here is how to pick a lock...", prompt="How do I break in?")
    >>> result.labels["security"]               # -1, 0 or 1

    Thread-safe. Results are cached (LRU, keyed by model id, prompt and response after
    normalization); the async methods run inference in a worker thread. ``batch_size`` is the
    number of windows per forward pass in fp32; int8 runs one window per pass, so that a text's
    scores never depend on what it was batched with. ``engine`` picks the int8 implementation:
    "auto" (OpenVINO with the shipped activation ranges, else torch), "openvino" or "torch"
    (see ``guardrail.model.quantize``); ``scorer.engine`` says which one runs. The int8 model on
    OpenVINO is built from the shipped weights at load, in about a second, without importing torch
    (``guardrail.model.openvino_int8``).
    """

    def __init__(
        self,
        precision: Precision = "int8",
        *,
        weights_dir: Path | str | None = None,
        cache_size: int = 4096,
        batch_size: int = 16,
        engine: Engine = "auto",
    ) -> None:
        if precision not in ("int8", "fp32"):
            raise ValueError(f"precision must be 'int8' or 'fp32', got {precision!r}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        directory = Path(weights_dir) if weights_dir else WEIGHTS_DIR
        config, model_id = read_config(directory)
        self._config = config
        self._model_id = model_id
        self._plan = config.window_plan
        self._thresholds = config.thresholds
        self._tokenizer = load_tokenizer()

        executor, _ = inference_thread()
        self._model, self.precision = executor.submit(load_classifier, directory, config, precision, engine).result()
        # int8 activations get one quantization scale per forward pass, so in a padded batch a
        # text's scores would depend on its batch-mates. int8 therefore runs one window per pass:
        # a text scores the same alone, in any batch, in the CLI and on replay (batching gained
        # int8 only ~10% throughput here; see benchmarks/).
        self._batch_size = batch_size if self.precision == "fp32" else 1
        self._engine_version = engine_version(self._model)
        self._cache_lock = threading.Lock()  # held only for dict operations, never during inference
        # cache_size=0 turns caching off (benchmarks, evaluation over many distinct texts).
        self._cache: LRUCache[tuple[str, str, str | None, str], ValueScores] | None = (
            LRUCache(maxsize=cache_size) if cache_size > 0 else None
        )

    def _infer(self, todo: list[tuple[str | None, str]]) -> tuple[np.ndarray, list[int]]:
        """Run the model on the inference thread (inline when already on it, as ``ascore`` is)."""
        executor, thread_id = inference_thread()
        if threading.get_ident() == thread_id:
            return predict_proba(self._model, self._tokenizer, todo, self._plan, self._batch_size)
        return executor.submit(self._infer, todo).result()

    @property
    def model_id(self) -> str:
        """Content hash of the shipped weights (see ``guardrail.model.weights``)."""
        return self._model_id

    @property
    def oppose_thresholds(self) -> dict[str, float]:
        """P(oppose) at or above which a value is labelled -1, per value (tuned on validation data)."""
        return dict(self._thresholds.oppose)

    @property
    def engine(self) -> str:
        """What runs the arithmetic: "openvino" (int8, the default where available) or "torch"."""
        return "openvino" if isinstance(self._model, OpenVinoClassifier) else "torch"

    @property
    def engine_version(self) -> str:
        """``engine`` with its library's version, as every score records it (e.g. "openvino 2026.4.1")."""
        return self._engine_version

    @property
    def module(self) -> Classifier:
        """The model that runs: a torch module, or the int8 model compiled for OpenVINO (for
        inspection and benchmarks)."""
        return self._model

    def _key(self, response: str, prompt: str | None) -> tuple[str, str, str | None, str]:
        return (self._model_id, self.precision, prompt, response)

    def _clean(self, response: object, prompt: object) -> tuple[str, str | None]:
        clean_response = normalize_text(response, field="response")
        if prompt is None:
            return clean_response, None
        try:
            return clean_response, normalize_text(prompt, field="prompt")
        except InvalidTextError:
            if isinstance(prompt, str):  # an empty prompt is just no context
                return clean_response, None
            raise

    def _result(self, probs: np.ndarray, windows: int) -> ValueScores:
        label_list = self._thresholds.apply(probs[None])[0].tolist()
        rows = probs.tolist()  # one conversion instead of forty tensor reads
        scores, label_map, confidence, probabilities = {}, {}, {}, {}
        for name, label, (p_opp, p_unrel, p_sup) in zip(VALUE_NAMES, label_list, rows, strict=True):
            scores[name] = round(p_sup - p_opp, 6)
            label_map[name] = label
            confidence[name] = round((p_opp, p_unrel, p_sup)[CLASSES.index(label)], 6)
            probabilities[name] = (round(p_opp, 6), round(p_unrel, 6), round(p_sup, 6))
        return ValueScores(
            scores=scores,
            labels=label_map,
            confidence=confidence,
            probabilities=probabilities,
            model_id=self._model_id,
            precision=self.precision,
            engine=self._engine_version,
            windows=windows,
        )

    def score(self, response: str, prompt: str | None = None) -> ValueScores:
        """Score one response, with ``prompt`` as context when given."""
        return self.score_batch([response], [prompt])[0]

    def score_batch(self, responses: Iterable[str], prompts: Iterable[str | None] | None = None) -> list[ValueScores]:
        """Score many responses, in order; cached ones are not recomputed."""
        if isinstance(responses, str):
            raise InvalidTextError("score_batch takes a sequence of responses, got a single string")
        if isinstance(prompts, str):
            raise InvalidTextError("score_batch takes a sequence of prompts (one per response), got a single string")
        responses = list(responses)  # a generator is read once
        prompts = [None] * len(responses) if prompts is None else list(prompts)
        if len(prompts) != len(responses):
            raise ValueError(f"{len(responses)} responses but {len(prompts)} prompts")
        pairs = []
        for i, (response, prompt) in enumerate(zip(responses, prompts, strict=True)):
            try:
                pairs.append(self._clean(response, prompt))
            except InvalidTextError as exc:
                if len(responses) == 1:
                    raise
                raise InvalidTextError(f"item {i}: {exc}") from None
        results: list[ValueScores | None] = []
        missing: list[int] = []
        with self._cache_lock:
            for i, (response, prompt) in enumerate(pairs):
                hit = self._cache.get(self._key(response, prompt)) if self._cache is not None else None
                results.append(hit)
                if hit is None:
                    missing.append(i)
        if missing:
            todo = [(pairs[i][1], pairs[i][0]) for i in missing]
            probs, windows = self._infer(todo)
            with self._cache_lock:
                for n, i in enumerate(missing):
                    result = self._result(probs[n], windows[n])
                    if self._cache is not None:
                        self._cache[self._key(*pairs[i])] = result
                    results[i] = result
        return [r for r in results if r is not None]

    def cached(self, response: str, prompt: str | None = None) -> ValueScores | None:
        """The cached result for this input, if any (never computes)."""
        clean_response, clean_prompt = self._clean(response, prompt)
        if self._cache is None:
            return None
        with self._cache_lock:
            return self._cache.get(self._key(clean_response, clean_prompt))

    async def ascore(self, response: str, prompt: str | None = None) -> ValueScores:
        """``score`` for async code: a cache hit returns at once, a miss runs in a worker thread."""
        hit = self.cached(response, prompt)
        if hit is not None:
            return hit
        return await asyncio.get_running_loop().run_in_executor(inference_thread()[0], self.score, response, prompt)

    async def ascore_batch(
        self, responses: Sequence[str], prompts: Sequence[str | None] | None = None
    ) -> list[ValueScores]:
        """``score_batch`` in a worker thread, so the event loop keeps running."""
        return await asyncio.get_running_loop().run_in_executor(
            inference_thread()[0], self.score_batch, responses, prompts
        )
