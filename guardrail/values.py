"""Schwartz's ten basic human values, as the FULCRA paper and this project use them.

Everything that names a value imports it from here: the index order of every vector, the
definitions shown to users, the four higher-order groups and the positions on the circumplex.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

VALUE_NAMES: tuple[str, ...] = (
    "self_direction",
    "stimulation",
    "hedonism",
    "achievement",
    "power",
    "security",
    "tradition",
    "conformity",
    "benevolence",
    "universalism",
)
"""The ten values in FULCRA index order. Vectors, heads and records all use this order."""

ValueName = Literal[
    "self_direction",
    "stimulation",
    "hedonism",
    "achievement",
    "power",
    "security",
    "tradition",
    "conformity",
    "benevolence",
    "universalism",
]

DEFINITIONS: dict[str, str] = {
    "self_direction": "independent thought and action: choosing, creating, exploring",
    "stimulation": "excitement, novelty and challenge in life",
    "hedonism": "pleasure or sensuous gratification for oneself",
    "achievement": "personal success through demonstrating competence by social standards",
    "power": "social status and prestige, control or dominance over people and resources",
    "security": "safety, harmony and stability of society, of relationships and of self",
    "tradition": "respect, commitment and acceptance of cultural or religious customs and ideas",
    "conformity": "restraint of actions and impulses likely to upset or harm others or violate norms",
    "benevolence": "preserving and enhancing the welfare of people one is in frequent contact with",
    "universalism": "understanding, tolerance and protection of the welfare of all people and of nature",
}


class ValueGroup(StrEnum):
    """The four higher-order values of Schwartz's model."""

    OPENNESS_TO_CHANGE = "openness_to_change"
    SELF_ENHANCEMENT = "self_enhancement"
    CONSERVATION = "conservation"
    SELF_TRANSCENDENCE = "self_transcendence"


# Hedonism shares openness to change and self-enhancement, so it belongs to both.
GROUPS: dict[ValueGroup, tuple[str, ...]] = {
    ValueGroup.OPENNESS_TO_CHANGE: ("self_direction", "stimulation", "hedonism"),
    ValueGroup.SELF_ENHANCEMENT: ("hedonism", "achievement", "power"),
    ValueGroup.CONSERVATION: ("security", "tradition", "conformity"),
    ValueGroup.SELF_TRANSCENDENCE: ("benevolence", "universalism"),
}

OPPOSED_GROUPS: dict[ValueGroup, ValueGroup] = {
    ValueGroup.OPENNESS_TO_CHANGE: ValueGroup.CONSERVATION,
    ValueGroup.CONSERVATION: ValueGroup.OPENNESS_TO_CHANGE,
    ValueGroup.SELF_ENHANCEMENT: ValueGroup.SELF_TRANSCENDENCE,
    ValueGroup.SELF_TRANSCENDENCE: ValueGroup.SELF_ENHANCEMENT,
}

# Angles in degrees around the circle, in the order SD -> ST -> HE -> AC -> PO -> SE ->
# (CO, TR share a wedge) -> BE -> UN -> SD. Nine wedges of 40 degrees; conformity sits on the
# inner ring of tradition's wedge, so the two share an angle.
CIRCUMPLEX_ANGLE: dict[str, float] = {
    "self_direction": 0.0,
    "stimulation": 40.0,
    "hedonism": 80.0,
    "achievement": 120.0,
    "power": 160.0,
    "security": 200.0,
    "conformity": 240.0,
    "tradition": 240.0,
    "benevolence": 280.0,
    "universalism": 320.0,
}


def resolve_value_name(name: str) -> str:
    """Return the canonical value name for ``name`` (case, dashes and spaces are forgiven).

    Raises ``ValueError`` with a did-you-mean suggestion for an unknown name.
    """
    canonical = name.strip().lower().replace("-", "_").replace(" ", "_")
    if canonical in VALUE_NAMES:
        return canonical
    suggestion = difflib.get_close_matches(canonical, VALUE_NAMES, n=1)
    hint = f"; did you mean '{suggestion[0]}'?" if suggestion else f"; expected one of {', '.join(VALUE_NAMES)}"
    raise ValueError(f"unknown value '{name}'{hint}")


def resolve_group_name(name: str) -> ValueGroup:
    """Return the higher-order group called ``name``, or raise ``ValueError`` with a did-you-mean."""
    canonical = name.strip().lower().replace("-", "_").replace(" ", "_")
    names = [g.value for g in ValueGroup]
    if canonical in names:
        return ValueGroup(canonical)
    suggestion = difflib.get_close_matches(canonical, names, n=1)
    hint = f"; did you mean '{suggestion[0]}'?" if suggestion else f"; expected one of {', '.join(names)}"
    raise ValueError(f"unknown value group '{name}'{hint}")


def circumplex_distance(a: str, b: str) -> float:
    """Angular distance in degrees (0-180) between two values on the circle: 0 compatible, 180 opposed."""
    d = abs(CIRCUMPLEX_ANGLE[resolve_value_name(a)] - CIRCUMPLEX_ANGLE[resolve_value_name(b)]) % 360
    return min(d, 360 - d)


class ValueVector(BaseModel):
    """An immutable point in value space: one entry in [-1, 1] per value.

    +1 means the text supports the value, -1 that it opposes it, 0 that it is unrelated.
    Access entries as attributes (``v.security``) or by name (``v["security"]``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    self_direction: float = Field(0.0, ge=-1.0, le=1.0)
    stimulation: float = Field(0.0, ge=-1.0, le=1.0)
    hedonism: float = Field(0.0, ge=-1.0, le=1.0)
    achievement: float = Field(0.0, ge=-1.0, le=1.0)
    power: float = Field(0.0, ge=-1.0, le=1.0)
    security: float = Field(0.0, ge=-1.0, le=1.0)
    tradition: float = Field(0.0, ge=-1.0, le=1.0)
    conformity: float = Field(0.0, ge=-1.0, le=1.0)
    benevolence: float = Field(0.0, ge=-1.0, le=1.0)
    universalism: float = Field(0.0, ge=-1.0, le=1.0)

    @model_validator(mode="before")
    @classmethod
    def _canonical_keys(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            return {resolve_value_name(str(k)): v for k, v in data.items()}
        return data

    @classmethod
    def from_sequence(cls, values: Sequence[float]) -> ValueVector:
        """Build a vector from ten numbers in FULCRA order."""
        if len(values) != len(VALUE_NAMES):
            raise ValueError(f"a value vector has {len(VALUE_NAMES)} entries, got {len(values)}")
        return cls(**{name: float(x) for name, x in zip(VALUE_NAMES, values, strict=True)})

    @classmethod
    def from_mapping(cls, values: Mapping[str, float]) -> ValueVector:
        """Build a vector from a name -> score mapping; missing values are 0 (unrelated)."""
        return cls.model_validate(dict(values))

    def __getitem__(self, name: str) -> float:
        return float(getattr(self, resolve_value_name(name)))

    def __iter__(self) -> Iterator[tuple[str, float]]:  # type: ignore[override]
        return ((name, float(getattr(self, name))) for name in VALUE_NAMES)

    def to_list(self) -> list[float]:
        """The ten entries in FULCRA order."""
        return [float(getattr(self, name)) for name in VALUE_NAMES]

    def to_dict(self) -> dict[str, float]:
        """A name -> entry mapping in FULCRA order."""
        return {name: float(getattr(self, name)) for name in VALUE_NAMES}

    def group_score(self, group: ValueGroup | str) -> float:
        """Mean entry over the values of a higher-order group."""
        g = group if isinstance(group, ValueGroup) else resolve_group_name(group)
        members = GROUPS[g]
        return sum(self[m] for m in members) / len(members)

    def distance(self, other: ValueVector | Mapping[str, float], dims: Iterable[str] | None = None) -> float:
        """Euclidean distance to ``other``, counted only on ``dims`` (all ten when omitted)."""
        target = other if isinstance(other, ValueVector) else ValueVector.from_mapping(other)
        names = VALUE_NAMES if dims is None else tuple(resolve_value_name(d) for d in dims)
        return math.sqrt(sum((self[n] - target[n]) ** 2 for n in names))

    def cosine(self, other: ValueVector) -> float:
        """Cosine similarity to ``other`` (0 when either vector is all zeros)."""
        a, b = self.to_list(), other.to_list()
        na, nb = math.sqrt(sum(x * x for x in a)), math.sqrt(sum(x * x for x in b))
        if na == 0 or nb == 0:
            return 0.0
        return sum(x * y for x, y in zip(a, b, strict=True)) / (na * nb)
