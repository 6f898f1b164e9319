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
``AsyncGuardedChatClient`` is the async twin. The helpers here are shared with the proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import anyio
import httpx

from guardrail.decision import Decision, error_text
from guardrail.guard import NO_TEXT_NOTE, Guard
from guardrail.policy import Policy
from guardrail.stream import StreamGuard, broken_reason
from guardrail.text import described

PolicyChoice = Policy | str | Path | None

TOOL_KEYS = ("tool_calls", "function_call")
"""Message (and delta) fields that carry tool calls: passed through, never scored."""


# A rewrite is one non-streamed text answer: no tools (OpenAI refuses parallel_tool_calls without tools).
_REWRITE_DROPS = (
    "messages",
    "stream",
    "stream_options",
    "n",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "functions",
    "function_call",
)
_STRICTNESS = {"allow": 0, "log": 1, "rewrite": 2, "block": 3}

T = TypeVar("T")


class UpstreamError(RuntimeError):
    """The upstream server failed or answered with an error; ``status`` and ``body`` say how."""

    def __init__(self, message: str, status: int, body: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body or error_body(message, "upstream_error", status)


def error_body(message: str, kind: str, status: int) -> dict[str, Any]:
    """An OpenAI-style error object."""
    return {"error": {"message": message, "type": kind, "code": status}}


# ---------------------------------------------------------------------- requests


def validate_request(request: object) -> None:
    """Raise ``ValueError`` naming the first problem of a chat request (checked before it is sent)."""
    if not isinstance(request, dict):
        raise ValueError(f"the body must be a JSON object, got {described(request)}")
    messages = request.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ValueError(f"'messages' must be a non-empty list of message objects, got {described(messages)}")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise ValueError(f"messages[{i}] must be an object with 'role' and 'content', got {described(message)}")
        if not isinstance(message.get("role"), str):
            raise ValueError(f"messages[{i}].role must be a string, got {described(message.get('role'))}")
        content = message.get("content")
        if content is not None and not isinstance(content, str | list):
            raise ValueError(
                f"messages[{i}].content must be a string, a list of content parts or null, got {described(content)}"
            )
        if isinstance(content, list):
            for j, part in enumerate(content):
                if not isinstance(part, dict):
                    raise ValueError(f"messages[{i}].content[{j}] must be a content part, got {described(part)}")
    n = request.get("n")
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
        raise ValueError(f"'n' must be a positive integer, got {described(n)}")
    stream = request.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise ValueError(f"'stream' must be true or false, got {described(stream)}")


def prompt_of(request: dict[str, Any]) -> str | None:
    """The last user message of a chat request, as text."""
    for message in reversed(request.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("text"))
            return content if isinstance(content, str) else None
    return None


def rewrite_request(request: dict[str, Any], instruction: str) -> dict[str, Any]:
    """The request that re-asks the model with a rewrite instruction (same model and settings).

    One choice, not streamed, without tools (a rewrite must be text), keeping the system messages.
    """
    again = {k: v for k, v in request.items() if k not in _REWRITE_DROPS}
    system = [m for m in request.get("messages") or [] if isinstance(m, dict) and m.get("role") == "system"]
    again["messages"] = [*system, {"role": "user", "content": instruction}]
    return again


# ---------------------------------------------------------------------- responses


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
        "note": decision.note,
    }


def guard_headers(decision: Decision) -> dict[str, str]:
    """Response headers a proxy sets for a guarded response."""
    return {
        "x-guardrail-action": decision.action,
        "x-guardrail-policy": f"{decision.policy.name}@{decision.policy.version}",
        "x-guardrail-model": decision.model_id or "",
    }


def strictest(decisions: list[Decision]) -> Decision:
    """The decision that did the most (block > rewrite > log > allow; the first of equals)."""
    return max(decisions, key=lambda d: _STRICTNESS[d.action])


def no_text_decision(guard: Guard, prompt: str | None, policy: PolicyChoice = None) -> Decision:
    """An allow decision for a reply with nothing to score (tool calls only); nothing was scored."""
    return guard.unscored(prompt, NO_TEXT_NOTE, policy=policy)


def _has_tools(part: dict[str, Any]) -> bool:
    return any(part.get(key) for key in TOOL_KEYS)


class _NoText:
    """Marks a choice with only tool calls: nothing to score."""


NO_TEXT = _NoText()


@dataclass
class ChoiceText:
    """One choice of a response and what to guard of it."""

    index: int
    """The choice's ``index`` (its position when the upstream gave none)."""
    text: Any
    """The content to check (a string; anything else is checked as invalid input), or ``NO_TEXT``."""


def choice_texts(response: object) -> list[ChoiceText]:
    """What to guard in each choice of a chat completion; ``UpstreamError`` (502) if it has none."""
    choices = response.get("choices") if isinstance(response, dict) else None
    if not isinstance(choices, list) or not choices:
        raise UpstreamError(f"upstream response has no choices (got {described(choices)})", 502)
    out = []
    for position, choice in enumerate(choices):
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict):
            raise UpstreamError(f"upstream response choice {position} has no message object", 502)
        index = choice.get("index")
        index = index if isinstance(index, int) and not isinstance(index, bool) else position
        content = message.get("content")
        if (content is None or content == "") and _has_tools(message):
            out.append(ChoiceText(index, NO_TEXT))
        elif isinstance(content, list):  # content parts
            out.append(ChoiceText(index, "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))))
        else:
            out.append(ChoiceText(index, "" if content is None else content))
    return out


def reply_text(response: dict[str, Any]) -> str:
    """The text of choice 0 of a rewrite's answer; ``UpstreamError`` if it has none."""
    first = choice_texts(response)[0].text
    if not isinstance(first, str) or not first.strip():
        raise UpstreamError(f"the rewrite answer has no text content (got {described(first)})", 502)
    return first


def apply_decisions(response: dict[str, Any], decisions: list[Decision]) -> dict[str, Any]:
    """The upstream response with each choice guarded by its decision, plus the ``guardrail`` fields.

    Blocked or rewritten choices get the decision's text (and lose their tool calls); allowed
    and logged ones are left as they came. Each choice carries its own ``guardrail`` summary;
    the top-level one is the strictest decision's.
    """
    out = copy.deepcopy(response)
    choices = out["choices"]
    if len(choices) != len(decisions):
        raise ValueError(f"{len(decisions)} decisions for {len(choices)} choices: every choice needs one")
    for choice, decision in zip(choices, decisions, strict=True):
        if decision.action in ("block", "rewrite"):
            message = choice["message"]
            message["content"] = decision.text
            dropped = [message.pop(key) for key in TOOL_KEYS if key in message]
            if decision.action == "block":
                choice["finish_reason"] = "content_filter"
            elif dropped or choice.get("finish_reason") in TOOL_KEYS:
                choice["finish_reason"] = "stop"
        choice["guardrail"] = guardrail_info(decision)
    out["guardrail"] = guardrail_info(strictest(decisions))
    return out


def parse_reply(response: httpx.Response) -> dict[str, Any]:
    """The JSON object of a non-streamed upstream answer; ``UpstreamError`` for an error or non-JSON."""
    raise_for(response)
    try:
        body = response.json()
    except ValueError:
        shown = response.text[:120]
        raise UpstreamError(
            f"upstream answered {response.status_code} with a body that is not JSON: {shown!r}", 502
        ) from None
    if not isinstance(body, dict):
        raise UpstreamError(f"upstream answered with JSON that is not an object: {described(body)}", 502)
    return body


def raise_for(response: httpx.Response) -> None:
    """``UpstreamError`` with the upstream's status and (OpenAI-style) body if it answered an error."""
    if response.status_code < 400:
        return
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        body = error_body(response.text[:500] or response.reason_phrase, "upstream_error", response.status_code)
    error = body.get("error")
    detail = error.get("message") if isinstance(error, dict) else None
    message = f"upstream answered {response.status_code}" + (f": {detail}" if detail else "")
    raise UpstreamError(message, response.status_code, body)


# ---------------------------------------------------------------------- streams


def sse_data(line: str) -> str | None:
    """The payload of an SSE ``data:`` line, or None for any other line."""
    if not line.startswith("data:"):
        return None
    return line[len("data:") :].strip()


def parse_chunk(data: str) -> dict[str, Any]:
    """One streamed chunk; ``UpstreamError`` (502) if it is not a JSON object or is an error event."""
    try:
        chunk = json.loads(data)
    except ValueError:
        raise UpstreamError(f"upstream sent a stream event that is not JSON: {data[:120]!r}", 502) from None
    if not isinstance(chunk, dict):
        raise UpstreamError(f"upstream sent a stream event that is not an object: {described(chunk)}", 502)
    if "error" in chunk and not chunk.get("choices"):
        error = chunk["error"]
        detail = error.get("message") if isinstance(error, dict) else error
        raise UpstreamError(f"upstream stream failed: {detail}", 502, chunk)
    return chunk


def chunk_with(template: dict[str, Any] | None, text: str, finish: str | None = None) -> dict[str, Any]:
    """A streaming chunk like ``template`` (one choice) whose delta content is ``text``."""
    base: dict[str, Any] = (
        copy.deepcopy(template) if template else {"object": "chat.completion.chunk", "choices": [{"index": 0}]}
    )
    choice: dict[str, Any] = base["choices"][0] if base.get("choices") else {"index": 0}
    choice["delta"] = {"content": text} if text else {}
    choice["finish_reason"] = finish
    base["choices"] = [choice]
    return base


@dataclass
class _ChoiceStream:
    """One choice index of a guarded stream."""

    index: int
    sg: StreamGuard
    template: dict[str, Any]
    role: str | None = None
    finish_reason: str | None = None
    tools: bool = False
    decision: Decision | None = None  # set when the choice has ended
    started: bool = field(default=False)

    @property
    def no_text(self) -> bool:
        return self.tools and not self.sg.text.strip()

    def chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        out = chunk_with(self.template, "", finish)
        if self.role and not self.started:
            delta = {"role": self.role, **delta}
        self.started = True
        out["choices"][0]["delta"] = delta
        return out


class StreamRelay:
    """Turns upstream chunks into guarded chunks (sync and async), keeping upstream metadata.

    Each choice index has its own ``StreamGuard`` and ends in exactly one recorded decision:
    ``finish`` at the end of the stream, or ``abort(error)`` if the stream breaks or is closed
    early. A choice that is stopped by the policy ends at once (its refusal chunk is emitted
    then); ``done`` tells when every expected choice has ended, so reading can stop.
    """

    def __init__(
        self,
        guard: Guard,
        prompt: str | None,
        *,
        policy: PolicyChoice = None,
        context: dict[str, Any] | None = None,
        n: int = 1,
    ) -> None:
        self.guard = guard
        self.prompt = prompt
        self.policy = policy
        self.context = dict(context or {})
        self.expected = n
        self.choices: dict[int, _ChoiceStream] = {}
        self.trailing: list[dict[str, Any]] = []  # chunks without choices (usage), sent after the end

    @property
    def done(self) -> bool:
        """Whether every expected choice has ended (the rest of the upstream stream can be dropped)."""
        ended = [c for c in self.choices.values() if c.decision is not None]
        return len(ended) >= self.expected and len(ended) == len(self.choices)

    @property
    def decisions(self) -> list[Decision]:
        return [c.decision for c in sorted(self.choices.values(), key=lambda c: c.index) if c.decision is not None]

    def _choice(self, index: int, chunk: dict[str, Any] | None = None) -> _ChoiceStream:
        if index not in self.choices:
            context = {**self.context, "choice_index": index}
            sg = StreamGuard(self.guard, self.prompt, policy=self.policy, context=context)
            template = {k: v for k, v in (chunk or {}).items() if k not in ("choices", "usage", "guardrail")}
            template.setdefault("object", "chat.completion.chunk")
            template["choices"] = [{"index": index}]
            self.choices[index] = _ChoiceStream(index, sg, template)
        return self.choices[index]

    def _split(self, chunk: dict[str, Any]) -> list[tuple[_ChoiceStream, str, list[dict[str, Any]]]]:
        """Per live choice in ``chunk``: its text delta and the chunks to pass through at once."""
        choices = chunk.get("choices")
        if not isinstance(choices, list) or not choices:
            if any(k in chunk for k in ("usage", "system_fingerprint")):
                self.trailing.append(chunk)
            return []
        out = []
        for position, raw in enumerate(choices):
            if not isinstance(raw, dict):
                raise UpstreamError(f"upstream sent a stream choice that is not an object: {described(raw)}", 502)
            index = raw.get("index")
            index = index if isinstance(index, int) and not isinstance(index, bool) else position
            state = self._choice(index, chunk)
            if state.decision is not None:
                continue  # ended (stopped by the policy): nothing more of it is sent
            given = raw.get("delta")
            delta: dict[str, Any] = given if isinstance(given, dict) else {}
            if raw.get("finish_reason"):
                state.finish_reason = raw["finish_reason"]
            if isinstance(delta.get("role"), str):
                state.role = delta["role"]
            passing = []
            tools = {k: delta[k] for k in TOOL_KEYS if delta.get(k)}
            if tools:
                state.tools = True
                passing.append(state.chunk(tools))
            content = delta.get("content")
            out.append((state, content if isinstance(content, str) else "", passing))
        return out

    def _released(self, state: _ChoiceStream, released: str) -> list[dict[str, Any]]:
        return [state.chunk({"content": released})] if released else []

    def _closing(self, state: _ChoiceStream, tail: str, decision: Decision) -> list[dict[str, Any]]:
        state.decision = decision
        if state.sg.stopped is not None:
            last = state.chunk({"content": state.sg.refusal}, "content_filter")
        elif decision.note == NO_TEXT_NOTE:
            last = state.chunk({}, state.finish_reason or "tool_calls")
        else:
            last = state.chunk({"content": tail} if tail else {}, state.finish_reason or "stop")
        last["guardrail"] = guardrail_info(decision)
        return [last]

    def _open(self) -> list[_ChoiceStream]:
        """The choices still to end (all ``n`` expected ones if none arrived at all)."""
        if not self.choices:
            for index in range(self.expected):
                self._choice(index)
        return [c for c in sorted(self.choices.values(), key=lambda c: c.index) if c.decision is None]

    # sync

    def _end(self, state: _ChoiceStream) -> list[dict[str, Any]]:
        if state.no_text:
            decision = self.guard.record(no_text_decision(self.guard, self.prompt, self.policy), state.sg.context)
            return self._closing(state, "", decision)
        tail, decision = state.sg.finish()
        return self._closing(state, tail, decision)

    def guarded(self, lines: Iterable[str]) -> Iterator[dict[str, Any]]:
        """The guarded chunks of an upstream SSE stream's lines, up to ``[DONE]`` or until every choice ended."""
        for line in lines:
            data = sse_data(line)
            if not data:
                continue
            if data == "[DONE]":
                return
            yield from self.feed(parse_chunk(data))
            if self.done:
                return

    def feed(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for state, text, passing in self._split(chunk):
            out += passing
            out += self._released(state, state.sg.feed(text))
            if state.sg.stopped is not None:
                out += self._end(state)
        return out

    def finish(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for state in self._open():
            out += self._end(state)
        return out + self.trailing

    def abort(self, error: str | BaseException) -> list[Decision]:
        """End every choice still open as broken (one recorded block each); their decisions."""
        for state in self._open():
            state.decision = state.sg.abort(error)
        return self.decisions

    # async

    async def _aend(self, state: _ChoiceStream) -> list[dict[str, Any]]:
        if state.no_text:
            decision = no_text_decision(self.guard, self.prompt, self.policy)
            closing = self._closing(state, "", decision)  # ended before the write: a cancel cannot record it twice
            await shielded(lambda: self.guard.arecord(decision, state.sg.context))
            return closing
        tail, decision = await state.sg.afinish()
        return self._closing(state, tail, decision)

    async def aguarded(self, lines: AsyncIterable[str]) -> AsyncGenerator[dict[str, Any], None]:
        """Async twin of ``guarded``."""
        async for line in lines:
            data = sse_data(line)
            if not data:
                continue
            if data == "[DONE]":
                return
            for out in await self.afeed(parse_chunk(data)):
                yield out
            if self.done:
                return

    async def afeed(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for state, text, passing in self._split(chunk):
            out += passing
            out += self._released(state, await state.sg.afeed(text))
            if state.sg.stopped is not None:
                out += await self._aend(state)
        return out

    async def afinish(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for state in self._open():
            out += await self._aend(state)
        return out + self.trailing

    async def aabort(self, error: str | BaseException) -> list[Decision]:
        """Async twin of ``abort``; it completes even while the caller is being cancelled."""
        with anyio.CancelScope(shield=True):
            for state in self._open():
                state.decision = await state.sg.aabort(error)
        return self.decisions


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
