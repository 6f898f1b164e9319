from __future__ import annotations

import re
import unicodedata

import pytest

from guardrail.model.tokenizer import load_tokenizer
from guardrail.text import InvalidTextError, PromptKeep, WindowPlan, make_windows, normalize_text


def test_obfuscation_is_undone() -> None:
    assert normalize_text("k\u200bi\u200dll \uff41ll  the\u00ad guards") == "kill all the guards"


def test_ascii_and_unicode_text_get_the_same_treatment() -> None:
    def by_definition(text: str) -> str:  # NFKC, drop format characters, collapse spaces
        kept = "".join(ch for ch in unicodedata.normalize("NFKC", text) if unicodedata.category(ch) != "Cf")
        return re.sub(r"[ \t\r\f\v]+", " ", kept).strip()

    samples = ["  Sure,\t here   is\r\nhow.  ", "line one\n\nline two", "x\x00y\x1f"]
    samples.append("caf\u00e9 \u2460 \ufb01ne\u200b!")
    samples += [s + "\u00e9" for s in samples]  # the same text made non-ASCII
    for text in samples:
        assert normalize_text(text) == by_definition(text)


@pytest.mark.parametrize("bad", ["", "   ", "\u200b\u200c", None, 42, b"bytes"])
def test_unscorable_input_gets_a_clear_error(bad: object) -> None:
    with pytest.raises(InvalidTextError, match="response"):
        normalize_text(bad)


def test_long_responses_are_windowed_without_losing_a_token() -> None:
    tokenizer = load_tokenizer()
    response = " ".join(f"word{i}" for i in range(700))
    plan = WindowPlan(max_length=128, prompt_tokens=16, overlap=16)
    windows = make_windows(tokenizer, response, "a short prompt", plan)
    assert len(windows) > 1
    assert all(len(w["input_ids"]) <= plan.max_length for w in windows)
    response_ids = tokenizer.encode(response)
    seen = [t for w in windows for t, kind in zip(w["input_ids"], w["token_type_ids"], strict=True) if kind == 1]
    assert set(response_ids) <= set(seen)
    assert response_ids[-1] in windows[-1]["input_ids"]


def test_short_response_is_one_window_with_prompt_context() -> None:
    tokenizer = load_tokenizer()
    (window,) = make_windows(tokenizer, "Fine, thanks.", "How are you?", WindowPlan())
    assert window["token_type_ids"].count(0) > 2  # CLS + prompt + SEP


def test_a_long_prompt_keeps_its_start_or_both_its_ends() -> None:
    tokenizer = load_tokenizer()
    prompt = " ".join(f"turn{i}" for i in range(200))
    ids = tokenizer.encode(prompt)
    cases: list[tuple[PromptKeep, list[int]]] = [("start", ids[:16]), ("ends", ids[:8] + ids[-8:])]
    for keep, expected in cases:
        (window,) = make_windows(tokenizer, "Fine.", prompt, WindowPlan(prompt_tokens=16, prompt_keep=keep))
        context = [t for t, kind in zip(window["input_ids"], window["token_type_ids"], strict=True) if kind == 0]
        assert context == [tokenizer.cls_token_id, *expected, tokenizer.sep_token_id], keep
    short = make_windows(tokenizer, "Fine.", "How are you?", WindowPlan(prompt_keep="ends"))
    assert short == make_windows(tokenizer, "Fine.", "How are you?", WindowPlan()), "a short prompt is kept whole"


def test_the_tokenizer_gives_transformers_ids_for_varied_text_and_every_fulcra_string() -> None:
    # The scorer reads tokenizer.json with `tokenizers` directly; transformers' wrapper is the reference.
    import json

    from transformers import AutoTokenizer

    from guardrail.model.tokenizer import encoder_path
    from tests.conftest import SHARED_DATA
    from tests.samples import HARMFUL, HARMFUL_PROMPT, REFUSAL

    ours = load_tokenizer()
    reference = AutoTokenizer.from_pretrained(str(encoder_path()), local_files_only=True)
    texts = ["Café naïve résumé", "日本語のテキスト", "emoji 🎉🔥", "zero\u200bwidth", "ﬁ", "İstanbul", "straße"]
    texts += ["e\u0301 combining", "مرحبا بالعالم", "def f(x): return x**2  # code", "$1,234.56 on 2024-05-01"]
    texts += [HARMFUL, HARMFUL_PROMPT, REFUSAL, "x" * 3000, "Unbelievably antidisestablishmentarian! " * 50]
    fulcra = SHARED_DATA / "fulcra" / "train.jsonl"
    if fulcra.exists():  # every prompt and response of the training file, where the shared data is mounted
        with fulcra.open() as rows:
            for line in rows:
                texts += [v for v in json.loads(line).values() if isinstance(v, str)]
    differ = [t[:60] for t in texts if ours.encode(t) != reference(t, add_special_tokens=False)["input_ids"]]
    assert differ == []
    assert (ours.cls_token_id, ours.sep_token_id, ours.pad_token_id) == (
        reference.cls_token_id,
        reference.sep_token_id,
        reference.pad_token_id,
    )
    assert len(ours.encode("word " * 400)) == 400, "never truncated at the file's 128 tokens"
