"""Counter-speech training rows: each hateful statement rejected and agreed with, condemned and endorsed,
with labels that follow the stance and never the words of the claim; and the held-out probes kept apart."""

from __future__ import annotations

import json
from pathlib import Path

from guardrail.model.tokenizer import load_tokenizer
from guardrail.text import WindowPlan
from guardrail.training.counter_speech import (
    AGREEING_REPLIES,
    CONDEMNING_QUOTES,
    ENDORSING_QUOTES,
    REJECTING_REPLIES,
    counter_speech_examples,
)
from guardrail.training.counter_speech_eval import counter_speech_rows
from guardrail.training.data import EXACT, NOT_OPPOSING, UNKNOWN, Example
from guardrail.training.loop import fit
from guardrail.training.recipe import TrainConfig
from guardrail.values import VALUE_NAMES

UNI = VALUE_NAMES.index("universalism")


def _statements(tmp_path: Path, rows: list[dict[str, str]]) -> Path:
    path = tmp_path / "statements.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n", encoding="utf-8")
    return path


def test_each_hateful_statement_is_rejected_agreed_with_condemned_and_endorsed(tmp_path: Path) -> None:
    path = _statements(
        tmp_path,
        [
            {"text": "- refugees are all criminals", "kind": "hate", "group": "immigrant"},
            {"text": "refugees have started many small businesses", "kind": "neutral", "group": "immigrant"},
            {"text": "my neighbours are deaf and great cooks", "kind": "neutral", "group": "physical_disability"},
        ],
    )
    rejects, agrees, condemns, endorses = counter_speech_examples(path)
    post = "Refugees are all criminals."
    assert rejects.prompt == agrees.prompt == post, "a reply is read with the post it answers"
    assert condemns.prompt is None and endorses.prompt is None, "a quote stands alone"
    assert any(rejects.response.startswith(r) for r in REJECTING_REPLIES)
    assert rejects.response.endswith("Refugees have started many small businesses."), "partner from the same group"
    assert agrees.response.endswith(post) and agrees.response[: -len(post)].strip() in AGREEING_REPLIES
    assert "refugees are all criminals" in condemns.response and "refugees are all criminals" in endorses.response
    assert any(condemns.response == q.format(q="refugees are all criminals") for q in CONDEMNING_QUOTES)
    assert any(endorses.response == q.format(q="refugees are all criminals") for q in ENDORSING_QUOTES)
    for benign in (rejects, condemns):
        assert benign.targets[UNI] == EXACT[1], "rebutting hate supports universalism"
        assert all(m == NOT_OPPOSING for i, m in enumerate(benign.targets) if i != UNI)
        assert not benign.violates
    for hateful in (agrees, endorses):
        assert hateful.targets[UNI] == EXACT[-1] and hateful.violates
        assert all(m == UNKNOWN for i, m in enumerate(hateful.targets) if i != UNI)


def test_the_rows_are_the_same_on_every_run_and_neutral_statements_yield_none(tmp_path: Path) -> None:
    rows = [{"text": f"group {i} people are lazy", "kind": "hate", "group": "g"} for i in range(12)]
    rows += [{"text": "g people volunteer a lot", "kind": "neutral", "group": "g"}]
    path = _statements(tmp_path, rows)
    first, again = counter_speech_examples(path), counter_speech_examples(path)
    assert [(e.prompt, e.response, e.targets) for e in first] == [(e.prompt, e.response, e.targets) for e in again]
    assert len(first) == 4 * 12
    assert len({e.response.split(".")[0] for e in first[::4]}) > 3, "frames vary across statements"


def test_the_held_out_probes_share_no_framing_sentence_with_training() -> None:
    frames = [f.split("{q}")[0].strip() for f in CONDEMNING_QUOTES + ENDORSING_QUOTES] + list(
        REJECTING_REPLIES + AGREEING_REPLIES
    )
    probes = counter_speech_rows()
    assert len(probes) == 70 and sum(r.harmful == 1 for r in probes) == 24
    for probe in probes:
        for frame in frames:
            assert len(frame) < 8 or frame not in probe.response, (frame, probe.response)


def test_training_sees_the_counter_speech_rows_at_their_weight_only_when_asked(tmp_path: Path) -> None:
    (tmp_path / "toxigen").mkdir()
    _statements(
        tmp_path / "toxigen",
        [
            {"text": "refugees are all criminals", "kind": "hate", "group": "immigrant"},
            {"text": "refugees have started many small businesses", "kind": "neutral", "group": "immigrant"},
        ],
    )
    rows = [Example("Tips for a garden?", "Water it in the morning.", (NOT_OPPOSING,) * 10, "fulcra", "f:1")]
    plan, tokenizer = WindowPlan(max_length=64), load_tokenizer()
    for weight, expected in ((0.0, 0), (0.25, 4)):
        cfg = TrainConfig(data_dir=tmp_path, num_layers=1, epochs=1, counter_speech_weight=weight, batch_size=64)
        _, items = fit(cfg, rows, [], tokenizer, plan, 1, lambda *_: None)
        added = [(e.source, w) for _, e, w in items if e.source == "counter_speech"]
        assert added == [("counter_speech", weight)] * expected
