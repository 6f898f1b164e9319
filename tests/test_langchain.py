"""guardrail.integrations.langchain with real langchain-core runnables.

``FakeListChatModel`` (from langchain-core) stands in for a remote chat model, nothing else:
the prompts, parsers, runnables, callbacks, scorer, policies and audit log are all real.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models import FakeListChatModel
from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

from guardrail.audit import records
from guardrail.guard import Guard
from guardrail.integrations.langchain import GuardRunnable, wrap_runnable
from guardrail.scorers.local import LocalScorer
from guardrail.sinks.jsonl import JsonlSink
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
