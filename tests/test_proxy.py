"""The guarding proxy, end to end: a real upstream server and the real proxy on 127.0.0.1, talked
to with the official ``openai`` client. The upstream (``fake_upstream``) stands in for a remote LLM."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from guardrail.audit import JsonlSink, records
from guardrail.guard import Guard
from guardrail.integrations import fake_upstream
from guardrail.integrations.openai import AsyncGuardedChatClient, GuardedChatClient, UpstreamError
from guardrail.integrations.proxy import create_app
from guardrail.policy import load_policy
from guardrail.scorers.local import LocalScorer
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
    app = fake_upstream.create_app(slow_s=3.0, trickle_s=0.1)
    with running(app) as url:
        yield url + "/v1", app


@pytest.fixture(scope="module")
def proxy(
    upstream: tuple[str, Any], scorer: LocalScorer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path]]:
    audit = tmp_path_factory.mktemp("proxy") / "audit.jsonl"
    guard = Guard("default", scorer=scorer, audit=JsonlSink(audit), deployment="proxy-test")
    allowed = [load_policy("creative-writing")]
    with running(create_app(guard, upstream[0], timeout=1.0, policies=allowed)) as url:
        yield url, audit


@pytest.fixture
def client(proxy: tuple[str, Path]) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy[0] + "/v1", api_key="sk-secret-test", max_retries=0, timeout=20)


def test_benign_completion_passes_through_with_guardrail_info(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model="fake", messages=USER)
    completion = raw.parse()
    assert "Water boils" in (completion.choices[0].message.content or "")
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


def test_policy_header_selects_a_policy_the_operator_allowed(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="fake",
        messages=USER,
        extra_headers={"x-guardrail-policy": "creative-writing"},
    )
    assert guardrail_of(completion)["policy"]["name"] == "creative-writing"
    mine = client.chat.completions.create(model="fake", messages=USER, extra_headers={"x-guardrail-policy": "default"})
    assert guardrail_of(mine)["policy"]["name"] == "default"


def test_a_client_cannot_pick_a_policy_the_operator_did_not_allow(
    upstream: tuple[str, Any], scorer: LocalScorer, tmp_path: Path
) -> None:
    """A proxy started with childrens-tutor guards with it, whatever preset a client names (issue 22, item 7)."""
    audit = tmp_path / "strict.jsonl"
    guard = Guard("childrens-tutor", scorer=scorer, audit=JsonlSink(audit))
    seen = len(upstream[1].state.seen_auth)
    with running(create_app(guard, upstream[0], timeout=5.0)) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="k", max_retries=0)
        for laxer in ("creative-writing", "default", "nope"):
            with pytest.raises(openai.PermissionDeniedError, match=f"policy '{laxer}' is not allowed") as refused:
                client.chat.completions.create(model="fake", messages=HARM, extra_headers={"x-guardrail-policy": laxer})
            assert "it guards with 'childrens-tutor'" in str(refused.value)
            assert refused.value.body["type"] == "policy_not_allowed"  # type: ignore[index]
        assert len(upstream[1].state.seen_auth) == seen and not audit.exists()  # refused before anything happened
        plain = client.chat.completions.create(model="fake", messages=USER)
    assert guardrail_of(plain)["policy"]["name"] == "childrens-tutor"


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
    client = AsyncGuardedChatClient(Guard("default", scorer=scorer), upstream[0])
    reply = await client.create(model="fake", messages=USER)
    assert reply["guardrail"]["action"] == "allow"
    stream = await client.create(model="fake", messages=HARM, stream=True)
    chunks = [c async for c in stream]
    assert chunks[-1]["choices"][0]["finish_reason"] == "content_filter"
    await client.aclose()


# ---------------------------------------------------------------- every choice, tool calls, failures

TOOL: list[ChatCompletionMessageParam] = [{"role": "user", "content": "What is the weather in Oslo? Use the tool."}]
GARBLED: list[ChatCompletionMessageParam] = [{"role": "user", "content": "answer garbled"}]
DROP: list[ChatCompletionMessageParam] = [{"role": "user", "content": "drop the stream"}]
TRICKLE: list[ChatCompletionMessageParam] = [{"role": "user", "content": "trickle it out"}]
WEATHER_TOOL: Any = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
}


def added(audit: Path, before: int, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
    """The records written after the first ``before``, once there are ``count`` of them (they may lag a disconnect)."""
    deadline = time.monotonic() + timeout
    while True:
        new = list(records(audit))[before:]
        if len(new) >= count or time.monotonic() > deadline:
            assert len(new) == count, new
            return new
        time.sleep(0.05)


def count(audit: Path) -> int:
    return len(list(records(audit))) if audit.exists() else 0


def test_every_choice_is_guarded_when_n_is_above_one(client: openai.OpenAI, proxy: tuple[str, Path]) -> None:
    before = count(proxy[1])
    raw = client.chat.completions.with_raw_response.create(model="mixed", messages=HARM, n=2)
    completion = raw.parse()
    first, second = (c.message.content or "" for c in completion.choices)
    assert first.startswith("Here is answer number")  # the harmless choice is untouched
    assert second != fake_upstream.HARMFUL_ANSWER and "crowbar" not in second  # ... and the harmful one is not
    actions = [guardrail_of(c)["action"] for c in completion.choices]
    assert actions[0] == "allow" and actions[1] in ("rewrite", "block")
    assert guardrail_of(completion)["action"] == actions[1] == raw.headers["x-guardrail-action"]  # the strictest
    recorded = added(proxy[1], before, 2)
    assert [r["context"]["choice_index"] for r in recorded] == [0, 1]
    assert [r["action"] for r in recorded] == actions


def test_every_choice_is_guarded_in_a_stream_with_n_above_one(client: openai.OpenAI, proxy: tuple[str, Path]) -> None:
    before = count(proxy[1])
    chunks = list(client.chat.completions.create(model="mixed", messages=HARM, n=2, stream=True))
    text = {0: "", 1: ""}
    finish: dict[int, str | None] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            text[choice.index] += choice.delta.content or ""
            finish[choice.index] = choice.finish_reason or finish.get(choice.index)
    assert "jewellery" not in text[1] and finish[1] == "content_filter"
    recorded = {r["context"]["choice_index"]: r["action"] for r in added(proxy[1], before, 2)}
    assert recorded[1] == "block"
    # The harmless choice is decided on its own: under this harmful prompt scorer 2 sometimes stops a
    # prefix of it (a known false alarm, see the model card), and then its stream ends as a block too.
    if recorded[0] == "allow":
        assert text[0].endswith("Have a nice day.") and finish[0] == "stop"
    else:
        assert "Have a nice day." not in text[0] and finish[0] == "content_filter"


def test_tool_call_replies_pass_through_unscored(client: openai.OpenAI, proxy: tuple[str, Path]) -> None:
    before = count(proxy[1])
    completion = client.chat.completions.create(model="fake", messages=TOOL, tools=[WEATHER_TOOL])
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    assert choice.message.tool_calls and choice.message.tool_calls[0].function.name == "get_weather"  # type: ignore[union-attr]
    assert guardrail_of(completion)["action"] == "allow"
    stream = client.chat.completions.create(model="fake", messages=TOOL, tools=[WEATHER_TOOL], stream=True)
    chunks = list(stream)
    arguments = "".join(
        call.function.arguments or ""
        for c in chunks
        for call in (c.choices[0].delta.tool_calls or [] if c.choices else [])
        if call.function
    )
    assert arguments == '{"city": "Oslo"}'
    assert chunks[-1].choices[0].finish_reason == "tool_calls" and guardrail_of(chunks[-1])["action"] == "allow"
    recorded = added(proxy[1], before, 2)
    assert all(r["action"] == "allow" and "no text content" in r["note"] for r in recorded)


def test_bad_requests_get_a_400_before_anything_reaches_the_upstream(
    proxy: tuple[str, Path], upstream: tuple[str, Any]
) -> None:
    import httpx

    seen = len(upstream[1].state.seen_auth)
    for body in ({"model": "fake", "messages": ["hi"]}, {"model": "fake", "messages": USER, "n": 0}):
        reply = httpx.post(proxy[0] + "/v1/chat/completions", json=body)
        assert reply.status_code == 400 and reply.headers["content-type"] == "application/json"
        assert reply.json()["error"]["type"] == "invalid_request_error"
    assert "messages[0]" in httpx.post(proxy[0] + "/v1/chat/completions", json={"messages": ["hi"]}).text
    assert len(upstream[1].state.seen_auth) == seen  # the upstream was never asked


def test_failed_upstream_calls_are_recorded_and_clear(client: openai.OpenAI, proxy: tuple[str, Path]) -> None:
    before = count(proxy[1])
    with pytest.raises(openai.InternalServerError, match="model exploded"):
        client.chat.completions.create(model="fake", messages=FAIL)
    with pytest.raises(openai.APIStatusError, match="not JSON") as garbled:
        client.chat.completions.create(model="fake", messages=GARBLED)
    assert garbled.value.status_code == 502
    recorded = added(proxy[1], before, 2)
    assert all(r["action"] == "block" for r in recorded)
    assert "model exploded" in recorded[0]["error"] and "not JSON" in recorded[1]["error"]


def test_a_broken_upstream_stream_ends_in_an_error_and_one_record(
    client: openai.OpenAI, proxy: tuple[str, Path]
) -> None:
    before = count(proxy[1])
    with pytest.raises(openai.APIError, match="upstream stream failed"):
        list(client.chat.completions.create(model="fake", messages=DROP, stream=True))
    (record,) = added(proxy[1], before, 1)
    assert record["action"] == "block" and "stream failed" in record["error"]


def test_a_client_that_disconnects_mid_stream_is_recorded(proxy: tuple[str, Path]) -> None:
    import httpx

    before = count(proxy[1])
    body = {"model": "fake", "messages": TRICKLE, "stream": True}
    with httpx.stream("POST", proxy[0] + "/v1/chat/completions", json=body, timeout=20) as reply:
        for line in reply.iter_lines():
            if '"content"' in line:
                break  # leave after the first released text: the connection closes
    (record,) = added(proxy[1], before, 1)
    assert record["action"] == "block" and "client disconnected" in record["error"]


@pytest.fixture
def audited(scorer: LocalScorer, tmp_path: Path) -> tuple[Guard, Path]:
    audit = tmp_path / "client-audit.jsonl"
    return Guard("default", scorer=scorer, audit=JsonlSink(audit), deployment="client-test"), audit


def test_httpx_client_guards_every_choice_and_passes_tool_calls(
    upstream: tuple[str, Any], audited: tuple[Guard, Path]
) -> None:
    guard, audit = audited
    with GuardedChatClient(guard, upstream[0]) as client:
        reply = client.create(model="mixed", messages=HARM, n=2)
        assert reply["choices"][0]["message"]["content"].startswith("Here is answer number")
        assert "crowbar" not in reply["choices"][1]["message"]["content"]
        assert reply["choices"][1]["guardrail"]["action"] in ("rewrite", "block")
        tool = client.create(model="fake", messages=TOOL, tools=[WEATHER_TOOL])
        assert tool["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "get_weather"
        assert tool["choices"][0]["finish_reason"] == "tool_calls" and tool["guardrail"]["action"] == "allow"
        with pytest.raises(ValueError, match=r"messages\[0\] must be an object"):
            client.create(model="fake", messages=["hi"])
    assert [r["context"]["choice_index"] for r in records(audit)] == [0, 1, 0]


def test_httpx_client_records_every_failure_once(upstream: tuple[str, Any], audited: tuple[Guard, Path]) -> None:
    import httpx

    guard, audit = audited
    with GuardedChatClient(guard, upstream[0]) as client:
        with pytest.raises(UpstreamError, match="model exploded"):
            client.create(model="fake", messages=FAIL)
        with pytest.raises(UpstreamError, match="not JSON"):
            client.create(model="fake", messages=GARBLED)
        with pytest.raises(httpx.RemoteProtocolError):
            list(client.create(model="fake", messages=DROP, stream=True))
        with pytest.raises(UpstreamError, match="not JSON"):
            list(client.create(model="fake", messages=GARBLED, stream=True))
        stream = client.create(model="fake", messages=USER, stream=True)
        next(stream)
        stream.close()  # the consumer stops early
    recorded = list(records(audit))
    assert len(recorded) == 5 and all(r["action"] == "block" for r in recorded)
    assert "closed by the consumer" in recorded[-1]["error"]


async def test_async_httpx_client_records_broken_and_closed_streams(
    upstream: tuple[str, Any], audited: tuple[Guard, Path]
) -> None:
    import httpx

    guard, audit = audited
    async with AsyncGuardedChatClient(guard, upstream[0]) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            async for _ in await client.create(model="fake", messages=DROP, stream=True):
                pass
        stream = await client.create(model="fake", messages=USER, stream=True)
        await anext(stream)
        await stream.aclose()
        with pytest.raises(UpstreamError, match="not JSON"):
            await client.create(model="fake", messages=GARBLED)
    recorded = list(records(audit))
    assert [r["action"] for r in recorded] == ["block"] * 3
    assert "RemoteProtocolError" in recorded[0]["error"] and "closed by the consumer" in recorded[1]["error"]


def test_a_rewrite_request_asks_for_text_only() -> None:
    from guardrail.integrations.openai import rewrite_request

    request = {
        "model": "m",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather?"}],
        "tools": [WEATHER_TOOL],
        "tool_choice": "auto",
        "parallel_tool_calls": False,  # OpenAI answers 400 to this without tools
        "n": 2,
        "stream": True,
        "temperature": 0.2,
    }
    again = rewrite_request(request, "Please answer again, safely.")
    assert again == {
        "model": "m",
        "temperature": 0.2,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Please answer again, safely."},
        ],
    }


def test_a_closed_guard_sends_nothing_upstream(upstream: tuple[str, Any], audited: tuple[Guard, Path]) -> None:
    import httpx

    guard, audit = audited
    sent: list[httpx.Request] = []
    http = httpx.Client(base_url=upstream[0].rstrip("/") + "/", event_hooks={"request": [sent.append]})
    guard.close()
    with GuardedChatClient(guard, upstream[0], http=http) as client:
        for stream in (False, True):
            with pytest.raises(RuntimeError, match="this Guard is closed"):
                client.create(model="fake", messages=USER, stream=stream)
    assert sent == [] and not audit.exists()


async def test_a_reply_cancelled_while_a_choice_is_written_records_each_choice_once(
    upstream: tuple[str, Any], scorer: LocalScorer, tmp_path: Path
) -> None:
    import asyncio

    from guardrail.guard import CANCELLED_BEFORE_DECISION
    from guardrail.record import AuditRecord

    class SlowDiskSink(JsonlSink):
        """The real JSONL sink on a slow disk: each write takes a second."""

        def write(self, decision: Any, *, deployment: str, context: dict[str, Any] | None = None) -> AuditRecord:
            time.sleep(1.0)
            return super().write(decision, deployment=deployment, context=context)

    audit = tmp_path / "slow-audit.jsonl"
    guard = Guard("default", scorer=scorer, audit=SlowDiskSink(audit))
    async with AsyncGuardedChatClient(guard, upstream[0]) as client:
        call = asyncio.create_task(client.create(model="mixed", messages=USER, n=2))
        await asyncio.sleep(0.6)  # the answer arrived and choice 0 was scored: its record is being written
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
    recorded = added(audit, 0, 2)
    assert [(r["context"]["choice_index"], r["error"]) for r in recorded] == [(0, None), (1, CANCELLED_BEFORE_DECISION)]
