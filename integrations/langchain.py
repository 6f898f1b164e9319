"""LangChain adapter: a Runnable that guards what a chain produces.

Two forms::

    chain | GuardRunnable(guard)              # checks the chain's output
    GuardRunnable(guard, llm=chain)            # runs the chain itself, so rewrites can re-invoke it

Outputs keep the type the chain produced (``str``, ``AIMessage``, or message chunks when
streaming). The whole Runnable protocol works: invoke, ainvoke, batch, abatch, stream, astream.
``RunnableConfig`` passes through (callbacks, tags, metadata); ``configurable={"guardrail_policy":
NAME_OR_PATH}`` overrides the policy for one call; the run id, tags and metadata land in the
audit record's ``context``. Streaming follows ``guardrail.stream`` (held back by at most one
sentence; a block stops the stream and emits the refusal).

Every call ends in exactly one recorded decision. In the wrapping form, a chain that fails
(raises, or its stream breaks) is recorded as a block naming the error, and the error is raised
as before; so is a stream the consumer closes before its end. (In the ``chain | GuardRunnable``
form a failure upstream never reaches the guard.) A message with tool calls and no text has
nothing to score: it passes through unchanged and an ``allow`` decision saying so is recorded;
when a message's text is blocked or rewritten, its tool calls are dropped with it.

A dict output (agents, QA chains) is guarded on its answer field: the first of ``output``,
``answer``, ``result``, ``response``, ``text``, ``content``, or its only field; the other fields
(e.g. the echoed ``input``) pass through. A dict with several fields and none of these names is
refused with an error naming its fields (and recorded), never guarded on the wrong field.

One limit: in the pipe form, ``astream`` closed early by the consumer is not closed by LangChain's
sequence; its decision is recorded when Python finalizes the generator (soon after, on the event
loop), so close the guard only after that. The wrapping form and ``stream`` record at once.

This module holds the Runnable; reading and shaping chain values (the text of outputs and
messages, dict answers, tool calls, the rewrite input) lives in ``langchain_io``, re-exported here.
"""

from __future__ import annotations

import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import anyio
from langchain_core.callbacks import AsyncCallbackManagerForChainRun, CallbackManagerForChainRun
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.runnables.config import ensure_config

from guardrail.decision import Decision, error_text
from guardrail.guard import NO_TEXT_NOTE, Guard
from guardrail.integrations.langchain_io import (
    ANSWER_KEYS,
    PROMPT_KEYS,
    OutputShapeError,
    RewriteInputError,
    answer_key,
    has_tool_calls,
    input_for_rewrite,
    like,
    output_text,
    request_text,
    text_of,
    tool_part,
)
from guardrail.stream import StreamGuard, broken_reason

__all__ = [
    "ANSWER_KEYS",
    "POLICY_KEY",
    "PROMPT_KEYS",
    "GuardRunnable",
    "OutputShapeError",
    "RewriteInputError",
    "answer_key",
    "has_tool_calls",
    "like",
    "output_text",
    "text_of",
    "wrap_runnable",
]

POLICY_KEY = "guardrail_policy"


def _context(config: RunnableConfig, run_id: Any) -> dict[str, Any]:
    context: dict[str, Any] = {"integration": "langchain", "run_id": str(run_id) if run_id else None}
    if config.get("tags"):
        context["tags"] = list(config["tags"])
    if config.get("metadata"):
        context["metadata"] = {k: v for k, v in config["metadata"].items() if isinstance(v, str | int | float | bool)}
    return context


class GuardRunnable(Runnable[Any, Any]):
    """Guards a chain's output with a ``guardrail.Guard``; see the module docstring.

    In the wrapping form (``llm=chain``) a rewrite re-invokes the chain with the *original
    input*, the rewrite instruction (which quotes the user's request and the draft) taking the
    place of the user's request in it:

    - a string input is replaced by the instruction;
    - a message list (or prompt value, or single message) keeps its system messages, followed
      by the instruction as the human message (earlier turns are left out, as the proxy does);
    - a dict input (a prompt template's variables) keeps every variable but the one holding the
      request: ``rewrite_key`` if given, else the first of ``input``, ``question``, ``query``,
      ``prompt``, ``text`` present, else the only variable. That variable's value is replaced by
      the instruction (or, if it holds messages, treated as a message list). A dict with several
      variables and none of these names cannot be rewritten: the rewrite attempt fails with a
      ``RewriteInputError`` naming the remedy (pass ``rewrite_key``), a warning says so, and the
      policy's fallback (a block, unless ``fallback: log``) is the recorded decision.

    The request text the guard sees (the audit's ``prompt``) is taken the same way.
    """

    def __init__(
        self,
        guard: Guard,
        llm: Runnable[Any, Any] | None = None,
        *,
        name: str = "GuardRunnable",
        rewrite_key: str | None = None,
    ) -> None:
        self.guard = guard
        self.llm = llm
        self.name = name
        self.rewrite_key = rewrite_key
        self._warned = False

    # --------------------------------------------------------------------- helpers

    def _policy(self, config: RunnableConfig) -> Any:
        return (config.get("configurable") or {}).get(POLICY_KEY)

    def prompt_text(self, value: Any) -> str:
        """The user's request in a chain input (what the guard records as the prompt)."""
        return request_text(value, self.rewrite_key)

    def rewrite_input(self, original: Any, instruction: str) -> Any:
        """The chain input that asks for a rewrite: ``original`` with the instruction in place of the request."""
        try:
            return input_for_rewrite(original, instruction, self.rewrite_key)
        except RewriteInputError as exc:
            if not self._warned:
                self._warned = True
                warnings.warn(str(exc), RuntimeWarning, stacklevel=2)
            raise

    def _regenerate(self, config: RunnableConfig, original: Any) -> Callable[[str], str] | None:
        if self.llm is None:
            return None
        llm = self.llm

        def regenerate(instruction: str) -> str:
            return output_text(llm.invoke(self.rewrite_input(original, instruction), config))

        return regenerate

    def _aregenerate(self, config: RunnableConfig, original: Any) -> Any:
        if self.llm is None:
            return None
        llm = self.llm

        async def regenerate(instruction: str) -> str:
            return output_text(await llm.ainvoke(self.rewrite_input(original, instruction), config))

        return regenerate

    def _no_text(self, prompt: str | None, config: RunnableConfig) -> Decision:
        """An allow decision for an output with only tool calls: nothing was scored."""
        return self.guard.unscored(prompt, NO_TEXT_NOTE, policy=self._policy(config))

    @staticmethod
    def _failed(exc: BaseException) -> str:
        return f"the chain failed: {error_text(exc)}"

    @staticmethod
    def _guarded(value: Any, decision: Decision) -> Any:
        return like(value, decision.text, drop_tools=decision.action in ("block", "rewrite"))

    # --------------------------------------------------------------------- invoke

    def _invoke(self, value: Any, run_manager: CallbackManagerForChainRun, config: RunnableConfig) -> Any:
        self.guard.ensure_open()  # before the chain runs: its output could not be guarded or recorded
        prompt = None
        context = _context(config, run_manager.run_id)
        original = value
        if self.llm is not None:
            prompt = self.prompt_text(value)
            try:
                value = self.llm.invoke(value, config)
            except Exception as exc:
                self.guard.record_failure(prompt, self._failed(exc), context=context, policy=self._policy(config))
                raise
        try:
            text = output_text(value)
        except OutputShapeError as exc:
            self.guard.record_failure(prompt, str(exc), context=context, policy=self._policy(config))
            raise
        if has_tool_calls(value) and not text.strip():
            self.guard.record(self._no_text(prompt, config), context)
            return value
        decision = self.guard.check(
            text,
            prompt,
            llm=self._regenerate(config, original),
            context=context,
            policy=self._policy(config),
        )
        return self._guarded(value, decision)

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        """Guard one output (or, in the wrapping form, run the chain on ``input`` and guard its output)."""
        return self._call_with_config(self._invoke, input, ensure_config(config))

    async def _ainvoke(self, value: Any, run_manager: AsyncCallbackManagerForChainRun, config: RunnableConfig) -> Any:
        self.guard.ensure_open()  # before the chain runs: its output could not be guarded or recorded
        prompt = None
        context = _context(config, run_manager.run_id)
        original = value
        if self.llm is not None:
            prompt = self.prompt_text(value)
            try:
                value = await self.llm.ainvoke(value, config)
            except BaseException as exc:  # cancellation too
                with anyio.CancelScope(shield=True):
                    await self.guard.arecord_failure(
                        prompt, self._failed(exc), context=context, policy=self._policy(config)
                    )
                raise
        try:
            text = output_text(value)
        except OutputShapeError as exc:
            await self.guard.arecord_failure(prompt, str(exc), context=context, policy=self._policy(config))
            raise
        if has_tool_calls(value) and not text.strip():
            await self.guard.arecord(self._no_text(prompt, config), context)
            return value
        decision = await self.guard.acheck(
            text,
            prompt,
            llm=self._aregenerate(config, original),
            context=context,
            policy=self._policy(config),
        )
        return self._guarded(value, decision)

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        """Async twin of ``invoke``."""
        return await self._acall_with_config(self._ainvoke, input, ensure_config(config))

    # --------------------------------------------------------------------- streaming

    def _transform(
        self, input: Iterator[Any], run_manager: CallbackManagerForChainRun, config: RunnableConfig
    ) -> Iterator[Any]:
        chunks: Iterator[Any] = input
        self.guard.ensure_open()
        prompt: str | None = None
        if self.llm is not None:
            prompts = list(input)
            first = prompts[-1] if prompts else ""
            prompt = self.prompt_text(first)
            chunks = self.llm.stream(first, config)
        sg = StreamGuard(self.guard, prompt, policy=self._policy(config), context=_context(config, run_manager.run_id))
        template: Any = None
        tools = False
        try:
            for chunk in chunks:
                template = chunk if template is None else template
                if has_tool_calls(chunk):
                    tools = True
                    yield tool_part(chunk)
                released = sg.feed(output_text(chunk))
                if released:
                    yield like(chunk, released)
                if sg.stopped is not None:
                    break
            if tools and not sg.text.strip():
                self.guard.record(self._no_text(prompt, config), sg.context)
                return
            tail, _ = sg.finish()
        except BaseException as exc:  # the chain failed, or the consumer closed the stream (GeneratorExit)
            sg.abort(broken_reason(exc))
            raise
        finally:
            close = getattr(chunks, "close", None) if self.llm is not None else None
            if close is not None:  # the chain's stream, when this runnable started it
                close()
        if sg.stopped is not None:
            yield like(template if template is not None else "", sg.refusal)
        elif tail:
            yield like(template if template is not None else "", tail)

    def transform(self, input: Iterator[Any], config: RunnableConfig | None = None, **kwargs: Any) -> Iterator[Any]:
        """Guard a stream of chunks (what ``chain.stream()`` feeds this runnable)."""
        started: list[Iterator[Any]] = []

        def transformer(
            input: Iterator[Any], run_manager: CallbackManagerForChainRun, config: RunnableConfig
        ) -> Iterator[Any]:
            started.append(self._transform(input, run_manager, config))
            return started[-1]

        try:
            yield from self._transform_stream_with_config(input, transformer, ensure_config(config))
        finally:  # LangChain drops an unfinished inner stream; close it so it records its decision now
            for stream in started:
                close = getattr(stream, "close", None)
                if close is not None:
                    close()

    def stream(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Iterator[Any]:
        """Stream the guarded output: chunks are released one checked sentence at a time."""
        yield from self.transform(iter([input]), config, **kwargs)

    async def _atransform(
        self, input: AsyncIterator[Any], run_manager: AsyncCallbackManagerForChainRun, config: RunnableConfig
    ) -> AsyncIterator[Any]:
        prompt: str | None = None
        chunks: AsyncIterator[Any] = input
        self.guard.ensure_open()
        if self.llm is not None:
            prompts = [p async for p in input]
            first = prompts[-1] if prompts else ""
            prompt = self.prompt_text(first)
            chunks = self.llm.astream(first, config)
        sg = StreamGuard(self.guard, prompt, policy=self._policy(config), context=_context(config, run_manager.run_id))
        template: Any = None
        tools = False
        try:
            async for chunk in chunks:
                template = chunk if template is None else template
                if has_tool_calls(chunk):
                    tools = True
                    yield tool_part(chunk)
                released = await sg.afeed(output_text(chunk))
                if released:
                    yield like(chunk, released)
                if sg.stopped is not None:
                    break
            if tools and not sg.text.strip():
                await self.guard.arecord(self._no_text(prompt, config), sg.context)
                return
            tail, _ = await sg.afinish()
        except BaseException as exc:  # the chain failed, the consumer closed the stream, or cancellation
            with anyio.CancelScope(shield=True):
                await sg.aabort(broken_reason(exc))
            raise
        finally:
            close = getattr(chunks, "aclose", None) if self.llm is not None else None
            if close is not None:  # the chain's stream, when this runnable started it
                with anyio.CancelScope(shield=True):
                    await close()
        if sg.stopped is not None:
            yield like(template if template is not None else "", sg.refusal)
        elif tail:
            yield like(template if template is not None else "", tail)

    async def atransform(
        self, input: AsyncIterator[Any], config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[Any]:
        """Async twin of ``transform``."""
        stream = self._atransform_stream_with_config(input, self._atransform, ensure_config(config))
        try:
            async for chunk in stream:
                yield chunk
        finally:  # close the inner stream now (not when collected), so a stream ended early is recorded now
            close = getattr(stream, "aclose", None)
            if close is not None:
                await close()

    async def astream(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> AsyncIterator[Any]:
        """Async twin of ``stream``."""

        async def single() -> AsyncIterator[Any]:
            yield input

        stream = self.atransform(single(), config, **kwargs)
        try:
            async for chunk in stream:
                yield chunk
        finally:
            close = getattr(stream, "aclose", None)
            if close is not None:
                await close()


def wrap_runnable(guard: Guard, chain: Runnable[Any, Any], *, rewrite_key: str | None = None) -> GuardRunnable:
    """``GuardRunnable(guard, llm=chain)``: the chain runs inside the guard, so rewrites can re-invoke it."""
    return GuardRunnable(guard, llm=chain, rewrite_key=rewrite_key)
