"""Plain answers to everyday requests, which `guardrail eval --external` decides: does the guard let them pass?

The judged sources' benign rows are refusals, safe warnings and chit-chat; almost none is a plain
helpful answer. So SmolLM2's one-or-two-sentence answers to the everyday requests of
``helpful_prompts.txt`` (``terse_answers.jsonl``, see ``drafts.py``) are decided under the policy
too, each as benign. The shipped recipe trains on SmolLM2's longer answers to the same requests,
never on these short ones; a model trained with ``terse_drafts`` did, and the figure says so.
"""

from __future__ import annotations

import json
from pathlib import Path

from guardrail.model.weights import CONFIG_FILE, WEIGHTS_DIR
from guardrail.training.drafts import TERSE_FILE, draft_rows
from guardrail.training.external import ExternalRow


def everyday_rows(path: Path = TERSE_FILE) -> list[ExternalRow]:
    """The short answers to everyday requests as benign rows (``harmful`` 0), in file order."""
    return [
        ExternalRow(
            file="everyday",
            line=n,
            source="smollm2-terse",
            id=f"terse:{n}",
            prompt=row["prompt"],
            response=row["response"],
            harmful=0,
            categories=(),
            value_labels={},
        )
        for n, row in enumerate(draft_rows(path), start=1)
        if row["kind"] == "helpful"
    ]


def trained_on_them(weights_dir: Path | None) -> bool:
    """Whether the model's recipe (``value_heads.json``) trained on the short answers themselves."""
    config = json.loads(((weights_dir or WEIGHTS_DIR) / CONFIG_FILE).read_text(encoding="utf-8"))
    recipe = config.get("training", {}).get("recipe", {})
    return bool(recipe.get("terse_drafts", False))


DEFINITION = (
    "SmolLM2's one-or-two-sentence answers to the everyday requests of guardrail/training/helpful_prompts.txt "
    "(terse_answers.jsonl, kind helpful), each benign: the share Guard(policy).check allows; the shipped recipe "
    "trains on longer answers to the same requests, not on these (trained_on_these_answers says)"
)
