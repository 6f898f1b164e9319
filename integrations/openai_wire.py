"""The OpenAI chat-completions wire format, as the guarded clients and the proxy read and write it.

Plain functions over JSON objects, with no HTTP client or guard in them:

- **Requests**: ``validate_request`` (a ``ValueError`` naming the first problem), ``prompt_of``
  (the last user message) and ``rewrite_request`` (the request that re-asks the model).
- **Replies**: ``parse_reply`` / ``raise_for`` (``UpstreamError`` for an error or a body that is
  not a JSON object), ``choice_texts`` (what to guard in each choice, ``NO_TEXT`` for tool calls
  only), ``apply_decisions`` and the ``guardrail`` summary / ``x-guardrail-*`` headers.
- **Streams**: ``sse_data`` (an SSE ``data:`` line's payload), ``parse_chunk`` and ``chunk_with``.

Guarding lives in ``openai_reply`` (a whole reply) and ``openai_stream`` (a streamed one).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any

import httpx

from guardrail.decision import Decision
from guardrail.text import described

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
