"""The proxy's operations endpoints, none of which is recorded in the audit log.

- ``GET /healthz``: the process is alive (always 200): the scorer model, the policy in force, the
  policies a client may pick, the upstream and the worker's process id.
- ``GET /readyz``: 200 when the proxy can guard: the model is loaded and has scored a warm-up
  text, the policy is valid (no failed hot reload) and the audit store is writable; otherwise
  503 with ``{"status": "not ready", "failed": [check, ...], "checks": {check: problem}}``.
- ``GET /metrics``: Prometheus metrics (``guardrail.metrics``), every worker's added up.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from guardrail import metrics
from guardrail.decision import error_text
from guardrail.guard import Guard
from guardrail.policy import Policy

WARM_UP_TEXT = "Octopuses have three hearts."
PROBE_TIMEOUT_S = 5.0


class Readiness:
    """What ``/readyz`` reports about the model: None once it scored the warm-up text, else why not."""

    def __init__(self) -> None:
        self.model: str | None = "the model has not scored its warm-up text yet"

    async def warm_up(self, guard: Guard) -> None:
        """Score one text straight through the scorer (not the guard: nothing is recorded or counted)."""
        try:
            await guard.scorer.ascore(WARM_UP_TEXT)
            self.model = None
        except Exception as exc:
            self.model = f"the model failed its warm-up: {error_text(exc)}"


def _audit_problem(guard: Guard) -> str | None:
    """Why the audit store cannot take a record now, or None (also None without a store)."""
    sink = guard.audit
    if sink is None:
        return None
    if guard.closed:
        return "the guard is closed"
    head = getattr(sink, "head", None)  # an AuditStore reaches its storage (a database: a query)
    if callable(head):
        head()
    path = getattr(sink, "path", None)
    if isinstance(path, Path):  # a file store: the file, or the folder that will hold it, must be writable
        if path.exists() and not path.is_file():
            return f"{path} is not a file"
        target = path if path.exists() else next(p for p in path.parents if p.exists())
        if not os.access(target, os.W_OK):
            return f"{target} is not writable"
    return None


async def audit_problem(guard: Guard) -> str | None:
    """``_audit_problem`` off the event loop, bounded by ``PROBE_TIMEOUT_S``."""
    try:
        with anyio.fail_after(PROBE_TIMEOUT_S):
            return await anyio.to_thread.run_sync(_audit_problem, guard, abandon_on_cancel=True)
    except TimeoutError:
        return f"the audit store did not answer within {PROBE_TIMEOUT_S:.0f}s"
    except Exception as exc:
        return f"the audit store cannot be used: {error_text(exc)}"


def ops_routes(
    guard: Guard, allowed: dict[str, Policy], upstream: str, readiness: Readiness, *, with_metrics: bool
) -> list[Route]:
    """The routes of ``/healthz``, ``/readyz`` and (``with_metrics``) ``/metrics``."""

    async def health(request: Request) -> Response:
        return JSONResponse(
            {
                "status": "ok",
                "model": guard.scorer.model_id,
                "precision": getattr(guard.scorer, "precision", None),
                "policy": guard.policy.ref.model_dump(),
                "policies": sorted(allowed),
                "upstream": upstream,
                "pid": os.getpid(),
            }
        )

    async def ready(request: Request) -> Response:
        problems = {
            "model": readiness.model,
            "policy": None if guard.policy_error is None else f"the last reload failed: {guard.policy_error}",
            "audit": await audit_problem(guard),
        }
        failed = [name for name, problem in problems.items() if problem is not None]
        checks = {name: problem or "ok" for name, problem in problems.items()}
        if failed:
            return JSONResponse({"status": "not ready", "failed": failed, "checks": checks}, status_code=503)
        return JSONResponse({"status": "ready", "checks": checks})

    async def exposition(request: Request) -> Response:
        body, content_type = await anyio.to_thread.run_sync(metrics.exposition)
        return Response(body, media_type=content_type)

    routes = [Route("/healthz", health, methods=["GET"]), Route("/readyz", ready, methods=["GET"])]
    if with_metrics:
        routes.append(Route("/metrics", exposition, methods=["GET"]))
    return routes


class TimedRequests:
    """ASGI middleware: the time of each request to ``path``, to its last byte, in ``guardrail_request_seconds``."""

    def __init__(self, app: ASGIApp, path: str) -> None:
        self.app = app
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != self.path:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send)
        finally:
            metrics.observe_request(time.perf_counter() - started)
