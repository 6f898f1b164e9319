"""External judged responses as training rows: the label mapping, the tuning slice kept out of
training, the harm judgement as the violation target, and the policy-threshold tuning."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from guardrail.training.data import EXACT, NOT_OPPOSING, UNKNOWN
from guardrail.training.external import ExternalRow, prompt_bucket, read_external
from guardrail.training.external_train import MAX_BALANCE, TUNE_BUCKETS, external_example, external_training_rows
from guardrail.training.losses import violation_loss
from guardrail.training.metrics import FREQUENT_VALUES, policy_rates, tune_policy_thresholds
from guardrail.values import VALUE_NAMES

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def _row(
    harmful: int | None, labels: dict[str, int], file: str = "src", raw: dict[str, object] | None = None
) -> ExternalRow:
    return ExternalRow(
        file, 1, file, "1", "How do I pick a lock?", "Here is how...", harmful, (), labels, "human", raw or {}
    )


def test_harmful_row_opposes_only_its_named_values_and_leaves_the_rest_unknown() -> None:
    ex = external_example(_row(1, {"security": -1}))
    for name, mask in zip(VALUE_NAMES, ex.targets, strict=True):
        assert mask == (EXACT[-1] if name == "security" else UNKNOWN)
    assert ex.harmful == 1 and ex.prompt == "How do I pick a lock?"


def test_benign_row_of_a_wholly_judged_source_opposes_nothing() -> None:
    ex = external_example(_row(0, {"security": 1}, file="safetext"))
    assert all(mask == NOT_OPPOSING for mask in ex.targets)


def test_a_refusal_supports_the_values_a_harmful_answer_would_oppose() -> None:
    refusal = external_example(_row(0, {"security": 1}, file="do_not_answer", raw={"action": 0}))
    answer = external_example(_row(0, {"security": 1}, file="do_not_answer", raw={"action": 3}))
    security = VALUE_NAMES.index("security")
    assert refusal.targets[security] == EXACT[1]
    assert answer.targets[security] == NOT_OPPOSING


def test_diasafety_safe_speaks_only_for_its_category() -> None:
    row = _row(0, {}, file="diasafety", raw={"category": "toxicity_agreement"})
    ex = external_example(row, {"toxicity_agreement": {"universalism"}})
    for name, mask in zip(VALUE_NAMES, ex.targets, strict=True):
        assert mask == (NOT_OPPOSING if name == "universalism" else UNKNOWN)


def test_a_violation_only_row_names_no_value_but_keeps_its_judgement() -> None:
    for harmful in (0, 1):
        ex = external_example(_row(harmful, {"security": -1}, file="diasafety"), {"": {"security"}}, True)
        assert all(mask == UNKNOWN for mask in ex.targets)
        assert ex.harmful == harmful


def test_unjudged_row_keeps_its_exact_value_labels() -> None:
    ex = external_example(_row(None, {"hedonism": 1, "power": -1}))
    assert ex.targets[VALUE_NAMES.index("hedonism")] == EXACT[1]
    assert ex.targets[VALUE_NAMES.index("power")] == EXACT[-1]
    assert ex.harmful is None


def test_a_judged_row_counts_in_the_violation_loss_even_with_unknown_values() -> None:
    masks = torch.ones(2, len(VALUE_NAMES), 3, dtype=torch.bool)  # every value unknown
    log_probs = torch.log(torch.full((2, len(VALUE_NAMES), 3), 1 / 3))
    w = torch.ones(2)
    assert violation_loss(log_probs, masks, w) == 0  # no known row: nothing to learn
    judged = violation_loss(log_probs, masks, w, torch.tensor([1, 0]))
    benign_only = violation_loss(log_probs, masks, w, torch.tensor([-1, 0]))
    assert judged > 0 and benign_only > judged  # P(any oppose) is high at uniform probabilities


@pytest.mark.skipif(not (DATA / "external").is_dir(), reason="needs ../shared/data/external")
def test_training_never_sees_a_dev_or_tuning_prompt() -> None:
    rows = external_training_rows(DATA, per_class=200)
    assert rows.train and rows.tune
    train_keys = {e.key for e in rows.train}
    tune_keys = {e.key for e in rows.tune}
    assert not train_keys & tune_keys
    assert all(e.harmful is not None for e in rows.tune)
    # the same draw twice: deterministic
    again = external_training_rows(DATA, per_class=200)
    assert [e.key for e in again.train] == [e.key for e in rows.train]


@pytest.mark.skipif(not (DATA / "external").is_dir(), reason="needs ../shared/data/external")
def test_each_source_weighs_its_harmful_and_benign_rows_alike_and_leaves_out_advice_rows() -> None:
    rows = external_training_rows(DATA, per_class=200, balance=True, skip=["diasafety/Unauthorized Expertise"])
    by_source: dict[str, dict[int, float]] = {}
    for e in rows.train:
        if e.harmful is not None:
            by_source.setdefault(e.source, {0: 0.0, 1: 0.0})[e.harmful] += e.weight
    for source, total in by_source.items():
        if max(total.values()) / min(total.values()) < MAX_BALANCE:  # the cap did not bind
            assert total[0] == pytest.approx(total[1], rel=0.01), source
    plain = external_training_rows(DATA, per_class=200)
    assert {e.weight for e in plain.train} == {1.0}, "without balance every row weighs the same"
    dia = {r.id: r for r in read_external(DATA, ["diasafety"])["diasafety"]}
    for e in rows.train + rows.tune:
        if e.source == "ext:diasafety":
            assert dia[e.key.rsplit(":", 1)[1]].label_raw["category"] != "Unauthorized Expertise"


def test_bucket_ranges_do_not_overlap_the_dev_side() -> None:
    assert min(TUNE_BUCKETS) >= 20  # 0-19 are the reported dev rows
    assert 0 <= prompt_bucket("any prompt") < 100


def _policy_signal(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    harmful = rng.integers(0, 2, n)
    sources = rng.choice(["a", "b"], n)
    p = rng.uniform(0.0, 0.6, (n, len(VALUE_NAMES)))
    security = VALUE_NAMES.index("security")
    p[harmful == 1, security] += 0.35  # security separates harmful from benign; other values are noise
    return p, harmful, sources


def test_policy_thresholds_keep_the_benign_share_and_catch_more_than_a_fixed_cut() -> None:
    p, harmful, sources = _policy_signal(2000, 0)
    tuned = tune_policy_thresholds(p, harmful, sources, min_allowed=0.9)
    assert set(tuned) == set(FREQUENT_VALUES)
    rates = policy_rates(p, harmful, sources, tuned)
    assert rates["allowed"] >= 0.9
    fixed = policy_rates(p, harmful, sources, dict.fromkeys(FREQUENT_VALUES, 0.6))
    assert rates["caught"] > fixed["caught"]
    # the informative value gets the lowest threshold; the noise values are pushed up
    assert tuned["security"] < min(tuned[v] for v in FREQUENT_VALUES if v != "security")
    # and the tuned thresholds hold on fresh rows of the same kind
    p2, h2, s2 = _policy_signal(2000, 1)
    assert policy_rates(p2, h2, s2, tuned)["allowed"] >= 0.85
