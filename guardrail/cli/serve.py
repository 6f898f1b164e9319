"""`guardrail serve` (the OpenAI-compatible guarding proxy) and `guardrail demo` (a guarded local chat)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from guardrail.cli.io import AUDIT_HELP, CliError, audit_sink, audit_target, load_policy_or_fail

ALLOWED_POLICIES_ENV = "GUARDRAIL_ALLOWED_POLICIES"


def cmd_serve(args: argparse.Namespace) -> int:
    from guardrail.integrations.proxy_server import ProxySettings, check_listen, check_upstream, serve

    try:  # before the scorer loads
        check_upstream(args.upstream)
        check_listen(args.host, args.port)
    except (ValueError, OSError) as exc:
        raise CliError(str(exc)) from None
    if args.workers < 1:
        raise CliError(f"--workers must be 1 or more, got {args.workers}")
    policy = load_policy_or_fail(args.policy)
    allowed = args.allow_policy
    if allowed is None:
        allowed = [name.strip() for name in os.environ.get(ALLOWED_POLICIES_ENV, "").split(",") if name.strip()]
    audit = audit_target(args.audit)  # --audit, else $GUARDRAIL_AUDIT_URL
    sink = audit_sink(audit, args.redact)  # checked here (one clear line), opened again where it is used
    if sink is not None:
        sink.close()
    settings = ProxySettings(
        upstream=args.upstream,
        timeout=args.timeout,
        policy=policy,
        allowed=[load_policy_or_fail(ref) for ref in allowed],
        audit=audit,
        redact=args.redact,
        deployment=args.deployment,
        metrics=args.metrics,
    )

    def announce(detail: str) -> None:
        print(
            f"guardrail proxy on http://{args.host}:{args.port}/v1 -> {args.upstream} "
            f"(policy {policy.name} v{policy.version}, {detail}); Ctrl-C or SIGTERM stops it",
            flush=True,
        )

    try:
        serve(settings, host=args.host, port=args.port, workers=args.workers, announce=announce)
    except OSError as exc:
        raise CliError(str(exc)) from None
    print("guardrail proxy stopped", file=sys.stderr, flush=True)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from guardrail.demo import run_demo

    policy = load_policy_or_fail(args.policy)  # before the minute it takes to load the LLM
    audit = Path(args.audit)
    audit.parent.mkdir(parents=True, exist_ok=True)
    run_demo(audit, policy=policy, log=lambda line: print(line, flush=True))
    return 0


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `guardrail serve` and `guardrail demo`."""
    serve = commands.add_parser("serve", help="run an OpenAI-compatible proxy that guards an upstream LLM server")
    serve.add_argument("--upstream", required=True, help="upstream base URL, e.g. http://127.0.0.1:8000/v1")
    serve.add_argument("--policy", help="preset name or policy file (default: $GUARDRAIL_POLICY or 'default')")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the upstream")
    serve.add_argument("--audit", help=AUDIT_HELP)
    serve.add_argument("--redact", action="store_true", help="audit only hashes of prompts and texts")
    serve.add_argument("--deployment", default="proxy", help="deployment name recorded in the audit log")
    serve.add_argument(
        "--workers", type=int, default=1, help="server processes (uvicorn workers) sharing the audit log; default 1"
    )
    serve.add_argument(
        "--allow-policy",
        action="append",
        metavar="NAME",
        help="a policy (preset or file) a client may pick by name with the x-guardrail-policy header; repeatable "
        f"(default: ${ALLOWED_POLICIES_ENV}, comma-separated; without either, only --policy applies)",
    )
    serve.add_argument(
        "--metrics",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="serve Prometheus metrics on /metrics (default: on)",
    )
    serve.set_defaults(func=cmd_serve)

    demo = commands.add_parser("demo", help="run a guarded chat session with a small local LLM")
    demo.add_argument("--policy", help="preset name or policy file (default: $GUARDRAIL_POLICY or 'default')")
    demo.add_argument("--audit", default="runs/demo-audit.jsonl", help="audit log to append to")
    demo.set_defaults(func=cmd_demo)
