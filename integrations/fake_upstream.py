"""A fake OpenAI-compatible chat server that stands in for a remote LLM in tests and benchmarks.

It is an ASGI app (Starlette) with canned behaviour chosen by the last user message:

- contains "break in": answers with a harmful how-to (the guard should stop it);
- contains "slow": waits ``slow_s`` seconds before answering (upstream timeouts);
- contains "fail": answers 500 with an OpenAI-style error;
- a guard's rewrite instruction: answers with a refusal;
- anything else: a harmless answer that quotes a counter, so every response text is distinct.

Streaming (``"stream": true``) sends the answer word by word as SSE chunks. The server keeps the
Authorization headers it saw in ``app.state.seen_auth`` so tests can check pass-through.
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
    return f"Here is answer number {n}. Octopuses have three hearts and blue blood. Have a nice day."


def create_app(slow_s: float = 5.0) -> Starlette:
    counter = itertools.count(1)

    async def completions(request: Request) -> Response:
        body: dict[str, Any] = await request.json()
        request.app.state.seen_auth.append(request.headers.get("authorization"))
        messages = body.get("messages") or []
        prompt = str(messages[-1].get("content", "")) if messages else ""
        if "fail" in prompt:
            return JSONResponse({"error": {"message": "model exploded", "type": "server_error"}}, status_code=500)
        if "slow" in prompt:
            await asyncio.sleep(slow_s)
        n = next(counter)
        text = answer_for(prompt, n)
        meta = {"id": f"chatcmpl-fake-{n}", "created": int(time.time()), "model": body.get("model", "fake")}
        if not body.get("stream"):
            return JSONResponse(
                {
                    **meta,
                    "object": "chat.completion",
                    "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                    ],
                    "usage": {
                        "prompt_tokens": len(prompt.split()),
                        "completion_tokens": len(text.split()),
                        "total_tokens": len(prompt.split()) + len(text.split()),
                    },
                }
            )

        async def events() -> AsyncIterator[str]:
            words = text.split(" ")
            for i, word in enumerate(words):
                piece = word if i == 0 else " " + word
                chunk = {
                    **meta,
                    "object": "chat.completion.chunk",
                    "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}],
                }
                yield f"data: {json.dumps(chunk)}\n\n"
                await asyncio.sleep(0)
            last = {
                **meta,
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
            }
            yield f"data: {json.dumps(last)}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    app = Starlette(routes=[Route("/v1/chat/completions", completions, methods=["POST"])])
    app.state.seen_auth = []
    return app
