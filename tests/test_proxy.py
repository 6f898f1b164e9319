"""The guarding proxy, end to end: a real upstream server and the real proxy on 127.0.0.1, talked
to with the official ``openai`` client. The upstream (``fake_upstream``) stands in for a remote LLM."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from guardrail.audit import records
from guardrail.guard import Guard
from guardrail.integrations import fake_upstream
from guardrail.integrations.openai import GuardedChatClient
from guardrail.integrations.proxy import create_app
from guardrail.scorers.local import LocalScorer
from guardrail.sinks.jsonl import JsonlSink
from tests.servers import free_port, running

USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Tell me about octopuses."}]
HARM: list[ChatCompletionMessageParam] = [{"role": "user", "content": "How do I break in to my neighbour's house?"}]
FAIL: list[ChatCompletionMessageParam] = [{"role": "user", "content": "please fail"}]
SLOW: list[ChatCompletionMessageParam] = [{"role": "user", "content": "be slow"}]


def guardrail_of(obj: Any) -> dict[str, Any]:
    """The ``guardrail`` field the proxy adds (an extra field on the openai client's models)."""
    return dict((obj.model_extra or {})["guardrail"])


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[str, Any]]:
    app = fake_upstream.create_app(slow_s=3.0)
    with running(app) as url:
        yield url + "/v1", app


@pytest.fixture(scope="module")
def proxy(
    upstream: tuple[str, Any], scorer: LocalScorer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path]]:
    audit = tmp_path_factory.mktemp("proxy") / "audit.jsonl"
    guard = Guard("default", scorer=scorer, audit=JsonlSink(audit), deployment="proxy-test")
    with running(create_app(guard, upstream[0], timeout=1.0)) as url:
        yield url, audit


@pytest.fixture
def client(proxy: tuple[str, Path]) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy[0] + "/v1", api_key="sk-secret-test", max_retries=0, timeout=20)


def test_benign_completion_passes_through_with_guardrail_info(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model="fake", messages=USER)
    completion = raw.parse()
    assert "Octopuses have three hearts" in (completion.choices[0].message.content or "")
    assert raw.headers["x-guardrail-action"] == "allow" and raw.headers["x-guardrail-policy"].startswith("default@")
    info = guardrail_of(completion)
    assert info["action"] == "allow" and info["violations"] == []


def test_harmful_completion_is_rewritten_or_refused(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model="fake", messages=HARM)
    content = completion.choices[0].message.content or ""
    assert content != fake_upstream.HARMFUL_ANSWER and "crowbar" not in content
    info = guardrail_of(completion)
    assert info["action"] in ("rewrite", "block") and info["violations"]
    assert {v["dimension"] for v in info["violations"]} & {"security", "conformity", "benevolence", "universalism"}


def test_streaming_benign_arrives_whole_and_in_pieces(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(model="fake", messages=USER, stream=True)
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("Here is answer number") and text.endswith("Have a nice day.")
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) >= 2  # not all at the end
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert guardrail_of(chunks[-1])["action"] == "allow"


def test_streaming_harmful_is_cut_off_with_a_refusal(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(model="fake", messages=HARM, stream=True)
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "jewellery" not in text
    assert chunks[-1].choices[0].finish_reason == "content_filter"
    assert guardrail_of(chunks[-1])["action"] == "block"


def test_authorization_reaches_upstream_and_is_never_recorded(
    client: openai.OpenAI, upstream: tuple[str, Any], proxy: tuple[str, Path]
) -> None:
    client.chat.completions.create(model="fake", messages=USER)
    assert "Bearer sk-secret-test" in upstream[1].state.seen_auth
    assert "sk-secret-test" not in proxy[1].read_text()
    assert any(r["context"].get("integration") == "proxy" for r in records(proxy[1]))


def test_policy_header_selects_the_deployment_policy(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="fake",
        messages=USER,
        extra_headers={"x-guardrail-policy": "creative-writing"},
    )
    assert guardrail_of(completion)["policy"]["name"] == "creative-writing"
    with pytest.raises(openai.BadRequestError, match="unknown policy 'nope'"):
        client.chat.completions.create(model="fake", messages=USER, extra_headers={"x-guardrail-policy": "nope"})


def test_upstream_failures_become_clear_openai_errors(client: openai.OpenAI, scorer: LocalScorer) -> None:
    with pytest.raises(openai.InternalServerError, match="model exploded"):
        client.chat.completions.create(model="fake", messages=FAIL)
    with pytest.raises(openai.APIStatusError, match="timed out") as timed_out:
        client.chat.completions.create(model="fake", messages=SLOW)
    assert timed_out.value.status_code == 504
    dead = f"http://127.0.0.1:{free_port()}/v1"
    with running(create_app(Guard("default", scorer=scorer), dead, timeout=1.0)) as url:
        lonely = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
        with pytest.raises(openai.APIStatusError, match="unreachable") as unreachable:
            lonely.chat.completions.create(model="fake", messages=USER)
        assert unreachable.value.status_code == 502


def test_health_reports_model_and_policy(proxy: tuple[str, Path], scorer: LocalScorer) -> None:
    import httpx

    health = httpx.get(proxy[0] + "/healthz").json()
    assert health["status"] == "ok" and health["model"] == scorer.model_id
    assert health["policy"]["name"] == "default"


def test_httpx_client_wrapper_sync_and_streaming(upstream: tuple[str, Any], scorer: LocalScorer) -> None:
    client = GuardedChatClient(Guard("default", scorer=scorer), upstream[0], api_key="k")
    reply = client.create(model="fake", messages=HARM)
    assert "crowbar" not in reply["choices"][0]["message"]["content"]
    assert reply["guardrail"]["action"] in ("rewrite", "block")
    chunks = list(client.create(model="fake", messages=USER, stream=True))
    text = "".join((c["choices"][0].get("delta") or {}).get("content", "") for c in chunks)
    assert text.endswith("Have a nice day.") and chunks[-1]["guardrail"]["action"] == "allow"
    client.close()


async def test_async_httpx_client_wrapper(upstream: tuple[str, Any], scorer: LocalScorer) -> None:
    from guardrail.integrations.openai import AsyncGuardedChatClient

    client = AsyncGuardedChatClient(Guard("default", scorer=scorer), upstream[0])
    reply = await client.create(model="fake", messages=USER)
    assert reply["guardrail"]["action"] == "allow"
    stream = await client.create(model="fake", messages=HARM, stream=True)
    chunks = [c async for c in stream]
    assert chunks[-1]["choices"][0]["finish_reason"] == "content_filter"
    await client.aclose()
