"""The guard: generate -> score -> evaluate -> act -> record, for one call at a time.

``Guard`` only composes the four pipeline steps (``score``, ``evaluate``, ``act``, ``record``).
The pipeline itself is one generator (``_pipeline``) that yields effects (generate, assess); the
sync methods drive it with plain calls and the async ones with awaits, so both behave alike.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import threading
import time
from collections.abc import Awaitable, Callable, Generator
from pathlib import Path
from typing import Any, cast

from guardrail import tracing
from guardrail.act import Assess, Assessment, Effect, Generate, Outcome, Situation, act, intended_action, refusal_for
from guardrail.decision import Decision, error_text
from guardrail.evaluate import evaluate
from guardrail.metrics import record_step
from guardrail.policy import Policy, PolicyError, load_policy, policy_path
from guardrail.record import DecisionSink
from guardrail.score import Scorer, ValueScores
from guardrail.text import described

SyncLLM = Callable[[str], str]
AsyncLLM = Callable[[str], Awaitable[str]]


NO_TEXT_NOTE = "no text content to score (tool calls): passed through unchanged"
"""The note of an ``unscored`` decision on a reply that holds only tool calls."""


CANCELLED_BEFORE_DECISION = "cancelled before the guard decided"
"""The error of the block recorded for an async call cancelled before its decision."""


class ScoringTimeoutError(TimeoutError):
    """Scoring took longer than the policy's ``scoring_timeout_s``."""


class PolicySource:
    """The policy in force, optionally hot-reloaded from its files when one of them changes.

    The files are the policy's own and every file of its ``extends`` chain (shipped presets do not
    change at run time). A broken edit keeps the last good policy in force; the error is kept in
    ``last_error``, and fixing it (in whichever file) reloads.
    """

    def __init__(self, policy: Policy | str | Path | None, hot_reload: bool = False, check_every_s: float = 1.0):
        self._lock = threading.Lock()
        self.last_error: PolicyError | None = None
        self._path: Path | None = None
        self._watched: dict[Path, tuple[int, int, int] | None] = {}  # file -> its stamp when last read
        if isinstance(policy, Policy):
            self._policy = policy
        else:
            self._policy, files = self._load(policy)
            candidate = policy_path(policy)  # None for a preset: presets do not change at run time
            if hot_reload and candidate is not None and candidate.is_file():
                self._path = candidate
                self._watched = {file: self._stamp(file) for file in files}
        self._check_every = check_every_s
        self._next_check = time.monotonic() + check_every_s

    @staticmethod
    def _load(ref: str | Path | None, files: list[Path] | None = None) -> tuple[Policy, tuple[Path, ...]]:
        from guardrail.policy import load_policy_and_files

        return load_policy_and_files(ref, files)

    @staticmethod
    def _stamp(path: Path) -> tuple[int, int, int] | None:
        """What changes when the file is edited (or replaced, as editors and ConfigMaps do); None if absent."""
        try:
            st = path.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    @property
    def current(self) -> Policy:
        if self._path is not None and time.monotonic() >= self._next_check:
            self._maybe_reload()
        return self._policy

    def _maybe_reload(self) -> None:
        assert self._path is not None
        with self._lock:
            self._next_check = time.monotonic() + self._check_every
            now = {file: self._stamp(file) for file in self._watched}
            if self._stamp(self._path) is None or now == self._watched:
                return  # unchanged, or the policy file itself is gone (deleted, or mid-save): look again later
            tried: list[Path] = []
            try:
                self._policy, files = self._load(self._path, tried)
                # The chain may have changed: watch the files this policy was read from.
                self._watched = {file: now[file] if file in now else self._stamp(file) for file in files}
                self.last_error = None
            except PolicyError as exc:
                # Also watch what the failed attempt read (a new parent, perhaps), so that fixing it reloads.
                self._watched = now | {file: self._stamp(file) for file in tried if file not in now}
                self.last_error = exc
                import warnings

                warnings.warn(
                    f"policy reload failed, keeping {self._policy.name} v{self._policy.version}: {exc}",
                    RuntimeWarning,
                    stacklevel=3,
                )

    def reload_now(self) -> None:
        """Check the files immediately (tests, admin endpoints)."""
        if self._path is not None:
            self._next_check = 0.0
            self._maybe_reload()


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
            return self._failed(policy, draft, f"scoring failed: {error_text(exc)}", base, latency)
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

    def _failed(
        self, policy: Policy, draft: str | None, error: str, base: dict[str, Any], latency: dict[str, float]
    ) -> Decision:
        closed = policy.settings.fail_mode == "closed"
        intended = "block" if closed else "allow"
        enforce = closed and not policy.settings.shadow
        return Decision(
            action="block" if enforce else "allow",
            intended_action=intended,
            text=refusal_for(policy, []) if enforce else (draft or ""),
            draft=draft,
            model_id=self.scorer.model_id,
            latency_ms=latency,
            error=error + f" (fail_mode={policy.settings.fail_mode})",
            **base,
        )

    # ------------------------------------------------------------------ sync driver

    def _score_sync(self, text: str, prompt: str | None, policy: Policy) -> ValueScores:
        with tracing.span("score"):
            return self._score_in_pool(text, prompt, policy)

    def _score_in_pool(self, text: str, prompt: str | None, policy: Policy) -> ValueScores:
        future = self._pool.submit(self.scorer.score, text, prompt)
        try:
            return future.result(timeout=policy.settings.scoring_timeout_s)
        except concurrent.futures.TimeoutError:
            # Drop the job if it is still queued; one already running cannot be interrupted and
            # finishes in the background, so later calls may wait behind it.
            future.cancel()
            raise ScoringTimeoutError(f"scoring took longer than {policy.settings.scoring_timeout_s}s") from None

    def _drive(self, gen: Generator[Effect, Any, Decision], policy: Policy, llm: SyncLLM | None) -> Decision:
        result: Any = None
        error: BaseException | None = None
        while True:
            try:
                effect = gen.throw(error) if error is not None else gen.send(result)
            except StopIteration as stop:
                return cast(Decision, stop.value)
            result, error = None, None
            try:
                if isinstance(effect, Generate):
                    if llm is None:
                        raise RuntimeError("no LLM to generate with")
                    result = llm(effect.prompt)
                    if inspect.isawaitable(result):
                        if inspect.iscoroutine(result):
                            result.close()  # never awaited: close it so Python does not warn later
                        raise TypeError("the LLM returned an awaitable: use acheck(), agenerate() or awrap() for it")
                else:
                    result = self._assess(self._score_sync(effect.text, effect.prompt, policy), policy)
            except Exception as exc:
                error = exc

    def record(self, decision: Decision, context: dict[str, Any] | None = None) -> Decision:
        """Append ``decision`` to the audit sink (if any) and return it."""
        self.ensure_open()
        with record_step(decision, self.deployment):
            if self.audit is not None:
                self.audit.write(decision, deployment=self.deployment, context=context or {})
        return decision

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
        invalid = self._invalid_input(chosen, response, prompt)
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
            _require_prompt(prompt)
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
        return Decision(
            action="block",
            intended_action="block",
            text="",
            prompt=prompt if isinstance(prompt, str) else None,
            draft=draft,
            policy=chosen.ref,
            shadow=chosen.settings.shadow,
            model_id=self.scorer.model_id,
            error=error if isinstance(error, str) else error_text(error),
            note=note,
        )

    def unscored(self, prompt: str | None, note: str, *, policy: Policy | str | Path | None = None) -> Decision:
        """An allow decision for a reply with no text to score (e.g. only tool calls); not recorded.

        Nothing was scored, so it carries no scores and no model id; ``note`` says why.
        """
        chosen = self.resolve_policy(policy)
        return Decision(
            action="allow",
            intended_action="allow",
            text="",
            prompt=prompt,
            policy=chosen.ref,
            shadow=chosen.settings.shadow,
            note=note,
        )

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

    def _invalid_input(self, policy: Policy, response: object, prompt: object) -> Decision | None:
        """A fail-mode decision for a response or prompt that is not text, or None if both are."""
        problems = []
        if not isinstance(response, str):
            problems.append(f"response must be a string, got {described(response)}")
        if prompt is not None and not isinstance(prompt, str):
            problems.append(f"prompt must be a string or None, got {described(prompt)}")
        if not problems:
            return None
        base: dict[str, Any] = {
            "prompt": prompt if isinstance(prompt, str) else None,
            "policy": policy.ref,
            "shadow": policy.settings.shadow,
        }
        draft = response if isinstance(response, str) else None
        return self._failed(policy, draft, "invalid input: " + "; ".join(problems), base, {})

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
        result: Any = None
        error: BaseException | None = None
        while True:
            try:
                effect = gen.throw(error) if error is not None else gen.send(result)
            except StopIteration as stop:
                return cast(Decision, stop.value)
            result, error = None, None
            try:
                if isinstance(effect, Generate):
                    if llm is None:
                        raise RuntimeError("no LLM to generate with")
                    if _is_async_callable(llm):
                        produced = llm(effect.prompt)
                    else:  # a sync LLM runs on a worker thread so that it never blocks the event loop
                        produced = await asyncio.to_thread(llm, effect.prompt)
                    result = await produced if inspect.isawaitable(produced) else produced
                else:
                    result = self._assess(await self._ascore(effect.text, effect.prompt, policy), policy)
            except Exception as exc:
                error = exc

    async def _ascore(self, text: str, prompt: str | None, policy: Policy) -> ValueScores:
        timeout = policy.settings.scoring_timeout_s
        try:
            with tracing.span("score"):
                return await asyncio.wait_for(self.scorer.ascore(text, prompt), timeout=timeout)
        except TimeoutError:
            raise ScoringTimeoutError(f"scoring took longer than {timeout}s") from None

    async def arecord(self, decision: Decision, context: dict[str, Any] | None = None) -> Decision:
        """Async twin of ``record``: the write happens off the event loop."""
        self.ensure_open()
        with record_step(decision, self.deployment):
            if self.audit is not None:
                await self.audit.awrite(decision, deployment=self.deployment, context=context or {})
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
        invalid = self._invalid_input(chosen, response, prompt)
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
            _require_prompt(prompt)
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


def _require_prompt(prompt: object) -> None:
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a string, got {described(prompt)}")


def _is_async_callable(llm: Any) -> bool:
    """Whether calling ``llm`` starts a coroutine (an async function, or an object with an async ``__call__``)."""
    call = type(llm).__call__ if not inspect.isfunction(llm) else llm
    return inspect.iscoroutinefunction(llm) or inspect.iscoroutinefunction(call)
