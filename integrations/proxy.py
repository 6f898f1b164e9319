"""`guardrail serve`: an OpenAI-compatible proxy that guards every chat completion.

    guardrail serve --upstream http://127.0.0.1:8000/v1 --policy default --port 8080

- ``POST /v1/chat/completions`` is forwarded to the upstream; the answer (streamed or not) is
  guarded and returned as allowed, rewritten (the proxy re-asks the upstream) or refused. Every
  response carries a ``guardrail`` object in its JSON body (the last chunk of each choice when
  streaming) and ``x-guardrail-action`` / ``x-guardrail-policy`` / ``x-guardrail-model`` headers
  (non-stream). With ``n > 1`` every choice is guarded on its own (see
  ``guardrail.integrations.openai``); tool-call replies pass through unscored.
- By default every request is guarded with the proxy's own policy. The request header
  ``x-guardrail-policy`` may name another only if the operator allowed it (``policies``; ``serve
  --allow-policy``): any other name is refused with a 403 naming the allowed ones (and counted in
  ``guardrail_policy_refusals_total``), so a client cannot pick a laxer policy than the operator's.
- ``Authorization`` is passed to the upstream untouched and never logged or recorded.
- Requests are checked before anything is sent upstream: a malformed one gets a 400 naming the
  problem. Upstream errors keep their status and OpenAI-style body; connection failures and
  answers that are not JSON (or have no choices) become 502, timeouts 504, all OpenAI-style
  errors. Nothing waits longer than ``--timeout``.
- Every request that reaches the upstream ends in recorded decisions (one per choice): a failed
  request, a stream that breaks and a client that disconnects mid-stream are recorded as blocks
  naming the problem.
- ``GET /healthz``, ``/readyz`` and ``/metrics``: see ``guardrail.integrations.proxy_ops``.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from guardrail import metrics
from guardrail.decision import Decision, error_text
from guardrail.guard import Guard
from guardrail.integrations.openai_reply import aguard_reply, shielded
from guardrail.integrations.openai_stream import StreamRelay
from guardrail.integrations.openai_wire import (
    UpstreamError,
    apply_decisions,
    choice_texts,
    error_body,
    guard_headers,
    guardrail_info,
    parse_reply,
    prompt_of,
    raise_for,
    reply_text,
    rewrite_request,
    strictest,
    validate_request,
)
from guardrail.integrations.proxy_ops import Readiness, TimedRequests, ops_routes
from guardrail.policy import Policy

COMPLETIONS = "/v1/chat/completions"
POLICY_HEADER = "x-guardrail-policy"
FORWARDED_HEADERS = ("authorization", "openai-organization", "openai-project")
CLIENT_GONE = "client disconnected before the stream ended"


class ClosingStreamingResponse(StreamingResponse):
    """A streaming response that closes its body iterator, then runs ``on_close``, however it ends.

    Starlette stops iterating when the client disconnects but leaves the generator to the
    garbage collector (and never starts it if the client left before the first chunk); closing
    it here lets the guarded stream record its decision at once, and ``on_close`` covers a body
    that never started.
    """

    def __init__(
        self, content: AsyncIterator[str], *, on_close: Callable[[], Awaitable[None]], media_type: str
    ) -> None:
        super().__init__(content, media_type=media_type)
        self.on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                close = getattr(self.body_iterator, "aclose", None)
                if close is not None:
                    await close()
                await self.on_close()


def _event(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data)}\n\n"


class PolicyNotAllowed(Exception):
    """A request named a policy the operator did not allow."""


def create_app(
    guard: Guard,
    upstream: str,
    *,
    timeout: float = 60.0,
    policies: list[Policy] | None = None,
    with_metrics: bool = True,
    close_guard: bool = False,
) -> Starlette:
    """The proxy as an ASGI app (serve it with uvicorn, or mount it in your own app).

    ``policies`` are those a client may pick by name with ``x-guardrail-policy``, besides the
    guard's own. ``with_metrics`` turns on ``guardrail.metrics`` (for the whole process) and serves
    ``/metrics``. ``close_guard`` closes the guard when the app shuts down (a worker's own guard).
    """
    own = guard.policy.name
    allowed: dict[str, Policy] = {p.name: p for p in policies or []} | {own: guard.policy}
    base = upstream.rstrip("/") + "/"
    client = httpx.AsyncClient(base_url=base, timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)))
    readiness = Readiness()
    if with_metrics:
        metrics.enable()

    def choose_policy(request: Request) -> Policy:
        name = request.headers.get(POLICY_HEADER)
        if not name or name == own:
            return guard.policy  # the one in force (hot reload may have changed it)
        if name in allowed:
            return allowed[name]
        metrics.count_policy_refusal()
        others = ", ".join(sorted(set(allowed) - {own}))
        raise PolicyNotAllowed(
            f"policy {name!r} is not allowed on this proxy: it guards with {own!r}"
            + (f" and lets clients pick {others}" if others else ", and lets clients pick no other")
            + " (the operator allows more with `guardrail serve --allow-policy NAME`)"
        )

    def forward_headers(request: Request) -> dict[str, str]:
        return {h: request.headers[h] for h in FORWARDED_HEADERS if h in request.headers}

    def failure_response(exc: BaseException) -> tuple[int, dict[str, Any]]:
        """Status and OpenAI-style body for a request that failed before the guard decided."""
        if isinstance(exc, UpstreamError):
            return exc.status, exc.body
        if isinstance(exc, httpx.TimeoutException):
            return 504, error_body(f"upstream timed out after {timeout}s", "upstream_timeout", 504)
        if isinstance(exc, httpx.RequestError):
            return 502, error_body(f"upstream unreachable: {type(exc).__name__}", "upstream_unreachable", 502)
        return 500, error_body(f"the guard failed: {error_text(exc)}", "guardrail_error", 500)

    async def post(body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
        started = time.perf_counter()
        answer = await client.post("chat/completions", json=body, headers=headers)
        metrics.observe_upstream(time.perf_counter() - started)
        return parse_reply(answer)

    async def failed(exc: BaseException, body: dict[str, Any], policy: Policy, context: dict[str, Any]) -> Response:
        status, error = failure_response(exc)
        message = f"upstream request failed: {error_text(exc)}"
        decision = await shielded(
            lambda: guard.arecord_failure(prompt_of(body), message, policy=policy, context=context)
        )
        return JSONResponse(error, status_code=status, headers=guard_headers(decision))

    async def completions(request: Request) -> Response:
        try:
            body: dict[str, Any] = await request.json()
            validate_request(body)
        except ValueError as exc:  # not JSON, or not a chat request: nothing is sent upstream
            return JSONResponse(error_body(f"invalid request: {exc}", "invalid_request_error", 400), status_code=400)
        try:
            policy = choose_policy(request)
        except PolicyNotAllowed as exc:
            return JSONResponse(error_body(str(exc), "policy_not_allowed", 403), status_code=403)
        headers = forward_headers(request)
        context = {"integration": "proxy", "request_id": request.headers.get("x-request-id")}
        if body.get("stream"):
            return await stream(body, headers, policy, context)
        try:
            upstream_reply = await post(body, headers)
            choice_texts(upstream_reply)  # an answer without choices is an upstream failure
        except Exception as exc:
            return await failed(exc, body, policy, context)
        except BaseException as exc:  # cancelled (server shutting down): still recorded
            message = f"request cancelled before the guard decided: {error_text(exc)}"
            await shielded(lambda: guard.arecord_failure(prompt_of(body), message, policy=policy, context=context))
            raise

        async def regenerate(instruction: str) -> str:
            return reply_text(await post(rewrite_request(body, instruction), headers))

        context["upstream_id"] = upstream_reply.get("id")
        try:
            decisions = await aguard_reply(guard, body, upstream_reply, regenerate, policy=policy, context=context)
        except Exception as exc:  # the guard itself failed (e.g. its audit sink): an OpenAI-style 500
            status, error = failure_response(exc)
            return JSONResponse(error, status_code=status)
        return JSONResponse(apply_decisions(upstream_reply, decisions), headers=guard_headers(strictest(decisions)))

    async def stream(
        body: dict[str, Any], headers: dict[str, str], policy: Policy, context: dict[str, Any]
    ) -> Response:
        started = time.perf_counter()
        try:
            upstream_request = client.build_request("POST", "chat/completions", json=body, headers=headers)
            upstream_response = await client.send(upstream_request, stream=True)
        except Exception as exc:
            return await failed(exc, body, policy, context)
        if upstream_response.status_code >= 400:
            try:
                await upstream_response.aread()
                raise_for(upstream_response)
            except Exception as exc:
                return await failed(exc, body, policy, context)
            finally:
                await upstream_response.aclose()
        relay = StreamRelay(guard, prompt_of(body), policy=policy, context=context, n=body.get("n") or 1)

        async def events() -> AsyncIterator[str]:
            failure: tuple[int, dict[str, Any]] | None = None
            decisions: list[Decision] = []
            try:
                try:
                    async with contextlib.aclosing(relay.aguarded(upstream_response.aiter_lines())) as chunks:
                        async for chunk in chunks:
                            yield _event(chunk)
                finally:
                    with anyio.CancelScope(shield=True):
                        await upstream_response.aclose()
                    metrics.observe_upstream(time.perf_counter() - started)
                closing = await relay.afinish()
            except Exception as exc:  # the upstream broke off or sent garbage: record, tell the client
                decisions = await relay.aabort(exc)
                failure = failure_response(exc)
                if isinstance(exc, httpx.HTTPError):
                    failure = 502, error_body(f"upstream stream failed: {error_text(exc)}", "upstream_error", 502)
            except BaseException:  # the client went away (GeneratorExit on close, or cancellation)
                await relay.aabort(CLIENT_GONE)
                raise
            if failure is not None:
                yield _event({**failure[1], "guardrail": guardrail_info(strictest(decisions))})
            else:
                for chunk in closing:
                    yield _event(chunk)
            yield "data: [DONE]\n\n"

        async def on_close() -> None:  # idempotent: records only what events() left open
            await upstream_response.aclose()
            await relay.aabort(CLIENT_GONE)

        return ClosingStreamingResponse(events(), on_close=on_close, media_type="text/event-stream")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await readiness.warm_up(guard)
        try:
            yield
        finally:
            await client.aclose()
            if close_guard:
                guard.close()

    ops = ops_routes(guard, allowed, base, readiness, with_metrics=with_metrics)
    return Starlette(
        routes=[Route(COMPLETIONS, completions, methods=["POST"]), *ops],
        middleware=[Middleware(TimedRequests, path=COMPLETIONS)] if with_metrics else [],
        lifespan=lifespan,
    )
