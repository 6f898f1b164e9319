"""Context swaps in training: rows judged by their response alone are also trained without their
prompt or under an everyday request; chit-chat rows, judged by what came before, never are."""

from __future__ import annotations

import pytest
import torch

from guardrail.model.tokenizer import load_tokenizer
from guardrail.text import WindowPlan, make_windows
from guardrail.training.context import EVAL_REQUESTS, eval_context, stands_alone, swapped_prompt
from guardrail.training.data import EXACT, NOT_OPPOSING, Example
from guardrail.training.drafts import helpful_examples, read_prompts
from guardrail.training.external import normalise_prompt
from guardrail.training.loop import fit
from guardrail.training.recipe import TrainConfig

EVERYDAY = read_prompts()


def _row(source: str, n: int, harmful: int) -> Example:
    target = EXACT[-1] if harmful else NOT_OPPOSING
    return Example(
        f"Question {n} from {source}?",
        f"Answer {n}, in {source}.",
        (target,) * 10,
        source,
        f"{source}:{n}",
        harmful=harmful,
    )


def test_assistant_answers_actions_advice_drafts_and_statements_stand_alone_but_chit_chat_does_not() -> None:
    alone = ["ext:do_not_answer", "ext:jailbreakbench", "ext:moralchoice", "ext:safetext", "drafts", "toxigen"]
    assert all(stands_alone(_row(source, 1, 1)) for source in alone)
    assert not any(stands_alone(_row(source, 1, 1)) for source in ("ext:diasafety", "ext:dices", "fulcra"))


def test_each_row_gets_one_fixed_other_context_no_prompt_for_about_half_an_everyday_request_otherwise() -> None:
    rows = [_row("ext:jailbreakbench", n, n % 2) for n in range(400)]
    contexts = [swapped_prompt(e, EVERYDAY) for e in rows]
    assert contexts == [swapped_prompt(e, EVERYDAY) for e in rows], "the same context every time"
    assert 150 < contexts.count(None) < 250
    chosen = [c for c in contexts if c is not None]
    assert set(chosen) <= set(EVERYDAY) and len(set(chosen)) > 50
    assert swapped_prompt(rows[1], []) is None


@pytest.mark.parametrize("swap", [0.0, 1.0])
def test_training_swaps_the_context_of_standalone_rows_only(swap: float) -> None:
    tokenizer, plan = load_tokenizer(), WindowPlan(max_length=64)
    fulcra = [_row("fulcra", n, n % 2) for n in range(2)]
    chit_chat = [_row("ext:diasafety", n, n % 2) for n in range(3)]
    drafts = helpful_examples()[:4]
    fed: list[tuple[int, ...]] = []

    def record(module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        if module.training and isinstance(module, torch.nn.Embedding) and module.num_embeddings > 1000:
            fed.extend(tuple(int(t) for t in ids if t != tokenizer.pad_token_id) for ids in args[0])

    cfg = TrainConfig(num_layers=1, epochs=1, batch_size=64, use_toxigen=False, context_swap=swap)
    handle = torch.nn.modules.module.register_module_forward_pre_hook(record)
    try:
        fit(cfg, fulcra, [], tokenizer, plan, 1, lambda *_: None, external=chit_chat, drafts=drafts)
    finally:
        handle.remove()

    def ids(e: Example, prompt: str | None) -> tuple[int, ...]:
        return tuple(make_windows(tokenizer, e.response, prompt, plan)[0]["input_ids"])

    kept = [ids(e, e.prompt) for e in fulcra + chit_chat]
    moved = [ids(e, swapped_prompt(e, EVERYDAY) if swap else e.prompt) for e in drafts]
    assert sorted(fed) == sorted(kept + moved)
    if swap:
        assert not set(moved) & {ids(e, e.prompt) for e in drafts}


def test_the_everyday_requests_of_the_evaluation_are_not_trained_on() -> None:
    assert not {normalise_prompt(p) for p in EVAL_REQUESTS} & {normalise_prompt(p) for p in EVERYDAY}
    assert eval_context("row-1", "none") == ""
    assert eval_context("row-1", "everyday") == eval_context("row-1", "everyday") in EVAL_REQUESTS
