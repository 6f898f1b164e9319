"""OpenAI-compatible chat clients (httpx) whose responses are guarded.

Works with any server that speaks ``POST /v1/chat/completions`` (OpenAI, vLLM, llama.cpp,
Ollama, the ``guardrail serve`` proxy itself)::

    with GuardedChatClient(guard, base_url="http://127.0.0.1:8000/v1", api_key="...") as client:
        reply = client.create(model="m", messages=[{"role": "user", "content": "Hi"}])
        reply["choices"][0]["message"]["content"]      # allowed, rewritten or refusal text
        reply["guardrail"]                              # action, violations, policy, model
        for chunk in client.create(model="m", messages=msgs, stream=True): ...

What is guarded, and how:

- **Every choice.** With ``n > 1`` each choice is checked on its own and gets its own decision
  (``choices[i]["guardrail"]``; one audit record per choice, ``context["choice_index"]``). The
  top-level ``guardrail`` field (and the proxy's ``x-guardrail-*`` headers) describe the
  strictest of them. Streams are guarded per choice index the same way.
- **Tool calls.** A choice with no text (``content`` null, absent or empty) but ``tool_calls`` or
  ``function_call`` has nothing to score: it passes through unchanged, and an ``allow`` decision
  saying so is recorded. Tool-call deltas of a stream pass through as they arrive. When a choice
  has text *and* tool calls and its text is blocked or rewritten, its tool calls are dropped
  (they belong to the answer that was refused); in a stream, deltas already sent cannot be
  recalled, but nothing more of a stopped choice is sent.
- **Failures are recorded.** An upstream error, an answer that is not JSON or has no choices, a
  stream that breaks, or a stream the consumer closes before its end: each ends in exactly one
  recorded block decision naming the problem (``Guard.record_failure`` / ``StreamGuard.abort``),
  and the error is raised to the caller (``UpstreamError`` for what the upstream sent).
- **Bad requests** (``messages`` not a list of message objects, ``n`` not a positive integer)
  raise ``ValueError`` naming the problem before anything is sent.

Streaming follows ``guardrail.stream``: content is released one checked sentence at a time, and a
block ends the choice with a chunk carrying the refusal and ``finish_reason: "content_filter"``.
``AsyncGuardedChatClient`` is the async twin.

This module holds the clients. What they share with the proxy lives beside it and is re-exported
here: the wire format (``openai_wire``: request validation, reply parsing, SSE events), guarding a
whole reply (``openai_reply``) and relaying a guarded stream (``openai_stream``: ``StreamRelay``).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx

from guardrail.decision import error_text
from guardrail.guard import Guard
from guardrail.integrations.openai_reply import PolicyChoice, aguard_reply, guard_reply, no_text_decision, shielded
from guardrail.integrations.openai_stream import StreamRelay
from guardrail.integrations.openai_wire import (
    NO_TEXT,
    TOOL_KEYS,
    ChoiceText,
    UpstreamError,
    apply_decisions,
    choice_texts,
    chunk_with,
    error_body,
    guard_headers,
    guardrail_info,
    parse_chunk,
    parse_reply,
    prompt_of,
    raise_for,
    reply_text,
    rewrite_request,
    sse_data,
    strictest,
    validate_request,
)
from guardrail.stream import broken_reason

__all__ = [
    "NO_TEXT",
    "TOOL_KEYS",
    "AsyncGuardedChatClient",
    "ChoiceText",
    "GuardedChatClient",
    "PolicyChoice",
    "StreamRelay",
    "UpstreamError",
    "aguard_reply",
    "apply_decisions",
    "choice_texts",
    "chunk_with",
    "error_body",
    "guard_headers",
    "guard_reply",
    "guardrail_info",
    "no_text_decision",
    "parse_chunk",
    "parse_reply",
    "prompt_of",
    "raise_for",
    "reply_text",
    "rewrite_request",
    "shielded",
    "sse_data",
    "strictest",
    "validate_request",
]


def _checked(request: dict[str, Any]) -> dict[str, Any]:
    try:
        validate_request(request)
    except ValueError as exc:
        raise ValueError(f"invalid chat request: {exc}") from None
    return request


class GuardedChatClient:
    """Sync OpenAI-compatible chat client whose responses pass through ``guard``; see the module docstring."""

    def __init__(
        self,
        guard: Guard,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        policy: PolicyChoice = None,
        http: httpx.Client | None = None,
    ) -> None:
        self.guard = guard
        self.policy = policy
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = http or httpx.Client(base_url=base_url.rstrip("/") + "/", headers=headers, timeout=timeout)

    def _post(self, request: dict[str, Any]) -> dict[str, Any]:
        return parse_reply(self._http.post("chat/completions", json=request))

    def create(self, **request: Any) -> Any:
        """``POST chat/completions`` with ``request``; a dict, or an iterator of chunks when ``stream=True``.

        Every choice is guarded; a failed call is recorded as a block and its error raised.
        """
        _checked(request)
        self.guard.ensure_open()  # before the upstream call: its answer could not be guarded or recorded
        if request.get("stream"):
            return self._stream(request)
        prompt = prompt_of(request)
        context: dict[str, Any] = {"integration": "openai-client"}
        try:
            response = self._post(request)
            choice_texts(response)
        except Exception as exc:
            error = f"upstream request failed: {error_text(exc)}"
            self.guard.record_failure(prompt, error, policy=self.policy, context=context)
            raise

        def regenerate(instruction: str) -> str:
            return reply_text(self._post(rewrite_request(request, instruction)))

        context["upstream_id"] = response.get("id")
        decisions = guard_reply(self.guard, request, response, regenerate, policy=self.policy, context=context)
        return apply_decisions(response, decisions)

    def _stream(self, request: dict[str, Any]) -> Iterator[dict[str, Any]]:
        relay = StreamRelay(
            self.guard, prompt_of(request), policy=self.policy, context={"integration": "openai-client"},
            n=request.get("n") or 1,
        )  # fmt: skip
        try:
            with self._http.stream("POST", "chat/completions", json=request) as response:
                if response.status_code >= 400:
                    response.read()
                    raise_for(response)
                yield from relay.guarded(response.iter_lines())
            closing = relay.finish()
        except BaseException as exc:  # GeneratorExit too: the consumer closed the stream early
            relay.abort(broken_reason(exc))
            raise
        yield from closing

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> GuardedChatClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncGuardedChatClient:
    """Async twin of ``GuardedChatClient``."""

    def __init__(
        self,
        guard: Guard,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        policy: PolicyChoice = None,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.guard = guard
        self.policy = policy
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = http or httpx.AsyncClient(base_url=base_url.rstrip("/") + "/", headers=headers, timeout=timeout)

    async def _post(self, request: dict[str, Any]) -> dict[str, Any]:
        return parse_reply(await self._http.post("chat/completions", json=request))

    async def create(self, **request: Any) -> Any:
        """Async ``create``: a dict, or an async iterator of chunks when ``stream=True``."""
        _checked(request)
        self.guard.ensure_open()  # before the upstream call: its answer could not be guarded or recorded
        if request.get("stream"):
            return self._stream(request)
        prompt = prompt_of(request)
        context: dict[str, Any] = {"integration": "openai-client"}
        try:
            response = await self._post(request)
            choice_texts(response)
        except BaseException as exc:
            error = f"upstream request failed: {error_text(exc)}"
            await shielded(lambda: self.guard.arecord_failure(prompt, error, policy=self.policy, context=context))
            raise

        async def regenerate(instruction: str) -> str:
            return reply_text(await self._post(rewrite_request(request, instruction)))

        context["upstream_id"] = response.get("id")
        decisions = await aguard_reply(self.guard, request, response, regenerate, policy=self.policy, context=context)
        return apply_decisions(response, decisions)

    async def _stream(self, request: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        relay = StreamRelay(
            self.guard, prompt_of(request), policy=self.policy, context={"integration": "openai-client"},
            n=request.get("n") or 1,
        )  # fmt: skip
        try:
            async with self._http.stream("POST", "chat/completions", json=request) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise_for(response)
                async with contextlib.aclosing(relay.aguarded(response.aiter_lines())) as chunks:
                    async for out in chunks:
                        yield out
            closing = await relay.afinish()
        except BaseException as exc:  # GeneratorExit (aclose) and cancellation too
            await relay.aabort(broken_reason(exc))
            raise
        for out in closing:
            yield out

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncGuardedChatClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
