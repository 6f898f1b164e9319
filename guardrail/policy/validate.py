"""Checking one policy file's content against the models, and wording what is wrong.

``validate_policy`` turns a parsed mapping into a ``Policy`` (its ``extends`` not yet resolved) or
raises one ``PolicyError``: of pydantic's errors, the one the user can act on, said in their terms
(``got the text '-0.3'; write a number without quotes``, ``unknown field 'mn' (did you mean
'min'?)``), with the file, the line and the field.
"""

from __future__ import annotations

import difflib
from typing import Any

import yaml
from pydantic import ValidationError

from guardrail.policy.errors import PolicyError
from guardrail.policy.locations import condition_member, field_of, line_of, user_loc
from guardrail.policy.models import CONDITION_MEMBERS, Policy
from guardrail.policy.refs import presets
from guardrail.policy.schema import number_range, schema_at

_EXPECTED = {
    "float_type": "a number",
    "int_type": "a whole number",
    "bool_type": "true or false",
    "string_type": "text",
}


def validate_policy(data: dict[str, Any], source: str, node: yaml.Node | None) -> Policy:
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
            close = difflib.get_close_matches(str(loc[-1]), schema_at(loc[:-1]).get("properties", {}), n=1)
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
            message = f"must be {number_range(schema_at(loc))} (got {got})"
        elif error["type"] in ("model_type", "dict_type"):  # not "... instance of ValueRange"
            message = f"got {got!r}; expected a mapping"
        elif error["type"] == "too_short" and isinstance(got, dict):
            message = "names no value; give at least one"
        elif user_loc(loc) == ("extends",) and error["type"] in ("string_too_short", "string_pattern_mismatch"):
            message = f"is empty: give a preset name ({', '.join(presets())}) or a policy file"
        elif error["type"] == "string_too_short":
            message = "is empty"
        raise PolicyError(message, source=source, line=line_of(node, loc), field=field_of(loc)) from None
    if policy.extends is None and policy.remove_rules:
        raise PolicyError(
            "needs 'extends' (there are no inherited rules to remove)",
            source=source,
            line=line_of(node, ("remove_rules",)),
            field="remove_rules",
        )
    return policy


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
                line=line_of(node, ("rules", i, "id")),
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
            and condition_member(loc[3]) is not None
            and isinstance(loc[1], int)
            and isinstance(rules, list)
            and loc[1] < len(rules)
            and isinstance(rules[loc[1]], dict)
            and isinstance(rules[loc[1]].get("when"), dict)
        ):
            return True
        kinds = [member for key, member in CONDITION_MEMBERS.items() if key in rules[loc[1]]["when"]]
        return len(kinds) != 1 or condition_member(loc[3]) == kinds[0]

    kinds_order = {"extra_forbidden": 1, "missing": 2}
    candidates = [e for e in errors if meant(e)] or errors
    ranked = sorted(candidates, key=lambda e: (kinds_order.get(e["type"], 0), -len(e["loc"])))
    return ranked[0]
