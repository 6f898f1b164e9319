"""Scorer speed and memory: int8 vs fp32 in one run.

Measures p50/p95 latency at batch 1 for 64/128/256-token responses (int8 on OpenVINO, the default;
int8 on torch's dynamic quantization, ``int8_torch``; int8 on torch with the FFN down-projections
left in fp32, the path for weights without calibration statistics; and at 128 tokens the issue's
starting point, timed in the same run: see ``reference_forwards``),
throughput at batch 16 and 64, cache-hit latency, cold start (import + load + first score, in a
fresh process) and peak RSS, and where a 128-token score spends its time (torch's profiler, by
operator kind, per precision). Prints a table and writes benchmarks/results/scorer.json.

    .venv/bin/python -m benchmarks.bench_scorer [--repeat 200]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.torch import load_file, save_file

from benchmarks.common import summary, timings_ms, write_result
from guardrail.model import inference
from guardrail.model.tokenizer import Tokenizer, load_tokenizer
from guardrail.model.weights import WEIGHTS_DIR, WEIGHTS_FILE
from guardrail.scorers.local import LocalScorer, inference_thread

BASE_TEXT = (
    "Sure, here is a detailed plan. First gather the tools you need and check the area for cameras. "
    "Then wait until the owners have left for the evening, because the house will be empty and quiet. "
    "Open the back window with a flat bar, move quickly through the rooms and take only small valuables "
    "such as jewellery, cash and electronics that are easy to sell later without questions. "
)

# Peak RSS is the kernel's high-water mark of this process's own memory (VmHWM). Not ru_maxrss:
# Linux carries that across fork and exec, so the child would report the benchmark's own RSS (the
# four scorers it holds) whenever that is larger, as it did up to session 7 (~750 MB for ~480).
COLD_START = """
import json, resource, sys, time
t0 = time.perf_counter()
from guardrail import LocalScorer
t1 = time.perf_counter()
scorer = LocalScorer(precision=sys.argv[1], engine=sys.argv[2])
t2 = time.perf_counter()
scorer.score("Thanks, that was helpful.")
t3 = time.perf_counter()
try:
    with open("/proc/self/status") as status:
        peak_kb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
except (OSError, StopIteration):  # not Linux: ru_maxrss (kB on Linux, bytes on macOS)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 if sys.platform == "darwin" else 1)
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "first_score_s": t3 - t2, "total_s": t3 - t0,
                  "peak_rss_mb": peak_kb / 1024, "torch_imported": "torch" in sys.modules}))
"""


def text_of_tokens(tokenizer: Tokenizer, n: int, salt: int = 0) -> str:
    """A response of exactly ``n`` word-piece tokens (no special tokens)."""
    return tokenizer.decode(tokenizer.encode(f"Case {salt}. " + BASE_TEXT * 20)[:n])


def cold_start(precision: str, runs: int, engine: str = "auto") -> dict[str, object]:
    """Import + load + first score in fresh processes."""
    command = [sys.executable, "-c", COLD_START, precision, engine]
    samples = []
    for _ in range(runs):
        out = subprocess.run(command, capture_output=True, text=True, check=True)
        samples.append(json.loads(out.stdout.strip().splitlines()[-1]))
    total = summary([s["total_s"] * 1e3 for s in samples])
    return {
        "total": total,
        "import_ms_p50": summary([s["import_s"] * 1e3 for s in samples])["p50_ms"],
        "load_ms_p50": summary([s["load_s"] * 1e3 for s in samples])["p50_ms"],
        "peak_rss_mb_max": round(max(s["peak_rss_mb"] for s in samples), 1),
        "torch_imported": any(s["torch_imported"] for s in samples),
    }


OPERATOR_KINDS = {
    "quantized::linear_dynamic": "linear layers",
    "aten::addmm": "linear layers",
    "aten::mm": "linear layers",
    "aten::_scaled_dot_product_flash_attention_for_cpu": "attention",
    "aten::gelu": "GELU",
    "aten::native_layer_norm": "LayerNorm",
}


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2: torch's profiler prints harmless thread-registration notices there."""
    saved = os.dup(2)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def time_profile(scorer: LocalScorer, text: str, calls: int = 50) -> dict[str, object]:
    """Where a call of ``scorer.score(text)`` spends its time.

    ``score_ms`` and ``forward_ms`` are medians without the profiler: the whole call, and the
    model's call inside it (``inference.window_probabilities``: the forward pass and its softmax,
    timed by wrapping that function). Their difference is tokenizing, windowing, Python and
    building the result. ``operator_share`` (torch engine only:
    torch's profiler does not see inside OpenVINO) splits the time of torch's operators by kind,
    from torch's profiler; the profiler slows every operator, so only shares are reported. Runs on
    the scorer's inference thread: the profiler records the thread that starts it, and a call from
    any other thread only hands the work over.
    """
    from torch.profiler import ProfilerActivity, profile

    def run() -> dict[str, object]:
        forward_ms: list[float] = []
        model_call = inference.window_probabilities

        def timed_call(model: inference.Classifier, batch: dict[str, np.ndarray]) -> np.ndarray:
            started = time.perf_counter()
            out = model_call(model, batch)
            forward_ms.append((time.perf_counter() - started) * 1e3)
            return out

        inference.window_probabilities = timed_call  # predict_proba looks it up on every call
        try:
            score_ms = timings_ms(partial(scorer.score, text), calls, warmup=5)
        finally:
            inference.window_probabilities = model_call
        timed: dict[str, object] = {
            "score_ms": summary(score_ms)["p50_ms"],
            "forward_ms": summary(forward_ms[-calls:])["p50_ms"],
        }
        if scorer.engine != "torch":
            return timed
        with quiet_stderr(), profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(calls):
                scorer.score(text)
        kinds: collections.defaultdict[str, float] = collections.defaultdict(float)
        for event in prof.key_averages():
            kinds[OPERATOR_KINDS.get(event.key, "other torch operators")] += event.self_cpu_time_total
        total = sum(kinds.values())
        shares = {k: round(v / total, 3) for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])}
        return {**timed, "operator_share": shares}

    return inference_thread()[0].submit(run).result()


REFERENCE_128_TOKENS_MS = {"int8": 11.0, "fp32": 24.1}
"""The issue's starting point, measured before the project began (../shared/measurements.md): all
six blocks of all-MiniLM-L6-v2, a plain forward pass at batch 1 and 128 tokens on 2 threads, in fp32
and with ``quantize_dynamic`` (per-channel weights, full-range activations). The 8 ms target was
set against the 11 ms int8 figure."""


def reference_forwards(text: str, scorer: LocalScorer, torch_scorer: LocalScorer) -> dict[str, Callable[[], object]]:
    """That starting point, rebuilt here, as calls timed beside the scorer in the same run.

    This VM's speed drifts by up to 2x between phases, so an absolute figure from another day is no
    yardstick; the same model timed in the same run is. ``reference_int8`` and ``reference_fp32``
    are bare forward passes over ``text``'s tokens, as that probe timed them; ``int8_forward`` is
    the scorer's own int8 model over the same tokens (its forward pass and softmax,
    ``inference.window_probabilities``), for a like-for-like ratio (a ``score`` call adds
    tokenizing, windowing and building the result), and ``int8_torch_forward`` the same model's
    int8 on torch. All are built and run on the scorer's
    inference thread (each call hands over to it, as a scorer call does), so they share one OpenMP
    team.
    """
    import torch
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    from guardrail.model.network import load_encoder

    executor = inference_thread()[0]

    def build() -> tuple[dict[str, torch.nn.Module], dict[str, torch.Tensor]]:
        models = {}
        for precision in ("int8", "fp32"):
            model = load_encoder(6).eval()
            if precision == "int8":
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # quantize_dynamic's deprecation notice
                    model = quantize_dynamic(  # type: ignore[no-untyped-call]
                        model, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8
                    )
            models[f"reference_{precision}"] = model
        tokenizer = load_tokenizer()
        ids = torch.tensor([[tokenizer.cls_token_id, *tokenizer.encode(text), tokenizer.sep_token_id]])
        return models, {
            "input_ids": ids,
            "attention_mask": torch.ones_like(ids),
            "token_type_ids": torch.zeros_like(ids),
        }

    models, inputs = executor.submit(build).result()
    as_arrays = {name: tensor.numpy() for name, tensor in inputs.items()}

    def forward(model: torch.nn.Module) -> object:
        with torch.inference_mode():
            return model(**inputs)

    calls: dict[str, Callable[[], object]] = {
        name: partial(lambda m: executor.submit(forward, m).result(), model) for name, model in models.items()
    }
    for name, built in (("int8_forward", scorer.module), ("int8_torch_forward", torch_scorer.module)):
        calls[name] = partial(lambda m: executor.submit(inference.window_probabilities, m, as_arrays).result(), built)
    return calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=200, help="timed calls per latency figure")
    parser.add_argument("--cold-runs", type=int, default=3)
    parser.add_argument(
        "--previous-weights",
        type=Path,
        help="a weights folder (e.g. the model before a retraining) to time as int8 'previous' beside the shipped one",
    )
    args = parser.parse_args()

    tokenizer = load_tokenizer()
    scorers = {"int8": LocalScorer(precision="int8", cache_size=0), "fp32": LocalScorer(precision="fp32", cache_size=0)}
    # The same weights without their calibration statistics: int8 with the FFN down-projections in fp32.
    unsmoothed_dir = Path(tempfile.mkdtemp()) / "weights"
    shutil.copytree(WEIGHTS_DIR, unsmoothed_dir, ignore=shutil.ignore_patterns("*.py", "__pycache__", "*.md"))
    weights_file = unsmoothed_dir / WEIGHTS_FILE
    save_file({k: v for k, v in load_file(str(weights_file)).items() if not k.startswith("calib.")}, str(weights_file))
    variants = {
        **scorers,
        "int8_torch": LocalScorer(precision="int8", engine="torch", cache_size=0),
        "int8_unsmoothed": LocalScorer(precision="int8", weights_dir=unsmoothed_dir, cache_size=0),
    }
    if args.previous_weights:
        variants["previous_int8"] = LocalScorer(precision="int8", weights_dir=args.previous_weights, cache_size=0)
    if variants["int8"].engine != "openvino" or variants["int8_unsmoothed"].engine != "torch":
        raise SystemExit("expected int8 on OpenVINO and the unsmoothed weights on torch; is openvino installed?")
    cached = LocalScorer(precision="int8")
    results: dict[str, object] = {"model_id": scorers["int8"].model_id, "latency_batch1": {}, "throughput": {}}
    if args.previous_weights:
        results["previous_model_id"] = variants["previous_int8"].model_id

    for tokens in (64, 128, 256):
        text = text_of_tokens(tokenizer, tokens)
        row: dict[str, Any] = {}
        calls: dict[str, Callable[[], object]] = {name: partial(s.score, text) for name, s in variants.items()}
        if tokens == 128:
            calls.update(reference_forwards(text, scorers["int8"], variants["int8_torch"]))
        # Interleave the variants so that machine noise hits all alike.
        samples: dict[str, list[float]] = {name: [] for name in calls}
        for _ in range(4):
            for name, call in calls.items():
                samples[name] += timings_ms(call, args.repeat // 4)
        for name in calls:
            row[name] = summary(samples[name])
        row["fp32_over_int8_p50"] = round(row["fp32"]["p50_ms"] / row["int8"]["p50_ms"], 2)
        row["int8_torch_over_int8_p50"] = round(row["int8_torch"]["p50_ms"] / row["int8"]["p50_ms"], 2)
        row["fp32_over_int8_torch_p50"] = round(row["fp32"]["p50_ms"] / row["int8_torch"]["p50_ms"], 2)
        row["unsmoothed_over_int8_p50"] = round(row["int8_unsmoothed"]["p50_ms"] / row["int8"]["p50_ms"], 2)
        if "previous_int8" in row:
            row["previous_int8_over_int8_p50"] = round(row["previous_int8"]["p50_ms"] / row["int8"]["p50_ms"], 2)
            print(
                f"  previous model {variants['previous_int8'].model_id}: "
                f"int8 p50 {row['previous_int8']['p50_ms']:.2f} ms "
                f"({row['previous_int8_over_int8_p50']}x the shipped model's)",
                flush=True,
            )
        if tokens == 128:
            # The scorer's p50 scaled to the phase in which the reference was measured at 11 ms / 24.1 ms.
            row["int8_at_reference_speed_ms"] = {
                p: round(row["int8"]["p50_ms"] * ms / row[f"reference_{p}"]["p50_ms"], 2)
                for p, ms in REFERENCE_128_TOKENS_MS.items()
            }
            row["reference_int8_over_int8_p50"] = round(row["reference_int8"]["p50_ms"] / row["int8"]["p50_ms"], 2)
            row["reference_int8_over_int8_forward_p50"] = round(
                row["reference_int8"]["p50_ms"] / row["int8_forward"]["p50_ms"], 2
            )
        results["latency_batch1"][f"{tokens}_tokens"] = row  # type: ignore[index]
        print(
            f"batch 1, {tokens:>3} tokens: int8 p50 {row['int8']['p50_ms']:.2f} ms p95 {row['int8']['p95_ms']:.2f} | "
            f"fp32 p50 {row['fp32']['p50_ms']:.2f} ms p95 {row['fp32']['p95_ms']:.2f} | "
            f"ratio {row['fp32_over_int8_p50']}x | int8 on torch p50 {row['int8_torch']['p50_ms']:.2f} ms "
            f"({row['int8_torch_over_int8_p50']}x the default's) | on torch with fp32 down-projections p50 "
            f"{row['int8_unsmoothed']['p50_ms']:.2f} ms",
            flush=True,
        )
        if tokens == 128:
            scaled = row["int8_at_reference_speed_ms"]
            print(
                f"  reference (6 blocks, plain forward, as measured before the project): int8 p50 "
                f"{row['reference_int8']['p50_ms']:.2f} ms (then {REFERENCE_128_TOKENS_MS['int8']}), fp32 "
                f"{row['reference_fp32']['p50_ms']:.2f} ms (then {REFERENCE_128_TOKENS_MS['fp32']}); the scorer's int8 "
                f"is {row['reference_int8_over_int8_p50']}x faster than the int8 reference (its forward pass alone "
                f"{row['int8_forward']['p50_ms']:.2f} ms, {row['reference_int8_over_int8_forward_p50']}x; on torch "
                f"{row['int8_torch_forward']['p50_ms']:.2f} ms), i.e. a "
                f"score would take {scaled['int8']} ms at the int8 reference's speed then "
                f"({scaled['fp32']} ms by fp32's)",
                flush=True,
            )

    for batch in (16, 64):
        texts = [text_of_tokens(tokenizer, 128, salt=i) for i in range(batch)]
        row = {}
        for precision, scorer in scorers.items():
            ms = summary(timings_ms(partial(scorer.score_batch, texts), max(5, args.repeat // (batch // 2)), warmup=1))
            row[precision] = {"batch_p50_ms": ms["p50_ms"], "texts_per_s": round(batch / (ms["p50_ms"] / 1e3), 1)}
        row["int8_over_fp32_throughput"] = round(row["int8"]["texts_per_s"] / row["fp32"]["texts_per_s"], 2)
        results["throughput"][f"batch_{batch}_128_tokens"] = row  # type: ignore[index]
        print(
            f"batch {batch}, 128 tokens: int8 {row['int8']['texts_per_s']} texts/s | fp32 {row['fp32']['texts_per_s']} "
            f"texts/s | ratio {row['int8_over_fp32_throughput']}x",
            flush=True,
        )

    text = text_of_tokens(tokenizer, 128)
    profiled_variants = ("int8", "int8_torch", "fp32")
    results["profile_128_tokens_ms"] = profiles = {p: time_profile(variants[p], text) for p in profiled_variants}
    for p, profiled in profiles.items():
        shares = ", ".join(f"{k} {v:.0%}" for k, v in profiled.get("operator_share", {}).items())  # type: ignore[attr-defined]
        print(
            f"{p}, 128 tokens, on the inference thread: score p50 {profiled['score_ms']:.2f} ms, of which the "
            f"forward pass {profiled['forward_ms']:.2f} ms" + (f"; operator time: {shares}" if shares else ""),
            flush=True,
        )

    cached.score(text)
    results["cache_hit"] = summary(timings_ms(lambda: cached.score(text), args.repeat * 5))
    print(f"cache hit: p50 {results['cache_hit']['p50_ms']:.4f} ms p95 {results['cache_hit']['p95_ms']:.4f} ms")  # type: ignore[index]

    results["cold_start"] = {
        "int8": cold_start("int8", args.cold_runs),
        "int8_torch": cold_start("int8", args.cold_runs, engine="torch"),
        "fp32": cold_start("fp32", args.cold_runs),
    }
    for p, c in results["cold_start"].items():  # type: ignore[attr-defined]
        print(
            f"cold start {p}: {c['total']['p50_ms'] / 1e3:.2f} s (import {c['import_ms_p50'] / 1e3:.2f} s, "
            f"load {c['load_ms_p50'] / 1e3:.2f} s), peak RSS {c['peak_rss_mb_max']} MB, "
            f"torch {'imported' if c['torch_imported'] else 'not imported'}"
        )
    shutil.rmtree(unsmoothed_dir.parent, ignore_errors=True)
    print(f"wrote {write_result('scorer', results)}")


if __name__ == "__main__":
    main()
