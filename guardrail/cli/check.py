"""`guardrail check`: guard one text, or every line of a JSONL file, with a policy.

Every decision printed is the one recorded with ``--audit``, and only those: input the guard
must not see (an empty text, a bad line) is refused, or written as an error line, before it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from guardrail.cli.io import (
    AUDIT_HELP,
    INPUT_HELP,
    SKIP_INVALID_HELP,
    CliError,
    audit_sink,
    check_target,
    load_policy_or_fail,
    open_output,
    read_requests,
)
from guardrail.score_lines import ScoreRequest
from guardrail.text import normalize_text


def _decision_json(decision: Any, item_id: object = None) -> dict[str, object]:
    out: dict[str, object] = {} if item_id is None else {"id": item_id}
    out.update(
        action=decision.action,
        intended_action=decision.intended_action,
        text=decision.text,
        violations=[v.model_dump() for v in decision.violations],
        scores=decision.scores.scores if decision.scores else None,
        labels=decision.scores.labels if decision.scores else None,
        policy=decision.policy.model_dump(),
        model=decision.model_id,
        explanation=decision.explain(),
        error=decision.error,
    )
    return out


def cmd_check(args: argparse.Namespace) -> int:
    from guardrail.guard import Guard
    from guardrail.text import InvalidTextError

    policy = load_policy_or_fail(args.policy)
    if args.input is None and args.text is None:
        raise CliError("give a TEXT to check, or --input FILE.jsonl")
    if args.input is not None and args.text is not None:
        raise CliError("give either TEXT or --input, not both")
    if args.input is None and args.output is not None:
        raise CliError("--output goes with --input; the decision on one TEXT is printed")
    check_target("--output", args.output, ("--input", args.input))
    check_target("--audit", args.audit, ("--input", args.input), ("--output", args.output))
    if args.input is not None and not args.skip_invalid:
        for _ in read_requests(Path(args.input), skip_invalid=False):
            pass
    if args.input is None:
        # Refused here, before the guard: the guard would make (and audit) a fail-mode decision on
        # it, and an audit log must not hold a decision the user was told did not happen.
        try:
            normalize_text(args.text)
        except InvalidTextError as exc:
            raise CliError(f"{exc}; nothing was checked or recorded") from None
    audit = audit_sink(args.audit, args.redact)
    guard = Guard(policy, audit=audit, deployment=args.deployment)
    try:
        if args.input is None:
            decision = guard.check(args.text, prompt=args.prompt)
            print(json.dumps(_decision_json(decision), indent=None if args.json else 2))
            return 0
        out = open_output(args.output)
        try:
            for n, req in read_requests(Path(args.input), args.skip_invalid):
                if not isinstance(req, ScoreRequest):
                    out.write(json.dumps(req) + "\n")
                    continue
                decision = guard.check(req.response, prompt=req.prompt, context={"id": req.id, "line": n})
                out.write(json.dumps(_decision_json(decision, req.id if req.id is not None else n)) + "\n")
        finally:
            if out is not sys.stdout:
                out.close()
        return 0
    finally:
        guard.close()


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `guardrail check`."""
    check = commands.add_parser(
        "check",
        help="guard text with a policy and print the decision",
        description="Guard text with a policy and print the decision (exit 0 whatever the action). "
        "Every decision printed is the one recorded in --audit, and only those: an empty TEXT (or one of "
        "only invisible characters) is refused with exit 2 before the guard sees it, so nothing is recorded; "
        "a decision the guard makes in its fail mode (scoring failed) is printed and recorded like any other, "
        "with its error. Bad --input lines are refused the same way (or, with --skip-invalid, written as "
        "error lines and not recorded).",
    )
    check.add_argument("text", nargs="?", help="the response to check")
    check.add_argument("--prompt", help="the prompt the response answers")
    check.add_argument("--policy", help="preset name or policy file (default: $GUARDRAIL_POLICY or 'default')")
    check.add_argument("--input", help=INPUT_HELP)
    check.add_argument("--output", help="JSONL file of decisions (default: standard output; never the --input file)")
    check.add_argument("--audit", help=AUDIT_HELP)
    check.add_argument("--redact", action="store_true", help="audit only hashes of prompts and texts")
    check.add_argument("--deployment", default="default", help="deployment name recorded in the audit log")
    check.add_argument("--skip-invalid", action="store_true", help=SKIP_INVALID_HELP)
    check.add_argument("--json", action="store_true", help="one-line JSON output")
    check.set_defaults(func=cmd_check)
