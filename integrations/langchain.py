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
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForChainRun, CallbackManagerForChainRun
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.prompt_values import PromptValue
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.runnables.config import ensure_config

from guardrail.guard import Guard
from guardrail.stream import StreamGuard

POLICY_KEY = "guardrail_policy"


def text_of(value: Any) -> str:
    """The text of a chain output or prompt: str, message, message list, prompt value or dict."""
    if isinstance(value, str):
        return value
    if isinstance(value, BaseMessage):
        content = value.content
        if isinstance(content, str):
            return content
        return "".join(part if isinstance(part, str) else str(part.get("text", "")) for part in content)
    if isinstance(value, PromptValue):
        return value.to_string()
    if isinstance(value, list | tuple):
        return "\n".join(text_of(v) for v in value)
    if isinstance(value, dict):
        for key in ("input", "question", "query", "prompt", "text"):
            if key in value:
                return text_of(value[key])
        return "\n".join(f"{k}: {text_of(v)}" for k, v in value.items())
    return str(value)


def like(original: Any, text: str) -> Any:
    """``text`` in the type of ``original`` (keeping message metadata)."""
    if isinstance(original, AIMessageChunk):
        return AIMessageChunk(content=text, id=original.id, response_metadata=original.response_metadata)
    if isinstance(original, AIMessage):
        return original.model_copy(update={"content": text})
    if isinstance(original, BaseMessage):
        return original.model_copy(update={"content": text})
    return text


def _context(config: RunnableConfig, run_id: Any) -> dict[str, Any]:
    context: dict[str, Any] = {"integration": "langchain", "run_id": str(run_id) if run_id else None}
    if config.get("tags"):
        context["tags"] = list(config["tags"])
    if config.get("metadata"):
        context["metadata"] = {k: v for k, v in config["metadata"].items() if isinstance(v, str | int | float | bool)}
    return context


class GuardRunnable(Runnable[Any, Any]):
    """Guards a chain's output with a ``guardrail.Guard``; see the module docstring."""

    def __init__(self, guard: Guard, llm: Runnable[Any, Any] | None = None, *, name: str = "GuardRunnable") -> None:
        self.guard = guard
        self.llm = llm
        self.name = name

    # --------------------------------------------------------------------- helpers

    def _policy(self, config: RunnableConfig) -> Any:
        return (config.get("configurable") or {}).get(POLICY_KEY)

    def _regenerate(self, config: RunnableConfig) -> Any:
        if self.llm is None:
            return None
        llm = self.llm

        def regenerate(instruction: str) -> str:
            return text_of(llm.invoke(instruction, config))

        return regenerate

    def _aregenerate(self, config: RunnableConfig) -> Any:
        if self.llm is None:
            return None
        llm = self.llm

        async def regenerate(instruction: str) -> str:
            return text_of(await llm.ainvoke(instruction, config))

        return regenerate

    # --------------------------------------------------------------------- invoke

    def _invoke(self, value: Any, run_manager: CallbackManagerForChainRun, config: RunnableConfig) -> Any:
        prompt = None
        if self.llm is not None:
            prompt = text_of(value)
            value = self.llm.invoke(value, config)
        decision = self.guard.check(
            text_of(value),
            prompt,
            llm=self._regenerate(config),
            context=_context(config, run_manager.run_id),
            policy=self._policy(config),
        )
        return like(value, decision.text)

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        """Guard one output (or, in the wrapping form, run the chain on ``input`` and guard its output)."""
        return self._call_with_config(self._invoke, input, ensure_config(config))

    async def _ainvoke(self, value: Any, run_manager: AsyncCallbackManagerForChainRun, config: RunnableConfig) -> Any:
        prompt = None
        if self.llm is not None:
            prompt = text_of(value)
            value = await self.llm.ainvoke(value, config)
        decision = await self.guard.acheck(
            text_of(value),
            prompt,
            llm=self._aregenerate(config),
            context=_context(config, run_manager.run_id),
            policy=self._policy(config),
        )
        return like(value, decision.text)

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        """Async twin of ``invoke``."""
        return await self._acall_with_config(self._ainvoke, input, ensure_config(config))

    # --------------------------------------------------------------------- streaming

    def _chunks(self, input: Iterator[Any], config: RunnableConfig) -> tuple[Iterator[Any], str | None]:
        if self.llm is None:
            return input, None
        prompts = list(input)
        prompt = prompts[-1] if prompts else ""
        return self.llm.stream(prompt, config), text_of(prompt)

    def _transform(
        self, input: Iterator[Any], run_manager: CallbackManagerForChainRun, config: RunnableConfig
    ) -> Iterator[Any]:
        chunks, prompt = self._chunks(input, config)
        sg = StreamGuard(self.guard, prompt, policy=self._policy(config), context=_context(config, run_manager.run_id))
        template: Any = None
        for chunk in chunks:
            template = chunk if template is None else template
            released = sg.feed(text_of(chunk))
            if released:
                yield like(chunk, released)
            if sg.stopped is not None:
                break
        tail, _ = sg.finish()
        if sg.stopped is not None:
            yield like(template if template is not None else "", sg.refusal)
        elif tail:
            yield like(template if template is not None else "", tail)

    def transform(self, input: Iterator[Any], config: RunnableConfig | None = None, **kwargs: Any) -> Iterator[Any]:
        """Guard a stream of chunks (what ``chain.stream()`` feeds this runnable)."""
        yield from self._transform_stream_with_config(input, self._transform, ensure_config(config))

    def stream(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Iterator[Any]:
        """Stream the guarded output: chunks are released one checked sentence at a time."""
        yield from self.transform(iter([input]), config, **kwargs)

    async def _atransform(
        self, input: AsyncIterator[Any], run_manager: AsyncCallbackManagerForChainRun, config: RunnableConfig
    ) -> AsyncIterator[Any]:
        prompt: str | None = None
        chunks: AsyncIterator[Any] = input
        if self.llm is not None:
            prompts = [p async for p in input]
            first = prompts[-1] if prompts else ""
            prompt = text_of(first)
            chunks = self.llm.astream(first, config)
        sg = StreamGuard(self.guard, prompt, policy=self._policy(config), context=_context(config, run_manager.run_id))
        template: Any = None
        async for chunk in chunks:
            template = chunk if template is None else template
            released = await sg.afeed(text_of(chunk))
            if released:
                yield like(chunk, released)
            if sg.stopped is not None:
                break
        tail, _ = await sg.afinish()
        if sg.stopped is not None:
            yield like(template if template is not None else "", sg.refusal)
        elif tail:
            yield like(template if template is not None else "", tail)

    async def atransform(
        self, input: AsyncIterator[Any], config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[Any]:
        """Async twin of ``transform``."""
        async for chunk in self._atransform_stream_with_config(input, self._atransform, ensure_config(config)):
            yield chunk

    async def astream(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> AsyncIterator[Any]:
        """Async twin of ``stream``."""

        async def single() -> AsyncIterator[Any]:
            yield input

        async for chunk in self.atransform(single(), config, **kwargs):
            yield chunk


def wrap_runnable(guard: Guard, chain: Runnable[Any, Any]) -> GuardRunnable:
    """``GuardRunnable(guard, llm=chain)``: the chain runs inside the guard, so rewrites can re-invoke it."""
    return GuardRunnable(guard, llm=chain)
