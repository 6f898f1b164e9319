"""Reading the training and evaluation data in ../shared/data, defensively, and preparing it for training.

FULCRA annotations are real and noisy ("security: -1", "benevolence: 1", "conformity: 1+",
"achievement: =1", an 11th type "humility"). Everything that cannot be read is counted in a
``ParseReport`` and never silently dropped.

Targets are *allowed-class masks*: for each value, which of (oppose, unrelated, support) the
example admits. An exact label admits one class; an unknown value admits all three (no loss);
a weak label such as "does not oppose" admits two. One loss formula covers all data sources.

What training sees of a row is an ``Item``: its windows (``text.make_windows``), the example and a
sample weight (``training_items``).
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from guardrail.text import WindowPlan, make_windows
from guardrail.training.recipe import TrainConfig
from guardrail.values import VALUE_NAMES

Split = Literal["train", "dev", "test"]
Mask = tuple[bool, bool, bool]  # oppose, unrelated, support

EXACT: dict[int, Mask] = {-1: (True, False, False), 0: (False, True, False), 1: (False, False, True)}
UNKNOWN: Mask = (True, True, True)
NOT_OPPOSING: Mask = (False, True, True)

# Humility is folded into conformity, as Touché23-ValueEval maps it ("restraint ... norms").
_ALIASES = {"humility": "conformity", "self-direction": "self_direction", "self direction": "self_direction"}
_LABEL = re.compile(r"^\s*(?P<name>[A-Za-z_\- ]+?)\s*:\s*(?P<mark>[^:]*)$")


@dataclass(frozen=True)
class Example:
    """One (prompt, response) pair with a target mask per value, in FULCRA value order."""

    prompt: str | None
    response: str
    targets: tuple[Mask, ...]
    source: str
    key: str
    items: tuple[tuple[str, int], ...] = ()
    """FULCRA's fine-grained value items ("be honest", -1 | +1), where the source has them."""
    harmful: int | None = None
    """A source's own "harmful?" judgement (external rows), the violation loss's target where given."""
    weight: float = 1.0
    """A per-row factor on the sample weight (external rows: balancing harmful and benign within a source)."""

    def label(self, value_index: int) -> int | None:
        """The exact label of one value, or None where the target is not exact."""
        for label, mask in EXACT.items():
            if self.targets[value_index] == mask:
                return label
        return None

    @property
    def violates(self) -> bool:
        """Whether the response opposes at least one value (gold)."""
        return any(self.label(i) == -1 for i in range(len(VALUE_NAMES)))


@dataclass
class ParseReport:
    """What reading a data file kept, folded and dropped."""

    path: str
    rows: int = 0
    kept: int = 0
    dropped_rows: list[str] = field(default_factory=list)
    dropped_labels: Counter[str] = field(default_factory=Counter)
    folded_labels: Counter[str] = field(default_factory=Counter)
    odd_spellings: Counter[str] = field(default_factory=Counter)
    conflicts: int = 0

    def summary(self) -> str:
        parts = [f"{self.path}: {self.kept}/{self.rows} rows kept"]
        if self.dropped_rows:
            parts.append(f"{len(self.dropped_rows)} rows dropped ({'; '.join(self.dropped_rows[:3])})")
        if self.folded_labels:
            parts.append("folded " + ", ".join(f"{k} x{v}" for k, v in self.folded_labels.items()))
        if self.odd_spellings:
            parts.append("read odd spellings " + ", ".join(f"'{k}' x{v}" for k, v in self.odd_spellings.items()))
        if self.dropped_labels:
            parts.append("dropped labels " + ", ".join(f"'{k}' x{v}" for k, v in self.dropped_labels.items()))
        if self.conflicts:
            parts.append(f"{self.conflicts} value(s) labelled both +1 and -1 in one row (kept -1)")
        return "; ".join(parts)


def split_of(key: str) -> Split:
    """Deterministic split by content hash: 20% test, 13% dev (early stopping, thresholds), 67% train.

    Hashing the text (not the line number) keeps a row in its split however the file is ordered.
    """
    bucket = int(hashlib.sha256(key.encode("utf-8")).hexdigest()[:8], 16) % 100
    if bucket < 20:
        return "test"
    if bucket < 33:
        return "dev"
    return "train"


def parse_label(entry: str, report: ParseReport) -> tuple[str, int] | None:
    """Read one FULCRA ``value_types`` entry into (value name, -1 | +1), or count it as dropped."""
    m = _LABEL.match(entry)
    if not m:
        report.dropped_labels[entry] += 1
        return None
    raw_name = m["name"].strip().lower()
    name = _ALIASES.get(raw_name, raw_name.replace("-", "_").replace(" ", "_"))
    if raw_name in ("humility",):
        report.folded_labels[f"{raw_name} -> {name}"] += 1
    mark = m["mark"].replace(" ", "")
    if name not in VALUE_NAMES or "1" not in mark:
        report.dropped_labels[entry] += 1
        return None
    if mark not in ("+1", "-1"):
        report.odd_spellings[mark] += 1
    return name, (-1 if "-" in mark else 1)


def split_dialogue(dialogue: str) -> tuple[str | None, str]:
    """Split FULCRA's "Human: <prompt>\\nBob: <response>" into its two parts."""
    head, sep, response = dialogue.partition("\nBob:")
    if not sep:
        return None, dialogue.strip()
    prompt = head.removeprefix("Human:").strip()
    return (prompt or None), response.strip()


def read_fulcra(path: Path | str) -> tuple[list[Example], ParseReport]:
    """Read a FULCRA-format JSONL file (``dialogue`` + ``value_types``)."""
    path = Path(path)
    report = ParseReport(path=str(path))
    examples: list[Example] = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            report.rows += 1
            try:
                row = json.loads(line)
                dialogue = row["dialogue"]
                types = row.get("value_types") or []
                if not isinstance(dialogue, str) or not isinstance(types, list):
                    raise TypeError("dialogue must be a string and value_types a list")
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                report.dropped_rows.append(f"line {lineno}: {exc}")
                continue
            prompt, response = split_dialogue(dialogue)
            if not response:
                report.dropped_rows.append(f"line {lineno}: empty response")
                continue
            labels = [0] * len(VALUE_NAMES)
            for entry in types:
                parsed = parse_label(str(entry), report)
                if parsed is None:
                    continue
                i = VALUE_NAMES.index(parsed[0])
                if labels[i] and labels[i] != parsed[1]:
                    report.conflicts += 1
                labels[i] = min(labels[i], parsed[1]) if labels[i] else parsed[1]
            items = tuple(
                (m["name"].strip().lower(), -1 if "-" in m["mark"] else 1)
                for m in (_LABEL.match(str(entry)) for entry in row.get("value_items") or [])
                if m and "1" in m["mark"]
            )
            targets = tuple(EXACT[x] for x in labels)
            examples.append(Example(prompt, response, targets, source="fulcra", key=dialogue, items=items))
            report.kept += 1
    return examples, report


def read_toxigen_statements(path: Path | str) -> tuple[list[tuple[str, str, str]], ParseReport]:
    """ToxiGen's ``statements.jsonl`` as ``(text, kind, group)``, kind "hate" or "neutral", in file order;
    rows that cannot be read, of another kind or with no text are dropped and named in the report."""
    path = Path(path)
    report = ParseReport(path=str(path))
    statements: list[tuple[str, str, str]] = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            report.rows += 1
            try:
                row = json.loads(line)
                text, kind = str(row["text"]).strip(), row["kind"]
            except (json.JSONDecodeError, KeyError) as exc:
                report.dropped_rows.append(f"line {lineno}: {exc}")
                continue
            if kind not in ("hate", "neutral"):
                report.dropped_rows.append(f"line {lineno}: unknown kind {kind!r}")
                continue
            if not text:
                report.dropped_rows.append(f"line {lineno}: empty text")
                continue
            statements.append((text, kind, str(row.get("group", ""))))
            report.kept += 1
    return statements, report


def read_toxigen(path: Path | str) -> tuple[list[Example], ParseReport]:
    """ToxiGen statements as weak labels: hateful ones oppose universalism; neutral ones oppose nothing.

    Other values of a hateful statement stay unknown (no loss): the data says nothing about them.
    """
    statements, report = read_toxigen_statements(path)
    uni = VALUE_NAMES.index("universalism")
    hateful = tuple(EXACT[-1] if i == uni else UNKNOWN for i in range(len(VALUE_NAMES)))
    neutral = tuple(NOT_OPPOSING for _ in VALUE_NAMES)
    examples = [
        Example(None, text, hateful if kind == "hate" else neutral, source="toxigen", key=text)
        for text, kind, _ in statements
    ]
    return examples, report


STOCK_REFUSALS = (
    "I'm sorry, but I can't help with that.",
    "I can't assist with this request. It could cause real harm to people.",
    "No. I won't do that: it would hurt others and may break the law.",
    "As an AI assistant, I have to decline. This request goes against my ethical guidelines.",
    "I'm not able to write that. If you like, I can explain why it is harmful instead.",
    "Sorry, I cannot provide that, because it could be used to hurt someone.",
)
"""Refusals written for ``refusal_counterfactuals``; none comes from a dataset."""


def refusal_counterfactuals(rows: list[Example]) -> list[Example]:
    """For each row whose response opposes a value, its prompt answered by a stock refusal instead.

    Labelled "opposes nothing" for every value (whether the refusal *supports* a value is left
    open). Without such pairs a harmful prompt alone can earn a violation: the FULCRA rows with a
    harmful prompt mostly have a complying response, and a model fit to them flags a bare "OK."
    as readily. Each row gets one refusal, chosen by a hash of its key (deterministic).
    """
    out = []
    for e in rows:
        if not (e.violates and e.prompt):
            continue
        pick = int(hashlib.sha256(e.key.encode()).hexdigest(), 16) % len(STOCK_REFUSALS)
        targets = tuple(NOT_OPPOSING for _ in VALUE_NAMES)
        out.append(Example(e.prompt, STOCK_REFUSALS[pick], targets, source="refusal", key=f"refusal|{e.key}"))
    return out


# Touché23-ValueEval's 20 value categories -> the ten basic values (mapping from ../shared/data/README.md).
TOUCHE_CATEGORIES: dict[str, str] = {
    "Self-direction: thought": "self_direction",
    "Self-direction: action": "self_direction",
    "Stimulation": "stimulation",
    "Hedonism": "hedonism",
    "Achievement": "achievement",
    "Power: dominance": "power",
    "Power: resources": "power",
    "Face": "power",
    "Security: personal": "security",
    "Security: societal": "security",
    "Tradition": "tradition",
    "Conformity: rules": "conformity",
    "Conformity: interpersonal": "conformity",
    "Humility": "conformity",
    "Benevolence: caring": "benevolence",
    "Benevolence: dependability": "benevolence",
    "Universalism: concern": "universalism",
    "Universalism: nature": "universalism",
    "Universalism: tolerance": "universalism",
    "Universalism: objectivity": "universalism",
}
PRESENT: Mask = (True, False, True)  # the value is invoked; its direction is unknown


def _read_tsv(path: Path, report: ParseReport) -> dict[str, dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    if not rows:
        raise ValueError(f"{path}: empty file")
    header, out = rows[0], {}
    for lineno, row in enumerate(rows[1:], 2):
        if len(row) != len(header):
            report.dropped_rows.append(f"{path.name} line {lineno}: {len(row)} fields, header has {len(header)}")
            continue
        out[row[0]] = dict(zip(header, row, strict=True))
    return out


def read_touche(
    folder: Path | str, splits: tuple[str, ...] = ("training", "validation")
) -> tuple[list[Example], ParseReport]:
    """Touché23-ValueEval arguments as value-*presence* targets (CC BY-SA 4.0, Mirzakhmedova et al. 2023).

    The labels say which values an argument resorts to, never its direction: an invoked value
    admits "oppose" or "support", one not invoked admits "unrelated". The conclusion and stance
    become the prompt, the premise the response.
    """
    folder = Path(folder)
    report = ParseReport(path=str(folder))
    examples: list[Example] = []
    for split in splits:
        arguments = _read_tsv(folder / f"arguments-{split}.tsv", report)
        labels = _read_tsv(folder / f"labels-{split}.tsv", report)
        missing = [c for c in TOUCHE_CATEGORIES if labels and c not in next(iter(labels.values()))]
        if missing:
            raise ValueError(f"{folder / f'labels-{split}.tsv'}: missing value categories {missing}")
        for arg_id, arg in arguments.items():
            report.rows += 1
            row = labels.get(arg_id)
            premise = arg.get("Premise", "").strip()
            if row is None or not premise:
                report.dropped_rows.append(f"{split} {arg_id}: {'no labels' if row is None else 'empty premise'}")
                continue
            present = {TOUCHE_CATEGORIES[c] for c, mark in row.items() if c in TOUCHE_CATEGORIES and mark == "1"}
            targets = tuple(PRESENT if v in present else EXACT[0] for v in VALUE_NAMES)
            prompt = f"{arg.get('Conclusion', '').strip()} ({arg.get('Stance', '').strip()})"
            examples.append(Example(prompt, premise, targets, source="touche23", key=f"touche23:{arg_id}"))
            report.kept += 1
    return examples, report


def gold_labels(examples: list[Example]) -> np.ndarray:
    return np.array([[ex.label(i) or 0 for i in range(len(VALUE_NAMES))] for ex in examples])


Window = dict[str, list[int]]
Item = tuple[list[Window], Example, float]  # windows trained on, example, sample weight


def training_items(
    cfg: TrainConfig, rows: list[Example], aux: list[Example], tokenizer: Any, plan: WindowPlan
) -> tuple[list[Item], dict[int, list[Window]]]:
    """What ``loop.fit`` trains on: FULCRA ``rows`` (``cfg.fulcra_weight``), weak ``aux`` rows without their
    prompt (``cfg.toxigen_weight``) and any refusal counterfactuals (``cfg.refusal_weight``); and,
    with ``cfg.prompt_dropout``, the prompt-free windows of each row that has a prompt, by index."""
    # By default training sees the first window of each response; inference aggregates over all
    # windows. With ``all_windows`` training aggregates the same way (multiple-instance learning:
    # the label describes the whole response, and a later window may hold what earned it).
    keep = slice(None) if cfg.all_windows else slice(1)
    items: list[Item] = [
        (make_windows(tokenizer, e.response, e.prompt, plan)[keep], e, cfg.fulcra_weight) for e in rows
    ]
    bare = (
        {j: make_windows(tokenizer, e.response, None, plan)[keep] for j, e in enumerate(rows) if e.prompt}
        if cfg.prompt_dropout > 0
        else {}
    )
    items += [(make_windows(tokenizer, e.response, None, plan)[keep], e, cfg.toxigen_weight) for e in aux]
    if cfg.refusal_weight > 0:
        items += [
            (make_windows(tokenizer, e.response, e.prompt, plan)[keep], e, cfg.refusal_weight)
            for e in refusal_counterfactuals(rows)
        ]
    return items, bare
