"""Reading a policy file: bytes -> a mapping and its YAML node (for lines), strictly.

Strict in what YAML alone would let through: the file must be UTF-8 (a BOM is fine), hold one
mapping, and name no key twice (YAML would silently keep the last one); numbers are read as
YAML 1.2 and JSON read them (``1e-05`` is a number). Every problem is a ``PolicyError`` with
the file and line; a file that cannot be read at all is ``Unresolved``, for whoever named it.
"""

from __future__ import annotations

import codecs
import re
from pathlib import Path
from typing import Any

import yaml

from guardrail.policy.errors import PolicyError, Unresolved

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


def read_policy_file(path: Path, shown: str) -> bytes:
    """The bytes of a policy file; ``shown`` names it in messages (empty where the caller does)."""
    try:
        return path.read_bytes()
    except IsADirectoryError:
        raise Unresolved(f"{shown}is a directory, not a policy file") from None
    except OSError as exc:
        raise Unresolved(f"cannot read policy file {shown}({exc.strerror})") from None


def parse_policy_yaml(raw: bytes, source: str) -> tuple[dict[str, Any], yaml.Node | None]:
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
