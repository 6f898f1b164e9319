"""External judged responses as training rows: which rows, which labels, what weight.

Rows come from the TRAIN side of the external split (``external.py``; the dev side is only ever
reported on). The train side is cut once more by prompt: prompt buckets ``TUNE_BUCKETS`` form the
*tuning slice*, on which ``guardrail train`` picks the epoch and the decision thresholds of the
default policy's values; every other train-side row may be trained on.

Label mapping (a value the row says nothing about stays unknown, i.e. masked; never "unrelated"):

- ``harmful == 1``: each value the data's ``value_labels`` marks -1 (the heuristic harm category
  -> value mapping written with the data) admits only "oppose"; the rest are unknown. Rows with no
  mapped value (DICES) teach through the violation loss alone.
- ``harmful == 0``, judged as a whole (every source but DiaSafety): the response opposes nothing,
  so every value admits "does not oppose" (unrelated or support). Where the response is a refusal
  (Do-Not-Answer actions 0 "cannot assist" and 1 "refutes the prompt's opinion"), the values
  ``value_labels`` marks +1 are "support", as FULCRA labels a refusal to help with harm.
- ``harmful == 0`` in DiaSafety: "safe" there means only "not unsafe in this category", so only
  the values the category maps to admit "does not oppose"; the others stay unknown.
- ``harmful is None`` (ValuePortrait): ``value_labels`` as exact oppose / support; no violation target.

Every judged row also carries ``harmful`` as the target of the violation loss (the noisy-OR of the
ten P(oppose)). The prompt is kept as context. Per source at most ``per_class`` harmful and
``per_class`` benign rows are drawn, in a fixed hash order (deterministic, independent of file order).
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from dataclasses import dataclass, replace
from pathlib import Path

from guardrail.training.data import EXACT, NOT_OPPOSING, UNKNOWN, Example, Mask
from guardrail.training.external import ExternalRow, prompt_bucket, read_external, rows_of
from guardrail.values import VALUE_NAMES

TUNE_BUCKETS = range(20, 35)
"""Prompt buckets (of ``external.prompt_bucket``, 0-99; 0-19 are dev) held out from training to
tune thresholds and pick the epoch: about 19% of the train side."""

REFUSAL_ACTIONS = {0, 1}
"""Do-Not-Answer's ``action`` codes for a refusal: 0 cannot assist, 1 refutes the opinion."""

PARTIAL_SOURCES = {"diasafety"}
"""Sources whose "safe" speaks only for the row's own harm category."""

MAX_BALANCE = 4.0
"""Cap on the factor that balances harmful against benign rows within a source."""


def _category_values(rows: list[ExternalRow]) -> dict[str, set[str]]:
    """DiaSafety category -> the values its harmful rows are mapped to (benign rows carry none)."""
    out: dict[str, set[str]] = {}
    for r in rows:
        category = str(r.label_raw.get("category", ""))
        out.setdefault(category, set()).update(v for v, m in r.value_labels.items() if m == -1)
    return out


def _is_refusal(row: ExternalRow) -> bool:
    return row.file == "do_not_answer" and row.label_raw.get("action") in REFUSAL_ACTIONS


def external_example(
    row: ExternalRow, category_values: dict[str, set[str]] | None = None, violation_only: bool = False
) -> Example:
    """One external row as a training example (see the module docstring for the mapping).
    ``violation_only`` leaves every value unknown: the row teaches through the violation loss alone."""
    targets: list[Mask] = []
    related = (category_values or {}).get(str(row.label_raw.get("category", "")), set())
    for name in VALUE_NAMES:
        mark = row.value_labels.get(name)
        if violation_only:
            targets.append(UNKNOWN)
        elif row.harmful == 1:
            targets.append(EXACT[-1] if mark == -1 else UNKNOWN)
        elif row.harmful == 0 and row.file in PARTIAL_SOURCES:
            targets.append(NOT_OPPOSING if name in related or mark == 1 else UNKNOWN)
        elif row.harmful == 0:
            targets.append(EXACT[1] if mark == 1 and _is_refusal(row) else NOT_OPPOSING)
        else:
            targets.append(EXACT[mark] if mark in (-1, 1) else UNKNOWN)
    return Example(
        row.prompt or None,
        row.response,
        tuple(targets),
        source=f"ext:{row.file}",
        key=f"ext:{row.file}:{row.id}",
        harmful=row.harmful,
    )


def category_of(row: ExternalRow) -> str:
    """``source/category`` (e.g. ``diasafety/Unauthorized Expertise``), as ``skip`` names them."""
    return f"{row.file}/{row.label_raw.get('category', '')}"


def balanced(examples: list[Example]) -> list[Example]:
    """Weigh a source's harmful and benign rows so that each class carries half the source's
    weight (factor capped at ``MAX_BALANCE``): within a source, the writing style alone then
    cannot tell harmful from benign. Unjudged rows keep factor 1."""
    counts = {j: sum(e.harmful == j for e in examples) for j in (0, 1)}
    judged = counts[0] + counts[1]
    out = []
    for e in examples:
        factor = 1.0
        if e.harmful in (0, 1) and min(counts.values()) > 0:
            factor = min(MAX_BALANCE, judged / (2 * counts[e.harmful]))
        out.append(replace(e, weight=round(factor, 4)))
    return out


def _order(row: ExternalRow) -> str:
    return hashlib.sha256(f"external-train|{row.file}|{row.id}".encode()).hexdigest()


@dataclass(frozen=True)
class ExternalTraining:
    """The external rows ``guardrail train`` uses: rows to train on, and the tuning slice."""

    train: list[Example]
    tune: list[Example]


def external_training_rows(
    data_dir: Path,
    per_class: int,
    balance: bool = False,
    skip: Collection[str] = (),
    violation_only: Collection[str] = (),
) -> ExternalTraining:
    """Per source, at most ``per_class`` harmful and ``per_class`` benign (or unjudged) rows of the
    train side outside the tuning slice, and every judged row of the tuning slice. ``balance``
    weighs each source's classes alike; ``skip`` leaves out ``source/category`` pairs entirely;
    the rows of the pairs in ``violation_only`` name no value and teach through the violation loss."""
    train: list[Example] = []
    tune: list[Example] = []
    for rows in read_external(data_dir).values():
        side = sorted(
            (r for r in rows_of(rows, "train") if r.response.strip() and category_of(r) not in skip), key=_order
        )
        categories = _category_values(side)
        held = [r for r in side if prompt_bucket(r.key) in TUNE_BUCKETS]
        tune += [
            external_example(r, categories, category_of(r) in violation_only) for r in held if r.harmful is not None
        ]
        rest = [r for r in side if prompt_bucket(r.key) not in TUNE_BUCKETS]
        drawn = [r for judged in (1, 0, None) for r in [r for r in rest if r.harmful == judged][:per_class]]
        examples = [external_example(r, categories, category_of(r) in violation_only) for r in drawn]
        train += balanced(examples) if balance else examples
    return ExternalTraining(train, tune)
