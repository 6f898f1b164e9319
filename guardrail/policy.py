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

How a reference (``load_policy(ref)``, ``--policy``, ``GUARDRAIL_POLICY``, ``extends``) is read:

* a **file path** is anything with a path separator or a ``.yaml``/``.yml``/``.json`` suffix
  (``./default`` names a file called ``default``); a ``pathlib.Path`` is always a file path.
  In ``extends`` it is relative to the file that says it (then, for user files, to the current
  directory); a preset's own ``extends`` only ever reaches the shipped presets' folder.
* any other **bare name** is a preset (``default``, ``childrens-tutor``, ...): a file or folder
  of that name in the current directory never replaces a preset.
"""

from __future__ import annotations

import codecs
import difflib
import hashlib
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from guardrail.values import VALUE_NAMES, ValueGroup, resolve_group_name, resolve_value_name

ActionName = Literal["block", "rewrite", "log"]
POLICY_ENV = "GUARDRAIL_POLICY"
_PRESET_PACKAGE = "guardrail.policies"
DEFAULT_REFUSAL = "I can't help with that request."
# Longer waits are "no timeout" in practice, and the thread and asyncio waits the guard uses
# overflow on very large ones (``.inf`` included).
MAX_SCORING_TIMEOUT_S = 86400.0


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

    @property
    def content_hash(self) -> str:
        """SHA-256 of the resolved policy's canonical JSON: changes whenever behaviour can."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    @property
    def ref(self) -> PolicyRef:
        return PolicyRef(name=self.name, version=self.version, hash=self.content_hash)


class PolicyRef(_Frozen):
    """Which policy made a decision."""

    name: str
    version: str
    hash: str


# ----------------------------------------------------------------------------- loading


def presets() -> list[str]:
    """Names of the presets shipped in ``guardrail.policies``."""
    folder = resources.files(_PRESET_PACKAGE)
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))


def looks_like_path(ref: str) -> bool:
    """Whether a policy reference names a file rather than a preset (see the module docstring).

    A path has a separator (``./default``, ``configs/bot.yaml``) or a ``.yaml``/``.yml``/``.json``
    suffix; ``.`` and ``..`` are paths too. Everything else is a preset name.
    """
    separators = {"/", os.sep} | ({os.altsep} if os.altsep else set())
    return (
        any(sep in ref for sep in separators)
        or ref.lower().endswith((".yaml", ".yml", ".json"))
        or ref.strip() in (".", "..")
    )


def policy_path(ref: str | Path | None) -> Path | None:
    """The file a policy reference names, or None when it names a preset (for hot reload)."""
    if ref is None:
        ref = os.environ.get(POLICY_ENV) or "default"
    if isinstance(ref, Path) or looks_like_path(ref):
        return Path(ref)
    return None


_CONDITION_MEMBERS = {
    "value": "ValueRange",
    "group": "GroupRange",
    "opposes": "Opposes",
    "target": "TargetDistance",
    "uncertain": "Uncertain",
}


def _member(key: int | str) -> str | None:
    """The condition kind a step of pydantic's error location names, if it names one: the union
    member it tried, as ``TargetDistance`` or ``function-after[_ordered(), ValueRange]``."""
    if not isinstance(key, str):
        return None
    name = re.sub(r"^.*[\[ ,]([A-Za-z]+)\]$", r"\1", key)
    return name if name in _CONDITION_MEMBERS.values() else None


def _user_loc(loc: tuple[int | str, ...]) -> tuple[int | str, ...]:
    """pydantic's error location without the steps users never wrote: the union member it tried
    (``ValueRange``, ...) and validator names (``function-after[...]``)."""
    return tuple(key for key in loc if isinstance(key, int) or (_member(key) is None and "[" not in key))


def _line_of(node: yaml.Node | None, loc: tuple[int | str, ...]) -> int | None:
    """1-based line of the YAML node at ``loc`` (pydantic's error location), or its nearest parent."""
    line = node.start_mark.line + 1 if node is not None else None
    for key in _user_loc(loc):
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
    for key in _user_loc(loc):
        if isinstance(key, int):
            parts.append(f"[{key}]")
        else:
            parts.append(("." if parts else "") + str(key))
    return "".join(parts)


# YAML 1.2 floats. PyYAML follows YAML 1.1, where a float needs a dot: `1e-1`, `-1E+5` (and JSON's
# `1e-05`, as json.dump writes it) would be text, and the strict models would refuse them.
_FLOAT_12 = re.compile(
    r"""^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
    re.VERBOSE,
)


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, reading numbers as YAML 1.2 (and JSON) do."""


# After the built-in resolvers: integers (`3`, `0x1f`) are still resolved as integers first.
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_12, list("-+.0123456789"))

_MERGE_TAG = "tag:yaml.org,2002:merge"


def _reject_duplicate_keys(root: yaml.Node, source: str) -> None:
    """Refuse a mapping that names a key twice: YAML would silently keep only the last one."""
    seen: set[int] = set()

    def walk(node: yaml.Node, where: str) -> None:
        if id(node) in seen:  # an alias to a node already checked
            return
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first: dict[tuple[str, str], int] = {}
            for key, value in node.value:
                if not isinstance(key, yaml.ScalarNode) or key.tag == _MERGE_TAG:
                    walk(value, where)
                    continue
                field = f"{where}.{key.value}" if where else str(key.value)
                line = key.start_mark.line + 1
                if (key.tag, key.value) in first:
                    raise PolicyError(
                        f"duplicate key '{key.value}' (first at line {first[key.tag, key.value]}); "
                        "YAML would keep only the last one, so merge them into one",
                        source=source,
                        line=line,
                        field=field,
                    )
                first[key.tag, key.value] = line
                walk(value, field)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, f"{where}[{i}]")

    walk(root, "")


class _Unresolved(Exception):
    """A reference that names no policy that can be read: whoever wrote it is told (the file with
    the ``extends``, the ``GUARDRAIL_POLICY`` variable, or the caller's own argument)."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def _read(path: Path, shown: str) -> bytes:
    """The bytes of a policy file; ``shown`` names it in messages (empty where the caller does)."""
    try:
        return path.read_bytes()
    except IsADirectoryError:
        raise _Unresolved(f"{shown}is a directory, not a policy file") from None
    except OSError as exc:
        raise _Unresolved(f"cannot read policy file {shown}({exc.strerror})") from None


def _parse(raw: bytes, source: str) -> tuple[dict[str, Any], yaml.Node | None]:
    """A policy file's mapping and its YAML node (for lines); errors name ``source``."""
    body = raw.removeprefix(codecs.BOM_UTF8)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyError(
            f"not UTF-8 text (byte 0x{body[exc.start]:02x} at offset {exc.start}); save the file as UTF-8",
            source=source,
            line=body[: exc.start].count(b"\n") + 1,
        ) from None
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is not None:
            _reject_duplicate_keys(node, source)
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        raise PolicyError(f"YAML syntax error: {exc.problem or exc}", source=source, line=line) from None
    except yaml.YAMLError as exc:
        raise PolicyError(f"YAML syntax error: {exc}", source=source) from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise PolicyError("a policy file must hold a mapping with name, rules, ...", source=source, line=1)
    return data, node


_EXPECTED = {
    "float_type": "a number",
    "int_type": "a whole number",
    "bool_type": "true or false",
    "string_type": "text",
}


def _validate(data: dict[str, Any], source: str, node: yaml.Node | None) -> Policy:
    """One policy file's content as a ``Policy`` (its ``extends`` not yet resolved)."""
    _reject_duplicate_rule_ids(data, source, node)
    try:
        policy = Policy.model_validate(data)
    except ValidationError as exc:
        error = _most_specific(exc.errors(), data)
        loc = tuple(error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        got = error.get("input")
        if error["type"] == "extra_forbidden":
            message = f"unknown field '{loc[-1]}'"
            close = difflib.get_close_matches(str(loc[-1]), _schema_at(loc[:-1]).get("properties", {}), n=1)
            if close:
                message += f" (did you mean '{close[0]}'?)"
        elif error["type"] == "literal_error":
            message = f"got {got!r}; {message.lower()}"
        elif error["type"] in _EXPECTED:
            expected = _EXPECTED[error["type"]]
            if isinstance(got, str):
                message = f"got the text {got!r}; write {expected} without quotes"
            elif error["type"] == "string_type" and isinstance(got, int | float) and not isinstance(got, bool):
                message = f"got the number {got!r}; write text, in quotes ('{got}')"
            else:
                message = f"got {got!r}; expected {expected}"
        elif error["type"] == "finite_number":  # .nan or .inf
            message = f"must be {_number_range(_schema_at(loc))} (got {got})"
        elif error["type"] in ("model_type", "dict_type"):  # not "... instance of ValueRange"
            message = f"got {got!r}; expected a mapping"
        elif error["type"] == "too_short" and isinstance(got, dict):
            message = "names no value; give at least one"
        elif _user_loc(loc) == ("extends",) and error["type"] in ("string_too_short", "string_pattern_mismatch"):
            message = f"is empty: give a preset name ({', '.join(presets())}) or a policy file"
        elif error["type"] == "string_too_short":
            message = "is empty"
        raise PolicyError(message, source=source, line=_line_of(node, loc), field=_field_of(loc)) from None
    if policy.extends is None and policy.remove_rules:
        raise PolicyError(
            "needs 'extends' (there are no inherited rules to remove)",
            source=source,
            line=_line_of(node, ("remove_rules",)),
            field="remove_rules",
        )
    return policy


def _schema_at(loc: tuple[int | str, ...]) -> dict[str, Any]:
    """The JSON Schema of what pydantic's error location ``loc`` points at ({} if unknown)."""
    schema = Policy.model_json_schema()
    defs: dict[str, Any] = schema.get("$defs", {})

    def deref(node: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in node:
            node = defs[node["$ref"].rsplit("/", 1)[-1]]
        return node

    node: Any = schema
    for key in loc:
        node = deref(node)
        member = _member(key)
        if member is not None:
            node = defs[member]
        elif isinstance(key, str) and "[" in key:
            continue
        elif isinstance(key, int):
            node = node.get("items")
        elif key in node.get("properties", {}):
            node = node["properties"][key]
        else:
            node = node.get("additionalProperties")
        if not isinstance(node, dict):
            return {}
    return deref(node)


def _number_range(schema: dict[str, Any]) -> str:
    """``a finite number from -1 to 1``, from a number's JSON Schema bounds."""
    if "minimum" in schema and "maximum" in schema:
        return f"a finite number from {schema['minimum']:g} to {schema['maximum']:g}"
    bounds = [
        f"{said} {schema[key]:g}"
        for key, said in (
            ("minimum", "at least"),
            ("exclusiveMinimum", "greater than"),
            ("maximum", "at most"),
            ("exclusiveMaximum", "less than"),
        )
        if key in schema
    ]
    return " ".join(["a finite number", " and ".join(bounds)]).strip()


def _reject_duplicate_rule_ids(data: dict[str, Any], source: str, node: yaml.Node | None) -> None:
    """Name the second rule that reuses an id, by its line and index (the model only knows the policy)."""
    rules = data.get("rules")
    if not isinstance(rules, list):
        return
    first: dict[str, int] = {}
    for i, rule in enumerate(rules):
        rule_id = rule.get("id") if isinstance(rule, dict) else None
        if not isinstance(rule_id, str):
            continue
        if rule_id in first:
            raise PolicyError(
                f"rule id '{rule_id}' is used twice (first by rules[{first[rule_id]}]); ids must be unique",
                source=source,
                line=_line_of(node, ("rules", i, "id")),
                field=f"rules[{i}].id",
            )
        first[rule_id] = i


def _most_specific(errors: list[Any], data: dict[str, Any]) -> Any:
    """Of pydantic's errors (one per union member tried), the one users can act on.

    A rule's ``when`` is tried as every kind of condition; only the errors of the kind its key
    names (``group:`` -> GroupRange, ...) are about what the user meant. Then: a wrong value
    before an unknown field before a missing one (a typo gives both of the last two), and the
    deepest first.
    """
    rules = data.get("rules")

    def meant(error: Any) -> bool:
        loc = tuple(error["loc"])
        if not (
            len(loc) > 3
            and loc[0] == "rules"
            and loc[2] == "when"
            and _member(loc[3]) is not None
            and isinstance(loc[1], int)
            and isinstance(rules, list)
            and loc[1] < len(rules)
            and isinstance(rules[loc[1]], dict)
            and isinstance(rules[loc[1]].get("when"), dict)
        ):
            return True
        kinds = [member for key, member in _CONDITION_MEMBERS.items() if key in rules[loc[1]]["when"]]
        return len(kinds) != 1 or _member(loc[3]) == kinds[0]

    kinds_order = {"extra_forbidden": 1, "missing": 2}
    candidates = [e for e in errors if meant(e)] or errors
    ranked = sorted(candidates, key=lambda e: (kinds_order.get(e["type"], 0), -len(e["loc"])))
    return ranked[0]


@dataclass(frozen=True)
class _Found:
    """A policy reference, resolved and parsed."""

    data: dict[str, Any]
    source: str  # how errors name it: the file path, or "preset 'default'"
    node: yaml.Node | None
    path: Path | None  # the user file it came from (None for presets)
    preset: bool  # shipped with guardrail: its own `extends` stays inside the presets' folder

    @property
    def key(self) -> str:
        """What identifies it in an ``extends`` chain (to catch cycles)."""
        return str(self.path.resolve()) if self.path is not None else self.source


def _resolve_ref(
    ref: str, relative_to: Path | None, files: list[Path], *, in_preset: bool = False, is_path: bool = False
) -> _Found:
    """Find the policy ``ref`` names (the rules are in the module docstring), and parse it.

    ``relative_to``: the user file whose ``extends`` this is; ``in_preset``: a preset's ``extends``.
    A reference that cannot be found or read raises ``_Unresolved``, for the caller to say where
    it was written; a problem inside the file it names is a ``PolicyError`` naming that file.
    Each user file looked at (read, or looked for in vain) is added to ``files``.
    """
    if not ref.strip():
        raise _Unresolved(f"is empty: give a preset name ({', '.join(presets())}) or a policy file")
    if in_preset and (is_path or looks_like_path(ref)):
        target = resources.files(_PRESET_PACKAGE).joinpath(ref)
        if Path(ref).is_absolute() or ".." in Path(ref).parts or not target.is_file():
            raise _Unresolved(f"no policy file '{ref}' among the presets")
        source = f"preset file '{ref}'"
        with resources.as_file(target) as preset_path:
            data, node = _parse(_read(preset_path, f"{source} "), source)
        return _Found(data, source, node, None, preset=True)
    if is_path or looks_like_path(ref):
        candidate = Path(ref) if relative_to is None else relative_to.parent / ref
        if not candidate.exists() and relative_to is not None and Path(ref).exists():
            candidate = Path(ref)  # a path relative to the current directory
        files.append(candidate.absolute())
        if not candidate.exists():
            raise _Unresolved(f"no policy file at {candidate}")
        shown = "" if relative_to is None else f"{candidate} "  # in `extends`, say which file
        if candidate.is_dir():  # (Windows reports reading a folder as a permission error)
            raise _Unresolved(f"{shown}is a directory, not a policy file")
        data, node = _parse(_read(candidate, shown), str(candidate))
        return _Found(data, str(candidate), node, candidate, preset=False)
    if ref in presets():
        source = f"preset '{ref}'"
        with resources.as_file(resources.files(_PRESET_PACKAGE) / f"{ref}.yaml") as preset_path:
            data, node = _parse(_read(preset_path, f"{source} "), source)
        return _Found(data, source, node, None, preset=True)
    close = difflib.get_close_matches(ref, presets(), n=1)
    hints = [f"did you mean '{close[0]}'?" if close else f"available presets: {', '.join(presets())}"]
    local = Path(ref) if relative_to is None else relative_to.parent / ref
    if not in_preset and local.is_file():
        hints.append(f"to use the file {local}, write ./{ref}")
    raise _Unresolved(f"unknown preset '{ref}' ({'; '.join(hints)})")


def _load(found: _Found, chain: tuple[str, ...], files: list[Path]) -> Policy:
    """Validate ``found`` and resolve its ``extends`` chain."""
    source, node = found.source, found.node
    policy = _validate(found.data, source, node)
    if policy.extends is None:
        return policy
    extends_line = _line_of(node, ("extends",))
    try:
        parent_found = _resolve_ref(policy.extends, found.path, files, in_preset=found.preset)
    except _Unresolved as exc:  # only a parent that cannot be found or read is this line's fault
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
                line=_line_of(node, ("remove_rules", i)),
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
        found = _resolve_ref(ref, None, files, is_path=is_path)
    except _Unresolved as exc:
        raise PolicyError(exc.message, source=origin) from None
    policy = _load(found, (), files)
    return policy, tuple(dict.fromkeys(files))


def policy_from_dict(data: dict[str, Any], source: str = "<dict>") -> Policy:
    """Validate a policy given as a mapping.

    Its ``extends`` follows ``load_policy``'s rules: a bare name is a preset, a path is relative
    to the current directory.
    """
    policy = _validate(data, source, None)
    if policy.extends is None:
        return policy
    files: list[Path] = []
    try:
        parent_found = _resolve_ref(policy.extends, None, files)
    except _Unresolved as exc:
        raise PolicyError(exc.message, source=source, field="extends") from None
    parent = _load(parent_found, (source,), files)
    _check_remove_rules(policy, parent, parent_found.source, source, None)
    return merge(parent, policy, source)


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
    "load_policy_and_files",
    "looks_like_path",
    "policy_path",
    "presets",
]
