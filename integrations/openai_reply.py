"""Guarding a whole (non-streamed) chat completion: one recorded decision per choice.

``guard_reply`` / ``aguard_reply`` check every choice of a parsed reply (a choice with only tool
calls gets ``no_text_decision``, recorded unscored); ``shielded`` awaits a recording so that
cancellation cannot cut it off. Shared by the clients (``openai``), the stream relay
(``openai_stream``) and the proxy.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio

from guardrail.decision import Decision
from guardrail.guard import NO_TEXT_NOTE, Guard
from guardrail.integrations.openai_wire import NO_TEXT, choice_texts, prompt_of
from guardrail.policy import Policy

PolicyChoice = Policy | str | Path | None

T = TypeVar("T")


def no_text_decision(guard: Guard, prompt: str | None, policy: PolicyChoice = None) -> Decision:
    """An allow decision for a reply with nothing to score (tool calls only); nothing was scored."""
    return guard.unscored(prompt, NO_TEXT_NOTE, policy=policy)


async def shielded(make: Callable[[], Awaitable[T]]) -> T:
    """Await ``make()`` shielded from cancellation (recording a decision must not be cut off)."""
    with anyio.CancelScope(shield=True):
        result = await make()
    return result


# ---------------------------------------------------------------------- guarding a reply


def guard_reply(
    guard: Guard,
    request: dict[str, Any],
    response: dict[str, Any],
    regenerate: Callable[[str], str],
    *,
    policy: PolicyChoice,
    context: dict[str, Any],
) -> list[Decision]:
    """Check every choice of ``response`` (one recorded decision each)."""
    prompt = prompt_of(request)
    decisions = []
    for choice in choice_texts(response):
        ctx = {**context, "choice_index": choice.index}
        if choice.text is NO_TEXT:
            decisions.append(guard.record(no_text_decision(guard, prompt, policy), ctx))
        else:
            decisions.append(guard.check(choice.text, prompt, llm=regenerate, policy=policy, context=ctx))
    return decisions


async def aguard_reply(
    guard: Guard,
    request: dict[str, Any],
    response: dict[str, Any],
    regenerate: Callable[[str], Awaitable[str]],
    *,
    policy: PolicyChoice,
    context: dict[str, Any],
) -> list[Decision]:
    """Async twin of ``guard_reply``; if it is cancelled, the choices not yet decided are recorded as failures."""
    prompt = prompt_of(request)
    decisions: list[Decision] = []
    choices = choice_texts(response)
    try:
        for choice in choices:
            ctx = {**context, "choice_index": choice.index}
            if choice.text is NO_TEXT:
                decision = no_text_decision(guard, prompt, policy)
                decisions.append(await shielded(lambda: guard.arecord(decision, ctx)))  # noqa: B023 (awaited here)
            else:
                decisions.append(await guard.acheck(choice.text, prompt, llm=regenerate, policy=policy, context=ctx))
    except asyncio.CancelledError:
        # The choice in flight records itself (acheck records a cancellation; a shielded write
        # completes); the ones not reached yet are recorded here.
        with anyio.CancelScope(shield=True):
            for choice in choices[len(decisions) + 1 :]:
                ctx = {**context, "choice_index": choice.index}
                await guard.arecord_failure(prompt, "cancelled before the guard decided", policy=policy, context=ctx)
        raise
    return decisions
