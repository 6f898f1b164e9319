"""Counter-speech rows built from ToxiGen's statements: the same hateful claim, condemned and endorsed.

ToxiGen teaches that a hateful statement opposes universalism. Nothing in the training data shows
the same claim quoted or answered in order to condemn it, so the scorer learned the topic rather than
the stance: replies that rebut a hateful post, or quote a slur to reject it, were stopped (model card,
"Counter-speech"). Each hateful statement therefore yields four rows, in pairs that differ only in
stance, so that the words of the claim cannot decide the label:

- a reply to the statement (the prompt) that rejects it and adds a neutral statement about the same
  group: supports universalism, opposes nothing;
- a reply to the statement that agrees with it and repeats it: opposes universalism;
- the statement quoted inside a sentence that condemns it, no prompt: supports universalism, opposes
  nothing;
- the statement quoted inside the same kind of sentence endorsing it, no prompt: opposes universalism.

The framing sentences are written for training only; the held-out probes that measure counter-speech
(``counter_speech_eval.py``) were written before them and share none of them. Frames and partners are chosen
by a hash of the statement, so the rows are the same on every run.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from pathlib import Path

from guardrail.training.data import EXACT, NOT_OPPOSING, UNKNOWN, Example, read_toxigen_statements
from guardrail.values import VALUE_NAMES

REJECTING_REPLIES = (
    "I have to push back on this.",
    "Please don't lump a whole group of people together like that.",
    "Comments like this hurt real people.",
    "I really can't agree with that.",
    "Where's the evidence? People are individuals.",
    "That claim doesn't hold up at all.",
    "Talk like this is how discrimination starts.",
    "Let's not talk about people that way.",
    "Everyone deserves respect, whoever they are.",
    "That's unfair to a lot of decent people.",
    "I'm going to disagree strongly here.",
    "Hold on, that's a hateful generalisation.",
)
AGREEING_REPLIES = (
    "Exactly.",
    "So true.",
    "I agree 100%.",
    "Finally someone says it.",
    "Couldn't have said it better.",
    "Yes, and everyone knows it.",
    "This.",
    "Right? Nobody wants to admit it.",
)
CONDEMNING_QUOTES = (
    'Someone in the comments wrote "{q}". I have to push back on that.',
    "My uncle keeps saying that {q}. He is wrong, and I told him so.",
    '"{q}" - remarks like this are why so many people feel unwelcome.',
    "I keep hearing people claim that {q}. It simply isn't fair.",
    "If someone tells you that {q}, speak up instead of staying silent.",
    "The idea that {q} is a harmful myth.",
    'A classmate said "{q}" today, and the teacher rightly called it out as hateful.',
    'Posts saying "{q}" should be reported, not shared.',
    'We talked in class about why the claim "{q}" is prejudice.',
    "People who say {q} are repeating a stereotype, not a fact.",
)
ENDORSING_QUOTES = (
    'Someone in the comments wrote "{q}". About time somebody said it.',
    "My uncle keeps saying that {q}. He is right, and I told him so.",
    '"{q}" - more people should say this out loud.',
    "I keep hearing people claim that {q}. It's just the truth.",
    "If someone tells you that {q}, believe them.",
    "The idea that {q} is plain common sense.",
    'A classmate said "{q}" today, and honestly he had a point.',
    'Posts saying "{q}" should be shared everywhere.',
    'We talked in class about the claim "{q}", and it turns out to be true.',
    "People who say {q} are just being honest.",
)

_UNI = VALUE_NAMES.index("universalism")
_REJECTS = tuple(EXACT[1] if i == _UNI else NOT_OPPOSING for i in range(len(VALUE_NAMES)))
_ENDORSES = tuple(EXACT[-1] if i == _UNI else UNKNOWN for i in range(len(VALUE_NAMES)))


def _pick(options: tuple[str, ...] | list[str], text: str, salt: str) -> str:
    digest = hashlib.sha256(f"counter-speech|{salt}|{text}".encode()).digest()
    return options[int.from_bytes(digest[:8], "big") % len(options)]


def _claim(text: str) -> str:
    """The statement as a clause to quote: trimmed of list dashes, quotes and its final stop."""
    return text.strip().strip("-\"' ").rstrip(".!? ").strip()


def _sentence(text: str) -> str:
    clause = _claim(text)
    return clause[:1].upper() + clause[1:] + "."


def counter_speech_examples(statements_file: Path | str) -> list[Example]:
    """Four rows per hateful statement of ToxiGen's ``statements.jsonl`` (module docstring)."""
    statements, _ = read_toxigen_statements(statements_file)
    hateful = [(text, group) for text, kind, group in statements if kind == "hate" and _claim(text)]
    neutral: dict[str, list[str]] = defaultdict(list)
    for text, kind, group in statements:
        if kind == "neutral" and _claim(text):
            neutral[group].append(text)
    examples: list[Example] = []
    for text, group in hateful:
        claim, post = _claim(text), _sentence(text)
        partner = _sentence(_pick(neutral[group], text, "neutral")) if neutral[group] else ""
        rejecting = f"{_pick(REJECTING_REPLIES, text, 'reject')} {partner}".strip()
        rows = (
            (post, rejecting, _REJECTS, "reply-rejects"),
            (post, f"{_pick(AGREEING_REPLIES, text, 'agree')} {post}", _ENDORSES, "reply-agrees"),
            (None, _pick(CONDEMNING_QUOTES, text, "condemn").format(q=claim), _REJECTS, "quote-condemns"),
            (None, _pick(ENDORSING_QUOTES, text, "endorse").format(q=claim), _ENDORSES, "quote-endorses"),
        )
        examples += [
            Example(prompt, response, targets, source="counter_speech", key=f"{role}|{text}")
            for prompt, response, targets, role in rows
        ]
    return examples
