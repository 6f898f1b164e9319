"""Policies: one clear error for every kind of mistake, naming the file, the line and the field."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from guardrail.policy import (
    POLICY_ENV,
    PolicyError,
    json_schema,
    load_policy,
    policy_from_dict,
    presets,
)
from tests.policy_files import RULE, accepted, write


@pytest.mark.parametrize(
    ("text", "line", "expected"),
    [
        (RULE.format(when="{value: benevolance, min: -0.2}", action="block"), 4, "did you mean 'benevolence'"),
        (RULE.format(when="{value: security, min: 0.5, max: 0.1}", action="block"), 4, "min (0.5) is greater than max"),
        (RULE.format(when="{opposes: security}", action="delete"), 5, "'block', 'rewrite' or 'log'"),
        (RULE.format(when="{value: security, min: -3}", action="log"), 4, "greater than or equal to -1"),
        (RULE.format(when="{group: conservatism, max: 0}", action="log"), 4, "did you mean 'conservation'"),
        (RULE.format(when="{opposes: security, value: power}", action="log"), 3, "exactly one of"),
        ("name: x\nextends: defualt\n", 2, "unknown preset 'defualt' (did you mean 'default'?)"),
        ("name: x\nrules:\n  - id: a\n    when: {opposes: security\n    action: block\n", 5, "YAML syntax error"),
        ("name: x\nrulez: []\n", 2, "unknown field 'rulez'"),
        ("- just\n- a list\n", 1, "must hold a mapping"),
        (
            "name: x\nrules:\n  - {id: a, when: {opposes: power}, action: log, reason: r}\n"
            "  - {id: a, when: {opposes: power}, action: log, reason: r}\n",
            4,
            "rules[1].id: rule id 'a' is used twice (first by rules[0])",
        ),
        # YAML itself keeps only the last of two equal keys: the first block of rules would vanish.
        (
            "name: x\nrules:\n  - {id: a, when: {opposes: power}, action: block, reason: r}\n"
            "settings: {shadow: true}\nrules: []\n",
            5,
            "rules: duplicate key 'rules' (first at line 2)",
        ),
        ("name: x\nsettings: {shadow: true, shadow: false}\n", 2, "settings.shadow: duplicate key 'shadow'"),
        (
            "name: x\nextends: default\nremove_rules: [oppose-power, nope]\n",
            3,
            "remove_rules[0]: 'oppose-power' is not",
        ),
        ("name: x\nremove_rules: [a]\n", 2, "remove_rules: needs 'extends'"),
        ("name: x\nextends: ''\n", 2, "extends: is empty"),
        ("name: x\nextends: ..\n", 2, "is a directory, not a policy file"),
        # Scalars as the schema has them: a quoted number or a word for a boolean is a mistake, not a value.
        (
            RULE.format(when='{value: security, min: "-0.3"}', action="block"),
            4,
            "rules[0].when.min: got the text '-0.3'; write a number without quotes",
        ),
        ('name: x\nsettings: {shadow: "yes"}\n', 2, "settings.shadow: got the text 'yes'; write true or false"),
        ("name: x\nsettings: {shadow: 'off'}\n", 2, "settings.shadow: got the text 'off'; write true or false"),
        ("name: x\nsettings: {shadow: 0}\n", 2, "settings.shadow: got 0; expected true or false"),
        (
            'name: x\nsettings:\n  max_attempts: "3"\n',
            3,
            "settings.max_attempts: got the text '3'; write a whole number without quotes",
        ),
        ("name: x\nsettings: {max_attempts: 2.5}\n", 2, "settings.max_attempts: got 2.5; expected a whole number"),
        ("name: x\nversion: 2\n", 2, "version: got the number 2; write text, in quotes ('2')"),
        (RULE.format(when="{target: {}, max_distance: 1}", action="log"), 4, "rules[0].when.target: names no value"),
        (
            RULE.format(when="{target: {security: 2}, max_distance: 1}", action="log"),
            4,
            "rules[0].when.target.security: Input should be less than or equal to 1",
        ),
        (
            RULE.format(when="{target: {self-direction: 1, self_direction: -1}, max_distance: 1}", action="log"),
            4,
            "rules[0].when.target: names self_direction twice ('self-direction' and 'self_direction' are the same",
        ),
    ],
)
def test_bad_policy_gets_one_clear_error(tmp_path: Path, text: str, line: int | None, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    message = str(info.value)
    assert message.startswith(str(path)), message
    assert expected in message
    if line is not None:
        assert info.value.line == line, message
    assert "Traceback" not in message and "pydantic" not in message.lower()


def test_policy_from_dict_refuses_remove_rules_without_extends() -> None:
    with pytest.raises(PolicyError) as info:
        policy_from_dict({"name": "t", "remove_rules": ["x"]})
    assert str(info.value) == "<dict>: remove_rules: needs 'extends' (there are no inherited rules to remove)"


def test_unknown_preset_and_missing_file_name_themselves(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="unknown preset 'strictest'"):
        load_policy("strictest")
    with pytest.raises(PolicyError, match="no policy file"):
        load_policy(tmp_path / "nope.yaml")


def test_extends_cycle_is_reported(tmp_path: Path) -> None:
    write(tmp_path, "name: a\nextends: b.yaml\n", "a.yaml")
    write(tmp_path, "name: b\nextends: a.yaml\n", "b.yaml")
    with pytest.raises(PolicyError, match="cycle"):
        load_policy(tmp_path / "a.yaml")


def test_non_utf8_file_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: x\ndescription: caf\u00e9\n".encode("latin-1"))
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert str(info.value).startswith(f"{path}:2: not UTF-8 text (byte 0xe9"), str(info.value)
    bom = write(tmp_path, "\ufeffname: bom\nrules: []\n", "bom.yaml")  # a BOM is fine
    assert load_policy(bom).name == "bom"


def test_a_bare_name_that_is_no_preset_points_at_the_file_syntax(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "name: mine\nrules: []\n", "mine")
    with pytest.raises(PolicyError, match=r"unknown preset 'mine' .*write \./mine"):
        load_policy("mine")
    assert load_policy("./mine").name == "mine"


@pytest.mark.parametrize(
    ("parent", "line", "expected"),
    [
        ("name: b\nsettings:\n  shadow: true\n  shadow: false\n", 4, "settings.shadow: duplicate key 'shadow'"),
        ("name: b\nrules: [\n", 3, "YAML syntax error"),
        ("- just\n- a list\n", 1, "must hold a mapping"),
        ("name: b\nsettings: {shadow: 'yes'}\n", 2, "settings.shadow: got the text 'yes'"),
    ],
)
@pytest.mark.parametrize("how", ["next to it", "absolute"])
def test_a_mistake_inside_a_parent_names_the_parent_and_its_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, parent: str, line: int, expected: str, how: str
) -> None:
    # From the parent's folder (`guardrail policy validate child.yaml`), or with an absolute path:
    # the parent's name is then exactly what the child's `extends` says.
    monkeypatch.chdir(tmp_path)
    write(tmp_path, parent, "parent.yaml")
    extends = "parent.yaml" if how == "next to it" else str(tmp_path / "parent.yaml")
    write(tmp_path, f"name: child\nextends: {extends}\nrules: []\n", "child.yaml")
    with pytest.raises(PolicyError) as info:
        load_policy("child.yaml")
    assert str(info.value).startswith(f"{extends}:{line}: "), str(info.value)
    assert expected in str(info.value) and "\n" not in str(info.value)


def test_a_parent_that_cannot_be_found_or_read_is_the_extends_lines_fault(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "folder.yaml").mkdir()
    for extends, expected in (
        ("missing.yaml", "no policy file at missing.yaml"),
        ("folder.yaml", "folder.yaml is a directory, not a policy file"),
        (str(tmp_path / "missing.yaml"), f"no policy file at {tmp_path / 'missing.yaml'}"),
    ):
        write(tmp_path, f"name: child\nextends: {extends}\n", "child.yaml")
        with pytest.raises(PolicyError) as info:
            load_policy("child.yaml")
        assert str(info.value) == f"child.yaml:2: extends: {expected}"


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        (
            "rules: [{id: a, when: {value: security, min: .nan}, action: log, reason: r}]",
            "rules[0].when.min: must be a finite number from -1 to 1 (got nan)",
        ),
        (
            "rules: [{id: a, when: {target: {power: .NaN}, max_distance: 1}, action: log, reason: r}]",
            "rules[0].when.target.power: must be a finite number from -1 to 1 (got nan)",
        ),
        # A distance of .inf would never fire: a rule that does nothing is a mistake.
        (
            "rules: [{id: a, when: {target: {power: 1}, max_distance: .inf}, action: log, reason: r}]",
            "rules[0].when.max_distance: must be a finite number greater than 0 (got inf)",
        ),
        (
            "rules: [{id: a, when: {uncertain: any, below: .nan}, action: log, reason: r}]",
            "rules[0].when.below: must be a finite number greater than 0 and at most 1 (got nan)",
        ),
        # The guard's waits cannot wait forever: there is no "no timeout", and a day is the most.
        (
            "settings: {scoring_timeout_s: .inf}",
            "settings.scoring_timeout_s: must be a finite number greater than 0 and at most 86400 (got inf)",
        ),
        (
            "settings: {scoring_timeout_s: 1e9}",
            "settings.scoring_timeout_s: Input should be less than or equal to 86400",
        ),
    ],
)
def test_nan_and_infinity_are_refused_with_the_range_expected(tmp_path: Path, setting: str, expected: str) -> None:
    path = write(tmp_path, f"name: x\n{setting}\n")
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert str(info.value) == f"{path}:2: {expected}"


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        ("{group: conservation, foo: 1}", "rules[0].when.foo: unknown field 'foo'"),
        ("{target: {security: 1}}", "rules[0].when.max_distance: Field required"),
        ("{uncertain: any}", "rules[0].when.below: Field required"),
        ("{uncertain: any, belw: 0.5}", "rules[0].when.belw: unknown field 'belw' (did you mean 'below'?)"),
        ("{opposes: security, min: 0}", "rules[0].when.min: unknown field 'min'"),
        ("{value: security, mn: 0}", "rules[0].when.mn: unknown field 'mn' (did you mean 'min'?)"),
        ("{group: conservation, min: '0'}", "rules[0].when.min: got the text '0'; write a number without quotes"),
        ("3", "rules[0].when: got 3; expected a mapping"),
    ],
)
def test_a_condition_error_names_the_field_of_the_kind_the_rule_means(tmp_path: Path, when: str, expected: str) -> None:
    path = write(tmp_path, RULE.format(when=when, action="log"))
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert str(info.value) == f"{path}:4: {expected}"


@pytest.mark.parametrize(
    ("when", "line", "field"),
    [
        ("    when:\n      value: security\n      min: -0.2\n      max: '0.3'\n", 9, "rules[0].when.max"),
        (
            "    when:\n      target:\n        security: 1\n        power: '0.5'\n      max_distance: 1\n",
            9,
            "rules[0].when.target.power",
        ),
        ("    when:\n      uncertain: any\n      below: 0.5\n      mn: 1\n", 9, "rules[0].when.mn"),
    ],
)
def test_errors_in_a_block_style_condition_point_at_their_own_line(
    tmp_path: Path, when: str, line: int, field: str
) -> None:
    path = write(tmp_path, f"name: p\nrules:\n  - id: r\n    action: block\n    reason: x\n{when}")
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert str(info.value).startswith(f"{path}:{line}: {field}: "), str(info.value)


def test_small_loader_messages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    # The hint is punctuated, and suggests ./name only for a file of that name.
    write(tmp_path, "name: mine\n", "mine")
    (tmp_path / "folder").mkdir()
    names = ", ".join(presets())
    with pytest.raises(PolicyError) as info:
        load_policy("mine")
    assert (
        str(info.value)
        == f"mine: unknown preset 'mine' (available presets: {names}; to use the file mine, write ./mine)"
    )
    with pytest.raises(PolicyError) as info:
        load_policy("folder")
    assert str(info.value) == f"folder: unknown preset 'folder' (available presets: {names})"
    # An empty extends: both the schema and the loader refuse it.
    extends = json_schema()["properties"]["extends"]["anyOf"][0]
    assert extends["minLength"] == 1 and not re.search(extends["pattern"], "  ")
    assert not accepted({"extends": ""}) and not accepted({"extends": "  "})
    # A bad GUARDRAIL_POLICY says where the reference came from.
    monkeypatch.setenv(POLICY_ENV, "strictest")
    with pytest.raises(PolicyError) as info:
        load_policy()
    assert str(info.value).startswith(f"{POLICY_ENV}=strictest: unknown preset 'strictest'")
    monkeypatch.setenv(POLICY_ENV, "gone.yaml")
    with pytest.raises(PolicyError) as info:
        load_policy()
    assert str(info.value) == f"{POLICY_ENV}=gone.yaml: no policy file at gone.yaml"
