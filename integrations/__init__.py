"""Adapters to LLM frameworks and clients, shipped as ``guardrail.integrations``.

They depend on the core pipeline, never the reverse; one module each:

- ``langchain``: ``GuardRunnable``, a Runnable that guards a chain's output (invoke/batch/stream).
- ``openai``: ``GuardedChatClient`` / ``AsyncGuardedChatClient`` for OpenAI-compatible servers (httpx).
- ``proxy``: the ASGI app behind ``guardrail serve``, an OpenAI-compatible guarding proxy.
- ``fake_upstream``: a fake OpenAI-compatible server standing in for a remote LLM in tests and benchmarks.
"""
