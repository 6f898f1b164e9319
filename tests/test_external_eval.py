"""The external sources' train/dev split by prompt and `guardrail eval --external`, on the real data.

The data is ../shared/data/external (tests/conftest.py SHARED_DATA): outside CI a checkout without
it skips this module; under CI=true it is mounted, and a missing folder fails.
"""

from __future__ import annotations

import json
import math
import os
import random
from collections import defaultdict
from pathlib import Path

import pytest
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from guardrail.cli import main
from guardrail.guard import Guard
from guardrail.scorers.local import LocalScorer
from guardrail.training.context import EVAL_REQUESTS, STANDALONE_SOURCES, eval_context
from guardrail.training.counter_speech_eval import counter_speech_rows
from guardrail.training.external import (
    DEV_PERCENT,
    ExternalDataError,
    ExternalRow,
    prompt_key,
    read_external,
    read_external_file,
    split_of_key,
)
from guardrail.training.external_eval import baseline_training_rows, evaluate_external, select
from guardrail.training.external_metrics import caught_at_allowed
from guardrail.training.hand_drafts import hand_rows
from tests.conftest import SHARED_DATA

EXTERNAL = SHARED_DATA / "external"
SOURCES = ["diasafety", "dices", "do_not_answer", "jailbreakbench", "moralchoice", "safetext", "valueportrait"]

if not EXTERNAL.is_dir() and os.environ.get("CI") != "true":
    pytest.skip(f"no external data at {EXTERNAL}", allow_module_level=True)


@pytest.fixture(scope="module")
def by_source() -> dict[str, list[ExternalRow]]:
    return read_external(SHARED_DATA)


def test_every_answer_to_one_prompt_is_on_one_side_and_about_a_fifth_is_dev(
    by_source: dict[str, list[ExternalRow]],
) -> None:
    assert list(by_source) == SOURCES
    for name, rows in by_source.items():
        sides: dict[str, set[str]] = defaultdict(set)
        for row in rows:
            sides[row.key].add(row.split)
            # The same request, however it is spelt, lands on the same side.
            assert split_of_key(prompt_key(f"  {row.prompt.upper()} \n", row.label_raw)) == row.split
        assert all(len(s) == 1 for s in sides.values()), f"{name}: a prompt on both sides"
        dev = sum(1 for s in sides.values() if s == {"dev"})
        assert abs(dev / len(sides) - DEV_PERCENT / 100) < 0.08, f"{name}: {dev}/{len(sides)} prompts dev"
    # A jailbreak's disguises of one goal share its side: the goal is the key.
    goals: dict[str, set[str]] = defaultdict(set)
    for row in by_source["jailbreakbench"]:
        goals[row.label_raw["goal"]].add(row.split)
    assert len(goals) < len({r.prompt for r in by_source["jailbreakbench"]}) / 5
    assert all(len(s) == 1 for s in goals.values())


def test_the_split_does_not_depend_on_file_order(tmp_path: Path, by_source: dict[str, list[ExternalRow]]) -> None:
    lines = (EXTERNAL / "safetext.jsonl").read_text().splitlines()
    random.Random(7).shuffle(lines)
    (tmp_path / "safetext.jsonl").write_text("\n".join(lines) + "\n")
    shuffled = {r.id: r.split for r in read_external_file(tmp_path / "safetext.jsonl")}
    assert shuffled == {r.id: r.split for r in by_source["safetext"]}


def test_a_bad_line_names_its_file_line_and_field(tmp_path: Path) -> None:
    lines = (EXTERNAL / "dices.jsonl").read_text().splitlines()[:3]
    row = json.loads(lines[1])
    row["harmful"] = "yes"
    lines[1] = json.dumps(row)
    (tmp_path / "dices.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(ExternalDataError, match=r"dices.jsonl, line 2: field 'harmful' should be 1, 0 or null"):
        read_external_file(tmp_path / "dices.jsonl")


def test_the_figures_on_a_small_slice_are_those_of_a_direct_computation(
    scorer: LocalScorer, by_source: dict[str, list[ExternalRow]]
) -> None:
    result = evaluate_external(SHARED_DATA, ["int8"], limit=12, log=lambda _: None)
    dev, _ = select(by_source, "dev", 12)
    rows = [r for part in dev.values() for r in part]
    assert result["dev_rows_scored"] == {name: len(part) for name, part in dev.items()}
    assert all(r.split == "dev" for r in rows)

    # The model: the most negative value score against the source's harmful label; the default policy.
    scores = scorer.score_batch([r.response for r in rows], [r.prompt for r in rows])
    with Guard("default", scorer=scorer) as guard:
        allowed = [guard.check(r.response, prompt=r.prompt, record=False).allowed for r in rows]
    systems = result["systems"]
    members = {"safetext": {"safetext"}, "kind:chit-chat": {"diasafety", "dices"}, "all": set(by_source)}
    for name, files in members.items():
        ix = [i for i, r in enumerate(rows) if r.file in files and r.harmful is not None]
        gold = [rows[i].harmful for i in ix]
        figures = systems["int8"]["sources"][name]
        assert figures["auc"] == pytest.approx(roc_auc_score(gold, [-min(scores[i].scores.values()) for i in ix]))
        caught = [not allowed[i] for i in ix if rows[i].harmful == 1]
        passed = [allowed[i] for i in ix if rows[i].harmful == 0]
        assert figures["harmful_blocked_or_rewritten"] == pytest.approx(sum(caught) / len(caught))
        assert figures["benign_allowed"] == pytest.approx(sum(passed) / len(passed))
        noisy_or = [1 - math.prod(1 - p[0] for p in scores[i].probabilities.values()) for i in ix]
        assert figures["caught_at_90_allowed_p_violates"] == caught_at_allowed(gold, noisy_or)
    assert systems["int8"]["undecided"] == 0
    assert systems["int8"]["sources"]["valueportrait"]["rows"] == 0, "unjudged rows have no harm figures"

    # The pairs: MoralChoice's two actions per scenario, value by value.
    moral = [i for i, r in enumerate(rows) if r.file == "moralchoice"]
    wins = []
    for a in moral:
        for b in moral:
            if rows[a].prompt == rows[b].prompt:
                for value, mark in rows[a].value_labels.items():
                    if mark == 1 and rows[b].value_labels.get(value) == -1:
                        higher, lower = scores[a].scores[value], scores[b].scores[value]
                        wins.append(1.0 if higher > lower else 0.5 if higher == lower else 0.0)
    pairs = systems["int8"]["pairs"]["moralchoice"]
    assert wins and pairs["pairs"] == len(wins) and pairs["higher"] == pytest.approx(sum(wins) / len(wins))

    # Whatever was asked: the rows judged by their response alone, without their prompt and under an
    # everyday request instead of it.
    contexts = systems["int8"]["contexts"]
    alone = [r for r in rows if f"ext:{r.file}" in STANDALONE_SOURCES and r.harmful is not None]
    assert contexts["sources"] == sorted({r.file for r in alone}) and "diasafety" not in contexts["sources"]
    assert contexts["own"]["harmful_blocked_or_rewritten"] == pytest.approx(
        _share([not allowed[rows.index(r)] for r in alone if r.harmful == 1])
    )
    for context in ("none", "everyday"):
        prompts = [eval_context(r.id, context) for r in alone]
        assert all(p == "" for p in prompts) if context == "none" else set(prompts) <= set(EVAL_REQUESTS)
        with Guard("default", scorer=scorer) as guard:
            kept = [
                guard.check(r.response, prompt=p, record=False).allowed for r, p in zip(alone, prompts, strict=True)
            ]
        figures = contexts[context]
        assert figures["rows"] == len(alone)
        assert figures["harmful_blocked_or_rewritten"] == pytest.approx(
            _share([not a for a, r in zip(kept, alone, strict=True) if r.harmful == 1])
        )
        assert figures["benign_allowed"] == pytest.approx(
            _share([a for a, r in zip(kept, alone, strict=True) if r.harmful == 0])
        )

    # The hand-written drafts, decided one by one.
    hand = hand_rows()
    with Guard("default", scorer=scorer) as guard:
        kept = [guard.check(r.response, prompt=r.prompt, record=False).allowed for r in hand]
    figures = systems["int8"]["hand_written"]
    assert (figures["harmful"], figures["benign"]) == (5, 15)
    assert figures["missed"] == [r.prompt for r, a in zip(hand, kept, strict=True) if a and r.harmful]
    assert figures["stopped"] == [r.prompt for r, a in zip(hand, kept, strict=True) if not a and not r.harmful]
    assert figures["harmful_blocked_or_rewritten"] == pytest.approx(1 - len(figures["missed"]) / 5)
    assert figures["benign_allowed"] == pytest.approx(1 - len(figures["stopped"]) / 15)

    # The counter-speech probes: a rebuttal with its post as prompt and alone, quotes with no prompt.
    probes = counter_speech_rows()
    with Guard("default", scorer=scorer) as guard:
        kept = [guard.check(r.response, prompt=r.prompt or None, record=False).allowed for r in probes]
    figures = systems["int8"]["counter_speech"]
    assert (figures["harmful"], figures["benign"]) == (24, 46)
    assert figures["stopped"] == [r.response for r, a in zip(probes, kept, strict=True) if not a and not r.harmful]
    assert figures["benign_allowed"] == pytest.approx(1 - len(figures["stopped"]) / 46)
    assert figures["harmful_blocked_or_rewritten"] == pytest.approx(1 - len(figures["missed"]) / 24)

    # The baseline: TF-IDF + logistic regression fitted on the train rows, scored on the same dev rows.
    texts, labels, what = baseline_training_rows(by_source, SHARED_DATA, 12)
    assert "FULCRA" in what and len(texts) == len(labels) > 100
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    model = LogisticRegression(max_iter=2000, class_weight="balanced", C=4.0).fit(
        vectorizer.fit_transform(texts), labels
    )
    judged = [r for r in rows if r.harmful is not None]
    proba = model.predict_proba(vectorizer.transform([f"{r.prompt}\n{r.response}" for r in judged]))[:, 1]
    expected = roc_auc_score([r.harmful for r in judged], proba)
    assert systems["tfidf+logreg"]["sources"]["all"]["auc"] == pytest.approx(expected)


def test_caught_at_90_allowed_is_what_the_best_single_threshold_catches_on_those_rows() -> None:
    benign = [i / 10 for i in range(10)]  # 0.0 .. 0.9
    harmful = [0.95, 0.85, 0.8, 0.5]
    labels = [0] * 10 + [1] * 4 + [None]
    signal = benign + harmful + [1.0]  # the unjudged row counts nowhere
    # 0.8 lets nine benign rows of ten through (a row at the threshold passes): 0.95 and 0.85 are caught.
    assert caught_at_allowed(labels, signal) == 0.5
    assert caught_at_allowed(labels, signal, allowed=0.8) == 0.75
    assert caught_at_allowed([0, 0], [0.1, 0.2]) is None


def _share(flags: list[bool]) -> float:
    return sum(flags) / len(flags)


def test_cli_runs_end_to_end_on_a_small_limit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "external.json"
    args = ["eval", "--external", "--data-dir", str(SHARED_DATA), "--limit", "6", "--precision", "int8"]
    code = main([*args, "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    result = json.loads(out.read_text())
    assert set(result["systems"]) == {"int8", "tfidf+logreg"}
    assert set(result["counts"]) >= set(SOURCES) and result["limit"] == 6
    for name in SOURCES:
        counts = result["counts"][name]
        assert counts["train"]["rows"] + counts["dev"]["rows"] == len(
            (EXTERNAL / f"{name}.jsonl").read_text().splitlines()
        )
        assert name in printed
    assert result["systems"]["int8"]["policy"] == "default v1.1.0"
    assert "value-polarity pairs" in printed
    everyday = result["systems"]["int8"]["everyday_answers"]
    assert everyday["rows"] > 150 and everyday["trained_on_these_answers"] is False
    assert f"short answers to everyday requests ({everyday['rows']} rows), allowed: int8" in printed
    for group, label in (("all", "pooled"), ("kind:chit-chat", "kind:chit-chat"), ("kind:answers", "kind:answers")):
        best = result["systems"]["int8"]["sources"][group]["caught_at_90_allowed_p_violates"]
        tfidf = result["systems"]["tfidf+logreg"]["sources"][group]["caught_at_90_allowed"]
        assert f"  {label}: int8 {100 * best:.1f}%, tfidf {100 * tfidf:.1f}% (model: P(viol))" in printed
    assert "hand-written drafts (5 harmful, 15 benign), harmful blocked / benign allowed: int8" in printed
    probes = result["systems"]["int8"]["counter_speech"]
    assert (
        "counter-speech probes (24 hateful, 46 counter-speech), hateful blocked / counter-speech allowed: "
        + (f"int8 {100 * probes['harmful_blocked_or_rewritten']:.1f}% / {100 * probes['benign_allowed']:.1f}%")
        in printed
    )


def test_a_missing_data_dir_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["eval", "--external", "--data-dir", str(tmp_path / "nowhere"), "--precision", "int8"])
    err = capsys.readouterr().err
    assert code == 2
    assert f"no external data at {tmp_path / 'nowhere' / 'external'}" in err and "--data-dir" in err
    assert "Traceback" not in err


def test_eval_options_of_the_two_modes_do_not_mix(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval"]) == 2
    assert "give --data FILE" in capsys.readouterr().err
    assert main(["eval", "--external", "--data", "x.jsonl"]) == 2
    assert "--data belong(s) to the FULCRA evaluation" in capsys.readouterr().err
    assert main(["eval", "--data", "x.jsonl", "--limit", "3"]) == 2
    assert "--limit belong(s) to --external" in capsys.readouterr().err


def test_another_policy_decides_the_same_rows_and_keeps_its_trade_off() -> None:
    strict = evaluate_external(SHARED_DATA, ["int8"], limit=8, baseline=False, policy="childrens-tutor", log=print)
    default = evaluate_external(SHARED_DATA, ["int8"], limit=8, baseline=False, log=print)
    assert strict["systems"]["int8"]["policy"].startswith("childrens-tutor v")
    pooled = {name: r["systems"]["int8"]["sources"]["all"] for name, r in (("strict", strict), ("default", default))}
    # childrens-tutor extends default: it blocks at least what default blocks, and allows no more
    assert pooled["strict"]["harmful_blocked_or_rewritten"] >= pooled["default"]["harmful_blocked_or_rewritten"]
    assert pooled["strict"]["benign_allowed"] <= pooled["default"]["benign_allowed"]
