"""guardrail.integrations.langchain with real langchain-core runnables.

``FakeListChatModel`` (from langchain-core) and the ``fake_*`` / ``Fake*`` callables below stand in
for a remote chat model, nothing else: the prompts, parsers, runnables, callbacks, scorer, policies
and audit log are all real.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models import FakeListChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage, SystemMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompt_values import ChatPromptValue, PromptValue
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableGenerator, RunnableLambda

from guardrail.actions.rewrite import REWRITE_LEAD
from guardrail.audit import JsonlSink, records
from guardrail.guard import Guard
from guardrail.integrations.langchain import GuardRunnable, wrap_runnable
from guardrail.scorers.local import LocalScorer
from tests.samples import HARMFUL, HARMFUL_PROMPT, REFUSAL

BENIGN = (
    "Build up your weekly mileage slowly, adding no more than ten percent each week. "
    "Rest well before race day and keep your usual breakfast. "
    "Start slower than you think you should, drink at the aid stations, and enjoy the crowd!"
)
REWRITE_POLICY = """
name: lc-rewrite
extends: default
rules:
  - {id: oppose-security, when: {opposes: security}, action: rewrite, reason: Keep people safe.}
  - {id: oppose-conformity, when: {opposes: conformity}, action: rewrite, reason: Do not help break laws.}
  - {id: oppose-benevolence, when: {opposes: benevolence}, action: rewrite, reason: Be honest and kind.}
  - {id: oppose-universalism, when: {opposes: universalism}, action: rewrite, reason: Treat groups fairly.}
"""


@pytest.fixture
def audit_path(tmp_path: Path) -> Path:
    return tmp_path / "audit.jsonl"


@pytest.fixture
def guard(scorer: LocalScorer, audit_path: Path) -> Guard:
    return Guard("default", scorer=scorer, audit=JsonlSink(audit_path), deployment="lc")


def fake_llm(*responses: str) -> FakeListChatModel:
    """A stand-in for a remote chat model that answers with ``responses`` in turn."""
    return FakeListChatModel(responses=list(responses))


def test_chain_output_is_guarded_in_the_type_it_had(guard: Guard) -> None:
    blocked = (fake_llm(HARMFUL) | GuardRunnable(guard)).invoke(HARMFUL_PROMPT)
    assert isinstance(blocked, AIMessage) and blocked.content == guard.policy.settings.refusal_message
    allowed = (fake_llm(BENIGN) | GuardRunnable(guard)).invoke("Marathon tips?")
    assert isinstance(allowed, AIMessage) and allowed.content == BENIGN
    prompt = ChatPromptTemplate.from_messages([("user", "{question}")])
    as_text = (prompt | fake_llm(BENIGN) | StrOutputParser() | GuardRunnable(guard)).invoke({"question": "Tips?"})
    assert as_text == BENIGN


def test_wrapping_form_re_invokes_the_chain_to_rewrite(scorer: LocalScorer, tmp_path: Path) -> None:
    policy = tmp_path / "rewrite.yaml"
    policy.write_text(REWRITE_POLICY)
    llm = fake_llm(HARMFUL, REFUSAL)
    out = wrap_runnable(Guard(policy, scorer=scorer), llm).invoke(HARMFUL_PROMPT)
    assert isinstance(out, AIMessage) and out.content == REFUSAL


def test_batch_and_abatch_keep_order(guard: Guard) -> None:
    runnable = GuardRunnable(guard)
    outs = runnable.batch([HARMFUL, BENIGN, "Octopuses have three hearts."])
    assert outs[0] == guard.policy.settings.refusal_message and outs[1:] == [BENIGN, "Octopuses have three hearts."]


async def test_ainvoke_and_abatch(guard: Guard) -> None:
    runnable = fake_llm(HARMFUL) | GuardRunnable(guard)
    out = await runnable.ainvoke(HARMFUL_PROMPT)
    assert out.content == guard.policy.settings.refusal_message
    outs = await GuardRunnable(guard).abatch([BENIGN, HARMFUL])
    assert outs == [BENIGN, guard.policy.settings.refusal_message]


def test_streaming_passes_benign_text_sentence_by_sentence(guard: Guard, audit_path: Path) -> None:
    chunks = list((fake_llm(BENIGN) | GuardRunnable(guard)).stream("Marathon tips?"))
    assert all(isinstance(c, AIMessageChunk) for c in chunks)
    assert "".join(str(c.content) for c in chunks) == BENIGN
    assert len(chunks) >= 2  # released per checked window, not all at the end
    (record,) = list(records(audit_path))
    assert record["action"] == "allow" and "streamed in full" in record["note"]


def test_streaming_stops_a_violating_stream_and_emits_the_refusal(guard: Guard, audit_path: Path) -> None:
    chunks = list((fake_llm(HARMFUL) | GuardRunnable(guard)).stream(HARMFUL_PROMPT))
    text = "".join(str(c.content) for c in chunks)
    assert text.endswith(guard.policy.settings.refusal_message)
    assert "jewellery" not in text  # the rest of the draft never reached the user
    (record,) = list(records(audit_path))
    assert record["action"] == "block" and "stream stopped" in record["note"]


async def test_astream_matches_stream(guard: Guard) -> None:
    chunks = [c async for c in (fake_llm(HARMFUL) | GuardRunnable(guard)).astream(HARMFUL_PROMPT)]
    assert "".join(str(c.content) for c in chunks).endswith(guard.policy.settings.refusal_message)
    plain = [c async for c in GuardRunnable(guard).astream(BENIGN)]
    assert "".join(plain) == BENIGN


class RunIds(BaseCallbackHandler):
    def __init__(self) -> None:
        self.runs: dict[str, uuid.UUID] = {}

    def on_chain_start(self, serialized: Any, inputs: Any, *, run_id: uuid.UUID, **kwargs: Any) -> None:
        self.runs[str(kwargs.get("name"))] = run_id


def test_config_passes_through_and_lands_in_the_audit(guard: Guard, audit_path: Path) -> None:
    handler = RunIds()
    config = {
        "callbacks": [handler],
        "tags": ["checkout"],
        "metadata": {"user_tier": "free"},
        "configurable": {"guardrail_policy": "creative-writing"},
    }
    GuardRunnable(guard).invoke(BENIGN, config=config)  # type: ignore[arg-type]
    (record,) = list(records(audit_path))
    assert record["context"]["run_id"] == str(handler.runs["GuardRunnable"])
    assert record["context"]["tags"] == ["checkout"] and record["context"]["metadata"] == {"user_tier": "free"}
    assert record["policy"]["name"] == "creative-writing"  # the per-call override


def test_a_rewrite_rule_with_log_fallback_lets_the_stream_finish(
    guard: Guard, audit_path: Path, tmp_path: Path
) -> None:
    # A stream cannot be rewritten, so a rewrite rule's fallback applies at once: with
    # ``fallback: log`` the text goes through and the decision is recorded as logged.
    lenient = tmp_path / "lenient.yaml"
    lenient.write_text(
        "name: lenient\nrules:\n"
        "  - {id: s, when: {opposes: security}, action: rewrite, fallback: log, reason: r}\n"
        "  - {id: c, when: {opposes: conformity}, action: rewrite, fallback: log, reason: r}\n"
    )
    config: Any = {"configurable": {"guardrail_policy": str(lenient)}}
    chunks = list(GuardRunnable(guard, llm=fake_llm(HARMFUL)).stream(HARMFUL_PROMPT, config=config))
    assert "".join(str(c.content) for c in chunks) == HARMFUL
    (record,) = list(records(audit_path))
    assert record["policy"]["name"] == "lenient"
    assert record["action"] == "log" and record["intended_action"] == "rewrite"


# ---------------------------------------------------------------- failures, rewrites of templates, tool calls


def fake_llm_down(prompt: Any) -> str:
    """A stand-in for a remote chat model that cannot be reached."""
    raise ConnectionError("fake LLM unreachable")


def fake_stream_that_breaks(inputs: Iterator[Any]) -> Iterator[str]:
    """A stand-in for a remote chat model whose stream drops after one sentence."""
    for _ in inputs:
        pass
    yield "Bees dance to tell each other where flowers are. They are clever animals that can count to four. "
    raise ConnectionError("fake LLM stream dropped")


def test_a_failing_chain_is_recorded_and_its_error_raised(guard: Guard, audit_path: Path) -> None:
    with pytest.raises(ConnectionError, match="unreachable"):
        GuardRunnable(guard, llm=RunnableLambda(fake_llm_down)).invoke("Tips?")
    (record,) = list(records(audit_path))
    assert record["action"] == "block" and "ConnectionError: fake LLM unreachable" in record["error"]


def test_batch_with_return_exceptions_records_every_input(guard: Guard, audit_path: Path) -> None:
    def fake_llm_failing_on_boom(prompt: str) -> str:
        """A stand-in for a remote LLM that fails on one input."""
        if "boom" in prompt:
            raise ValueError("fake LLM failure")
        return "Octopuses have three hearts."

    runnable = GuardRunnable(guard, llm=RunnableLambda(fake_llm_failing_on_boom))
    outs = runnable.batch(["a", "boom", "c"], return_exceptions=True)
    assert isinstance(outs[1], ValueError) and outs[0] == outs[2] == "Octopuses have three hearts."
    assert sorted(r["action"] for r in records(audit_path)) == ["allow", "allow", "block"]


def test_a_stream_that_breaks_is_recorded_once(guard: Guard, audit_path: Path) -> None:
    released: list[Any] = []
    with pytest.raises(ConnectionError, match="dropped"):
        for chunk in GuardRunnable(guard, llm=RunnableGenerator(fake_stream_that_breaks)).stream("Tell me about bees."):
            released.append(chunk)
    (record,) = list(records(audit_path))
    assert record["action"] == "block" and "stream failed: ConnectionError" in record["error"]
    assert record["response"].startswith("Bees dance")  # what arrived before the break


async def test_streams_closed_early_by_the_consumer_are_recorded(guard: Guard, audit_path: Path) -> None:
    long = " ".join([BENIGN] * 3)
    stream = GuardRunnable(guard, llm=fake_llm(long)).stream("Marathon tips?")
    next(stream)
    stream.close()  # type: ignore[attr-defined]
    astream = GuardRunnable(guard, llm=fake_llm(long)).astream("Marathon tips?")
    await anext(astream)
    await astream.aclose()  # type: ignore[attr-defined]
    recorded = list(records(audit_path))
    assert [r["action"] for r in recorded] == ["block", "block"]
    assert all("closed by the consumer" in r["error"] for r in recorded)


class FakePersonaModel:
    """A stand-in for a remote chat model: it complies with a harmful request, and refuses when asked
    to rewrite; it keeps the messages it was sent so the test can see what a rewrite re-asked."""

    def __init__(self) -> None:
        self.seen: list[list[BaseMessage]] = []

    def __call__(self, prompt: PromptValue) -> AIMessage:
        messages = prompt.to_messages()
        self.seen.append(messages)
        rewrite = str(messages[-1].content).startswith(REWRITE_LEAD)
        return AIMessage(content=REFUSAL if rewrite else HARMFUL)


def test_rewrites_re_invoke_a_multi_variable_template_with_its_other_variables(
    scorer: LocalScorer, tmp_path: Path
) -> None:
    policy = tmp_path / "rewrite.yaml"
    policy.write_text(REWRITE_POLICY)
    prompt = ChatPromptTemplate.from_messages([("system", "You are {persona}."), ("user", "{question}")])
    model = FakePersonaModel()
    guarded = GuardRunnable(Guard(policy, scorer=scorer), llm=prompt | RunnableLambda(model))
    out = guarded.invoke({"persona": "a careful helper", "question": HARMFUL_PROMPT})
    assert isinstance(out, AIMessage) and out.content == REFUSAL
    _, again = model.seen
    assert again[0].content == "You are a careful helper."  # the persona survived the rewrite
    assert str(again[1].content).startswith(REWRITE_LEAD) and HARMFUL_PROMPT in str(again[1].content)


def test_rewrites_of_message_lists_keep_the_system_message(scorer: LocalScorer, tmp_path: Path) -> None:
    policy = tmp_path / "rewrite.yaml"
    policy.write_text(REWRITE_POLICY)
    model = FakePersonaModel()

    def fake_chat(messages: list[BaseMessage]) -> AIMessage:
        """The fake model above, taking a message list."""
        return model(ChatPromptValue(messages=messages))

    guarded = GuardRunnable(Guard(policy, scorer=scorer), llm=RunnableLambda(fake_chat))
    out = guarded.invoke([SystemMessage("Be brief."), HumanMessage(HARMFUL_PROMPT)])
    assert out.content == REFUSAL and [m.type for m in model.seen[1]] == ["system", "human"]


def test_a_template_whose_request_variable_cannot_be_told_blocks_and_says_how_to_fix_it(
    scorer: LocalScorer, tmp_path: Path
) -> None:
    policy = tmp_path / "rewrite.yaml"
    policy.write_text(REWRITE_POLICY)
    audit = tmp_path / "audit.jsonl"
    guard = Guard(policy, scorer=scorer, audit=JsonlSink(audit))
    prompt = ChatPromptTemplate.from_messages([("system", "You are {persona}."), ("user", "{ask}")])
    inputs = {"persona": "a helper", "ask": HARMFUL_PROMPT}
    with pytest.warns(RuntimeWarning, match="rewrite_key"):
        out = GuardRunnable(guard, llm=prompt | RunnableLambda(FakePersonaModel())).invoke(inputs)
    assert out.content == guard.policy.settings.refusal_message
    (record,) = list(records(audit))
    assert record["action"] == "block" and "rewrite_key" in record["attempts"][0]["error"]
    named = GuardRunnable(guard, llm=prompt | RunnableLambda(FakePersonaModel()), rewrite_key="ask")
    assert named.invoke(inputs).content == REFUSAL  # the remedy works


def test_tool_calls_pass_through_unscored(guard: Guard, audit_path: Path) -> None:
    call = {"name": "get_weather", "args": {"city": "Oslo"}, "id": "call_1"}
    message = AIMessage(content="", tool_calls=[call])

    def fake_tool_model(prompt: str) -> AIMessage:
        """A stand-in for a remote chat model answering with a tool call."""
        return message

    assert (RunnableLambda(fake_tool_model) | GuardRunnable(guard)).invoke("Weather?") == message

    def fake_tool_stream(inputs: Iterator[Any]) -> Iterator[AIMessageChunk]:
        """A stand-in for a remote chat model streaming a tool call."""
        for _ in inputs:
            pass
        start = {"name": "get_weather", "args": '{"city": ', "id": "c1", "index": 0}
        yield AIMessageChunk(content="", tool_call_chunks=[start])
        yield AIMessageChunk(content="", tool_call_chunks=[{"name": None, "args": '"Oslo"}', "id": None, "index": 0}])

    chunks = list(GuardRunnable(guard, llm=RunnableGenerator(fake_tool_stream)).stream("Weather?"))
    merged = chunks[0]
    for chunk in chunks[1:]:
        merged += chunk
    assert merged.tool_calls == [{"name": "get_weather", "args": {"city": "Oslo"}, "id": "c1", "type": "tool_call"}]
    recorded = list(records(audit_path))
    assert [r["action"] for r in recorded] == ["allow", "allow"] and all("no text" in r["note"] for r in recorded)


def test_a_dict_output_is_guarded_on_its_answer_field_not_its_echoed_input(guard: Guard, audit_path: Path) -> None:
    def fake_agent(question: str) -> dict[str, str]:
        """A stand-in for an agent chain, which returns its input beside its answer."""
        return {"input": question, "output": HARMFUL}

    agent = RunnableLambda(fake_agent)
    for runnable in (agent | GuardRunnable(guard), GuardRunnable(guard, llm=agent)):
        out = runnable.invoke(HARMFUL_PROMPT)
        assert out["input"] == HARMFUL_PROMPT and out["output"] == guard.policy.settings.refusal_message
    assert [(r["action"], r["response"]) for r in records(audit_path)] == [("block", HARMFUL)] * 2

    def fake_chain_with_two_fields(question: str) -> dict[str, str]:
        """A stand-in for a chain whose output has no field that says it is the answer."""
        return {"summary": HARMFUL, "notes": "none"}

    with pytest.raises(ValueError, match="cannot tell which field of the chain's output"):
        (RunnableLambda(fake_chain_with_two_fields) | GuardRunnable(guard)).invoke("Tips?")
    last = list(records(audit_path))[-1]
    assert last["action"] == "block" and "'summary', 'notes'" in last["error"]


class SlowScorer:
    """The real scorer, answering async calls only after a delay (to cancel a call while it scores)."""

    def __init__(self, inner: LocalScorer) -> None:
        self.inner, self.model_id = inner, inner.model_id

    def score(self, response: str, prompt: str | None = None) -> Any:
        return self.inner.score(response, prompt)

    def score_batch(self, responses: Any, prompts: Any = None) -> Any:
        return self.inner.score_batch(responses, prompts)

    async def ascore(self, response: str, prompt: str | None = None) -> Any:
        import asyncio

        await asyncio.sleep(5)
        return self.inner.score(response, prompt)

    async def ascore_batch(self, responses: Any, prompts: Any = None) -> Any:
        return [await self.ascore(r, p) for r, p in zip(responses, prompts or [None] * len(responses), strict=True)]


async def test_a_call_cancelled_while_it_is_scored_is_recorded_once(scorer: LocalScorer, audit_path: Path) -> None:
    import asyncio

    from guardrail.guard import CANCELLED_BEFORE_DECISION

    guard = Guard("default", scorer=SlowScorer(scorer), audit=JsonlSink(audit_path))

    def fake_llm_refusing(prompt: str) -> str:  # stands in for a remote LLM
        return REFUSAL

    piped = asyncio.create_task((RunnableLambda(fake_llm_refusing) | GuardRunnable(guard)).ainvoke("Tips?"))
    wrapped = asyncio.create_task(GuardRunnable(guard, llm=fake_llm(REFUSAL)).ainvoke("Tips?"))
    await asyncio.sleep(0.5)
    for task in (piped, wrapped):
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    await asyncio.sleep(0.2)  # the shielded writes finish
    recorded = list(records(audit_path))
    assert [(r["action"], r["error"]) for r in recorded] == [("block", CANCELLED_BEFORE_DECISION)] * 2


def test_a_closed_guard_stops_a_chain_before_it_runs(guard: Guard) -> None:
    calls: list[str] = []

    def fake_llm_counting(prompt: str) -> str:  # stands in for a remote LLM, billed per call
        calls.append(prompt)
        return REFUSAL

    guard.close()
    with pytest.raises(RuntimeError, match="closed"):
        GuardRunnable(guard, llm=RunnableLambda(fake_llm_counting)).invoke("Tips?")
    assert calls == []
