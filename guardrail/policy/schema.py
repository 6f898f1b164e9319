"""The JSON Schema of policy files, generated from the models.

``json_schema()`` is the whole (``guardrail policy schema`` writes it to ``policies/schema.json``,
for editors); ``schema_at`` and ``number_range`` read the part an error location points at, so
that errors can say what was expected (``did you mean ...``, ``a finite number from -1 to 1``).
"""

from __future__ import annotations

from typing import Any

from guardrail.policy.locations import condition_member
from guardrail.policy.models import Policy


def json_schema() -> dict[str, Any]:
    """The JSON Schema of policy files (written to policies/schema.json)."""
    schema = Policy.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "guardrail value policy"
    return schema


def schema_at(loc: tuple[int | str, ...]) -> dict[str, Any]:
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
        member = condition_member(key)
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


def number_range(schema: dict[str, Any]) -> str:
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
