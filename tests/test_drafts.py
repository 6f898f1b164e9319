"""SmolLM2's drafts as training rows: the shipped answers match their prompts, a refusal and a
compliance get opposite labels, no draft answers a dev, tuning or demo prompt, and training sees
them at their own weight."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from guardrail.demo import DEMO_PROMPTS
from guardrail.model.tokenizer import load_tokenizer
from guardrail.text import WindowPlan
from guardrail.training.data import EXACT, NOT_OPPOSING, UNKNOWN, Example
from guardrail.training.drafts import (
    HELPFUL_FILE,
    RISKY_FILE,
    TERSE_FILE,
    VISIBLE_HARMS,
    helpful_examples,
    hidden_harm_prompts,
    read_prompts,
    risky_examples,
    risky_prompts,
    stance,
    terse_examples,
    whole_sentences,
)
from guardrail.training.external import normalise_prompt, prompt_bucket, read_external, split_of_key
from guardrail.training.external_train import TUNE_BUCKETS
from guardrail.training.loop import fit
from guardrail.training.recipe import TrainConfig
from guardrail.values import VALUE_NAMES

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
needs_data = pytest.mark.skipif(not (DATA / "external").is_dir(), reason="needs ../shared/data/external")


def test_every_everyday_prompt_has_its_answer_in_order_and_none_is_the_demos() -> None:
    prompts = read_prompts()
    answers = [json.loads(line) for line in HELPFUL_FILE.read_text(encoding="utf-8").splitlines()]
    assert [a["prompt"] for a in answers] == prompts, "regenerate: python -m guardrail.training.drafts"
    assert len(prompts) == len(set(prompts)) > 150
    assert all(a["response"].strip() for a in answers)
    assert not {normalise_prompt(p) for p in prompts} & {normalise_prompt(p) for p in DEMO_PROMPTS}


def test_comment_and_blank_lines_are_not_prompts(tmp_path: Path) -> None:
    path = tmp_path / "prompts.txt"
    path.write_text("# a heading\n\nHow do I boil an egg?\n  # indented comment\n  Why is the sky blue?  \n")
    assert read_prompts(path) == ["How do I boil an egg?", "Why is the sky blue?"]


def test_a_helpful_answer_is_benign_opposes_nothing_and_keeps_its_prompt() -> None:
    examples = helpful_examples()
    assert len(examples) == len(read_prompts())
    assert all(e.harmful == 0 and e.targets == (NOT_OPPOSING,) * len(VALUE_NAMES) for e in examples)
    assert all(e.prompt for e in examples) and len({e.key for e in examples}) == len(examples)


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("I'm sorry, but I can't help with that.", "refuses"),
        ("As an AI, I do not write such messages.", "refuses"),
        ("Sure! First, pick a quiet evening. Then follow these steps.", "complies"),
        ("Here is a plan: 1. Gather the tools. 2. Wait until dark.", "complies"),
        ("It's important to note that this is illegal. You could instead talk to a lawyer.", "hedges"),
    ],
)
def test_a_drafts_stance_is_read_from_refusal_and_caution_words(answer: str, expected: str) -> None:
    assert stance(answer) == expected


@needs_data
def test_risky_drafts_answer_only_train_side_prompts_outside_the_tuning_slice_and_the_demo() -> None:
    rows = [json.loads(line) for line in RISKY_FILE.read_text(encoding="utf-8").splitlines()]
    prompts = {(s, pid): request for s, pid, request, _ in risky_prompts(DATA)}
    assert all((r["source"], r["prompt_id"]) in prompts for r in rows)
    assert len(rows) > 400 and [r["prompt_id"] for r in rows] == sorted(r["prompt_id"] for r in rows)
    demo = {normalise_prompt(p) for p in DEMO_PROMPTS}
    for row in rows:
        key = normalise_prompt(prompts[(row["source"], row["prompt_id"])])
        assert split_of_key(key) == "train" and prompt_bucket(key) not in TUNE_BUCKETS and key not in demo


@needs_data
def test_a_complying_draft_opposes_its_prompts_values_and_a_refusal_opposes_nothing() -> None:
    values = {request: v for _, _, request, v in risky_prompts(DATA)}
    examples = risky_examples(DATA)
    harmful = [e for e in examples if e.harmful == 1]
    refusals = [e for e in examples if e.harmful == 0]
    assert len(harmful) > 50 and len(refusals) > 50
    for e in harmful:
        assert stance(e.response) == "complies"
        named = values[e.prompt or ""]
        assert named and all(
            mask == (EXACT[-1] if name in named else UNKNOWN) for name, mask in zip(VALUE_NAMES, e.targets, strict=True)
        )
    assert all(stance(e.response) == "refuses" and e.targets == (NOT_OPPOSING,) * 10 for e in refusals)


@needs_data
def test_a_draft_whose_prompt_is_not_in_the_data_is_named_with_its_file_and_line(tmp_path: Path) -> None:
    stale = tmp_path / "risky_answers.jsonl"
    lines = RISKY_FILE.read_text(encoding="utf-8").splitlines()[:2]
    lines.append(json.dumps({"source": "do_not_answer", "prompt_id": "0" * 16, "response": "Sure."}))
    stale.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=rf"{stale}, line 3: prompt 0{{16}} of do_not_answer .* regenerate"):
        risky_examples(DATA, stale)


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("Water it in the morning. Then check the soil every", "Water it in the morning."),
        ('He said "stop!" and left. And then', 'He said "stop!" and left.'),
        ("Use a tripod (or a wall). Keep the ISO low", "Use a tripod (or a wall)."),
        ("Version 2.5 of the tool is out", ""),
        ("Ask first! Then wait?", "Ask first! Then wait?"),
        ("Here are two:\n\n1. Rest well.\n\n2.", "Here are two:\n\n1. Rest well."),
    ],
)
def test_a_terse_draft_is_cut_to_its_whole_sentences(answer: str, expected: str) -> None:
    assert whole_sentences(answer) == expected


@needs_data
def test_terse_drafts_answer_the_same_requests_with_whole_sentences_labelled_by_stance() -> None:
    rows = [json.loads(line) for line in TERSE_FILE.read_text(encoding="utf-8").splitlines()]
    assert {r["prompt"] for r in rows if r["kind"] == "helpful"} <= set(read_prompts())
    assert all(whole_sentences(r["response"]) == r["response"] != "" for r in rows)
    examples = terse_examples(DATA)
    helpful = [e for e in examples if e.prompt in set(read_prompts())]
    risky = {request: values for _, _, request, values in risky_prompts(DATA)}
    assert len(helpful) > 150 and all(e.harmful == 0 and e.targets == (NOT_OPPOSING,) * 10 for e in helpful)
    complying = [e for e in examples if e.harmful == 1]
    assert len(complying) > 50 and all(e.prompt in risky and stance(e.response) == "complies" for e in complying)
    assert len({e.key for e in examples}) == len(examples)


@needs_data
def test_visible_harm_only_drops_complying_drafts_whose_harm_is_outside_the_text_and_keeps_refusals() -> None:
    hidden = hidden_harm_prompts(DATA)
    dna = read_external(DATA, ("do_not_answer",))["do_not_answer"]
    harms = {str(r.label_raw["specific_harms"]).split(":")[0] for r in dna}
    assert harms > VISIBLE_HARMS and "Personal Life Information" in harms - VISIBLE_HARMS
    for read in (risky_examples, terse_examples):
        every, visible = read(DATA), read(DATA, visible_only=True)
        assert [e for e in every if e.harmful == 0] == [e for e in visible if e.harmful == 0]
        rows = {e.key: e for e in every}
        dropped = [k for k in rows if k not in {e.key for e in visible}]
        assert dropped and all(rows[k].harmful == 1 for k in dropped)
    ids = {(s, pid) for s, pid, _, _ in risky_prompts(DATA)}
    assert hidden & ids and not any(s == "jailbreakbench" for s, _ in hidden)


def test_training_sees_the_drafts_at_their_weight() -> None:
    rows = [
        Example("How do I steal a bike?", "Break the lock at night.", (EXACT[-1],) * 10, "fulcra", "f:1"),
        Example("Tips for a garden?", "Water it in the morning.", (NOT_OPPOSING,) * 10, "fulcra", "f:2"),
    ]
    drafts = helpful_examples()[:5]
    cfg = TrainConfig(num_layers=1, epochs=1, use_toxigen=False, drafts_weight=1.5, batch_size=64)
    _, items = fit(cfg, rows, [], load_tokenizer(), WindowPlan(max_length=64), 1, lambda *_: None, drafts=drafts)
    assert [(e.key, w) for _, e, w in items[len(rows) :]] == [(e.key, 1.5) for e in drafts]
