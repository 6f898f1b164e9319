"""Policies: presets, inheritance, the JSON Schema, and one clear error for every kind of mistake."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from guardrail.act import refusal_for
from guardrail.evaluate import evaluate
from guardrail.guard import Guard
from guardrail.policy import POLICY_ENV, PolicyError, json_schema, load_policy, policy_from_dict, presets
from guardrail.score import ValueScores
from guardrail.scorers.local import LocalScorer
from guardrail.values import VALUE_NAMES, ValueGroup

REPO = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str, name: str = "policy.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def hand_scores(
    scores: dict[str, float] | None = None,
    labels: dict[str, int] | None = None,
    p_oppose: dict[str, float] | None = None,
) -> ValueScores:
    """Scores as a scorer would return them, chosen by hand (0 and confident where not given)."""
    p = {v: 0.05 for v in VALUE_NAMES} | (p_oppose or {})
    return ValueScores(
        scores={v: 0.0 for v in VALUE_NAMES} | (scores or {}),
        labels={v: 0 for v in VALUE_NAMES} | (labels or {}),
        confidence=dict.fromkeys(VALUE_NAMES, 0.9),
        probabilities={v: (p[v], round(1 - 2 * p[v], 6), p[v]) for v in VALUE_NAMES},
        model_id="hand-built",
        precision="fp32",
    )


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


def test_a_child_rule_with_an_inherited_id_keeps_the_inherited_place(tmp_path: Path) -> None:
    # Order decides the refusal text (the first firing block rule's message) and what explain() names first.
    write(
        tmp_path,
        "name: base\nrules:\n"
        "  - {id: unsafe, when: {value: security, min: -0.3}, action: block, reason: r, message: BASE-UNSAFE}\n"
        "  - {id: bossy, when: {value: power, max: 0.5}, action: block, reason: r, message: BOSSY}\n"
        "  - {id: unkind, when: {value: benevolence, min: -0.3}, action: log, reason: r}\n",
        "base.yaml",
    )
    child = load_policy(
        write(
            tmp_path,
            "name: child\nextends: base.yaml\nremove_rules: [unkind]\nrules:\n"
            "  - {id: new, when: {opposes: universalism}, action: block, reason: r}\n"
            "  - {id: unsafe, when: {value: security, min: -0.2}, action: block, reason: r, message: CHILD-UNSAFE}\n"
            "  - {id: unkind, when: {value: benevolence, min: -0.5}, action: block, reason: r}\n",
            "child.yaml",
        )
    )
    # Replaced in place; new rules (and a removed one declared again) after the inherited ones.
    assert [r.id for r in child.rules] == ["unsafe", "bossy", "new", "unkind"]
    assert child.rules[0].when.min == -0.2  # type: ignore[union-attr]
    draft = hand_scores({"security": -0.9, "power": 0.9})
    violations = evaluate(draft, child)
    assert [v.rule_id for v in violations] == ["unsafe", "bossy"]
    assert refusal_for(child, violations) == "CHILD-UNSAFE"
    # The same through policy_from_dict, which extends a file relative to the current directory.
    from_dict = policy_from_dict(
        {
            "name": "child",
            "extends": str(tmp_path / "base.yaml"),
            "rules": [{"id": "unsafe", "when": {"value": "security", "min": -0.2}, "action": "log", "reason": "r"}],
        }
    )
    assert [r.id for r in from_dict.rules] == ["unsafe", "bossy", "unkind"]
    assert refusal_for(from_dict, evaluate(draft, from_dict)) == "BOSSY"  # unsafe now only logs


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


def test_natural_yaml_scalars_load(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "name: x\nsettings: {shadow: yes, max_attempts: 3, scoring_timeout_s: 2}\nrules:\n"
        "  - {id: a, when: {value: Self-Direction, min: 0, max: 1}, action: log, reason: r}\n"
        "  - {id: b, when: {target: {security: 1, benevolence: 0}, max_distance: 1}, action: log, reason: r}\n"
        "  - {id: c, when: {uncertain: ANY, below: 1}, action: log, reason: r}\n",
    )
    policy = load_policy(path)
    assert (policy.settings.shadow, policy.settings.max_attempts, policy.settings.scoring_timeout_s) == (True, 3, 2.0)
    a, b, c = (r.when for r in policy.rules)
    assert (a.value, a.min, a.max) == ("self_direction", 0.0, 1.0)  # type: ignore[union-attr]
    assert b.target == {"security": 1.0, "benevolence": 0.0}  # type: ignore[union-attr]
    assert c.uncertain == "any"  # type: ignore[union-attr]
    # JSON Schema's "integer" includes 2.0, and so does the loader.
    assert load_policy(write(tmp_path, "name: x\nsettings: {max_attempts: 2.0}\n")).settings.max_attempts == 2


def _named(data: dict[str, Any]) -> bool:
    """Whether the loader accepts ``data`` as a policy."""
    try:
        policy_from_dict({"name": "x", **data})
    except PolicyError:
        return False
    return True


def test_schema_says_what_the_loader_checks() -> None:
    defs = json_schema()["$defs"]
    # Names: the canonical ones as an enum (what editors offer), and every spelling the loader forgives.
    value_names = ["security", "Self-Direction", " self direction ", "UNIVERSALISM", "benevolance", "self__direction"]
    for kind, field, names in (
        ("ValueRange", "value", value_names),
        ("Opposes", "opposes", ["benevolence", "Hedonism", "hedonist", "power!"]),
        ("GroupRange", "group", ["conservation", "Self-Enhancement", "openness to change", "conservatism"]),
        ("Uncertain", "uncertain", ["any", " ANY", "security", "anything"]),
    ):
        schema = defs[kind]["properties"][field]
        assert set(schema["anyOf"][0]["enum"]) in ({*VALUE_NAMES}, {g.value for g in ValueGroup}), schema
        for name in names:
            in_schema = any(
                name in branch.get("enum", ()) or ("pattern" in branch and re.search(branch["pattern"], name))
                for branch in schema["anyOf"]
            )
            when = {field: name, "below": 0.5} if kind == "Uncertain" else {field: name}
            rule = {"id": "a", "when": when, "action": "log", "reason": "r"}
            assert in_schema == _named({"rules": [rule]}), (kind, name, in_schema)
    target = defs["TargetDistance"]["properties"]["target"]
    assert target["minProperties"] == 1
    assert (target["additionalProperties"]["minimum"], target["additionalProperties"]["maximum"]) == (-1, 1)
    assert target["propertyNames"] == {"anyOf": defs["ValueRange"]["properties"]["value"]["anyOf"]}
    # remove_rules needs extends: the schema says it with if/then, and both loaders refuse it.
    root = json_schema()
    assert root["if"]["required"] == ["remove_rules"] and root["then"]["required"] == ["extends"]
    assert not _named({"remove_rules": ["oppose-security"]})
    assert _named({"extends": "default", "remove_rules": ["oppose-security"]})
    # What JSON Schema cannot say is in the descriptions editors show.
    assert "must not be greater than max" in defs["ValueRange"]["properties"]["min"]["description"]
    assert "ids unique" in root["properties"]["rules"]["description"]
    assert "needs extends" in root["properties"]["remove_rules"]["description"]


def test_policy_from_dict_refuses_remove_rules_without_extends() -> None:
    with pytest.raises(PolicyError) as info:
        policy_from_dict({"name": "t", "remove_rules": ["x"]})
    assert str(info.value) == "<dict>: remove_rules: needs 'extends' (there are no inherited rules to remove)"


def test_a_rewrite_rules_message_is_the_refusal_when_it_falls_back_to_block(scorer: LocalScorer) -> None:
    policy = policy_from_dict(
        {
            "name": "t",
            "settings": {"refusal_message": "DEFAULT REFUSAL"},
            "rules": [
                {
                    # The mean of three scores is never exactly -1: this rule fires on every draft.
                    "id": "always",
                    "when": {"group": "self_enhancement", "max": -1},
                    "action": "rewrite",
                    "reason": "r",
                    "message": "Let's stick to your homework.",
                }
            ],
        }
    )
    decision = Guard(policy, scorer=scorer).check("Octopuses have three hearts.")  # no LLM to re-ask: fallback block
    assert (decision.action, decision.text) == ("block", "Let's stick to your homework.")
    description = json_schema()["$defs"]["Rule"]["properties"]["message"]["description"]
    assert "when this rewrite rule falls back to a block" in description


def test_an_opposes_violation_never_states_a_bound_that_contradicts_it() -> None:
    policy = policy_from_dict(
        {"name": "t", "rules": [{"id": "unsafe", "when": {"opposes": "security"}, "action": "block", "reason": "r"}]}
    )
    # Labelled -1 by a scorer whose threshold (0.3) is below the 0.5 a missing threshold stands for.
    draft = hand_scores({"security": -0.1}, labels={"security": -1}, p_oppose={"security": 0.35})
    (unknown,) = evaluate(draft, policy)  # no thresholds: as in replay, or a scorer without them
    assert "allowed" not in unknown.describe() and "labelled opposing by the scorer" in unknown.describe()
    (known,) = evaluate(draft, policy, {"security": 0.3})
    assert known.describe() == "security P(oppose) +0.35, allowed below +0.30 (rule unsafe)"
    at_threshold = hand_scores({"security": -0.2}, labels={"security": -1}, p_oppose={"security": 0.3})
    assert "allowed below +0.30" in evaluate(at_threshold, policy, {"security": 0.3})[0].describe()


def test_childrens_tutor_caps_power_not_achievement() -> None:
    tutor = load_policy("childrens-tutor")
    assert "power-themes" in [v.rule_id for v in evaluate(hand_scores({"power": 0.9}), tutor)]
    ambitious = evaluate(hand_scores({"achievement": 0.9, "power": 0.1}), tutor)
    assert "power-themes" not in [v.rule_id for v in ambitious]


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


def test_files_named_like_presets_in_the_working_directory_never_replace_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    expected = {r.id for r in load_policy("default").rules}
    (tmp_path / "default").mkdir()  # a folder called default
    assert expected <= {r.id for r in load_policy("childrens-tutor").rules}  # its `extends: default`
    assert load_policy("default").name == "default"
    (tmp_path / "default").rmdir()
    write(tmp_path, "name: local\nrules: []\n", "default")  # a file called default
    assert expected <= {r.id for r in load_policy("childrens-tutor").rules}
    assert load_policy("default").name == "default"
    monkeypatch.setenv(POLICY_ENV, "default")
    assert load_policy().name == "default"
    # The file is still reachable when asked for as a path.
    assert load_policy("./default").name == "local"
    assert load_policy(Path("default")).name == "local"
    monkeypatch.setenv(POLICY_ENV, "./default")
    assert load_policy().name == "local"
    child = write(tmp_path, "name: child\nextends: ./default\n", "child.yaml")
    assert load_policy(child).name == "child" and load_policy(child).rules == []


def test_a_bare_name_that_is_no_preset_points_at_the_file_syntax(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "name: mine\nrules: []\n", "mine")
    with pytest.raises(PolicyError, match=r"unknown preset 'mine' .*write \./mine"):
        load_policy("mine")
    assert load_policy("./mine").name == "mine"
