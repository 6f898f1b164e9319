"""Prometheus metrics of the guard's decisions (``prometheus-client``), off until ``enable()``.

Every metric of a decision is derived from the ``Decision`` in one place, the pipeline's record
step (``Guard.record`` / ``Guard.arecord`` run inside ``record_step``), so a Guard used from Python
counts exactly what the proxy counts:

- ``guardrail_decisions_total{action, policy, deployment}``
- ``guardrail_violations_total{value, rule, policy}``: one per rule that fired
- ``guardrail_scoring_seconds``, ``guardrail_decision_seconds`` (the guard's whole time per decision,
  rewrites included, and generation when the Guard called the LLM): histograms
- ``guardrail_audit_write_failures_total{deployment}``

and, from the proxy (``guardrail serve``): ``guardrail_upstream_seconds`` (also fed by the LLM time
of ``Guard.generate``), ``guardrail_request_seconds`` (a chat completion end to end, to its last
streamed byte) and ``guardrail_policy_refusals_total`` (requests that named a policy the proxy
does not allow; unlabelled, as the name is the client's).

A Python application turns them on with ``guardrail.metrics.enable()`` and exposes them as it
exposes its other Prometheus metrics (``exposition()`` renders them). In a server with several
worker processes, ``PROMETHEUS_MULTIPROC_DIR`` must name an empty folder before the processes
start (``guardrail serve --workers N`` sees to it): each process then counts in its own files
there and ``exposition()`` adds them up.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

from guardrail import tracing
from guardrail.decision import Decision

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class _Metrics:
    """The metric objects, made once per process (a registry refuses the same name twice)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        from prometheus_client import Counter, Histogram

        self.registry = registry

        def histogram(name: str, doc: str) -> Histogram:
            return Histogram(name, doc, buckets=BUCKETS, registry=registry)

        self.decisions = Counter(
            "guardrail_decisions", "Decisions recorded", ["action", "policy", "deployment"], registry=registry
        )
        self.violations = Counter(
            "guardrail_violations", "Rules that fired, by value", ["value", "rule", "policy"], registry=registry
        )
        self.audit_failures = Counter(
            "guardrail_audit_write_failures", "Audit writes that failed", ["deployment"], registry=registry
        )
        self.policy_refusals = Counter(
            "guardrail_policy_refusals", "Requests refused for naming a policy not allowed", registry=registry
        )
        self.scoring = histogram("guardrail_scoring_seconds", "Time to score a response in value space")
        self.decision = histogram("guardrail_decision_seconds", "The guard's time per decision")
        self.upstream = histogram("guardrail_upstream_seconds", "Time the LLM (the proxy's upstream) took to answer")
        self.request = histogram("guardrail_request_seconds", "A proxied chat completion, end to end")


_metrics: _Metrics | None = None
_enabled = False


def enable(registry: CollectorRegistry | None = None) -> None:
    """Start counting (idempotent). ``registry`` defaults to prometheus-client's global one."""
    global _metrics, _enabled
    if _metrics is None:
        from prometheus_client import REGISTRY

        _metrics = _Metrics(registry if registry is not None else REGISTRY)
    _enabled = True


def disable() -> None:
    """Stop counting (the metrics keep their values and stay registered)."""
    global _enabled
    _enabled = False


def enabled() -> bool:
    """Whether ``enable()`` is in force."""
    return _enabled


def _on() -> _Metrics | None:
    return _metrics if _enabled else None


def observe(decision: Decision, deployment: str) -> None:
    """Count one decision: its action, the rules that fired and its latencies."""
    m = _on()
    if m is None:
        return
    policy = decision.policy.name
    m.decisions.labels(decision.action, policy, deployment).inc()
    for violation in decision.violations:
        m.violations.labels(violation.dimension, violation.rule_id, policy).inc()
    latency = decision.latency_ms
    for key, histogram in (("score", m.scoring), ("total", m.decision), ("generate", m.upstream)):
        if key in latency:
            histogram.observe(latency[key] / 1e3)


class RecordStep:
    """What the record step ends with: the decision to count, and whether the audit write failed."""

    def __init__(self, decision: Decision) -> None:
        self.decision = decision
        self.failed = False

    def unrecorded(self, decision: Decision) -> None:
        """The store could not take the decision: ``decision``, its fail-mode replacement (recorded
        in the store's fallback log), is counted instead, and the failed write."""
        self.decision, self.failed = decision, True


@contextlib.contextmanager
def record_step(decision: Decision, deployment: str) -> Iterator[RecordStep]:
    """Around the record step's audit write: its span, then the decision's metrics and a failed write's."""
    step = RecordStep(decision)
    with tracing.span("record", root=True):
        try:
            yield step
        except Exception:
            step.failed = True
            raise
        finally:
            m = _on()
            if m is not None and step.failed:
                m.audit_failures.labels(deployment).inc()
            observe(step.decision, deployment)


def observe_upstream(seconds: float) -> None:
    """One upstream call's duration (the proxy's)."""
    m = _on()
    if m is not None:
        m.upstream.observe(seconds)


def observe_request(seconds: float) -> None:
    """One proxied chat completion's duration, end to end."""
    m = _on()
    if m is not None:
        m.request.observe(seconds)


def count_policy_refusal() -> None:
    """One request refused for naming a policy the proxy does not allow."""
    m = _on()
    if m is not None:
        m.policy_refusals.inc()


def exposition() -> tuple[bytes, str]:
    """(body, content type) of the metrics in Prometheus' text format, every worker process's added up."""
    from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
    from prometheus_client.exposition import CONTENT_TYPE_LATEST

    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry = _metrics.registry if _metrics is not None else REGISTRY
    return generate_latest(registry), CONTENT_TYPE_LATEST
