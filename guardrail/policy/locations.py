"""Where an error is: pydantic's error location as the field path and YAML line users see.

pydantic locates an error by a path of keys that includes steps users never wrote (the union
member it tried, validator names); these helpers drop them, spell the path as users write it
(``rules[0].when.min``) and find its line in the parsed YAML node (or its nearest parent's).
"""

from __future__ import annotations

import re

import yaml

from guardrail.policy.models import CONDITION_MEMBERS


def condition_member(key: int | str) -> str | None:
    """The condition kind a step of pydantic's error location names, if it names one: the union
    member it tried, as ``TargetDistance`` or ``function-after[_ordered(), ValueRange]``."""
    if not isinstance(key, str):
        return None
    name = re.sub(r"^.*[\[ ,]([A-Za-z]+)\]$", r"\1", key)
    return name if name in CONDITION_MEMBERS.values() else None


def user_loc(loc: tuple[int | str, ...]) -> tuple[int | str, ...]:
    """pydantic's error location without the steps users never wrote: the union member it tried
    (``ValueRange``, ...) and validator names (``function-after[...]``)."""
    return tuple(key for key in loc if isinstance(key, int) or (condition_member(key) is None and "[" not in key))


def line_of(node: yaml.Node | None, loc: tuple[int | str, ...]) -> int | None:
    """1-based line of the YAML node at ``loc`` (pydantic's error location), or its nearest parent."""
    line = node.start_mark.line + 1 if node is not None else None
    for key in user_loc(loc):
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


def field_of(loc: tuple[int | str, ...]) -> str:
    """pydantic's error location as users write the field: ``rules[0].when.min``."""
    parts: list[str] = []
    for key in user_loc(loc):
        if isinstance(key, int):
            parts.append(f"[{key}]")
        else:
            parts.append(("." if parts else "") + str(key))
    return "".join(parts)
