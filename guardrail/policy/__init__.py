"""Declarative value policies: what an operator writes in YAML, validated, resolved and hashed.

A policy names acceptable regions of value space and what to do outside them::

    name: support-bot
    version: "1.2"
    extends: default            # a preset name or a file path; a rule with an inherited id replaces it in place
    settings: {fail_mode: closed, shadow: false}
    rules:
      - id: keep-safe
        when: {value: security, min: -0.3}
        action: block
        reason: The draft endorses harm to people's safety.

Bad files get one ``PolicyError`` naming the file, the line, the field and what was expected.
A reference (``load_policy(ref)``, ``--policy``, ``GUARDRAIL_POLICY``, ``extends``) is a preset
name (``default``) or a file path (a separator or a ``.yaml``/``.yml``/``.json`` suffix): the
exact rules are in ``refs``. The modules, in the order a file goes through them:

* ``refs``: what a reference names (a shipped preset of ``guardrail.policies``, or a file) and
  the presets' names;
* ``parse``: the file's bytes -> a mapping and its YAML node, strictly (UTF-8, no duplicate key);
* ``validate``: the mapping -> a ``Policy``, or one ``PolicyError`` worded for users, its line
  found by ``locations``;
* ``load``: the public loaders, ``extends`` resolved and ``merge``d;
* ``models``: the pydantic models (``Policy``, ``Rule``, ``Settings``, the conditions, ``PolicyRef``);
* ``schema``: their JSON Schema; ``errors``: ``PolicyError``.
"""

from guardrail.policy.errors import PolicyError
from guardrail.policy.load import load_policy, load_policy_and_files, merge, policy_from_dict
from guardrail.policy.models import (
    DEFAULT_REFUSAL,
    MAX_SCORING_TIMEOUT_S,
    ActionName,
    Condition,
    GroupRange,
    Opposes,
    Policy,
    PolicyRef,
    Rule,
    Settings,
    TargetDistance,
    Uncertain,
    ValueRange,
)
from guardrail.policy.refs import POLICY_ENV, looks_like_path, policy_path, presets
from guardrail.policy.schema import json_schema
from guardrail.values import VALUE_NAMES, ValueGroup

__all__ = [
    "DEFAULT_REFUSAL",
    "MAX_SCORING_TIMEOUT_S",
    "POLICY_ENV",
    "VALUE_NAMES",
    "ActionName",
    "Condition",
    "GroupRange",
    "Opposes",
    "Policy",
    "PolicyError",
    "PolicyRef",
    "Rule",
    "Settings",
    "TargetDistance",
    "Uncertain",
    "ValueGroup",
    "ValueRange",
    "json_schema",
    "load_policy",
    "load_policy_and_files",
    "looks_like_path",
    "merge",
    "policy_from_dict",
    "policy_path",
    "presets",
]
