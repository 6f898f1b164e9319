"""OpenAI-compatible chat clients (httpx) whose responses are guarded.

Works with any server that speaks ``POST /v1/chat/completions`` (OpenAI, vLLM, llama.cpp,
Ollama, the ``guardrail serve`` proxy itself)::

    client = GuardedChatClient(guard, base_url="http://127.0.0.1:8000/v1", api_key="...")
    reply = client.create(model="m", messages=[{"role": "user", "content": "Hi"}])
    reply["choices"][0]["message"]["content"]      # allowed, rewritten or refusal text
    reply["guardrail"]                              # action, violations, policy, model

    for chunk in client.create(model="m", messages=msgs, stream=True): ...

Streaming follows ``guardrail.stream``: content is released one checked sentence at a time, and a
block ends the stream with a chunk carrying the refusal and ``finish_reason: "content_filter"``.
``AsyncGuardedChatClient`` is the async twin. The helpers here are shared with the proxy.
"""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx

from guardrail.decision import Decision
from guardrail.guard import Guard
from guardrail.policy import Policy
from guardrail.stream import StreamGuard

PolicyChoice = Policy | str | Path | None


class UpstreamError(RuntimeError):
    """The upstream server failed or answered with an error; ``status`` and ``body`` say how."""

    def __init__(self, message: str, status: int, body: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body or error_body(message, "upstream_error", status)


def error_body(message: str, kind: str, status: int) -> dict[str, Any]:
    """An OpenAI-style error object."""
    return {"error": {"message": message, "type": kind, "code": status}}


def prompt_of(request: dict[str, Any]) -> str | None:
    """The last user message of a chat request, as text."""
    for message in reversed(request.get("messages") or []):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
            return str(content) if content is not None else None
    return None


def guardrail_info(decision: Decision) -> dict[str, Any]:
    """The machine-readable summary added to guarded responses (``"guardrail"`` field)."""
    return {
        "action": decision.action,
        "intended_action": decision.intended_action,
        "policy": decision.policy.model_dump(),
        "model": decision.model_id,
        "violations": [
            {"rule_id": v.rule_id, "dimension": v.dimension, "observed": v.observed, "reason": v.reason}
            for v in decision.violations
        ],
        "reason": decision.explain(),
        "error": decision.error,
    }


def guard_headers(decision: Decision) -> dict[str, str]:
    """Response headers a proxy sets for a guarded response."""
    return {
        "x-guardrail-action": decision.action,
        "x-guardrail-policy": f"{decision.policy.name}@{decision.policy.version}",
        "x-guardrail-model": decision.model_id or "",
    }


def rewrite_request(request: dict[str, Any], instruction: str) -> dict[str, Any]:
    """The request that re-asks the model with a rewrite instruction (same model and settings)."""
    again = {k: v for k, v in request.items() if k not in ("messages", "stream", "stream_options", "n")}
    system = [m for m in request.get("messages") or [] if m.get("role") == "system"]
    again["messages"] = [*system, {"role": "user", "content": instruction}]
    return again


def apply_decision(response: dict[str, Any], decision: Decision) -> dict[str, Any]:
    """The upstream response with the guarded text in choice 0 and the ``guardrail`` field."""
    out = copy.deepcopy(response)
    choice = out["choices"][0]
    choice["message"]["content"] = decision.text
    if decision.action == "block":
        choice["finish_reason"] = "content_filter"
    out["guardrail"] = guardrail_info(decision)
    return out


def content_of(response: dict[str, Any]) -> str:
    try:
        return str(response["choices"][0]["message"]["content"] or "")
    except (KeyError, IndexError, TypeError) as exc:
        raise UpstreamError(f"upstream response has no choices[0].message.content ({exc})", 502) from None


def sse_events(lines: Iterable[str]) -> Iterator[dict[str, Any] | None]:
    """Parse SSE ``data:`` lines into chunk objects; ``None`` marks ``[DONE]``."""
    for line in lines:
        if not line.startswith("data:"):
            continue
        data = line[len("data:") :].strip()
        if data == "[DONE]":
            yield None
            return
        if data:
            yield json.loads(data)


def delta_of(chunk: dict[str, Any]) -> str:
    choices = chunk.get("choices") or []
    if not choices:
        return ""
    return str((choices[0].get("delta") or {}).get("content") or "")


def chunk_with(template: dict[str, Any] | None, text: str, finish: str | None = None) -> dict[str, Any]:
    """A streaming chunk like ``template`` whose delta content is ``text``."""
    base: dict[str, Any] = (
        copy.deepcopy(template) if template else {"object": "chat.completion.chunk", "choices": [{"index": 0}]}
    )
    choice: dict[str, Any] = base["choices"][0] if base.get("choices") else {"index": 0}
    choice["delta"] = {"content": text} if text else {}
    choice["finish_reason"] = finish
    base["choices"] = [choice]
    return base


class StreamRelay:
    """Turns upstream chunks into guarded chunks (sync and async), keeping upstream metadata."""

    def __init__(self, sg: StreamGuard) -> None:
        self.sg = sg
        self.template: dict[str, Any] | None = None
        self.finish_reason: str | None = None

    def _note(self, chunk: dict[str, Any]) -> None:
        if self.template is None and chunk.get("choices"):
            self.template = chunk
        choices = chunk.get("choices") or []
        if choices and choices[0].get("finish_reason"):
            self.finish_reason = choices[0]["finish_reason"]

    def _closing(self, tail: str, decision: Decision) -> list[dict[str, Any]]:
        if self.sg.stopped is not None:
            last = chunk_with(self.template, self.sg.refusal, "content_filter")
        else:
            last = chunk_with(self.template, tail, self.finish_reason or "stop")
        last["guardrail"] = guardrail_info(decision)
        return [last]

    def feed(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        self._note(chunk)
        released = self.sg.feed(delta_of(chunk))
        return [chunk_with(self.template, released)] if released else []

    async def afeed(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        self._note(chunk)
        released = await self.sg.afeed(delta_of(chunk))
        return [chunk_with(self.template, released)] if released else []

    def finish(self) -> list[dict[str, Any]]:
        tail, decision = self.sg.finish()
        return self._closing(tail, decision)

    async def afinish(self) -> list[dict[str, Any]]:
        tail, decision = await self.sg.afinish()
        return self._closing(tail, decision)


def _raise_for(response: httpx.Response) -> None:
    if response.status_code >= 400:
        try:
            body = response.json()
        except ValueError:
            body = error_body(response.text[:500] or response.reason_phrase, "upstream_error", response.status_code)
        raise UpstreamError(f"upstream answered {response.status_code}", response.status_code, body)


class GuardedChatClient:
    """Sync OpenAI-compatible chat client whose responses pass through ``guard``."""

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
        response = self._http.post("chat/completions", json=request)
        _raise_for(response)
        return dict(response.json())

    def create(self, **request: Any) -> Any:
        """``POST chat/completions`` with ``request``; a dict, or an iterator of chunks when ``stream=True``."""
        if request.get("stream"):
            return self._stream(request)
        response = self._post(request)

        def regenerate(instruction: str) -> str:
            return content_of(self._post(rewrite_request(request, instruction)))

        decision = self.guard.check(
            content_of(response), prompt_of(request), llm=regenerate, policy=self.policy,
            context={"integration": "openai-client", "upstream_id": response.get("id")},
        )  # fmt: skip
        return apply_decision(response, decision)

    def _stream(self, request: dict[str, Any]) -> Iterator[dict[str, Any]]:
        sg = StreamGuard(self.guard, prompt_of(request), policy=self.policy, context={"integration": "openai-client"})
        relay = StreamRelay(sg)
        with self._http.stream("POST", "chat/completions", json=request) as response:
            if response.status_code >= 400:
                response.read()
                _raise_for(response)
            for chunk in sse_events(response.iter_lines()):
                if chunk is None:
                    break
                yield from relay.feed(chunk)
                if sg.stopped is not None:
                    break
        yield from relay.finish()

    def close(self) -> None:
        self._http.close()


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
        response = await self._http.post("chat/completions", json=request)
        _raise_for(response)
        return dict(response.json())

    async def create(self, **request: Any) -> Any:
        """Async ``create``: a dict, or an async iterator of chunks when ``stream=True``."""
        if request.get("stream"):
            return self._stream(request)
        response = await self._post(request)

        async def regenerate(instruction: str) -> str:
            return content_of(await self._post(rewrite_request(request, instruction)))

        decision = await self.guard.acheck(
            content_of(response), prompt_of(request), llm=regenerate, policy=self.policy,
            context={"integration": "openai-client", "upstream_id": response.get("id")},
        )  # fmt: skip
        return apply_decision(response, decision)

    async def _stream(self, request: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        sg = StreamGuard(self.guard, prompt_of(request), policy=self.policy, context={"integration": "openai-client"})
        relay = StreamRelay(sg)
        async with self._http.stream("POST", "chat/completions", json=request) as response:
            if response.status_code >= 400:
                await response.aread()
                _raise_for(response)
            async for line in response.aiter_lines():
                events = list(sse_events([line]))
                if not events:
                    continue
                if events[0] is None:
                    break
                for out in await relay.afeed(events[0]):
                    yield out
                if sg.stopped is not None:
                    break
        for out in await relay.afinish():
            yield out

    async def aclose(self) -> None:
        await self._http.aclose()
