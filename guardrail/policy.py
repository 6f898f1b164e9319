"""Declarative value policies: what an operator writes in YAML, validated, resolved and hashed.

A policy names acceptable regions of value space and what to do outside them::

    name: support-bot
    version: "1.2"
    extends: default            # a preset name or a path; rules with the same id are replaced
    settings: {fail_mode: closed, shadow: false}
    rules:
      - id: keep-safe
        when: {value: security, min: -0.3}
        action: block
        reason: The draft endorses harm to people's safety.

Bad files get one ``PolicyError`` naming the file, the line, the field and what was expected.
"""

from __future__ import annotations

import hashlib
import json
import os
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from guardrail.values import VALUE_NAMES, ValueGroup, resolve_group_name, resolve_value_name

ActionName = Literal["block", "rewrite", "log"]
POLICY_ENV = "GUARDRAIL_POLICY"
DEFAULT_REFUSAL = "I can't help with that request."


class PolicyError(ValueError):
    """A policy that cannot be used, with where and why."""

    def __init__(self, message: str, *, source: str | None = None, line: int | None = None, field: str | None = None):
        self.source, self.line, self.field, self.detail = source, line, field, message
        where = source or "<policy>"
        if line is not None:
            where += f":{line}"
        if field:
            where += f": {field}"
        super().__init__(f"{where}: {message}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Bounds(_Strict):
    min: float = Field(-1.0, ge=-1.0, le=1.0, description="lowest acceptable score")
    max: float = Field(1.0, ge=-1.0, le=1.0, description="highest acceptable score")

    @model_validator(mode="after")
    def _ordered(self) -> _Bounds:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        return self


class ValueRange(_Bounds):
    """Fires when the score of one value falls outside [min, max]."""

    value: str = Field(description="one of the ten values, e.g. security")

    @field_validator("value")
    @classmethod
    def _known_value(cls, v: str) -> str:
        return resolve_value_name(v)


class GroupRange(_Bounds):
    """Fires when the mean score of a higher-order group falls outside [min, max]."""

    group: str = Field(description="openness_to_change, self_enhancement, conservation or self_transcendence")

    @field_validator("group")
    @classmethod
    def _known_group(cls, v: str) -> str:
        return resolve_group_name(v).value


class Opposes(_Strict):
    """Fires when the scorer labels the value -1 (P(oppose) at or above its tuned threshold)."""

    opposes: str = Field(description="the value the response must not oppose")

    @field_validator("opposes")
    @classmethod
    def _known_value(cls, v: str) -> str:
        return resolve_value_name(v)


class TargetDistance(_Strict):
    """The paper's BaseAlign form: distance to a target vector, on the dimensions the target names.

    Only dimensions where the scorer is decisive (|score| > ``min_abs_score``) count, as in FULCRA.
    """

    target: dict[str, float] = Field(description="value -> target score in [-1, 1]")
    max_distance: float = Field(gt=0.0, description="largest acceptable Euclidean distance")
    min_abs_score: float = Field(0.3, ge=0.0, le=1.0)

    @field_validator("target")
    @classmethod
    def _known_values(cls, v: dict[str, float]) -> dict[str, float]:
        if not v:
            raise ValueError("target names no value")
        out = {}
        for name, score in v.items():
            if not -1.0 <= score <= 1.0:
                raise ValueError(f"target score for {name} must be in [-1, 1], got {score}")
            out[resolve_value_name(name)] = float(score)
        return out


class Uncertain(_Strict):
    """Fires when the scorer's confidence on a value (or on ``any`` value) is below ``below``."""

    uncertain: str = Field(description="a value name, or 'any'")
    below: float = Field(gt=0.0, le=1.0)

    @field_validator("uncertain")
    @classmethod
    def _known_value(cls, v: str) -> str:
        return "any" if v.strip().lower() == "any" else resolve_value_name(v)


Condition = Annotated[ValueRange | GroupRange | Opposes | TargetDistance | Uncertain, Field(union_mode="smart")]


class Rule(_Strict):
    """One constraint: a condition on the value vector, the action when it fires, and why."""

    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$")
    when: Condition
    action: ActionName
    reason: str = Field(min_length=1, description="human-readable reason, shown in decisions and audits")
    message: str | None = Field(None, description="refusal text for block (default: settings.refusal_message)")
    fallback: Literal["block", "log"] = Field("block", description="for rewrite: what applies if no attempt passes")

    @model_validator(mode="before")
    @classmethod
    def _one_condition_kind(cls, data: Any) -> Any:
        when = data.get("when") if isinstance(data, dict) else None
        if isinstance(when, dict):
            keys = {"value", "group", "opposes", "target", "uncertain"} & set(when)
            if len(keys) != 1:
                raise ValueError(
                    "when: needs exactly one of 'value' (range), 'group' (range), 'opposes', "
                    f"'target' (distance) or 'uncertain'; got {sorted(when) or 'nothing'}"
                )
        return data


class Settings(_Strict):
    """How the guard behaves around the rules."""

    fail_mode: Literal["closed", "open"] = Field("closed", description="closed blocks when scoring fails")
    scoring_timeout_s: float = Field(5.0, gt=0.0, description="scoring slower than this counts as a failure")
    shadow: bool = Field(False, description="evaluate and record, never enforce")
    max_attempts: int = Field(2, ge=1, le=10, description="rewrite attempts before the fallback applies")
    refusal_message: str = DEFAULT_REFUSAL


class Policy(_Strict):
    """A named, versioned set of rules. ``extends`` is resolved at load time."""

    name: str = Field(min_length=1)
    version: str = Field("1", min_length=1)
    description: str = ""
    extends: str | None = Field(None, description="preset name or path of a policy to inherit from")
    settings: Settings = Field(default_factory=lambda: Settings())
    rules: list[Rule] = Field(default_factory=list)
    remove_rules: list[str] = Field(default_factory=list, description="inherited rule ids to drop")

    @model_validator(mode="after")
    def _unique_ids(self) -> Policy:
        seen: set[str] = set()
        for rule in self.rules:
            if rule.id in seen:
                raise ValueError(f"rule id '{rule.id}' is used twice")
            seen.add(rule.id)
        return self

    @property
    def content_hash(self) -> str:
        """SHA-256 of the resolved policy's canonical JSON: changes whenever behaviour can."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    @property
    def ref(self) -> PolicyRef:
        return PolicyRef(name=self.name, version=self.version, hash=self.content_hash)


class PolicyRef(_Strict):
    """Which policy made a decision."""

    name: str
    version: str
    hash: str


# ----------------------------------------------------------------------------- loading


def presets() -> list[str]:
    """Names of the presets shipped in ``guardrail.policies``."""
    folder = resources.files("guardrail.policies")
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))


def _line_of(node: yaml.Node | None, loc: tuple[int | str, ...]) -> int | None:
    """1-based line of the YAML node at ``loc`` (pydantic's error location), or its nearest parent."""
    line = node.start_mark.line + 1 if node is not None else None
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            found = next((v for k, v in node.value if getattr(k, "value", None) == key), None)
            if found is None:
                found = next((k for k, _ in node.value if getattr(k, "value", None) == key), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            found = node.value[key]
        else:
            found = None
        if found is None:
            break
        node = found
        line = node.start_mark.line + 1
    return line


def _field_of(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for key in loc:
        if isinstance(key, int):
            parts.append(f"[{key}]")
        elif key in {"ValueRange", "GroupRange", "Opposes", "TargetDistance", "Uncertain"} or "[" in str(key):
            continue  # pydantic names the union member it tried; users never wrote it
        else:
            parts.append(("." if parts else "") + str(key))
    return "".join(parts)


def _parse_file(path: Path) -> tuple[dict[str, Any], yaml.Node | None]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(f"cannot read policy file ({exc.strerror})", source=str(path)) from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        raise PolicyError(f"YAML syntax error: {exc.problem or exc}", source=str(path), line=line) from None
    except yaml.YAMLError as exc:
        raise PolicyError(f"YAML syntax error: {exc}", source=str(path)) from None
    if not isinstance(data, dict):
        raise PolicyError("a policy file must hold a mapping with name, rules, ...", source=str(path), line=1)
    return data, node


def _validate(data: dict[str, Any], source: str, node: yaml.Node | None) -> Policy:
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        error = _most_specific(exc.errors())
        loc = tuple(error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = f"unknown field '{loc[-1]}'"
        elif error["type"] == "literal_error":
            message = f"got {error.get('input')!r}; {message.lower()}"
        raise PolicyError(message, source=source, line=_line_of(node, loc), field=_field_of(loc)) from None


def _most_specific(errors: list[Any]) -> Any:
    """Of pydantic's errors (one per union member tried), the one users can act on."""
    ranked = sorted(errors, key=lambda e: (e["type"] in ("missing", "extra_forbidden"), -len(e["loc"])))
    return ranked[0]


def _resolve_ref(ref: str, relative_to: Path | None) -> tuple[dict[str, Any], str, yaml.Node | None, Path | None]:
    """Find the policy ``ref`` names: a file path (relative to the referring file) or a preset."""
    candidate = Path(ref) if relative_to is None else relative_to.parent / ref
    looks_like_path = ref.endswith((".yaml", ".yml", ".json")) or os.sep in ref or "/" in ref
    if looks_like_path or candidate.exists():
        if not candidate.exists() and relative_to is not None and Path(ref).exists():
            candidate = Path(ref)
        if not candidate.exists():
            raise PolicyError(f"no policy file at {candidate}", source=ref)
        data, node = _parse_file(candidate)
        return data, str(candidate), node, candidate
    if ref in presets():
        folder = resources.files("guardrail.policies")
        with resources.as_file(folder / f"{ref}.yaml") as preset_path:
            data, node = _parse_file(preset_path)
        return data, f"preset '{ref}'", node, None
    import difflib

    close = difflib.get_close_matches(ref, presets(), n=1)
    hint = f"did you mean '{close[0]}'?" if close else f"available presets: {', '.join(presets())}"
    raise PolicyError(f"unknown preset '{ref}' ({hint})", source=ref)


def _load(ref: str, relative_to: Path | None, chain: tuple[str, ...]) -> Policy:
    data, source, node, path = _resolve_ref(ref, relative_to)
    key = str(path.resolve()) if path else source
    if key in chain:
        raise PolicyError(f"'extends' forms a cycle: {' -> '.join((*chain, key))}", source=source)
    policy = _validate(data, source, node)
    if policy.extends is None:
        if policy.remove_rules:
            raise PolicyError("remove_rules needs 'extends'", source=source, field="remove_rules")
        return policy
    try:
        parent = _load(policy.extends, path, (*chain, key))
    except PolicyError as exc:
        if exc.source == policy.extends:  # the parent could not be found: point at our 'extends' line
            raise PolicyError(exc.detail, source=source, line=_line_of(node, ("extends",)), field="extends") from None
        raise
    return merge(parent, policy, source)


def merge(parent: Policy, child: Policy, source: str = "<policy>") -> Policy:
    """``child`` on top of ``parent``: settings key by key, rules by id, ``remove_rules`` dropped."""
    unknown = set(child.remove_rules) - {r.id for r in parent.rules}
    if unknown:
        raise PolicyError(f"remove_rules names rules the parent lacks: {sorted(unknown)}", source=source)
    settings = parent.settings.model_copy(update=child.settings.model_dump(exclude_unset=True))
    child_ids = {r.id for r in child.rules}
    inherited = [r for r in parent.rules if r.id not in child_ids and r.id not in child.remove_rules]
    return Policy(
        name=child.name,
        version=child.version,
        description=child.description or parent.description,
        extends=None,
        settings=settings,
        rules=[*inherited, *child.rules],
    )


def load_policy(name_or_path: str | Path | None = None) -> Policy:
    """Load and resolve a policy by preset name or file path.

    With no argument, the ``GUARDRAIL_POLICY`` environment variable decides, then the ``default``
    preset. Raises ``PolicyError`` naming the file, line and field of any problem.
    """
    ref = str(name_or_path) if name_or_path is not None else os.environ.get(POLICY_ENV) or "default"
    return _load(ref, None, ())


def policy_from_dict(data: dict[str, Any], source: str = "<dict>") -> Policy:
    """Validate a policy given as a mapping (``extends`` is resolved against presets and cwd)."""
    policy = _validate(data, source, None)
    if policy.extends is None:
        return policy
    return merge(_load(policy.extends, None, (source,)), policy, source)


def json_schema() -> dict[str, Any]:
    """The JSON Schema of policy files (written to policies/schema.json)."""
    schema = Policy.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "guardrail value policy"
    return schema


__all__ = [
    "VALUE_NAMES",
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
    "presets",
]
