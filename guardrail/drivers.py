"""Running the pipeline's effects: the sync driver (plain calls) and the async one (awaits).

The guard's pipeline is a generator that yields effects (``Generate`` a draft, ``Assess`` a text)
and receives their results; a driver performs them and sends back each result, or throws its error
into the generator. Scoring is bounded by the policy's ``scoring_timeout_s`` in both: the sync way
on the guard's scoring thread, the async way with ``asyncio.wait_for``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
from collections.abc import Awaitable, Callable, Generator
from typing import Any, cast

from guardrail.actions.protocol import Assess, Assessment, Effect, Generate
from guardrail.decision import Decision
from guardrail.score import Scorer, ValueScores

SyncLLM = Callable[[str], str]
AsyncLLM = Callable[[str], Awaitable[str]]


class ScoringTimeoutError(TimeoutError):
    """Scoring took longer than the policy's ``scoring_timeout_s``."""


def score_in_time(
    pool: concurrent.futures.Executor, scorer: Scorer, text: str, prompt: str | None, timeout: float
) -> ValueScores:
    """``scorer.score`` on ``pool``, or ``ScoringTimeoutError`` after ``timeout`` seconds."""
    future = pool.submit(scorer.score, text, prompt)
    try:
        return future.result(timeout=timeout)
    except concurrent.futures.TimeoutError:
        # Drop the job if it is still queued; one already running cannot be interrupted and
        # finishes in the background, so later calls may wait behind it.
        future.cancel()
        raise ScoringTimeoutError(f"scoring took longer than {timeout}s") from None


async def ascore_in_time(scorer: Scorer, text: str, prompt: str | None, timeout: float) -> ValueScores:
    """Async twin of ``score_in_time``: ``scorer.ascore`` under ``asyncio.wait_for``."""
    try:
        return await asyncio.wait_for(scorer.ascore(text, prompt), timeout=timeout)
    except TimeoutError:
        raise ScoringTimeoutError(f"scoring took longer than {timeout}s") from None


def drive(
    gen: Generator[Effect, Any, Decision], llm: SyncLLM | None, assess: Callable[[Assess], Assessment]
) -> Decision:
    """Run ``gen`` to its decision with plain calls: ``llm`` for ``Generate``, ``assess`` for ``Assess``."""
    result: Any = None
    error: Exception | None = None
    while not isinstance(effect := _resume(gen, result, error), Decision):
        try:
            result, error = (_generate(llm, effect.prompt) if isinstance(effect, Generate) else assess(effect)), None
        except Exception as exc:
            result, error = None, exc
    return effect


async def adrive(
    gen: Generator[Effect, Any, Decision], llm: Any, assess: Callable[[Assess], Awaitable[Assessment]]
) -> Decision:
    """Async twin of ``drive``: ``llm`` may be sync (it then runs on a worker thread) or async."""
    result: Any = None
    error: Exception | None = None
    while not isinstance(effect := _resume(gen, result, error), Decision):
        try:
            if isinstance(effect, Generate):
                result, error = await _agenerate(llm, effect.prompt), None
            else:
                result, error = await assess(effect), None
        except Exception as exc:
            result, error = None, exc
    return effect


def _resume(gen: Generator[Effect, Any, Decision], result: Any, error: Exception | None) -> Effect | Decision:
    """Send ``result`` into ``gen`` (or throw ``error``): its next effect, or its decision once it returns."""
    try:
        return gen.throw(error) if error is not None else gen.send(result)
    except StopIteration as stop:
        return cast(Decision, stop.value)


def _generate(llm: SyncLLM | None, prompt: str) -> Any:
    if llm is None:
        raise RuntimeError("no LLM to generate with")
    result = llm(prompt)
    if inspect.isawaitable(result):
        if inspect.iscoroutine(result):
            result.close()  # never awaited: close it so Python does not warn later
        raise TypeError("the LLM returned an awaitable: use acheck(), agenerate() or awrap() for it")
    return result


async def _agenerate(llm: Any, prompt: str) -> Any:
    if llm is None:
        raise RuntimeError("no LLM to generate with")
    if is_async_callable(llm):
        produced = llm(prompt)
    else:  # a sync LLM runs on a worker thread so that it never blocks the event loop
        produced = await asyncio.to_thread(llm, prompt)
    return await produced if inspect.isawaitable(produced) else produced


def is_async_callable(llm: Any) -> bool:
    """Whether calling ``llm`` starts a coroutine (an async function, or an object with an async ``__call__``)."""
    call = type(llm).__call__ if not inspect.isfunction(llm) else llm
    return inspect.iscoroutinefunction(llm) or inspect.iscoroutinefunction(call)
