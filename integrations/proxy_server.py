"""Running the proxy: in this process, or as N worker processes under uvicorn's own supervisor.

``serve(settings, workers=N)``:

- ``N == 1``: the app runs in this process (``uvicorn.Server``).
- ``N > 1``: what ``uvicorn --workers N`` runs (``uvicorn.supervisors.Multiprocess``): the
  listening socket is bound once, N spawned workers accept on it, a worker that dies is replaced
  and one that cannot start stops them all. Each worker builds its app with the factory
  ``app_from_environment`` from ``ProxySettings`` handed over as JSON in ``GUARDRAIL_PROXY_SETTINGS``.
  The policies travel themselves, not their file names: every worker guards with exactly the
  policy this process loaded (same content hash), even if a file changes later or a worker is
  replaced.
- Every worker appends to the one audit store named by ``settings.audit``. A JSONL or SQLite log
  is safe for several processes on one machine (each append holds the file lock, or runs in a
  ``BEGIN IMMEDIATE`` transaction, and continues the chain from the stored tail); replicas on
  several machines share a PostgreSQL store.
- Metrics: ``PROMETHEUS_MULTIPROC_DIR`` is set to a new empty folder before the workers start,
  so that ``/metrics`` of any worker adds up all of them; the folder is removed at the end.
- SIGTERM and Ctrl-C stop gracefully: requests in flight finish and are recorded, each worker
  closes its guard (its audit store), then ``serve`` returns.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Callable
from typing import Any

import httpx
from pydantic import BaseModel, Field
from starlette.applications import Starlette

from guardrail.decision import error_text
from guardrail.guard import Guard
from guardrail.integrations.proxy import create_app
from guardrail.metrics import MULTIPROC_ENV
from guardrail.policy import Policy
from guardrail.record import DecisionSink

SETTINGS_ENV = "GUARDRAIL_PROXY_SETTINGS"
APP_FACTORY = "guardrail.integrations.proxy_server:app_from_environment"
STARTUP_FAILURE = 3  # uvicorn's exit status of a worker that could not start: the supervisor then stops


class ProxySettings(BaseModel):
    """What a proxy process needs to guard: handed to each worker as JSON."""

    upstream: str = Field(description="the upstream's base URL, e.g. http://127.0.0.1:8000/v1")
    timeout: float = 60.0
    policy: Policy = Field(description="the proxy's own policy, applied when a request names none")
    allowed: list[Policy] = Field(default_factory=list, description="other policies a client may name")
    audit: str | None = Field(None, description="the audit store every worker appends to")
    redact: bool = False
    deployment: str = "proxy"
    metrics: bool = True


def open_audit(target: str | None, redact: bool) -> DecisionSink | None:
    """The audit store ``target`` names (a path or a ``postgresql://`` URL; see ``guardrail.audit.open_store``)."""
    if target is None:
        return None
    from guardrail.audit import open_store

    return open_store(target, redact=redact)


def open_guard(settings: ProxySettings) -> Guard:
    """A guard for ``settings`` (loads the scorer model)."""
    return Guard(settings.policy, audit=open_audit(settings.audit, settings.redact), deployment=settings.deployment)


def build_app(settings: ProxySettings, guard: Guard, *, close_guard: bool) -> Starlette:
    return create_app(
        guard,
        settings.upstream,
        timeout=settings.timeout,
        policies=settings.allowed,
        with_metrics=settings.metrics,
        close_guard=close_guard,
    )


def app_from_environment() -> Starlette:
    """The app factory each worker runs: settings from ``GUARDRAIL_PROXY_SETTINGS``, its own guard.

    A worker that cannot start says why in one line and exits with uvicorn's start-up failure
    status, so that the supervisor stops instead of restarting it again and again.
    """
    try:
        raw = os.environ.get(SETTINGS_ENV)
        if not raw:
            raise ValueError(f"{SETTINGS_ENV} is not set (workers are started by `guardrail serve --workers N`)")
        settings = ProxySettings.model_validate_json(raw)
        guard = open_guard(settings)
    except Exception as exc:
        print(f"guardrail proxy worker {os.getpid()} cannot start: {error_text(exc)}", file=sys.stderr, flush=True)
        sys.exit(STARTUP_FAILURE)
    return build_app(settings, guard, close_guard=True)


def check_upstream(upstream: str) -> None:
    """Raise ``ValueError`` unless ``upstream`` is an http(s) URL with a host (checked at start-up)."""
    try:
        url = httpx.URL(upstream)
    except (httpx.InvalidURL, TypeError) as exc:
        raise ValueError(f"--upstream {upstream!r} is not a URL ({exc})") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(
            f"--upstream {upstream!r} must be an http:// or https:// URL with a host, e.g. http://127.0.0.1:8000/v1"
        )


def check_listen(host: str, port: int) -> None:
    """Raise ``OSError`` naming the address if the proxy could not listen on it (e.g. a port in use)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise OSError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


class _Stop(Exception):
    """SIGTERM, turned into an exception once uvicorn has shut down gracefully."""


def _stop(signum: int, frame: object) -> None:
    raise _Stop


def serve(
    settings: ProxySettings,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    workers: int = 1,
    announce: Callable[[str], None] | None = None,
) -> None:
    """Run the proxy with uvicorn until Ctrl-C or SIGTERM, in ``workers`` processes.

    Both stop it gracefully: requests in flight finish and are recorded, the guards are closed,
    then this returns. An upstream that is not an http(s) URL raises ``ValueError`` and an address
    that cannot be bound (a port in use) ``OSError``, both before anything starts; workers that
    cannot start raise ``OSError`` once they stopped. ``announce`` is called with a short
    description ("model ...", "N workers") once the proxy is about to serve.
    """
    if workers < 1:
        raise ValueError(f"--workers must be 1 or more, got {workers}")
    check_upstream(settings.upstream)
    check_listen(host, port)
    if workers == 1:
        _serve_here(settings, host, port, announce)
    else:
        _serve_workers(settings, host, port, workers, announce)


def _config(app: Any, host: str, port: int, **options: Any) -> Any:
    import uvicorn

    return uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, **options)


def _serve_here(settings: ProxySettings, host: str, port: int, announce: Callable[[str], None] | None) -> None:
    import uvicorn

    guard = open_guard(settings)
    try:
        server = uvicorn.Server(_config(build_app(settings, guard, close_guard=False), host, port))
        if announce is not None:
            announce(f"model {guard.scorer.model_id}")
        # uvicorn shuts down on SIGTERM, then raises the signal again; with this handler that ends
        # here instead of killing the process before the guard is closed.
        previous = signal.signal(signal.SIGTERM, _stop)
        try:
            server.run()
        except (_Stop, KeyboardInterrupt):
            pass
        except SystemExit as exc:  # uvicorn exits when start-up fails
            if exc.code:
                raise OSError(f"the proxy could not start on {host}:{port} (see the message above)") from None
        finally:
            signal.signal(signal.SIGTERM, previous)
    finally:
        guard.close()


def _serve_workers(
    settings: ProxySettings, host: str, port: int, workers: int, announce: Callable[[str], None] | None
) -> None:
    from uvicorn.supervisors import Multiprocess
    from uvicorn.supervisors.multiprocess import SIGNALS

    sink = open_audit(settings.audit, settings.redact)  # fails here, once, rather than in every worker
    if sink is not None:
        sink.close()
    saved = {name: os.environ.get(name) for name in (SETTINGS_ENV, MULTIPROC_ENV)}
    handlers = {sig: signal.getsignal(sig) for sig in SIGNALS}
    folder = tempfile.mkdtemp(prefix="guardrail-metrics-")
    os.environ[SETTINGS_ENV] = settings.model_dump_json()
    if settings.metrics:
        os.environ[MULTIPROC_ENV] = folder  # before the workers start: each inherits it
    config = _config(APP_FACTORY, host, port, factory=True, workers=workers)
    sock = config.bind_socket()
    try:
        supervisor = Multiprocess(config, sockets=[sock])
        if announce is not None:
            announce(f"{workers} workers")
        supervisor.run()
    finally:
        sock.close()
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        shutil.rmtree(folder, ignore_errors=True)
    if any(process.exitcode == STARTUP_FAILURE for process in supervisor.processes):
        raise OSError("the proxy's workers could not start (see the message above)")
