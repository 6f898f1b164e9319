"""Loading a policy: find it, validate it, resolve its ``extends`` chain and merge.

The entry points are ``load_policy`` (by preset name or file path, or ``GUARDRAIL_POLICY``),
``load_policy_and_files`` (also the user files it was read from: hot reload watches them) and
``policy_from_dict``. ``merge`` puts a child on top of its parent: settings key by key, a rule
with an inherited id replaces that rule in place, ``remove_rules`` drops inherited rules.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from guardrail.policy.errors import PolicyError, Unresolved
from guardrail.policy.locations import line_of
from guardrail.policy.models import Policy
from guardrail.policy.refs import POLICY_ENV, Found, resolve_ref
from guardrail.policy.validate import validate_policy


def _load(found: Found, chain: tuple[str, ...], files: list[Path]) -> Policy:
    """Validate ``found`` and resolve its ``extends`` chain."""
    source, node = found.source, found.node
    policy = validate_policy(found.data, source, node)
    if policy.extends is None:
        return policy
    extends_line = line_of(node, ("extends",))
    try:
        parent_found = resolve_ref(policy.extends, found.path, files, in_preset=found.preset)
    except Unresolved as exc:  # only a parent that cannot be found or read is this line's fault
        raise PolicyError(exc.message, source=source, line=extends_line, field="extends") from None
    chain = (*chain, found.key)
    if parent_found.key in chain:
        cycle = " -> ".join((*chain, parent_found.key))
        raise PolicyError(f"'extends' forms a cycle: {cycle}", source=source, line=extends_line, field="extends")
    parent = _load(parent_found, chain, files)
    _check_remove_rules(policy, parent, parent_found.source, source, node)
    return merge(parent, policy, source)


def _check_remove_rules(
    policy: Policy, parent: Policy, parent_source: str, source: str, node: yaml.Node | None
) -> None:
    parent_ids = [r.id for r in parent.rules]
    for i, rule_id in enumerate(policy.remove_rules):
        if rule_id not in parent_ids:
            raise PolicyError(
                f"'{rule_id}' is not a rule of {parent_source} (its rules: {', '.join(parent_ids) or 'none'})",
                source=source,
                line=line_of(node, ("remove_rules", i)),
                field=f"remove_rules[{i}]",
            )


def merge(parent: Policy, child: Policy, source: str = "<policy>") -> Policy:
    """``child`` on top of ``parent``: settings key by key, rules by id, ``remove_rules`` dropped.

    Rule order matters (the first firing block rule's message is the refusal; ``explain()`` and
    ``evaluate`` follow it), so a child rule with an inherited id replaces that rule *in place*;
    the child's other rules follow the inherited ones, in the child's order. A rule the child
    both removes and declares again is a new rule: it goes after the inherited ones.
    """
    unknown = set(child.remove_rules) - {r.id for r in parent.rules}
    if unknown:
        raise PolicyError(
            f"remove_rules names rules the parent lacks: {sorted(unknown)}", source=source, field="remove_rules"
        )
    settings = parent.settings.model_copy(update=child.settings.model_dump(exclude_unset=True))
    removed = set(child.remove_rules)
    replacing = {r.id: r for r in child.rules if r.id not in removed}
    rules = [replacing.get(r.id, r) for r in parent.rules if r.id not in removed]
    placed = {r.id for r in rules}
    rules += [r for r in child.rules if r.id not in placed]
    return Policy(
        name=child.name,
        version=child.version,
        description=child.description or parent.description,
        extends=None,
        settings=settings,
        rules=rules,
    )


def load_policy(name_or_path: str | Path | None = None) -> Policy:
    """Load and resolve a policy by preset name or file path.

    A bare name (``"default"``) is a preset; a path has a separator or a ``.yaml``/``.yml``/``.json``
    suffix (``"./default"`` is the file), and a ``pathlib.Path`` is always a file. With no argument,
    the ``GUARDRAIL_POLICY`` environment variable decides (same rules), then the ``default``
    preset. Raises ``PolicyError`` naming the file, line and field of any problem.
    """
    return load_policy_and_files(name_or_path)[0]


def load_policy_and_files(
    name_or_path: str | Path | None = None, files: list[Path] | None = None
) -> tuple[Policy, tuple[Path, ...]]:
    """``load_policy``, and the user files the policy was read from (hot reload watches them).

    The files are absolute paths: the policy's own file and every file of its ``extends`` chain,
    including one it names that does not exist; presets are not files a user edits and are left
    out. ``files``, when given, is filled as the files are looked at, so that after a
    ``PolicyError`` it still holds those the failed attempt read.
    """
    files = [] if files is None else files
    if isinstance(name_or_path, Path):
        ref, origin, is_path = str(name_or_path), str(name_or_path), True
    elif name_or_path is not None:
        ref, origin, is_path = name_or_path, name_or_path, False
    elif os.environ.get(POLICY_ENV):
        ref = os.environ[POLICY_ENV]
        ref, origin, is_path = ref, f"{POLICY_ENV}={ref}", False  # say where the reference came from
    else:
        ref, origin, is_path = "default", "default", False
    try:
        found = resolve_ref(ref, None, files, is_path=is_path)
    except Unresolved as exc:
        raise PolicyError(exc.message, source=origin) from None
    policy = _load(found, (), files)
    return policy, tuple(dict.fromkeys(files))


def policy_from_dict(data: dict[str, Any], source: str = "<dict>") -> Policy:
    """Validate a policy given as a mapping.

    Its ``extends`` follows ``load_policy``'s rules: a bare name is a preset, a path is relative
    to the current directory.
    """
    policy = validate_policy(data, source, None)
    if policy.extends is None:
        return policy
    files: list[Path] = []
    try:
        parent_found = resolve_ref(policy.extends, None, files)
    except Unresolved as exc:
        raise PolicyError(exc.message, source=source, field="extends") from None
    parent = _load(parent_found, (source,), files)
    _check_remove_rules(policy, parent, parent_found.source, source, None)
    return merge(parent, policy, source)
