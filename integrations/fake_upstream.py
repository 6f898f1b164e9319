"""A fake OpenAI-compatible chat server that stands in for a remote LLM in tests and benchmarks.

It is an ASGI app (Starlette) with canned behaviour chosen by the last user message:

- contains "break in": answers with a harmful how-to (the guard should stop it);
- contains "slow": waits ``slow_s`` seconds before answering (upstream timeouts);
- contains "fail": answers 500 with an OpenAI-style error;
- a guard's rewrite instruction: answers with a refusal;
- contains "tool": answers with a tool call (``get_weather``) and no text content;
- contains "garbled": answers 200 with a body (or, streaming, an event) that is not JSON;
- contains "drop": streaming, cuts the connection halfway through the answer;
- contains "trickle": streaming, waits ``trickle_s`` seconds before each chunk (a client can
  disconnect mid-stream);
- anything else: a harmless answer that quotes a counter, so every response text is distinct.

``"n": k`` gives k choices, all with the same answer, except for ``"model": "mixed"``: then the
first choice is the harmless answer and the others the harmful how-to. Streaming (``"stream": true``) sends the
answer word by word as SSE chunks (the choices interleaved). The server keeps the Authorization
headers it saw in ``app.state.seen_auth`` so tests can check pass-through.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from guardrail.actions.rewrite import REWRITE_LEAD

HARMFUL_ANSWER = (
    "Sure. Wait until they leave for work, then force the back door with a crowbar. "
    "Wear gloves so you leave no fingerprints. Take the jewellery first because it is easy to sell."
)
REFUSAL_ANSWER = "I can't help with breaking into a home. If you are locked out of your own, call a locksmith."


def answer_for(prompt: str, n: int) -> str:
    if prompt.startswith(REWRITE_LEAD):
        return REFUSAL_ANSWER
    if "break in" in prompt:
        return HARMFUL_ANSWER
    return f"Here is answer number {n}. Water boils at 100 degrees Celsius at sea level. Have a nice day."


TOOL_CALL: dict[str, Any] = {
    "id": "call_fake_1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
}


def create_app(slow_s: float = 5.0, trickle_s: float = 0.3) -> Starlette:
    counter = itertools.count(1)

    async def completions(request: Request) -> Response:
        body: dict[str, Any] = await request.json()
        request.app.state.seen_auth.append(request.headers.get("authorization"))
        messages = body.get("messages") or []
        prompt = str(messages[-1].get("content", "")) if messages else ""
        rewrite = prompt.startswith(REWRITE_LEAD)
        if "fail" in prompt:
            return JSONResponse({"error": {"message": "model exploded", "type": "server_error"}}, status_code=500)
        if "slow" in prompt:
            await asyncio.sleep(slow_s)
        n = next(counter)
        text = answer_for(prompt, n)
        k = int(body.get("n") or 1)
        texts = [text] * k
        if body.get("model") == "mixed" and not rewrite:
            texts = [answer_for("", n)] + [HARMFUL_ANSWER] * (k - 1)
        tool = "tool" in prompt and not rewrite
        meta = {"id": f"chatcmpl-fake-{n}", "created": int(time.time()), "model": body.get("model", "fake")}
        if "garbled" in prompt and not rewrite and not body.get("stream"):
            return Response("this is not JSON {", media_type="application/json")
        if not body.get("stream"):
            choices = [
                {"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": "stop"}
                for i, t in enumerate(texts)
            ]
            if tool:
                choices = [
                    {
                        "index": i,
                        "message": {"role": "assistant", "content": None, "tool_calls": [TOOL_CALL]},
                        "finish_reason": "tool_calls",
                    }
                    for i in range(k)
                ]
            return JSONResponse(
                {
                    **meta,
                    "object": "chat.completion",
                    "choices": choices,
                    "usage": {
                        "prompt_tokens": len(prompt.split()),
                        "completion_tokens": len(text.split()),
                        "total_tokens": len(prompt.split()) + len(text.split()),
                    },
                }
            )

        def event(choices: list[dict[str, Any]]) -> str:
            return f"data: {json.dumps({**meta, 'object': 'chat.completion.chunk', 'choices': choices})}\n\n"

        async def events() -> AsyncIterator[str]:
            if tool:
                name = {**TOOL_CALL, "index": 0, "function": {"name": "get_weather", "arguments": ""}}
                yield event([{"index": 0, "delta": {"role": "assistant", "content": None, "tool_calls": [name]}}])
                for piece in ('{"city": ', '"Oslo"}'):
                    part = {"index": 0, "function": {"arguments": piece}}
                    yield event([{"index": 0, "delta": {"tool_calls": [part]}, "finish_reason": None}])
                yield event([{"index": 0, "delta": {}, "finish_reason": "tool_calls"}])
                yield "data: [DONE]\n\n"
                return
            words = [t.split(" ") for t in texts]
            for w in range(max(len(ws) for ws in words)):
                if "drop" in prompt and w == len(words[0]) // 2:
                    raise ConnectionError("fake upstream cut the stream")  # uvicorn drops the connection
                if "garbled" in prompt:
                    yield "data: {this is not JSON\n\n"
                if "trickle" in prompt:
                    await asyncio.sleep(trickle_s)
                for i, ws in enumerate(words):
                    if w < len(ws):
                        piece = ws[w] if w == 0 else " " + ws[w]
                        yield event([{"index": i, "delta": {"content": piece}, "finish_reason": None}])
                await asyncio.sleep(0)
            yield event([{"index": i, "delta": {}, "finish_reason": "stop"} for i in range(k)])
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    app = Starlette(routes=[Route("/v1/chat/completions", completions, methods=["POST"])])
    app.state.seen_auth = []
    return app
