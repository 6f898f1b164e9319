"""Guarding a response while it streams.

Semantics (what integrations promise their users):

- Text is released one *checked window* at a time: chunks are held until a window (at least
  ``min_window_chars`` new characters, ending where a sentence ends: ``.``, ``!``, ``?`` or a
  newline) has been scored, together with everything before it and the prompt as context. A
  non-violating stream therefore lags by at most one window. (Single short sentences are not
  scored alone: with no context the classifier misreads them more often.)
- When a block or rewrite rule fires on the text so far, the stream stops: nothing more of the
  draft is released and the policy's refusal is emitted instead. The user may already have seen
  the sentences released before the violating one; those passed the policy on their own.
  Rewrites cannot un-send text, so in a stream a rewrite rule's fallback applies at once: with
  the default fallback (block) the stream stops; with ``fallback: log`` it goes on and is logged.
- At the end the whole text is checked once more and exactly one decision is recorded: the one
  that stopped the stream, or the final one. Its ``note`` says what was released.
- Shadow policies never stop a stream; fail-open policies let it continue when scoring fails.
- A stream that breaks (the LLM or upstream fails, or the consumer goes away) is ended with
  ``abort(error)``: that records a block naming the error and what had been released, so a
  broken stream is still one decision in the audit log. After ``finish`` or ``abort`` the guard
  releases nothing more, and calling either again returns the same decision without recording it
  again.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

from guardrail.decision import Decision, error_text
from guardrail.guard import Guard
from guardrail.policy import Policy

CONSUMER_CLOSED = "stream closed by the consumer before its end"
CANCELLED = "stream cancelled before its end"


def broken_reason(exc: BaseException) -> str | BaseException:
    """How a stream ended early by ``exc`` is named in its decision (for ``StreamGuard.abort``)."""
    if isinstance(exc, GeneratorExit):
        return CONSUMER_CLOSED
    if isinstance(exc, asyncio.CancelledError):
        return CANCELLED
    return exc


_BOUNDARY = re.compile(r"[.!?…][\"')\]]*\s|\n")


class StreamGuard:
    """Feed it the chunks of one response; it tells what may be shown.

    >>> sg = StreamGuard(guard, prompt)
    >>> for chunk in llm_stream:
    ...     show(sg.feed(chunk))
    ...     if sg.stopped: show(sg.refusal); break
    >>> tail, decision = sg.finish()   # show(tail); decision is recorded
    >>> # if the LLM stream raises instead: sg.abort(exc) records the broken stream
    """

    def __init__(
        self,
        guard: Guard,
        prompt: str | None = None,
        *,
        policy: Policy | str | Path | None = None,
        context: dict[str, Any] | None = None,
        min_window_chars: int = 60,
    ) -> None:
        self.guard = guard
        self.min_window_chars = min_window_chars
        self.prompt = prompt
        self.policy = guard.resolve_policy(policy)
        self.context = dict(context or {})
        self.text = ""
        self.released = 0
        self._checked = 0
        self.checks = 0
        self.stopped: Decision | None = None
        self.decision: Decision | None = None
        """The recorded decision, once ``finish`` or ``abort`` has run."""

    @property
    def refusal(self) -> str:
        """What to show instead of the rest when the stream was stopped."""
        return self.stopped.text if self.stopped is not None else ""

    def _next_boundary(self) -> int:
        """End of the next window to check, or 0 while too little new text has ended a sentence."""
        last = 0
        for match in _BOUNDARY.finditer(self.text, self._checked):
            last = match.end()
        return last if last - self._checked >= self.min_window_chars else 0

    def _apply(self, decision: Decision, upto: int) -> str:
        self.checks += 1
        if decision.action == "block":
            self.stopped = decision
            return ""
        self._checked = upto
        out = self.text[self.released : self._checked]
        self.released = self._checked
        return out

    @property
    def ended(self) -> bool:
        """Whether ``finish`` or ``abort`` has run (nothing more is released)."""
        return self.decision is not None

    def _take(self, chunk: str) -> int:
        """Add ``chunk``; return the end of the window to check now, or 0 if none is ready."""
        if self.stopped is not None or self.ended or not chunk:
            return 0
        self.text += chunk
        upto = self._next_boundary()
        return upto if upto > self._checked else 0

    def feed(self, chunk: str) -> str:
        """Add a chunk; return the text that may now be shown ("" while holding back or stopped)."""
        upto = self._take(chunk)
        if not upto:
            return ""
        return self._apply(self.guard.check(self.text[:upto], self.prompt, policy=self.policy, record=False), upto)

    async def afeed(self, chunk: str) -> str:
        """Async twin of ``feed``."""
        upto = self._take(chunk)
        if not upto:
            return ""
        decision = await self.guard.acheck(self.text[:upto], self.prompt, policy=self.policy, record=False)
        return self._apply(decision, upto)

    def _final(self, decision: Decision | None) -> tuple[str, Decision]:
        if self.stopped is not None:
            note = f"stream stopped after releasing {self.released} of {len(self.text)} characters received"
            final = self.stopped.model_copy(update={"note": note, "draft": self.text})
            return "", final
        assert decision is not None
        if decision.action == "block":
            self.stopped = decision
            note = f"stream stopped at the end after releasing {self.released} of {len(self.text)} characters"
            return "", decision.model_copy(update={"note": note})
        tail = self.text[self.released :]
        self.released = len(self.text)
        return tail, decision.model_copy(update={"note": f"streamed in full after {self.checks} window checks"})

    def finish(self) -> tuple[str, Decision]:
        """End of stream: (remaining text to show, the recorded decision).

        If the stream was or is now stopped, the remaining text is "" and ``refusal`` holds what
        to show instead.
        """
        if self.decision is not None:
            return "", self.decision
        decision = None
        if self.stopped is None:
            decision = self.guard.check(self.text or " ", self.prompt, policy=self.policy, record=False)
        tail, final = self._final(decision)
        self.decision = final
        return self._recorded(tail, final, self.guard.record(final, self.context))

    async def afinish(self) -> tuple[str, Decision]:
        """Async twin of ``finish``."""
        if self.decision is not None:
            return "", self.decision
        decision = None
        if self.stopped is None:
            decision = await self.guard.acheck(self.text or " ", self.prompt, policy=self.policy, record=False)
        tail, final = self._final(decision)
        self.decision = final
        return self._recorded(tail, final, await self.guard.arecord(final, self.context))

    def _recorded(self, tail: str, final: Decision, recorded: Decision) -> tuple[str, Decision]:
        """The audit store could not take ``final`` under ``fail_mode: closed``: the guard made it a
        block (``Guard.record``), so the rest is withheld and the refusal shown instead."""
        if recorded.action == "block" and final.action != "block":
            self.stopped, tail = recorded, ""
        self.decision = recorded
        return tail, recorded

    def _broken(self, error: str | BaseException) -> Decision:
        reason = error if isinstance(error, str) else error_text(error)
        note = f"stream broke after releasing {self.released} of {len(self.text)} characters received"
        if self.stopped is not None:
            note = f"stream stopped by the policy, then broke; released {self.released} of {len(self.text)} characters"
        draft = self.text or None
        return self.guard.failure(self.prompt, f"stream failed: {reason}", draft=draft, note=note, policy=self.policy)

    def abort(self, error: str | BaseException) -> Decision:
        """End a stream that broke (``error``: the exception or why); record it and return the decision.

        The decision is a block naming the error; its ``draft`` is the text received and its
        ``note`` says how much was released. After ``finish`` it records nothing and returns that
        decision.
        """
        if self.decision is None:
            self.decision = self.guard.record(self._broken(error), self.context)
        return self.decision

    async def aabort(self, error: str | BaseException) -> Decision:
        """Async twin of ``abort``."""
        if self.decision is None:
            self.decision = await self.guard.arecord(self._broken(error), self.context)
        return self.decision
