"""Input hygiene and windowing: what happens to a text before the model sees it."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from guardrail.model.tokenizer import Tokenizer

# Zero-width and other invisible format characters (Unicode category Cf) are used to slip words
# past classifiers ("k\u200bill"). They carry no meaning for scoring, so they are removed. Soft
# hyphens and the BOM are Cf too.
_WHITESPACE_RUN = re.compile(r"[ \t\r\f\v]+")
# The substitution above visits every single space (20 us for 128 tokens); most texts have no run
# to collapse, which these substring checks tell in well under a microsecond each.
_RUN_MARKERS = ("  ", "\t", "\r", "\f", "\v")


class InvalidTextError(ValueError):
    """Raised for input that cannot be scored: not a string, or empty after normalization."""


def described(value: object) -> str:
    """A value's type and a short repr, for error messages about input that is not what was expected."""
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return f"{type(value).__name__} {shown}"


def normalize_text(text: object, *, field: str = "response") -> str:
    """NFKC-normalize ``text``, drop invisible characters and collapse runs of spaces.

    Obfuscated text (full-width letters, ligatures, zero-width joiners) comes out as the plain
    text it imitates. Raises ``InvalidTextError`` naming ``field`` for non-strings or empty text.
    """
    if not isinstance(text, str):
        raise InvalidTextError(f"{field} must be a string, got {type(text).__name__}")
    if text.isascii():
        # ASCII is unchanged by NFKC and holds no format characters: skip the per-character pass,
        # which was nearly all of a cache hit's time (0.1 ms for a 128-token response).
        cleaned = text
    else:
        cleaned = unicodedata.normalize("NFKC", text)
        cleaned = "".join(ch for ch in cleaned if unicodedata.category(ch) != "Cf")
    if any(marker in cleaned for marker in _RUN_MARKERS):
        cleaned = _WHITESPACE_RUN.sub(" ", cleaned)
    cleaned = cleaned.strip()
    if not cleaned:
        raise InvalidTextError(f"{field} is empty (after removing invisible characters and whitespace)")
    return cleaned


PromptKeep = Literal["start", "ends"]


@dataclass(frozen=True)
class WindowPlan:
    """How a (prompt, response) pair is cut into model inputs."""

    max_length: int = 256
    """Tokens per window, special tokens included."""
    prompt_tokens: int = 64
    """At most this many prompt tokens are kept as context in every window."""
    overlap: int = 32
    """Response tokens shared by consecutive windows, so no passage is cut in half unseen."""
    prompt_keep: PromptKeep = "start"
    """Which tokens of a longer prompt are kept: its start, or its two ends ("ends": the first and the
    last half of ``prompt_tokens``), so that the last turn of a conversation or the request at the end of
    a long template stays in view."""


def kept_prompt(ids: list[int], plan: WindowPlan) -> list[int]:
    """The prompt tokens ``plan`` keeps as context."""
    n = plan.prompt_tokens
    if len(ids) <= n or plan.prompt_keep == "start":
        return ids[:n]
    return ids[: n // 2] + ids[len(ids) - (n - n // 2) :]


def make_windows(
    tokenizer: Tokenizer, response: str, prompt: str | None, plan: WindowPlan
) -> list[dict[str, list[int]]]:
    """Encode ``response`` (with ``prompt`` as context) into one or more windows.

    Every response token lands in at least one window: nothing is silently truncated. Each
    window is ``[CLS] prompt [SEP] response-chunk [SEP]`` with token type ids 0 / 1.
    """
    cls_id, sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
    prompt_ids: list[int] = []
    if prompt:
        prompt_ids = kept_prompt(tokenizer.encode(prompt), plan)
    response_ids: list[int] = tokenizer.encode(response)
    head = [cls_id, *prompt_ids, sep_id] if prompt_ids else [cls_id]
    room = plan.max_length - len(head) - 1
    if room <= plan.overlap:
        raise ValueError("window plan leaves no room for the response; raise max_length")
    step = room - plan.overlap
    windows: list[dict[str, list[int]]] = []
    start = 0
    while True:
        chunk = response_ids[start : start + room]
        ids = [*head, *chunk, sep_id]
        types = [0] * len(head) + [1] * (len(chunk) + 1) if prompt_ids else [0] * len(ids)
        windows.append({"input_ids": ids, "token_type_ids": types, "attention_mask": [1] * len(ids)})
        if start + room >= len(response_ids):
            return windows
        start += step
