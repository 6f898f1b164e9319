"""OpenTelemetry spans of the guard, through the OpenTelemetry API only.

Each guarded call (``Guard.check``, ``acheck``, ``generate``, ``agenerate``) is one span,
``guardrail.guard``, with a child per pipeline step that ran: ``guardrail.score``,
``guardrail.evaluate``, ``guardrail.act`` and ``guardrail.record``. A rewrite's re-asks and
re-scores appear as further ``score``/``evaluate`` children of the call. The call span carries the
decision: ``guardrail.action``, ``guardrail.policy``, ``guardrail.policy_version`` and
``guardrail.violations`` (how many rules fired). A decision recorded outside a guarded call (a
stream's final decision, a failed upstream call) gets a ``guardrail.record`` span of its own,
under the application's current span if there is one. A guarded call inside an application's span
(an instrumented web request, say) is a child of that span.

Spans are only made when the application has installed the OpenTelemetry SDK and set a tracer
provider (``opentelemetry.trace.set_tracer_provider``, or ``OTEL_PYTHON_TRACER_PROVIDER``);
otherwise each hook returns after a lookup or two and allocates nothing (its cost is measured by
benchmarks/bench_observability.py). guardrail never configures exporters: that is the application's.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable, Iterator
from typing import Any, TypeVar, cast

from opentelemetry import trace

from guardrail.decision import Decision

_INACTIVE = (trace.ProxyTracerProvider, trace.NoOpTracerProvider)
_cached: tuple[trace.TracerProvider, trace.Tracer] | None = None

F = TypeVar("F", bound=Callable[..., Any])


def _tracer() -> trace.Tracer | None:
    """guardrail's tracer from the provider in force, or None when none was set (spans would go nowhere)."""
    global _cached
    provider = trace.get_tracer_provider()
    if isinstance(provider, _INACTIVE):
        return None
    cached = _cached
    if cached is None or cached[0] is not provider:
        cached = _cached = (provider, provider.get_tracer("guardrail"))
    return cached[1]


def active() -> bool:
    """Whether the application set a tracer provider (with the SDK), so that spans are recorded."""
    return _tracer() is not None


def _step_tracer() -> trace.Tracer | None:
    """The tracer for a step's span: only under a recording span (a guarded call's, or the app's).

    Asking the current span first keeps a step's hook to a context lookup when nothing is traced.
    """
    return _tracer() if trace.get_current_span().is_recording() else None


_UNTRACED = contextlib.nullcontext()
"""What a step's hook is when nothing is traced: a shared no-op, so an untraced call pays a lookup, not a generator."""


def span(step: str, *, root: bool = False) -> contextlib.AbstractContextManager[Any]:
    """A child span ``guardrail.<step>`` of the current span, made current while the block runs.

    ``root`` makes the span even without a current one (the record step: decisions recorded
    outside a guarded call, such as a stream's final one). Only use it around code that does not
    yield with the span current (a generator suspended inside it would detach its context
    elsewhere): see ``child``.
    """
    tracer = _tracer() if root else _step_tracer()
    if tracer is None:
        return _UNTRACED
    return tracer.start_as_current_span(f"guardrail.{step}")


def child(step: str) -> contextlib.AbstractContextManager[Any]:
    """A child span ``guardrail.<step>`` of the current span that is not made current.

    For a step that yields (the pipeline's ``act``, a generator): spans started while it runs are
    siblings, not its children, but no context is attached in one frame and detached in another.
    """
    tracer = _step_tracer()
    if tracer is None:
        return _UNTRACED
    return _ended(tracer.start_span(f"guardrail.{step}"))


@contextlib.contextmanager
def _ended(started: trace.Span) -> Iterator[None]:
    """End ``started`` when the block ends, marking it failed if the block raised."""
    try:
        yield
    except BaseException as exc:
        started.record_exception(exc)
        started.set_status(trace.Status(trace.StatusCode.ERROR, type(exc).__name__))
        raise
    finally:
        started.end()


def _describe(current: trace.Span, result: object) -> None:
    if isinstance(result, Decision):
        current.set_attribute("guardrail.action", result.action)
        current.set_attribute("guardrail.policy", result.policy.name)
        current.set_attribute("guardrail.policy_version", result.policy.version)
        current.set_attribute("guardrail.violations", len(result.violations))
        if result.error:
            current.set_attribute("guardrail.error", result.error)


def guarded_call(method: F) -> F:
    """Decorate a guard method (sync or async) that returns a ``Decision``: one ``guardrail.guard`` span per call."""
    if inspect.iscoroutinefunction(method):

        @functools.wraps(method)
        async def traced_async(*args: Any, **kwargs: Any) -> Any:
            tracer = _tracer()
            if tracer is None:
                return await method(*args, **kwargs)
            with tracer.start_as_current_span("guardrail.guard") as current:
                result = await method(*args, **kwargs)
                _describe(current, result)
                return result

        return cast(F, traced_async)

    @functools.wraps(method)
    def traced(*args: Any, **kwargs: Any) -> Any:
        tracer = _tracer()
        if tracer is None:
            return method(*args, **kwargs)
        with tracer.start_as_current_span("guardrail.guard") as current:
            result = method(*args, **kwargs)
            _describe(current, result)
            return result

    return cast(F, traced)
