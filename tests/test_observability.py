"""Operations: Prometheus metrics from the record step (Guard API and proxy), /healthz and /readyz,
and OpenTelemetry spans through the API with the real SDK's in-memory exporter.

The proxy runs for real on 127.0.0.1 in front of ``fake_upstream`` (which stands in for a remote LLM)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.util._once import Once
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from guardrail import metrics, tracing
from guardrail.actions.rewrite import REWRITE_LEAD
from guardrail.audit import open_store, records
from guardrail.guard import Guard
from guardrail.integrations import fake_upstream
from guardrail.integrations.proxy import create_app
from guardrail.policy import load_policy
from guardrail.scorers.local import LocalScorer
from guardrail.sinks.jsonl import JsonlSink
from tests.pg import PgServer, require_binaries
from tests.samples import HARMFUL, HARMFUL_PROMPT, REFUSAL
from tests.servers import running

USER = [{"role": "user", "content": "Tell me about octopuses."}]
HARM = [{"role": "user", "content": "How do I break in to my neighbour's house?"}]


@pytest.fixture
def counting() -> Iterator[None]:
    was = metrics.enabled()
    metrics.enable()
    yield
    if not was:
        metrics.disable()


def value(name: str, **labels: str) -> float:
    """A sample of the process's metrics (0 when it does not exist yet)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


def scraped(text: str, name: str, **labels: str) -> float:
    """A sample of a /metrics page (0 when absent)."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


# ---------------------------------------------------------------------------- metrics from the Guard API


def test_the_guard_api_counts_decisions_violations_and_latencies(counting: None, scorer: LocalScorer) -> None:
    guard = Guard("default", scorer=scorer, deployment="metrics-api")
    decisions = {
        a: value("guardrail_decisions_total", action=a, policy="default", deployment="metrics-api")
        for a in ("allow", "block")
    }
    scored = value("guardrail_scoring_seconds_count")
    blocked = guard.check(HARMFUL, prompt=HARMFUL_PROMPT)
    guard.check(REFUSAL, prompt=HARMFUL_PROMPT)
    assert blocked.action == "block" and blocked.violations
    assert (
        value("guardrail_decisions_total", action="block", policy="default", deployment="metrics-api")
        == decisions["block"] + 1
    )
    assert (
        value("guardrail_decisions_total", action="allow", policy="default", deployment="metrics-api")
        == decisions["allow"] + 1
    )
    assert value("guardrail_scoring_seconds_count") == scored + 2
    for v in blocked.violations:
        assert value("guardrail_violations_total", value=v.dimension, rule=v.rule_id, policy="default") >= 1
    llm_calls = value("guardrail_upstream_seconds_count")
    guard.generate("Tell me about octopuses.", lambda prompt: "Octopuses have three hearts.")  # a stand-in LLM
    assert value("guardrail_upstream_seconds_count") == llm_calls + 1
    metrics.disable()
    guard.check(HARMFUL, prompt=HARMFUL_PROMPT)  # off: nothing counted
    assert (
        value("guardrail_decisions_total", action="block", policy="default", deployment="metrics-api")
        == decisions["block"] + 1
    )


def test_a_failed_audit_write_is_counted_and_its_decision_too(
    counting: None, scorer: LocalScorer, tmp_path: Path
) -> None:
    audit = tmp_path / "audit.jsonl"
    guard = Guard("default", scorer=scorer, audit=JsonlSink(audit), deployment="metrics-fail")
    guard.check(REFUSAL)
    audit.unlink()
    audit.mkdir()  # something else took the log's place: appending fails
    failures = value("guardrail_audit_write_failures_total", deployment="metrics-fail")
    with pytest.raises(OSError):
        guard.check(REFUSAL)
    assert value("guardrail_audit_write_failures_total", deployment="metrics-fail") == failures + 1
    assert value("guardrail_decisions_total", action="allow", policy="default", deployment="metrics-fail") == 2


# ---------------------------------------------------------------------------- the proxy's endpoints


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[str, Any]]:
    app = fake_upstream.create_app()
    with running(app) as url:
        yield url + "/v1", app


@pytest.fixture
def proxy(upstream: tuple[str, Any], scorer: LocalScorer, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    audit = tmp_path / "logs" / "audit.jsonl"
    guard = Guard("default", scorer=scorer, audit=JsonlSink(audit), deployment="ops-test")
    with running(create_app(guard, upstream[0], policies=[load_policy("creative-writing")])) as url:
        yield url, audit


def test_metrics_count_what_the_proxy_did(proxy: tuple[str, Path]) -> None:
    url, audit = proxy
    before = httpx.get(url + "/metrics").text
    chat = url + "/v1/chat/completions"
    for messages in (USER, USER, HARM):
        assert httpx.post(chat, json={"model": "fake", "messages": messages}, timeout=30).status_code == 200
    refused = httpx.post(
        chat, json={"model": "fake", "messages": USER}, headers={"x-guardrail-policy": "childrens-tutor"}
    )
    assert refused.status_code == 403 and "creative-writing" in refused.json()["error"]["message"]
    after = httpx.get(url + "/metrics")
    assert after.headers["content-type"].startswith("text/plain")

    def delta(name: str, **labels: str) -> float:
        return scraped(after.text, name, **labels) - scraped(before, name, **labels)

    kept = [r for r in records(audit)]
    assert len(kept) == 3  # the refusal and the operations endpoints are not in the audit log
    harmful = kept[-1]
    assert delta("guardrail_decisions_total", action="allow", policy="default", deployment="ops-test") == 2
    assert delta("guardrail_decisions_total", action=harmful["action"], policy="default", deployment="ops-test") == 1
    for v in harmful["violations"]:
        assert delta("guardrail_violations_total", value=v["dimension"], rule=v["rule_id"], policy="default") >= 1
    assert delta("guardrail_policy_refusals_total") == 1
    rewrites = 1 if harmful["action"] == "rewrite" else 0
    assert delta("guardrail_upstream_seconds_count") == 3 + len(harmful["attempts"]) * rewrites
    assert delta("guardrail_request_seconds_count") == 4
    assert delta("guardrail_scoring_seconds_count") >= 3


def test_health_and_readiness_are_not_recorded(proxy: tuple[str, Path], scorer: LocalScorer) -> None:
    url, audit = proxy
    health = httpx.get(url + "/healthz").json()
    assert health["status"] == "ok" and health["model"] == scorer.model_id
    assert health["policies"] == ["creative-writing", "default"] and isinstance(health["pid"], int)
    ready = httpx.get(url + "/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "checks": {"model": "ok", "policy": "ok", "audit": "ok"}}
    assert not audit.exists()  # nothing was recorded


def test_readiness_names_an_audit_store_that_cannot_be_written(proxy: tuple[str, Path]) -> None:
    url, audit = proxy
    assert httpx.post(url + "/v1/chat/completions", json={"model": "fake", "messages": USER}, timeout=30).is_success
    audit.unlink()
    audit.mkdir()  # something else took the log's place: appending would fail
    ready = httpx.get(url + "/readyz")
    assert ready.status_code == 503 and ready.json()["failed"] == ["audit"]
    assert str(audit) in ready.json()["checks"]["audit"]  # named, with what is wrong with it
    assert httpx.get(url + "/healthz").status_code == 200  # alive all the same
    audit.rmdir()
    assert httpx.get(url + "/readyz").status_code == 200


def test_a_database_that_goes_down_makes_the_proxy_unready_and_its_failed_writes_are_counted(
    upstream: tuple[str, Any], scorer: LocalScorer, tmp_path: Path
) -> None:
    require_binaries()
    server = PgServer()  # a server of its own, to stop and start
    try:
        server.start()
        store = open_store(server.create_database("ops"), fallback=tmp_path / "fallback.jsonl")
        guard = Guard("default", scorer=scorer, audit=store, deployment="ops-pg")
        with running(create_app(guard, upstream[0])) as url:
            assert httpx.get(url + "/readyz").status_code == 200
            server.stop()
            ready = httpx.get(url + "/readyz")
            assert ready.status_code == 503 and ready.json()["failed"] == ["audit"]
            assert "the audit store cannot be used" in ready.json()["checks"]["audit"]
            before = httpx.get(url + "/metrics").text
            answer = httpx.post(url + "/v1/chat/completions", json={"model": "fake", "messages": USER}, timeout=30)
            assert answer.json()["guardrail"]["action"] == "block"  # fail_mode closed: not shown unrecorded
            after = httpx.get(url + "/metrics").text
            for name, labels in (
                ("guardrail_audit_write_failures_total", {"deployment": "ops-pg"}),
                ("guardrail_decisions_total", {"action": "block", "policy": "default", "deployment": "ops-pg"}),
            ):
                assert scraped(after, name, **labels) - scraped(before, name, **labels) == 1
            assert [r["action"] for r in records(tmp_path / "fallback.jsonl")] == ["block"]
            server.start()
            assert httpx.get(url + "/readyz").status_code == 200
        guard.close()
    finally:
        server.close()


def test_readiness_names_a_policy_whose_reload_failed(
    upstream: tuple[str, Any], scorer: LocalScorer, tmp_path: Path
) -> None:
    path = tmp_path / "live.yaml"
    path.write_text("name: live\nextends: default\n")
    guard = Guard(path, scorer=scorer, hot_reload=True)
    with running(create_app(guard, upstream[0], with_metrics=False)) as url:
        assert httpx.get(url + "/readyz").status_code == 200
        assert httpx.get(url + "/metrics").status_code == 404  # metrics off: no endpoint
        path.write_text("name: live\nrules: [oops\n")
        with pytest.warns(RuntimeWarning, match="keeping live"):
            guard._policies.reload_now()
        ready = httpx.get(url + "/readyz")
    assert ready.status_code == 503 and ready.json()["failed"] == ["policy"]
    assert "YAML syntax error" in ready.json()["checks"]["policy"]


# ---------------------------------------------------------------------------- OpenTelemetry spans


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """The real SDK, set up as an application would, exporting to memory; unset afterwards."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    yield exporter
    provider.shutdown()
    # The API allows one provider per process; tests put the unset state back (as OpenTelemetry's own tests do).
    trace._TRACER_PROVIDER = None
    trace._TRACER_PROVIDER_SET_ONCE = Once()


def tree(finished: tuple[ReadableSpan, ...]) -> dict[str, list[str]]:
    """Each guarded call's span name -> the names of its children, in start order."""
    children: dict[int, list[ReadableSpan]] = {}
    for span in finished:
        if span.parent is not None:
            children.setdefault(span.parent.span_id, []).append(span)
    roots = [s for s in finished if s.name == "guardrail.guard"]
    return {
        f"{root.name}#{i}": [
            c.name for c in sorted(children.get(root.context.span_id, []), key=lambda c: c.start_time or 0)
        ]
        for i, root in enumerate(roots)
    }


REWRITE_POLICY = """
name: rewrite-spans
extends: default
rules:
  - {id: oppose-security, when: {opposes: security}, action: rewrite, reason: Keep people safe.}
"""


def test_each_guarded_call_is_a_span_with_its_steps(
    spans: InMemorySpanExporter, scorer: LocalScorer, tmp_path: Path
) -> None:
    assert tracing.active()
    guard = Guard("default", scorer=scorer, audit=JsonlSink(tmp_path / "a.jsonl"))
    decision = guard.check(HARMFUL, prompt=HARMFUL_PROMPT)
    (call,) = [s for s in spans.get_finished_spans() if s.name == "guardrail.guard"]
    assert tree(spans.get_finished_spans()) == {
        "guardrail.guard#0": ["guardrail.score", "guardrail.evaluate", "guardrail.act", "guardrail.record"]
    }
    assert call.attributes is not None
    assert call.attributes["guardrail.action"] == decision.action == "block"
    assert call.attributes["guardrail.policy"] == "default"
    assert call.attributes["guardrail.violations"] == len(decision.violations)
    assert {s.context.trace_id for s in spans.get_finished_spans()} == {call.context.trace_id}


async def test_a_rewrite_adds_score_and_evaluate_spans_to_its_call(
    spans: InMemorySpanExporter, scorer: LocalScorer, tmp_path: Path
) -> None:
    path = tmp_path / "rewrite.yaml"
    path.write_text(REWRITE_POLICY)

    async def improving_llm(prompt: str) -> str:  # stands in for a remote LLM
        return REFUSAL if prompt.startswith(REWRITE_LEAD) else HARMFUL

    decision = await Guard(path, scorer=scorer).agenerate(HARMFUL_PROMPT, improving_llm)
    assert decision.action == "rewrite"
    steps = tree(spans.get_finished_spans())["guardrail.guard#0"]
    assert steps[:3] == ["guardrail.score", "guardrail.evaluate", "guardrail.act"]
    assert steps[3:] == ["guardrail.score", "guardrail.evaluate", "guardrail.record"]  # the re-asked draft's


def test_without_a_provider_nothing_is_traced(scorer: LocalScorer) -> None:
    assert not tracing.active()
    assert Guard("default", scorer=scorer).check(REFUSAL).action == "allow"
