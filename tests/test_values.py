from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from guardrail.values import (
    GROUPS,
    OPPOSED_GROUPS,
    VALUE_NAMES,
    ValueGroup,
    ValueVector,
    circumplex_distance,
    resolve_value_name,
)


def test_value_order_is_fulcra_order() -> None:
    assert VALUE_NAMES == (
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


def test_groups_cover_every_value_and_oppose_in_pairs() -> None:
    covered = {v for members in GROUPS.values() for v in members}
    assert covered == set(VALUE_NAMES)
    for group, opposite in OPPOSED_GROUPS.items():
        assert OPPOSED_GROUPS[opposite] == group
    assert set(GROUPS[ValueGroup.SELF_TRANSCENDENCE]) == {"benevolence", "universalism"}


def test_circumplex_puts_typical_conflicts_far_apart() -> None:
    assert circumplex_distance("power", "universalism") >= 160
    assert circumplex_distance("stimulation", "security") >= 160
    assert circumplex_distance("conformity", "tradition") == 0
    assert circumplex_distance("benevolence", "universalism") <= 40


def test_vector_is_immutable_and_bounded() -> None:
    v = ValueVector(security=-0.8, benevolence=0.5)
    with pytest.raises(ValidationError):
        v.security = 0.1  # type: ignore[misc]
    with pytest.raises(ValidationError):
        ValueVector(security=1.5)


def test_vector_access_and_conversions() -> None:
    v = ValueVector.from_mapping({"Self-Direction": 0.25, "security": -1.0})
    assert v["self_direction"] == 0.25 and v.security == -1.0
    assert v.to_list()[VALUE_NAMES.index("security")] == -1.0
    assert ValueVector.from_sequence(v.to_list()) == v
    assert dict(v) == v.to_dict()
    with pytest.raises(ValueError, match="10 entries"):
        ValueVector.from_sequence([0.0] * 3)


def test_distance_counts_only_named_dimensions() -> None:
    a = ValueVector(security=1.0, power=1.0)
    b = ValueVector(security=0.0, power=-1.0)
    assert a.distance(b, dims=["security"]) == pytest.approx(1.0)
    assert a.distance(b) == pytest.approx(math.sqrt(5))
    assert a.group_score("conservation") == pytest.approx(1 / 3)


def test_unknown_value_name_suggests_the_closest() -> None:
    with pytest.raises(ValueError, match="did you mean 'benevolence'"):
        resolve_value_name("benevolance")
