"""The guard: generate -> score -> evaluate -> act -> record, for one call at a time.

``Guard`` only composes the four pipeline steps (``score``, ``evaluate``, ``act``, ``record``).
The pipeline itself is one generator (``_pipeline``) that yields effects (generate, assess); the
sync methods drive it with plain calls and the async ones with awaits (``drivers.py``), so both
behave alike. The policy in force comes from ``policy_source.py``; calls that cannot be decided by
scoring (failures, cancellations, replies without text) get the decisions of ``failures.py``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import time
from collections.abc import Awaitable, Callable, Generator
from pathlib import Path
from typing import Any

from guardrail import tracing
from guardrail.act import act, intended_action
from guardrail.actions.protocol import Assess, Assessment, Effect, Generate, Outcome, Situation
from guardrail.audit.store import AuditWriteError
from guardrail.decision import Decision, error_text
from guardrail.drivers import AsyncLLM, ScoringTimeoutError, SyncLLM, adrive, ascore_in_time, drive, score_in_time
from guardrail.evaluate import evaluate
from guardrail.failures import (
    CANCELLED_BEFORE_DECISION,
    NO_TEXT_NOTE,
    fail_mode_decision,
    failure_decision,
    invalid_input,
    require_prompt,
    unrecorded_decision,
    unscored_decision,
)
from guardrail.metrics import record_step
from guardrail.policy import Policy, PolicyError, load_policy
from guardrail.policy_source import PolicySource
from guardrail.record import DecisionSink
from guardrail.score import Scorer, ValueScores
from guardrail.text import described

__all__ = [
    "CANCELLED_BEFORE_DECISION",
    "NO_TEXT_NOTE",
    "AsyncLLM",
    "Guard",
    "PolicySource",
    "ScoringTimeoutError",
    "SyncLLM",
]


class Guard:
    """Guards LLM responses with a value policy.

    >>> guard = Guard("default")                      # preset name, file path, or Policy
    >>> decision = guard.check(draft, prompt=prompt)   # score an existing response
    >>> guarded = guard.wrap(my_llm)                   # prompt -> Decision, rewrites re-ask my_llm
    >>> decision = guarded("How do I ...?"); print(decision.text)

    ``acheck`` and ``awrap`` are the async twins. Every decision goes to ``audit`` when given.
    """

    def __init__(
        self,
        policy: Policy | str | Path | None = None,
        *,
        scorer: Scorer | None = None,
        audit: DecisionSink | None = None,
        deployment: str = "default",
        hot_reload: bool = False,
    ) -> None:
        self._policies = PolicySource(policy, hot_reload=hot_reload)
        if scorer is None:
            from guardrail.scorers.local import LocalScorer

            scorer = LocalScorer()
        self.scorer = scorer
        self.audit = audit
        self.deployment = deployment
        # Sync scoring runs on this thread so that the policy's scoring timeout can be enforced
        # (LocalScorer then hands the inference itself to its shared torch thread).
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="guardrail-score")
        self._overrides: dict[str, Policy] = {}
        self._closed = False

    @property
    def policy(self) -> Policy:
        """The policy in force now (hot reload may change it between calls)."""
        return self._policies.current

    def resolve_policy(self, override: Policy | str | Path | None = None) -> Policy:
        """The policy for one call: ``override`` (a Policy, preset name or path) or the one in force.

        Overrides given by name or path are loaded once and cached.
        """
        if override is None:
            return self.policy
        if isinstance(override, Policy):
            return override
        # A Path always names a file, a str may name a preset: they are cached apart.
        key = f"{type(override).__name__}:{override}"
        if key not in self._overrides:
            self._overrides[key] = load_policy(override)
        return self._overrides[key]

    @property
    def policy_error(self) -> PolicyError | None:
        """The error of the last failed hot reload, if the last attempt failed."""
        return self._policies.last_error

    # ------------------------------------------------------------------ the pipeline

    def _assess(self, scores: ValueScores, policy: Policy) -> Assessment:
        thresholds = getattr(self.scorer, "oppose_thresholds", None)
        with tracing.span("evaluate"):
            return Assessment(scores, evaluate(scores, policy, thresholds))

    def _pipeline(
        self, policy: Policy, prompt: str | None, draft: str | None, can_regenerate: bool
    ) -> Generator[Effect, Any, Decision]:
        started = time.perf_counter()
        latency: dict[str, float] = {}
        base: dict[str, Any] = {"prompt": prompt, "policy": policy.ref, "shadow": policy.settings.shadow}

        def ms(since: float) -> float:
            return round((time.perf_counter() - since) * 1e3, 3)

        if draft is None:
            assert prompt is not None
            t = time.perf_counter()
            produced = yield Generate(prompt)  # an LLM failure propagates to the caller, after recording
            if not isinstance(produced, str):
                raise TypeError(f"the LLM returned {described(produced)}, not a string")
            draft = produced
            latency["generate"] = ms(t)
        t = time.perf_counter()
        try:
            assessment: Assessment = yield Assess(draft, prompt)
        except Exception as exc:
            latency["score"] = latency["total"] = ms(t)
            error = f"scoring failed: {error_text(exc)}"
            return fail_mode_decision(policy, draft, error, base, latency, self.scorer.model_id)
        latency["score"] = ms(t)
        situation = Situation(policy, prompt, draft, assessment.scores, assessment.violations, can_regenerate)
        intended = intended_action(assessment.violations)
        t = time.perf_counter()
        if policy.settings.shadow:
            outcome = Outcome("log" if assessment.violations else "allow", draft)
        else:
            with tracing.child("act"):
                outcome = yield from act(situation)
        latency["act"] = ms(t)
        latency["total"] = ms(started)
        return Decision(
            action=outcome.action,
            intended_action=intended,
            text=outcome.text,
            draft=draft,
            violations=assessment.violations,
            scores=assessment.scores,
            model_id=assessment.scores.model_id,
            attempts=outcome.attempts,
            latency_ms=latency,
            note=outcome.note,
            **base,
        )

    # ------------------------------------------------------------------ sync driver

    def _drive(self, gen: Generator[Effect, Any, Decision], policy: Policy, llm: SyncLLM | None) -> Decision:
        def assess(effect: Assess) -> Assessment:
            timeout = policy.settings.scoring_timeout_s
            with tracing.span("score"):
                scores = score_in_time(self._pool, self.scorer, effect.text, effect.prompt, timeout)
            return self._assess(scores, policy)

        return drive(gen, llm, assess)

    def record(self, decision: Decision, context: dict[str, Any] | None = None) -> Decision:
        """Append ``decision`` to the audit sink (if any) and return it.

        When the store cannot take it (``AuditWriteError``: its database is down), the policy's
        ``fail_mode`` decides what the caller gets (``unrecorded_decision``) and that decision goes
        to the store's fallback log; with no fallback the error is raised, never swallowed.
        """
        self.ensure_open()
        with record_step(decision, self.deployment) as step:
            if self.audit is not None:
                try:
                    self.audit.write(decision, deployment=self.deployment, context=context or {})
                except AuditWriteError as exc:
                    decision, fallback = self._unrecorded(decision, exc)
                    step.unrecorded(decision)
                    fallback.write(decision, deployment=self.deployment, context=context or {})
        return decision

    def _unrecorded(self, decision: Decision, exc: AuditWriteError) -> tuple[Decision, DecisionSink]:
        """The fail-mode decision for one the store could not take, and the fallback to record it in."""
        if exc.fallback is None:
            raise exc
        policy = next((p for p in (self.policy, *self._overrides.values()) if p.ref == decision.policy), self.policy)
        return unrecorded_decision(decision, policy, exc), exc.fallback

    @tracing.guarded_call
    def check(
        self,
        response: str,
        prompt: str | None = None,
        *,
        llm: SyncLLM | None = None,
        context: dict[str, Any] | None = None,
        policy: Policy | str | Path | None = None,
        record: bool = True,
    ) -> Decision:
        """Guard an existing ``response``. Give ``llm`` to let rewrite rules re-ask it.

        ``policy`` overrides the guard's policy for this call; ``record=False`` skips the audit
        (for intermediate checks whose final decision is recorded separately, as in streaming).
        """
        self.ensure_open()
        chosen = self.resolve_policy(policy)
        invalid = invalid_input(chosen, response, prompt, self.scorer)
        if invalid is not None:
            decision = invalid
        else:
            decision = self._drive(self._pipeline(chosen, prompt, response, llm is not None), chosen, llm)
        return self.record(decision, context or {}) if record else decision

    @tracing.guarded_call
    def generate(
        self,
        prompt: str,
        llm: SyncLLM,
        *,
        context: dict[str, Any] | None = None,
        policy: Policy | str | Path | None = None,
    ) -> Decision:
        """Ask ``llm`` for a draft, then guard it (rewrites re-ask the same ``llm``).

        If the LLM fails (raises, or returns something that is not a string), a block decision
        naming the error is recorded and the error is raised.
        """
        self.ensure_open()
        policy = self.resolve_policy(policy)
        gen = self._pipeline(policy, prompt, None, True)
        try:
            require_prompt(prompt)
            decision = self._drive(gen, policy, llm)
        except Exception as exc:
            self.record_failure(prompt, f"generation failed: {error_text(exc)}", context=context, policy=policy)
            raise
        return self.record(decision, context or {})

    def wrap(self, llm: SyncLLM) -> Callable[[str], Decision]:
        """``llm`` (prompt -> text) as a guarded callable (prompt -> Decision)."""
        if inspect.iscoroutinefunction(llm):
            raise TypeError("wrap() takes a sync callable; use awrap() for async ones")

        def guarded(prompt: str) -> Decision:
            return self.generate(prompt, llm)

        return guarded

    def failure(
        self,
        prompt: str | None,
        error: str | BaseException,
        *,
        draft: str | None = None,
        note: str | None = None,
        policy: Policy | str | Path | None = None,
    ) -> Decision:
        """The decision for a call that could not be guarded: a block naming ``error``, not recorded.

        For adapters whose LLM call, upstream request or stream failed before the guard could
        decide: nothing more of that call may be shown as guarded, so it is a block with empty
        text. ``draft`` is what arrived before the failure, if anything.
        """
        chosen = self.resolve_policy(policy)
        return failure_decision(chosen, prompt, error, draft=draft, note=note, model_id=self.scorer.model_id)

    def unscored(self, prompt: str | None, note: str, *, policy: Policy | str | Path | None = None) -> Decision:
        """An allow decision for a reply with no text to score (e.g. only tool calls); not recorded.

        Nothing was scored, so it carries no scores and no model id; ``note`` says why.
        """
        return unscored_decision(self.resolve_policy(policy), prompt, note)

    def record_failure(
        self,
        prompt: str | None,
        error: str | BaseException,
        *,
        draft: str | None = None,
        note: str | None = None,
        context: dict[str, Any] | None = None,
        policy: Policy | str | Path | None = None,
    ) -> Decision:
        """Record (and return) ``failure(...)``: a call that failed is still in the audit log."""
        decision = self.failure(prompt, error, draft=draft, note=note, policy=policy)
        return self.record(decision, context or {})

    async def arecord_failure(
        self,
        prompt: str | None,
        error: str | BaseException,
        *,
        draft: str | None = None,
        note: str | None = None,
        context: dict[str, Any] | None = None,
        policy: Policy | str | Path | None = None,
    ) -> Decision:
        """Async twin of ``record_failure``."""
        decision = self.failure(prompt, error, draft=draft, note=note, policy=policy)
        return await self.arecord(decision, context or {})

    @property
    def closed(self) -> bool:
        """Whether ``close`` has run."""
        return self._closed

    def ensure_open(self) -> None:
        """Raise ``RuntimeError`` if this guard is closed (adapters call it before work they could not record)."""
        if self._closed:
            raise RuntimeError("this Guard is closed: create a new one")

    # ------------------------------------------------------------------ async driver

    async def _adrive(self, gen: Generator[Effect, Any, Decision], policy: Policy, llm: Any) -> Decision:
        async def assess(effect: Assess) -> Assessment:
            timeout = policy.settings.scoring_timeout_s
            with tracing.span("score"):
                scores = await ascore_in_time(self.scorer, effect.text, effect.prompt, timeout)
            return self._assess(scores, policy)

        return await adrive(gen, llm, assess)

    async def arecord(self, decision: Decision, context: dict[str, Any] | None = None) -> Decision:
        """Async twin of ``record``: the write happens off the event loop."""
        self.ensure_open()
        with record_step(decision, self.deployment) as step:
            if self.audit is not None:
                try:
                    await self.audit.awrite(decision, deployment=self.deployment, context=context or {})
                except AuditWriteError as exc:
                    decision, fallback = self._unrecorded(decision, exc)
                    step.unrecorded(decision)
                    await fallback.awrite(decision, deployment=self.deployment, context=context or {})
        return decision

    @tracing.guarded_call
    async def acheck(
        self,
        response: str,
        prompt: str | None = None,
        *,
        llm: SyncLLM | AsyncLLM | None = None,
        context: dict[str, Any] | None = None,
        policy: Policy | str | Path | None = None,
        record: bool = True,
    ) -> Decision:
        """Async twin of ``check``: never blocks the event loop."""
        self.ensure_open()
        chosen = self.resolve_policy(policy)
        invalid = invalid_input(chosen, response, prompt, self.scorer)
        try:
            if invalid is not None:
                decision = invalid
            else:
                decision = await self._adrive(self._pipeline(chosen, prompt, response, llm is not None), chosen, llm)
        except asyncio.CancelledError:
            if record:
                failure = self.arecord_failure(prompt, CANCELLED_BEFORE_DECISION, context=context, policy=chosen)
                await asyncio.shield(failure)
            raise
        # Shielded: a cancel arriving during the write still leaves exactly one record.
        return await asyncio.shield(self.arecord(decision, context or {})) if record else decision

    @tracing.guarded_call
    async def agenerate(
        self,
        prompt: str,
        llm: SyncLLM | AsyncLLM,
        *,
        context: dict[str, Any] | None = None,
        policy: Policy | str | Path | None = None,
    ) -> Decision:
        """Async twin of ``generate``; ``llm`` may be sync (it then runs on a worker thread) or async."""
        self.ensure_open()
        policy = self.resolve_policy(policy)
        gen = self._pipeline(policy, prompt, None, True)
        try:
            require_prompt(prompt)
            decision = await self._adrive(gen, policy, llm)
        except asyncio.CancelledError:
            cancelled = self.arecord_failure(prompt, CANCELLED_BEFORE_DECISION, context=context, policy=policy)
            await asyncio.shield(cancelled)
            raise
        except Exception as exc:
            error = f"generation failed: {error_text(exc)}"
            await asyncio.shield(self.arecord_failure(prompt, error, context=context, policy=policy))
            raise
        return await asyncio.shield(self.arecord(decision, context or {}))

    def awrap(self, llm: SyncLLM | AsyncLLM) -> Callable[[str], Awaitable[Decision]]:
        """``llm`` (sync or async, prompt -> text) as an async guarded callable (prompt -> Decision)."""

        async def guarded(prompt: str) -> Decision:
            return await self.agenerate(prompt, llm)

        return guarded

    def close(self) -> None:
        """Release the scoring threads and close the audit sink; later calls raise ``RuntimeError``."""
        self._closed = True
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self.audit is not None:
            self.audit.close()

    def __enter__(self) -> Guard:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
