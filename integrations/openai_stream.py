"""Guarding a streamed chat completion: ``StreamRelay`` turns upstream SSE lines into guarded chunks.

Each choice index gets its own ``guardrail.stream.StreamGuard`` (content is released one checked
sentence at a time; a block ends the choice with the refusal and ``finish_reason:
"content_filter"``), tool-call deltas pass through as they arrive, and every choice ends in
exactly one recorded decision (``finish``, or ``abort`` when the stream breaks or is closed
early). Sync and async; used by the clients (``openai``) and the proxy.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio

from guardrail.decision import Decision
from guardrail.guard import NO_TEXT_NOTE, Guard
from guardrail.integrations.openai_reply import PolicyChoice, no_text_decision, shielded
from guardrail.integrations.openai_wire import (
    TOOL_KEYS,
    UpstreamError,
    chunk_with,
    guardrail_info,
    parse_chunk,
    sse_data,
)
from guardrail.stream import StreamGuard
from guardrail.text import described


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
