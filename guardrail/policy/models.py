"""The policy models: ``Policy``, its ``Rule``s and ``Settings``, the five kinds of condition and ``PolicyRef``.

What a policy file holds, as strict frozen pydantic models: the types YAML gives and no coercion,
finite numbers, unknown fields refused. Their field descriptions and ``json_schema_extra`` are the
source of ``policies/schema.json`` (see ``schema``); reading files and wording errors live elsewhere
(``parse``, ``validate``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Iterable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from guardrail.values import VALUE_NAMES, ValueGroup, resolve_group_name, resolve_value_name

ActionName = Literal["block", "rewrite", "log"]
DEFAULT_REFUSAL = "I can't help with that request."
# Longer waits are "no timeout" in practice, and the thread and asyncio waits the guard uses
# overflow on very large ones (``.inf`` included).
MAX_SCORING_TIMEOUT_S = 86400.0


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Strict(_Frozen):
    """What a policy file holds. Strict: the types YAML gives (numbers, true/false, text) and no
    coercion, so that ``min: "-0.3"``, ``shadow: "yes"`` or ``max_attempts: "3"`` are errors, as
    in the JSON Schema; an integer is still a number (``min: 0``). Numbers are finite: YAML's
    ``.nan`` and ``.inf`` are refused everywhere (JSON, and so the schema, has neither)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


def _spellings(names: Iterable[str]) -> dict[str, Any]:
    """The JSON Schema of a name that ``resolve_value_name``/``resolve_group_name`` accept.

    The canonical names as an ``enum`` (what editors offer), or any spelling the loader forgives:
    any case, ``-`` or a space for ``_``, surrounding spaces (``Self-Direction``).
    """
    names = list(names)

    def forgiving(name: str) -> str:
        parts = ("".join(f"[{c}{c.upper()}]" if c.isalpha() else re.escape(c) for c in p) for p in name.split("_"))
        return "[-_ ]".join(parts)

    pattern = r"^\s*(?:" + "|".join(forgiving(n) for n in names) + r")\s*$"
    return {"anyOf": [{"enum": names}, {"pattern": pattern}]}


_VALUE_SCHEMA = _spellings(VALUE_NAMES)
_GROUP_SCHEMA = _spellings(g.value for g in ValueGroup)


class _Bounds(_Strict):
    min: float = Field(
        -1.0, ge=-1.0, le=1.0, description="lowest acceptable score, in [-1, 1]; must not be greater than max"
    )
    max: float = Field(
        1.0, ge=-1.0, le=1.0, description="highest acceptable score, in [-1, 1]; must not be less than min"
    )

    @model_validator(mode="after")
    def _ordered(self) -> _Bounds:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        return self


class ValueRange(_Bounds):
    """Fires when the score of one value falls outside [min, max]."""

    value: str = Field(description="one of the ten values, e.g. security", json_schema_extra=_VALUE_SCHEMA)

    @field_validator("value")
    @classmethod
    def _known_value(cls, v: str) -> str:
        return resolve_value_name(v)


class GroupRange(_Bounds):
    """Fires when the mean score of a higher-order group falls outside [min, max]."""

    group: str = Field(
        description="openness_to_change, self_enhancement, conservation or self_transcendence",
        json_schema_extra=_GROUP_SCHEMA,
    )

    @field_validator("group")
    @classmethod
    def _known_group(cls, v: str) -> str:
        return resolve_group_name(v).value


class Opposes(_Strict):
    """Fires when the scorer labels the value -1 (P(oppose) at or above its tuned threshold)."""

    opposes: str = Field(description="the value the response must not oppose", json_schema_extra=_VALUE_SCHEMA)

    @field_validator("opposes")
    @classmethod
    def _known_value(cls, v: str) -> str:
        return resolve_value_name(v)


class TargetDistance(_Strict):
    """The paper's BaseAlign form: distance to a target vector, on the dimensions the target names.

    Only dimensions where the scorer is decisive (|score| > ``min_abs_score``) count, as in FULCRA.
    """

    target: dict[str, Annotated[float, Field(ge=-1.0, le=1.0)]] = Field(
        min_length=1,
        description="value -> target score in [-1, 1]; at least one value, each named once "
        "(self-direction and self_direction are the same value)",
        json_schema_extra={"propertyNames": _VALUE_SCHEMA},
    )
    max_distance: float = Field(gt=0.0, description="largest acceptable Euclidean distance")
    min_abs_score: float = Field(0.3, ge=0.0, le=1.0)

    @field_validator("target")
    @classmethod
    def _known_values(cls, v: dict[str, float]) -> dict[str, float]:
        out: dict[str, float] = {}
        spelled: dict[str, str] = {}
        for name, score in v.items():
            canonical = resolve_value_name(name)
            if canonical in out:
                raise ValueError(
                    f"names {canonical} twice ('{spelled[canonical]}' and '{name}' are the same value); keep one"
                )
            out[canonical], spelled[canonical] = float(score), name
        return out


class Uncertain(_Strict):
    """Fires when the scorer's confidence on a value (or on ``any`` value) is below ``below``."""

    uncertain: str = Field(
        description="a value name, or 'any'",
        json_schema_extra={"anyOf": [*_VALUE_SCHEMA["anyOf"], {"pattern": r"^\s*[aA][nN][yY]\s*$"}]},
    )
    below: float = Field(gt=0.0, le=1.0)

    @field_validator("uncertain")
    @classmethod
    def _known_value(cls, v: str) -> str:
        return "any" if v.strip().lower() == "any" else resolve_value_name(v)


Condition = Annotated[ValueRange | GroupRange | Opposes | TargetDistance | Uncertain, Field(union_mode="smart")]

# The key of a rule's `when` -> the condition kind it names (pydantic names union members by class).
CONDITION_MEMBERS = {
    "value": "ValueRange",
    "group": "GroupRange",
    "opposes": "Opposes",
    "target": "TargetDistance",
    "uncertain": "Uncertain",
}


class Rule(_Strict):
    """One constraint: a condition on the value vector, the action when it fires, and why."""

    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$")
    when: Condition
    action: ActionName
    reason: str = Field(min_length=1, description="human-readable reason, shown in decisions and audits")
    message: str | None = Field(
        None,
        description="refusal text when this rule blocks, or when this rewrite rule falls back to a block "
        "(default: settings.refusal_message)",
    )
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
    scoring_timeout_s: float = Field(
        5.0,
        gt=0.0,
        le=MAX_SCORING_TIMEOUT_S,
        description="seconds; scoring slower than this counts as a failure (at most a day)",
    )
    shadow: bool = Field(False, description="evaluate and record, never enforce")
    max_attempts: int = Field(2, ge=1, le=10, description="rewrite attempts before the fallback applies")
    refusal_message: str = DEFAULT_REFUSAL

    @field_validator("max_attempts", mode="before")
    @classmethod
    def _whole_float(cls, v: Any) -> Any:
        # JSON Schema's "integer" includes 2.0; so does the loader (but not "2", nor 2.5).
        return int(v) if isinstance(v, float) and v.is_integer() else v


class Policy(_Strict):
    """A named, versioned set of rules. ``extends`` is resolved at load time."""

    model_config = ConfigDict(
        # The loader's rule that remove_rules needs extends, for editors (min <= max and unique ids
        # cannot be said in JSON Schema: the fields' descriptions say them).
        json_schema_extra={
            "if": {"required": ["remove_rules"], "properties": {"remove_rules": {"minItems": 1}}},
            "then": {"required": ["extends"], "properties": {"extends": {"type": "string"}}},
        }
    )

    name: str = Field(min_length=1)
    version: str = Field("1", min_length=1)
    description: str = ""
    extends: str | None = Field(
        None,
        min_length=1,
        pattern=r"\S",
        description="preset name or path of a policy to inherit from; a rule with an inherited id replaces "
        "that rule in place, other rules come after the inherited ones",
    )
    settings: Settings = Field(default_factory=lambda: Settings())
    rules: list[Rule] = Field(
        default_factory=list, description="in order (the first firing block rule's message is the refusal); ids unique"
    )
    remove_rules: list[str] = Field(
        default_factory=list,
        description="inherited rule ids to drop; needs extends, and each must be a rule of the parent",
    )

    @model_validator(mode="after")
    def _unique_ids(self) -> Policy:
        seen: set[str] = set()
        for rule in self.rules:
            if rule.id in seen:
                raise ValueError(f"rule id '{rule.id}' is used twice")
            seen.add(rule.id)
        return self

    @functools.cached_property
    def content_hash(self) -> str:
        """SHA-256 of the resolved policy's canonical JSON: changes whenever behaviour can.

        Computed once per policy (the model is frozen): every decision names it, and the JSON
        encoding cost ~40 µs a call."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    def __copy__(self) -> Policy:
        # model_copy(update=...) starts from a copy: it must not inherit the original's hash.
        copied = super().__copy__()
        copied.__dict__.pop("content_hash", None)
        return copied

    def __deepcopy__(self, memo: dict[int, Any] | None = None) -> Policy:
        copied = super().__deepcopy__(memo)
        copied.__dict__.pop("content_hash", None)
        return copied

    @property
    def ref(self) -> PolicyRef:
        return PolicyRef(name=self.name, version=self.version, hash=self.content_hash)


class PolicyRef(_Frozen):
    """Which policy made a decision."""

    name: str
    version: str
    hash: str
