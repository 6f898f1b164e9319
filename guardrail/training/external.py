"""The external response-level data in ../shared/data/external: its rows, and the train/dev split by prompt.

Seven public sources (Do-Not-Answer, DiaSafety, JailbreakBench artifacts, DICES, MoralChoice,
SafeText, ValuePortrait; see the data README) in one schema, one JSON object per line:
``source, id, split, prompt, response, harmful (1 | 0 | null), categories, value_labels,
label_origin, label_raw``. A source is named by its file's stem (``do_not_answer``); a file that
holds several ``source`` values (``moralchoice``: ``moralchoice-low`` and ``moralchoice-high``)
names them as its sub-sources.

The split (the one training must use too, so that dev rows stay unseen):

- every row has a *prompt key*: the request it answers, normalised (NFKC, invisible characters
  dropped, case-folded, every run of whitespace one space). For JailbreakBench the request is
  ``label_raw["goal"]``, the plain behaviour a jailbreak prompt wraps: its ~900 prompts are ~90
  goals in several disguises (GCG suffixes, PAIR rewrites, templates), and one goal on both sides
  would flatter any model. For every other source it is the prompt (the context) itself.
- the key's bucket is ``int(sha256("external-split|" + key), 16) % 100``; buckets below
  ``DEV_PERCENT`` (20) are **dev**, the rest **train**. So every answer to one prompt lands on
  one side, whatever the file's order, and a prompt shared by two sources lands on the same side
  in both. The sources' own ``split`` fields (DiaSafety train/val, MoralChoice low/high) are not
  used for it. Buckets 20-99 are free for a caller that wants a tuning slice out of train
  (``prompt_bucket``), without touching dev.

Reading is strict: a line that is not JSON, or lacks a field or has one of the wrong type, raises
``ExternalDataError`` naming the file, line and field; these files are fixed inputs, so a bad line
means a wrong or damaged folder, never something to skip quietly.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from guardrail.text import InvalidTextError, normalize_text
from guardrail.values import VALUE_NAMES

ExternalSplit = Literal["train", "dev"]
DEV_PERCENT = 20
"""Share of prompt keys (in percent of hash buckets) that are dev."""
SPLIT_SALT = "external-split"
_REQUIRED: dict[str, tuple[type, ...]] = {
    "source": (str,),
    "id": (str,),
    "prompt": (str,),
    "response": (str,),
    "categories": (list,),
    "value_labels": (dict,),
    "label_origin": (str,),
    "label_raw": (dict,),
}


class ExternalDataError(ValueError):
    """A file of the external data that cannot be read as the documented schema."""


def normalise_prompt(text: str) -> str:
    """The comparable form of a prompt: NFKC, invisible characters dropped, case-folded, whitespace collapsed."""
    try:
        cleaned = normalize_text(text, field="prompt")
    except InvalidTextError:
        return ""
    return " ".join(cleaned.casefold().split())


def prompt_key(prompt: str, label_raw: Mapping[str, Any] | None = None) -> str:
    """The request a row answers, normalised: JailbreakBench's ``goal`` where there is one, else the prompt."""
    goal = (label_raw or {}).get("goal")
    if isinstance(goal, str) and goal.strip():
        return normalise_prompt(goal)
    return normalise_prompt(prompt)


def prompt_bucket(key: str) -> int:
    """A prompt key's hash bucket in ``range(100)``; below ``DEV_PERCENT`` is dev."""
    return int(hashlib.sha256(f"{SPLIT_SALT}|{key}".encode()).hexdigest(), 16) % 100


def split_of_key(key: str) -> ExternalSplit:
    """``"dev"`` or ``"train"`` for a prompt key (see the module docstring)."""
    return "dev" if prompt_bucket(key) < DEV_PERCENT else "train"


@dataclass(frozen=True)
class ExternalRow:
    """One judged response of an external source."""

    file: str
    """The source: the file's stem, e.g. ``do_not_answer``."""
    line: int
    source: str
    """The row's own ``source`` field, e.g. ``moralchoice-low``."""
    id: str
    prompt: str
    response: str
    harmful: int | None
    """The source's own judgement: 1 harmful / unsafe, 0 not, None not judged (ValuePortrait)."""
    categories: tuple[str, ...]
    value_labels: Mapping[str, int] = field(hash=False)
    """The heuristic category -> value mapping written with the data (-1 opposes, +1 supports);
    a value not listed is unknown."""
    label_origin: str = ""
    label_raw: Mapping[str, Any] = field(default_factory=dict, hash=False)

    @cached_property
    def key(self) -> str:
        """The prompt key the split hashes (see ``prompt_key``)."""
        return prompt_key(self.prompt, self.label_raw)

    @property
    def split(self) -> ExternalSplit:
        """Which side of the split the row's prompt is on."""
        return split_of_key(self.key)


def _field_error(path: Path, line: int, name: str, problem: str) -> ExternalDataError:
    return ExternalDataError(f"{path}, line {line}: field '{name}' {problem}")


def _row(path: Path, line: int, text: str) -> ExternalRow:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ExternalDataError(f"{path}, line {line}: not valid JSON ({exc.msg})") from None
    if not isinstance(obj, dict):
        raise ExternalDataError(f"{path}, line {line}: expected a JSON object, got {type(obj).__name__}")
    for name, types in _REQUIRED.items():
        if name not in obj:
            raise _field_error(path, line, name, "is missing")
        if not isinstance(obj[name], types):
            raise _field_error(path, line, name, f"should be {types[0].__name__}, got {type(obj[name]).__name__}")
    harmful = obj.get("harmful", "missing")
    if harmful not in (0, 1, None) or isinstance(harmful, bool):
        raise _field_error(path, line, "harmful", f"should be 1, 0 or null, got {harmful!r}")
    labels: dict[str, int] = {}
    for name, mark in obj["value_labels"].items():
        if name not in VALUE_NAMES or mark not in (-1, 1) or isinstance(mark, bool):
            raise _field_error(path, line, "value_labels", f"has {name!r}: {mark!r} (want a value name: -1 or 1)")
        labels[name] = int(mark)
    return ExternalRow(
        file=path.stem,
        line=line,
        source=obj["source"],
        id=obj["id"],
        prompt=obj["prompt"],
        response=obj["response"],
        harmful=harmful,
        categories=tuple(str(c) for c in obj["categories"]),
        value_labels=labels,
        label_origin=obj["label_origin"],
        label_raw=obj["label_raw"],
    )


def read_external_file(path: Path | str) -> list[ExternalRow]:
    """Every row of one external JSONL file, in file order (blank lines skipped)."""
    path = Path(path)
    rows = []
    with path.open(encoding="utf-8") as lines:
        for number, text in enumerate(lines, start=1):
            if text.strip():
                rows.append(_row(path, number, text))
    return rows


def external_dir(data_dir: Path | str) -> Path:
    """``data_dir/external``, or ``FileNotFoundError`` saying what is missing there."""
    folder = Path(data_dir) / "external"
    if not folder.is_dir():
        raise FileNotFoundError(
            f"no external data at {folder} (a folder of *.jsonl files; see ../shared/data/README.md)"
        )
    if not any(folder.glob("*.jsonl")):
        raise FileNotFoundError(f"no *.jsonl files in {folder}")
    return folder


def read_external(data_dir: Path | str, sources: Iterable[str] | None = None) -> dict[str, list[ExternalRow]]:
    """The rows of every external source (or of the named ones), by source name, sorted by name."""
    folder = external_dir(data_dir)
    files = {p.stem: p for p in sorted(folder.glob("*.jsonl"))}
    wanted = list(files) if sources is None else list(sources)
    unknown = [s for s in wanted if s not in files]
    if unknown:
        raise FileNotFoundError(f"no external source {unknown} in {folder} (there: {', '.join(files)})")
    return {name: read_external_file(files[name]) for name in sorted(wanted)}


def rows_of(rows: Iterable[ExternalRow], split: ExternalSplit) -> list[ExternalRow]:
    """The rows on one side of the split, in their order."""
    return [r for r in rows if r.split == split]


def groups_of(by_source: Mapping[str, list[ExternalRow]]) -> Iterator[tuple[str, list[ExternalRow]]]:
    """(name, rows) per source, each followed by its sub-sources where a file holds several ``source`` values."""
    for name, rows in by_source.items():
        yield name, rows
        subs = sorted({r.source for r in rows})
        if len(subs) > 1:
            for sub in subs:
                yield sub, [r for r in rows if r.source == sub]


def split_summary(by_source: Mapping[str, list[ExternalRow]]) -> dict[str, dict[str, dict[str, int]]]:
    """Per source and side: rows, distinct prompt keys, harmful / benign / unjudged rows."""
    out: dict[str, dict[str, dict[str, int]]] = {}
    for name, rows in groups_of(by_source):
        out[name] = {}
        sides: tuple[ExternalSplit, ...] = ("train", "dev")
        for side in sides:
            part = rows_of(rows, side)
            harmful = Counter(r.harmful for r in part)
            out[name][side] = {
                "rows": len(part),
                "prompts": len({r.key for r in part}),
                "harmful": harmful[1],
                "benign": harmful[0],
                "unjudged": harmful[None],
            }
    return out


__all__ = [
    "DEV_PERCENT",
    "ExternalDataError",
    "ExternalRow",
    "ExternalSplit",
    "external_dir",
    "groups_of",
    "normalise_prompt",
    "prompt_bucket",
    "prompt_key",
    "read_external",
    "read_external_file",
    "rows_of",
    "split_of_key",
    "split_summary",
]
