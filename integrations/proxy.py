"""`guardrail serve`: an OpenAI-compatible proxy that guards every chat completion.

    guardrail serve --upstream http://127.0.0.1:8000/v1 --policy default --port 8080

- ``POST /v1/chat/completions`` is forwarded to the upstream; the answer (streamed or not) is
  guarded and returned as allowed, rewritten (the proxy re-asks the upstream) or refused. Every
  response carries a ``guardrail`` object in its JSON body (the last chunk when streaming) and
  ``x-guardrail-action`` / ``x-guardrail-policy`` / ``x-guardrail-model`` headers (non-stream).
- The request header ``x-guardrail-policy`` picks the deployment's policy: a shipped preset or
  a policy the proxy was started with (never an arbitrary file named by a client).
- ``Authorization`` is passed to the upstream untouched and never logged or recorded.
- Upstream errors keep their status and OpenAI-style body; connection failures become 502 and
  timeouts 504, both as OpenAI-style errors. Nothing waits longer than ``--timeout``.
- ``GET /healthz`` reports the scorer model and the policy in force.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from guardrail.guard import Guard
from guardrail.integrations.openai import (
    StreamRelay,
    UpstreamError,
    apply_decision,
    content_of,
    error_body,
    guard_headers,
    prompt_of,
    rewrite_request,
    sse_events,
)
from guardrail.policy import Policy, PolicyError, load_policy, presets
from guardrail.stream import StreamGuard

POLICY_HEADER = "x-guardrail-policy"
FORWARDED_HEADERS = ("authorization", "openai-organization", "openai-project")


def create_app(
    guard: Guard, upstream: str, *, timeout: float = 60.0, policies: dict[str, Policy] | None = None
) -> Starlette:
    """The proxy as an ASGI app (serve it with uvicorn, or mount it in your own app)."""
    allowed: dict[str, Policy] = {guard.policy.name: guard.policy, **(policies or {})}
    base = upstream.rstrip("/") + "/"
    client = httpx.AsyncClient(base_url=base, timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)))

    def choose_policy(request: Request) -> Policy:
        name = request.headers.get(POLICY_HEADER)
        if not name:
            return guard.policy
        if name in allowed:
            return allowed[name]
        if name in presets():
            allowed[name] = load_policy(name)
            return allowed[name]
        raise PolicyError(f"unknown policy '{name}' (known: {', '.join(sorted({*allowed, *presets()}))})")

    def forward_headers(request: Request) -> dict[str, str]:
        return {h: request.headers[h] for h in FORWARDED_HEADERS if h in request.headers}

    async def post(body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
        response = await client.post("chat/completions", json=body, headers=headers)
        if response.status_code >= 400:
            try:
                error = response.json()
            except ValueError:
                error = error_body(response.text[:500] or "upstream error", "upstream_error", response.status_code)
            raise UpstreamError(f"upstream answered {response.status_code}", response.status_code, error)
        return dict(response.json())

    async def completions(request: Request) -> Response:
        try:
            body: dict[str, Any] = await request.json()
            if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
                raise ValueError("the body must be a JSON object with a 'messages' list")
        except ValueError as exc:
            return JSONResponse(error_body(f"invalid request: {exc}", "invalid_request_error", 400), status_code=400)
        try:
            policy = choose_policy(request)
        except PolicyError as exc:
            return JSONResponse(error_body(str(exc), "invalid_request_error", 400), status_code=400)
        headers = forward_headers(request)
        context = {"integration": "proxy", "request_id": request.headers.get("x-request-id")}
        try:
            if body.get("stream"):
                return await stream(body, headers, policy, context)
            upstream_reply = await post(body, headers)

            async def regenerate(instruction: str) -> str:
                return content_of(await post(rewrite_request(body, instruction), headers))

            decision = await guard.acheck(
                content_of(upstream_reply), prompt_of(body), llm=regenerate, policy=policy, context=context
            )
            return JSONResponse(apply_decision(upstream_reply, decision), headers=guard_headers(decision))
        except UpstreamError as exc:
            return JSONResponse(exc.body, status_code=exc.status)
        except httpx.TimeoutException:
            return JSONResponse(
                error_body(f"upstream timed out after {timeout}s", "upstream_timeout", 504), status_code=504
            )
        except httpx.RequestError as exc:
            message = f"upstream unreachable: {type(exc).__name__}"
            return JSONResponse(error_body(message, "upstream_unreachable", 502), status_code=502)

    async def stream(
        body: dict[str, Any], headers: dict[str, str], policy: Policy, context: dict[str, Any]
    ) -> Response:
        upstream_request = client.build_request("POST", "chat/completions", json=body, headers=headers)
        upstream_response = await client.send(upstream_request, stream=True)
        if upstream_response.status_code >= 400:
            await upstream_response.aread()
            await upstream_response.aclose()
            try:
                error = upstream_response.json()
            except ValueError:
                error = error_body("upstream error", "upstream_error", upstream_response.status_code)
            return JSONResponse(error, status_code=upstream_response.status_code)
        relay = StreamRelay(StreamGuard(guard, prompt_of(body), policy=policy, context=context))

        async def events() -> AsyncIterator[str]:
            try:
                async for line in upstream_response.aiter_lines():
                    parsed = list(sse_events([line]))
                    if not parsed:
                        continue
                    if parsed[0] is None:
                        break
                    for chunk in await relay.afeed(parsed[0]):
                        yield f"data: {json.dumps(chunk)}\n\n"
                    if relay.sg.stopped is not None:
                        break
            except httpx.HTTPError as exc:
                error = error_body(f"upstream stream failed: {type(exc).__name__}", "upstream_error", 502)
                yield f"data: {json.dumps(error)}\n\n"
            finally:
                await upstream_response.aclose()
            for chunk in await relay.afinish():
                yield f"data: {json.dumps(chunk)}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    async def health(request: Request) -> Response:
        return JSONResponse(
            {
                "status": "ok",
                "model": guard.scorer.model_id,
                "precision": getattr(guard.scorer, "precision", None),
                "policy": guard.policy.ref.model_dump(),
                "policies": sorted({*allowed, *presets()}),
                "upstream": base,
            }
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await client.aclose()

    return Starlette(
        routes=[
            Route("/v1/chat/completions", completions, methods=["POST"]),
            Route("/healthz", health, methods=["GET"]),
        ],
        lifespan=lifespan,
    )


def serve(guard: Guard, upstream: str, host: str = "127.0.0.1", port: int = 8080, timeout: float = 60.0) -> None:
    """Run the proxy with uvicorn until interrupted."""
    import uvicorn

    uvicorn.run(
        create_app(guard, upstream, timeout=timeout), host=host, port=port, log_level="warning", access_log=False
    )
