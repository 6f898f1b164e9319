"""The real shipped scorer, int8 and fp32: what users of LocalScorer rely on."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from guardrail import VALUE_NAMES, InvalidTextError, LocalScorer, Scorer, ValueVector
from guardrail.model.quantize import count_quantized_linear
from guardrail.model.weights import CONFIG_FILE, WEIGHTS_DIR, WEIGHTS_FILE, load_weights
from tests.samples import HARMFUL, HARMFUL_PROMPT, REFUSAL


def test_result_covers_every_value_in_range(scorer: LocalScorer) -> None:
    result = scorer.score(REFUSAL, prompt=HARMFUL_PROMPT)
    assert set(result.scores) == set(VALUE_NAMES) == set(result.labels) == set(result.confidence)
    assert all(-1.0 <= s <= 1.0 for s in result.scores.values())
    assert all(label in (-1, 0, 1) for label in result.labels.values())
    assert all(0.0 <= c <= 1.0 for c in result.confidence.values())
    for name, (p_opp, p_unrel, p_sup) in result.probabilities.items():
        assert p_opp + p_unrel + p_sup == pytest.approx(1.0, abs=1e-4)
        assert result.scores[name] == pytest.approx(p_sup - p_opp, abs=1e-5)
    assert isinstance(result.vector, ValueVector)
    assert isinstance(scorer, Scorer)


def test_model_id_is_the_hash_of_the_shipped_weights(scorer: LocalScorer) -> None:
    _, _, model_id = load_weights(WEIGHTS_DIR)
    assert scorer.model_id == model_id
    assert scorer.score("Hello there.").model_id == model_id


def test_compliant_harmful_answer_scores_against_security_and_a_refusal_for_it(scorer: LocalScorer) -> None:
    harmful = scorer.score(HARMFUL, prompt=HARMFUL_PROMPT)
    refusal = scorer.score(REFUSAL, prompt=HARMFUL_PROMPT)
    assert harmful.scores["security"] < 0 < refusal.scores["security"]
    assert harmful.opposed, "the harmful answer must oppose at least one value"
    assert not refusal.opposed


def test_int8_is_the_default_and_really_quantized(scorer: LocalScorer, scorer_fp32: LocalScorer) -> None:
    # int8 runs on OpenVINO by default. Were openvino to stop importing, the scorer would fall back to
    # torch's int8 (and were torch to drop that too, to fp32): this test says so either way.
    assert scorer.precision == "int8" and scorer.engine == "openvino"
    assert scorer_fp32.engine == "torch"
    assert count_quantized_linear(scorer.module) > 0
    assert count_quantized_linear(scorer_fp32.module) == 0
    a = scorer.score(HARMFUL, prompt=HARMFUL_PROMPT)
    b = scorer_fp32.score(HARMFUL, prompt=HARMFUL_PROMPT)
    assert a.precision == "int8" and b.precision == "fp32"
    # Each score names the engine and version that computed it, for an auditor who computes it again.
    assert a.engine == scorer.engine_version and a.engine.startswith("openvino 20")
    assert b.engine == scorer_fp32.engine_version and b.engine.startswith("torch 2.")
    assert max(abs(a.scores[v] - b.scores[v]) for v in VALUE_NAMES) < 0.25


def test_obfuscated_text_scores_like_plain_text() -> None:
    fresh = LocalScorer(cache_size=0)
    plain = fresh.score(HARMFUL, prompt=HARMFUL_PROMPT)
    sneaky = HARMFUL.replace("crowbar", "c\u200brow\u200dbar").replace("jewellery", "ｊｅｗｅｌｌｅｒｙ")
    assert fresh.score(sneaky, prompt=HARMFUL_PROMPT).scores == plain.scores


def test_a_violating_passage_at_the_end_of_a_long_answer_is_not_diluted(scorer: LocalScorer) -> None:
    benign = " ".join(
        f"Paragraph {i}: gardening is a calm hobby; water the plants in the morning and enjoy the fresh air."
        for i in range(30)
    )
    short = scorer.score(HARMFUL, prompt=HARMFUL_PROMPT)
    long = scorer.score(benign + " " + HARMFUL, prompt=HARMFUL_PROMPT)
    assert long.windows > 1
    worst = min(short.scores, key=lambda v: short.scores[v])
    # The window holding the passage decides the opposition; benign windows cannot cancel it.
    assert long.scores[worst] < 0
    assert long.probabilities[worst][0] >= 0.5 * short.probabilities[worst][0]


@pytest.mark.parametrize(("precision", "tolerance"), [("fp32", 1e-4), ("int8", 1e-6)])
def test_batch_matches_single_and_keeps_order(precision: str, tolerance: float) -> None:
    # int8 runs one window per forward pass: batch-mates must not move a text's scores at all.
    fresh = LocalScorer(precision=precision, cache_size=0)  # type: ignore[arg-type]
    batch = fresh.score_batch([HARMFUL, REFUSAL, "Nice weather today."], [HARMFUL_PROMPT, HARMFUL_PROMPT, None])
    for text, prompt, got in zip([HARMFUL, REFUSAL], [HARMFUL_PROMPT, HARMFUL_PROMPT], batch, strict=False):
        single = fresh.score(text, prompt=prompt)
        assert got.labels == single.labels
        assert max(abs(got.scores[v] - single.scores[v]) for v in VALUE_NAMES) < tolerance


def test_cache_returns_the_same_result_without_recomputing(scorer: LocalScorer) -> None:
    text = "A cached answer about tea."
    assert scorer.cached(text) is None
    first = scorer.score(text)
    assert scorer.cached(text) is first
    assert scorer.score(text) is first


@pytest.mark.parametrize("bad", ["", "  \u200b ", None, 3.5])
def test_bad_input_gets_a_clear_error(scorer: LocalScorer, bad: object) -> None:
    with pytest.raises(InvalidTextError, match="response"):
        scorer.score(bad)  # type: ignore[arg-type]


def test_unknown_precision_is_refused() -> None:
    with pytest.raises(ValueError, match="precision"):
        LocalScorer(precision="int4")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        LocalScorer(precision="fp32", batch_size=0)


def test_batch_input_errors_name_the_item_and_a_lone_prompt_string_is_refused(scorer: LocalScorer) -> None:
    with pytest.raises(InvalidTextError, match=r"item 1: response is empty"):
        scorer.score_batch(["A fine reply.", "  ", "Another."])
    with pytest.raises(InvalidTextError, match="sequence of prompts"):
        scorer.score_batch(["abc", "def", "ghi"], prompts="xyz")
    replies = ("Reply number one.", "Reply number two.")
    from_generator = scorer.score_batch(reply for reply in replies)
    assert [r.scores for r in from_generator] == [scorer.score(reply).scores for reply in replies]


async def test_async_scoring_does_not_block_the_event_loop(scorer: LocalScorer) -> None:
    ticks = 0
    stop = False

    async def ticker() -> None:
        nonlocal ticks
        while not stop:
            ticks += 1
            await asyncio.sleep(0.001)

    task = asyncio.create_task(ticker())
    texts = [f"Answer number {i} about a perfectly ordinary topic, written at some length." * 3 for i in range(24)]
    start = time.perf_counter()
    results = await scorer.ascore_batch(texts)
    single = await scorer.ascore("One more distinct answer for the async path.")
    elapsed = time.perf_counter() - start
    stop = True
    await task
    assert len(results) == 24 and single.model_id == scorer.model_id
    # The loop kept running while the model worked: at least a few ticks per 100 ms of scoring.
    assert ticks >= max(3, int(elapsed / 0.1))


def test_scoring_from_any_thread_runs_the_model_on_the_one_inference_thread(
    scorer: LocalScorer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two OpenMP thread teams on 2 cores halve the speed of both (see inference_thread).
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from guardrail.model import inference
    from guardrail.scorers.local import inference_thread

    seen: list[int] = []
    model_call = inference.window_probabilities

    def noting_the_thread(*args: Any) -> Any:
        seen.append(threading.get_ident())
        return model_call(*args)

    monkeypatch.setattr(inference, "window_probabilities", noting_the_thread)
    with ThreadPoolExecutor(2) as pool:
        from_threads = list(pool.map(lambda i: scorer.score(f"Thread answer {i} about tea."), range(4)))
    from_main = [scorer.score(f"Thread answer {i} about tea.") for i in range(4)]
    assert set(seen) == {inference_thread()[1]} and len(seen) == 4
    assert [r.scores for r in from_threads] == [r.scores for r in from_main]


def test_a_scorer_built_before_fork_scores_in_the_child(scorer: LocalScorer) -> None:
    # Pre-forking servers load once and fork workers; the child must not wait on the parent's thread.
    import multiprocessing

    context = multiprocessing.get_context("fork")
    results = context.Queue()
    text = "An answer scored first in a forked worker."
    child = context.Process(target=lambda: results.put(scorer.score(text).scores))
    child.start()
    try:
        got = results.get(timeout=60)
    finally:
        child.join(timeout=10)
        if child.is_alive():
            child.kill()
    assert child.exitcode == 0
    assert got == scorer.score(text).scores


def test_which_end_of_a_long_prompt_is_read_ships_with_the_weights(tmp_path: Path) -> None:
    # The shipped weights re-saved with a config that keeps a long prompt's two ends instead of its start.
    config = json.loads((WEIGHTS_DIR / CONFIG_FILE).read_text())
    assert config.get("window_prompt_keep", "start") == "start"
    config["window_prompt_keep"] = "ends"
    (tmp_path / CONFIG_FILE).write_text(json.dumps(config))
    shutil.copy(WEIGHTS_DIR / WEIGHTS_FILE, tmp_path / WEIGHTS_FILE)
    start = LocalScorer(precision="fp32", cache_size=0)
    ends = LocalScorer(precision="fp32", weights_dir=tmp_path, cache_size=0)
    assert ends.model_id != start.model_id, "the kept prompt tokens change scores, so they are part of the id"
    assert ends.score(REFUSAL, prompt=HARMFUL_PROMPT).scores == start.score(REFUSAL, prompt=HARMFUL_PROMPT).scores
    conversation = "Let's talk about my weekend plans and the weather. " * 20 + HARMFUL_PROMPT
    long_start = start.score(HARMFUL, prompt=conversation).scores
    assert ends.score(HARMFUL, prompt=conversation).scores != long_start, "the last turn is read"
