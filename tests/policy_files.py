"""Helpers the policy tests share: write a policy file, a one-rule policy, whether a mapping loads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from guardrail.policy import PolicyError, policy_from_dict


def write(tmp_path: Path, text: str, name: str = "policy.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


RULE = "name: x\nrules:\n  - id: a\n    when: {when}\n    action: {action}\n    reason: because\n"


def accepted(data: dict[str, Any]) -> bool:
    """Whether the loader accepts ``data`` as a policy."""
    try:
        policy_from_dict({"name": "x", **data})
    except PolicyError:
        return False
    return True
