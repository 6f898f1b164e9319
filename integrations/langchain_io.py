"""What ``GuardRunnable`` reads from and writes into LangChain values, as plain functions.

- **Outputs**: ``output_text`` (the text to guard: a string, a message, chunks, or a dict
  output's answer field, see ``answer_key``), ``has_tool_calls`` / ``tool_part`` (tool calls pass
  through unscored) and ``like`` (guarded text put back in the output's own type).
- **Inputs**: ``request_text`` (the user's request in a chain input, recorded as the prompt) and
  ``input_for_rewrite`` (the chain input that asks for a rewrite), both honouring ``rewrite_key``.
"""

from __future__ import annotations

from typing import Any

from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    convert_to_messages,
)
from langchain_core.prompt_values import PromptValue

PROMPT_KEYS = ("input", "question", "query", "prompt", "text")
"""Input variables taken to hold the user's request, in this order (unless ``rewrite_key`` names one)."""


ANSWER_KEYS = ("output", "answer", "result", "response", "text", "content")
"""Fields of a dict output taken to hold the answer (as agents and QA chains return), in this order."""


class OutputShapeError(ValueError):
    """A chain output whose answer cannot be told apart (a dict with several fields, none an answer key)."""


def answer_key(value: dict[Any, Any]) -> Any:
    """The field of a dict output that holds the answer: the first of ``ANSWER_KEYS``, or its only field."""
    for key in ANSWER_KEYS:
        if key in value:
            return key
    if len(value) == 1:
        return next(iter(value))
    raise OutputShapeError(
        f"cannot tell which field of the chain's output ({', '.join(repr(k) for k in value)}) is the answer: "
        f"guard a chain whose output is text, a message, or a dict with one of {', '.join(ANSWER_KEYS)}"
    )


def output_text(value: Any) -> str:
    """The text to guard in a chain output (a dict output's answer field, never its echoed input)."""
    if isinstance(value, dict):
        return output_text(value[answer_key(value)])
    return text_of(value)


def text_of(value: Any) -> str:
    """The text of a prompt or message: str, message, message list, prompt value or dict of variables."""
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
        for key in PROMPT_KEYS:
            if key in value:
                return text_of(value[key])
        return "\n".join(f"{k}: {text_of(v)}" for k, v in value.items())
    return str(value)


def has_tool_calls(value: Any) -> bool:
    """Whether a chain output (message or chunk) carries tool calls."""
    if isinstance(value, AIMessageChunk) and value.tool_call_chunks:
        return True
    if isinstance(value, AIMessage):
        return bool(value.tool_calls or value.invalid_tool_calls or value.additional_kwargs.get("function_call"))
    return False


def _without_tools(message: BaseMessage) -> dict[str, Any]:
    """The updates that drop a message's tool calls."""
    update: dict[str, Any] = {
        "additional_kwargs": {
            k: v for k, v in message.additional_kwargs.items() if k not in ("tool_calls", "function_call")
        }
    }
    if isinstance(message, AIMessage):
        update |= {"tool_calls": [], "invalid_tool_calls": []}
    if isinstance(message, AIMessageChunk):
        update["tool_call_chunks"] = []
    return update


def like(original: Any, text: str, *, drop_tools: bool = False) -> Any:
    """``text`` in the type of ``original`` (keeping message metadata; without tool calls if ``drop_tools``).

    In a dict output only the answer field changes.
    """
    if isinstance(original, dict):
        key = answer_key(original)
        return {**original, key: like(original[key], text, drop_tools=drop_tools)}
    if isinstance(original, AIMessageChunk):
        return AIMessageChunk(content=text, id=original.id, response_metadata=original.response_metadata)
    if isinstance(original, BaseMessage):
        update: dict[str, Any] = {"content": text}
        if drop_tools:
            update |= _without_tools(original)
        return original.model_copy(update=update)
    return text


def tool_part(chunk: AIMessageChunk) -> AIMessageChunk:
    """A streamed chunk's tool-call part, without its text (which is guarded)."""
    content = chunk.content
    kept: str | list[Any] = (
        "" if isinstance(content, str) else [p for p in content if isinstance(p, dict) and p.get("type") != "text"]
    )
    return chunk.model_copy(update={"content": kept})


def _last_human(messages: list[BaseMessage]) -> str | None:
    for message in reversed(messages):
        if isinstance(message, HumanMessage):
            return text_of(message)
    return None


def _as_messages(value: Any) -> list[BaseMessage] | None:
    """``value`` as a message list if it is one (messages, tuples, a prompt value), else None."""
    if isinstance(value, PromptValue):
        value = value.to_messages()
    if isinstance(value, BaseMessage):
        return [value]
    if isinstance(value, list | tuple) and value:
        try:
            return convert_to_messages(value)
        except (ValueError, TypeError, NotImplementedError):
            return None
    return None


class RewriteInputError(ValueError):
    """The wrapped chain's input has no variable the rewrite instruction can take the place of."""


def request_key(value: dict[Any, Any], rewrite_key: str | None = None) -> Any:
    """The input variable that holds the user's request, or None if it cannot be told."""
    if rewrite_key is not None:
        return rewrite_key if rewrite_key in value else None
    for key in PROMPT_KEYS:
        if key in value:
            return key
    return next(iter(value)) if len(value) == 1 else None


def request_text(value: Any, rewrite_key: str | None = None) -> str:
    """The user's request in a chain input (what the guard records as the prompt)."""
    if isinstance(value, dict):
        key = request_key(value, rewrite_key)
        return request_text(value[key], rewrite_key) if key is not None else text_of(value)
    messages = _as_messages(value) if not isinstance(value, str) else None
    if messages is not None:
        last = _last_human(messages)
        return last if last is not None else text_of(messages)
    return text_of(value)


def input_for_rewrite(original: Any, instruction: str, rewrite_key: str | None = None) -> Any:
    """The chain input that asks for a rewrite: ``original`` with the instruction in place of the request.

    ``RewriteInputError`` (naming the remedy) if a dict input has no variable to put it in.
    """
    if isinstance(original, dict):
        key = request_key(original, rewrite_key)
        if key is None:
            names = ", ".join(repr(k) for k in original)
            if rewrite_key is not None:
                problem = f"rewrite_key {rewrite_key!r} is not one of the chain's input variables ({names})"
            else:
                problem = (
                    f"the chain's input has several variables ({names}) and none is named {', '.join(PROMPT_KEYS)}"
                )
            raise RewriteInputError(
                f"cannot rewrite: {problem}; pass GuardRunnable(..., rewrite_key=NAME) naming the variable "
                "that holds the user's request"
            )
        return {**original, key: input_for_rewrite(original[key], instruction, rewrite_key)}
    messages = _as_messages(original) if not isinstance(original, str) else None
    if messages is not None:
        return [*(m for m in messages if isinstance(m, SystemMessage)), HumanMessage(instruction)]
    return instruction
