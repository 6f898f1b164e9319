"""Adapters to LLM frameworks and clients, shipped as ``guardrail.integrations``.

They depend on the core pipeline, never the reverse:

- ``langchain``: ``GuardRunnable``, a Runnable that guards a chain's output (invoke/batch/stream);
  ``langchain_io`` reads and shapes chain inputs and outputs for it.
- ``openai``: ``GuardedChatClient`` / ``AsyncGuardedChatClient`` for OpenAI-compatible servers (httpx),
  on top of ``openai_wire`` (the chat wire format: request checks, reply parsing, SSE events),
  ``openai_reply`` (guarding a whole reply, one decision per choice) and ``openai_stream``
  (``StreamRelay``: guarding a streamed reply). The proxy uses these three, not the clients.
- ``proxy``: the ASGI app behind ``guardrail serve``, an OpenAI-compatible guarding proxy.
- ``fake_upstream``: a fake OpenAI-compatible server standing in for a remote LLM in tests and benchmarks.
"""
