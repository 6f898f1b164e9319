"""`guardrail policy validate|show|schema|list`: check, resolve and describe value policies."""

from __future__ import annotations

import argparse
import json

from guardrail.cli.io import load_policy_or_fail


def cmd_policy(args: argparse.Namespace) -> int:
    from guardrail.policy import json_schema, presets

    if args.policy_command == "schema":
        print(json.dumps(json_schema(), indent=2))
    elif args.policy_command == "validate":
        policy = load_policy_or_fail(args.file)
        summary = f"{policy.name} v{policy.version}, {len(policy.rules)} rules, hash {policy.content_hash[:16]}"
        print(f"{args.file}: OK - {summary}")
    elif args.policy_command == "show":
        import yaml

        policy = load_policy_or_fail(args.name)
        print(f"# resolved policy (after extends); hash {policy.content_hash}")
        print(yaml.safe_dump(policy.model_dump(mode="json", exclude={"extends", "remove_rules"}), sort_keys=False))
    elif args.policy_command == "list":
        for name in presets():
            policy = load_policy_or_fail(name)
            print(f"{name:<18} v{policy.version:<8} {policy.description}")
    return 0


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `guardrail policy` and its subcommands."""
    policy = commands.add_parser("policy", help="validate, show and describe value policies")
    policy_sub = policy.add_subparsers(dest="policy_command", required=True)
    validate = policy_sub.add_parser("validate", help="check a policy file (or a preset, by name)")
    validate.add_argument("file", help="policy file (YAML), or a preset name such as 'default'")
    show = policy_sub.add_parser("show", help="print the resolved policy (after extends)")
    show.add_argument("name", help="preset name or file")
    policy_sub.add_parser("schema", help="print the JSON Schema of policy files")
    policy_sub.add_parser("list", help="list the shipped presets")
    policy.set_defaults(func=cmd_policy)
