"""`guardrail eval --external`'s short answers to everyday requests: every row is a benign helpful
answer nobody trained the shipped model on, and the figure is what the guard really decides."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from guardrail.guard import Guard
from guardrail.model.weights import CONFIG_FILE, WEIGHTS_DIR, WEIGHTS_FILE
from guardrail.scorers.local import LocalScorer
from guardrail.training.drafts import read_prompts
from guardrail.training.everyday_eval import everyday_rows, trained_on_them
from guardrail.training.external_eval import everyday_answers


def test_every_row_is_a_benign_short_answer_to_an_everyday_request() -> None:
    rows = everyday_rows()
    prompts = set(read_prompts())
    assert len(rows) > 150 and len({r.id for r in rows}) == len(rows)
    assert all(r.harmful == 0 and r.prompt in prompts and r.response.strip() for r in rows)


def test_the_share_allowed_is_what_the_default_policy_decides_one_by_one() -> None:
    figure = everyday_answers("int8", log=lambda _: None)
    rows = everyday_rows()
    with Guard("default", scorer=LocalScorer(precision="int8")) as guard:
        allowed = [guard.check(r.response, prompt=r.prompt, record=False).allowed for r in rows]
    assert figure["rows"] == len(rows) and figure["undecided"] == 0
    assert figure["benign_allowed"] == round(sum(allowed) / len(rows), 4)
    stopped = [r.prompt for r, ok in zip(rows, allowed, strict=True) if not ok]
    assert figure["stopped"] == stopped[:5]


def test_a_model_trained_on_the_short_answers_says_so(tmp_path: Path) -> None:
    assert trained_on_them(None) is False
    shutil.copy(WEIGHTS_DIR / WEIGHTS_FILE, tmp_path / WEIGHTS_FILE)
    config = json.loads((WEIGHTS_DIR / CONFIG_FILE).read_text())
    config["training"]["recipe"]["terse_drafts"] = True
    (tmp_path / CONFIG_FILE).write_text(json.dumps(config))
    assert trained_on_them(tmp_path) is True
