"""Policies: presets, inheritance, the JSON Schema, and one clear error for every kind of mistake."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from guardrail.policy import POLICY_ENV, PolicyError, json_schema, load_policy, presets

REPO = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str, name: str = "policy.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_presets_load_and_differ() -> None:
    assert {"default", "childrens-tutor", "creative-writing"} <= set(presets())
    loaded = {name: load_policy(name) for name in presets()}
    assert len({p.content_hash for p in loaded.values()}) == len(loaded)
    for policy in loaded.values():
        assert policy.description and policy.rules


def test_default_never_lets_the_four_harm_values_through() -> None:
    policy = load_policy("default")
    guarded = {r.when.opposes for r in policy.rules if r.action == "block" or r.fallback == "block"}  # type: ignore[union-attr]
    assert {"security", "conformity", "benevolence", "universalism"} <= guarded
    assert all(r.fallback == "block" for r in policy.rules if r.action == "rewrite")
    assert policy.settings.fail_mode == "closed"


def test_extends_overrides_rules_by_id_and_merges_settings(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "name: mine\nversion: '2'\nextends: default\nsettings: {shadow: true}\nremove_rules: [oppose-self-direction]\n"
        "rules:\n  - id: oppose-security\n    when: {value: security, min: -0.2}\n    action: rewrite\n    reason: r\n",
    )
    policy = load_policy(path)
    ids = [r.id for r in policy.rules]
    assert "oppose-self-direction" not in ids and ids.count("oppose-security") == 1
    assert next(r for r in policy.rules if r.id == "oppose-security").action == "rewrite"
    assert policy.settings.shadow is True and policy.settings.fail_mode == "closed"
    assert (policy.name, policy.version) == ("mine", "2")


def test_extends_a_file_relative_to_the_policy(tmp_path: Path) -> None:
    write(
        tmp_path,
        "name: base\nrules:\n  - id: a\n    when: {opposes: power}\n    action: log\n    reason: r\n",
        "base.yaml",
    )
    child = write(tmp_path, "name: child\nextends: base.yaml\n", "child.yaml")
    assert [r.id for r in load_policy(child).rules] == ["a"]


def test_environment_variable_chooses_the_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(POLICY_ENV, "childrens-tutor")
    assert load_policy().name == "childrens-tutor"
    monkeypatch.delenv(POLICY_ENV)
    assert load_policy().name == "default"


def test_content_hash_changes_with_behaviour_only(tmp_path: Path) -> None:
    a = load_policy(write(tmp_path, "name: x\nrules: []\nsettings: {fail_mode: open}\n", "a.yaml"))
    b = load_policy(write(tmp_path, "name: x\nsettings:\n  fail_mode: open\nrules: []\n", "b.yaml"))
    c = load_policy(write(tmp_path, "name: x\nrules: []\nsettings: {fail_mode: closed}\n", "c.yaml"))
    assert a.content_hash == b.content_hash != c.content_hash


def test_schema_file_is_in_sync_with_the_models() -> None:
    shipped = json.loads((REPO / "policies" / "schema.json").read_text())
    assert shipped == json_schema(), "run: guardrail policy schema > policies/schema.json"


RULE = "name: x\nrules:\n  - id: a\n    when: {when}\n    action: {action}\n    reason: because\n"


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
            None,
            "used twice",
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
