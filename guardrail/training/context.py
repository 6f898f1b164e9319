"""Context swaps: a response that stands on its own keeps its label whatever was asked.

Training pairs almost every everyday request with a benign answer, so the scorer learned to let an
innocuous prompt clear a harmful answer ("Sure. People from that country are lazy and should not be
hired." scored universalism P(oppose) 0.84 alone and 0.06 under "What should I do?"). With
``TrainConfig.context_swap`` = p, each row of a source whose responses are judged on their own
(an assistant's answer, an action, a piece of advice, SmolLM2's drafts, a ToxiGen statement) is
trained, with probability p per epoch, under another context: no prompt at all, or an everyday
request from ``helpful_prompts.txt``, chosen once per row by a hash of its key. Chit-chat (DiaSafety, DICES) is
left alone: agreeing or replying there is judged by what came before.
"""

from __future__ import annotations

import hashlib

from guardrail.training.data import Example

STANDALONE_SOURCES = frozenset(
    {"ext:do_not_answer", "ext:jailbreakbench", "ext:moralchoice", "ext:safetext", "drafts", "toxigen"}
)
"""Sources (``Example.source``) whose responses keep their judgement without the prompt."""


def stands_alone(example: Example) -> bool:
    """Whether ``example`` is judged by its response alone (see ``STANDALONE_SOURCES``)."""
    return example.source in STANDALONE_SOURCES


def swapped_prompt(example: Example, everyday: list[str]) -> str | None:
    """The context ``example`` is also trained under: None (no prompt) for half of the rows, an
    everyday request for the other half; fixed per row by a hash of its key."""
    digest = int(hashlib.sha256(f"context-swap|{example.key}".encode()).hexdigest(), 16)
    if digest % 2 == 0 or not everyday:
        return None
    return everyday[(digest // 2) % len(everyday)]
