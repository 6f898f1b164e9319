"""Policies: presets, inheritance, references, hot reload and the JSON Schema (errors: test_policy_errors.py)."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import pytest

from guardrail.act import refusal_for
from guardrail.evaluate import evaluate
from guardrail.guard import Guard
from guardrail.policy import (
    POLICY_ENV,
    PolicyError,
    json_schema,
    load_policy,
    load_policy_and_files,
    policy_from_dict,
    presets,
)
from guardrail.score import ValueScores
from guardrail.scorers.local import LocalScorer
from guardrail.values import VALUE_NAMES, ValueGroup
from tests.policy_files import RULE, accepted, write

REPO = Path(__file__).resolve().parent.parent


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


def test_a_copied_policy_with_other_settings_names_its_own_content(tmp_path: Path) -> None:
    """The hash is computed once per policy; a copy with changes must not inherit the original's."""
    opened = load_policy(write(tmp_path, "name: x\nrules: []\nsettings: {fail_mode: open}\n", "a.yaml"))
    closed = load_policy(write(tmp_path, "name: x\nrules: []\nsettings: {fail_mode: closed}\n", "c.yaml"))
    assert opened.content_hash != closed.content_hash  # both computed before copying
    for deep in (False, True):
        copied = opened.model_copy(update={"settings": closed.settings}, deep=deep)
        assert copied.content_hash == closed.content_hash
        assert copied.ref.hash == closed.content_hash
    assert opened.model_copy().content_hash == opened.content_hash


def test_schema_file_is_in_sync_with_the_models() -> None:
    shipped = json.loads((REPO / "policies" / "schema.json").read_text())
    assert shipped == json_schema(), "run: guardrail policy schema > policies/schema.json"


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
            assert in_schema == accepted({"rules": [rule]}), (kind, name, in_schema)
    target = defs["TargetDistance"]["properties"]["target"]
    assert target["minProperties"] == 1
    assert (target["additionalProperties"]["minimum"], target["additionalProperties"]["maximum"]) == (-1, 1)
    assert target["propertyNames"] == {"anyOf": defs["ValueRange"]["properties"]["value"]["anyOf"]}
    # remove_rules needs extends: the schema says it with if/then, and both loaders refuse it.
    root = json_schema()
    assert root["if"]["required"] == ["remove_rules"] and root["then"]["required"] == ["extends"]
    assert not accepted({"remove_rules": ["oppose-security"]})
    assert accepted({"extends": "default", "remove_rules": ["oppose-security"]})
    # What JSON Schema cannot say is in the descriptions editors show.
    assert "must not be greater than max" in defs["ValueRange"]["properties"]["min"]["description"]
    assert "ids unique" in root["properties"]["rules"]["description"]
    assert "needs extends" in root["properties"]["remove_rules"]["description"]


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


def test_numbers_in_exponent_form_are_numbers(tmp_path: Path) -> None:
    # YAML 1.2 and JSON read 1e-1 as a number; PyYAML's YAML 1.1 would read it as text.
    path = write(
        tmp_path,
        "name: x\nsettings: {scoring_timeout_s: 2.5E+1, max_attempts: 1e0}\nrules:\n"
        "  - {id: a, when: {value: security, min: -1e-1, max: .5}, action: log, reason: r}\n"
        "  - {id: b, when: {target: {security: 1.}, max_distance: 2e0, min_abs_score: +1E-1}, action: log, reason: r}\n"
        "  - {id: c, when: {uncertain: any, below: 5e-1}, action: log, reason: r}\n",
    )
    policy = load_policy(path)
    a, b, c = (r.when for r in policy.rules)
    assert (a.min, a.max) == (-0.1, 0.5)  # type: ignore[union-attr]
    assert (b.target, b.max_distance, b.min_abs_score) == ({"security": 1.0}, 2.0, 0.1)  # type: ignore[union-attr]
    assert c.below == 0.5  # type: ignore[union-attr]
    assert (policy.settings.scoring_timeout_s, policy.settings.max_attempts) == (25.0, 1)
    # A JSON policy as json.dump writes it.
    data = {
        "name": "j",
        "rules": [{"id": "a", "when": {"value": "power", "max": 1e-05}, "action": "log", "reason": "r"}],
    }
    json_path = tmp_path / "p.json"
    json_path.write_text(json.dumps(data))
    assert "1e-05" in json_path.read_text()
    assert load_policy(json_path).rules[0].when.max == 1e-05  # type: ignore[union-attr]
    # Integers stay integers, and a quoted number is still text, and still a mistake.
    assert load_policy(write(tmp_path, "name: x\nversion: '1e3'\n")).version == "1e3"
    with pytest.raises(PolicyError, match=r":4: rules\[0\]\.when\.min: got the text '-1e-1'; write a number"):
        load_policy(write(tmp_path, RULE.format(when="{value: security, min: '-1e-1'}", action="log")))


def test_hot_reload_follows_edits_to_the_files_a_policy_extends(scorer: LocalScorer, tmp_path: Path) -> None:
    parent = write(
        tmp_path,
        "name: parent\nrules:\n  - {id: p1, when: {opposes: security}, action: block, reason: r}\n",
        "parent.yaml",
    )
    child = write(tmp_path, "name: child\nextends: parent.yaml\n", "child.yaml")
    guard = Guard(child, scorer=scorer, hot_reload=True)
    assert [(r.id, r.action) for r in guard.policy.rules] == [("p1", "block")]
    # Only the parent changes.
    parent.write_text("name: parent\nrules:\n  - {id: p1, when: {opposes: security}, action: log, reason: r}\n")
    guard._policies.reload_now()
    assert [(r.id, r.action) for r in guard.policy.rules] == [("p1", "log")]
    # A broken parent keeps the last good policy; fixing it reloads.
    parent.write_text("name: parent\nrules: [\n")
    with pytest.warns(RuntimeWarning, match=r"keeping child v1: .*parent\.yaml:3: YAML syntax error"):
        guard._policies.reload_now()
    assert guard.policy.rules[0].action == "log" and guard.policy_error is not None
    parent.write_text("name: parent\nrules:\n  - {id: p2, when: {opposes: power}, action: log, reason: r}\n")
    guard._policies.reload_now()
    assert [r.id for r in guard.policy.rules] == ["p2"] and guard.policy_error is None
    # The child moves to a parent that does not exist yet: creating it reloads.
    child.write_text("name: child\nextends: sub/other.yaml\n")
    with pytest.warns(RuntimeWarning, match="no policy file at"):
        guard._policies.reload_now()
    (tmp_path / "sub").mkdir()
    write(
        tmp_path / "sub",
        "name: other\nrules:\n  - {id: o1, when: {opposes: tradition}, action: log, reason: r}\n",
        "other.yaml",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        guard._policies.reload_now()
    assert [r.id for r in guard.policy.rules] == ["o1"]
    # The old parent is no longer part of the policy: editing it changes nothing.
    parent.write_text("name: parent\nrules: [\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        guard._policies.reload_now()
    assert [r.id for r in guard.policy.rules] == ["o1"] and guard.policy_error is None


def test_the_files_a_policy_is_read_from(tmp_path: Path) -> None:
    write(tmp_path, "name: base\nextends: childrens-tutor\n", "base.yaml")
    child = write(tmp_path, "name: child\nextends: base.yaml\n", "child.yaml")
    policy, files = load_policy_and_files(child)
    assert policy == load_policy(child)
    assert files == (child.absolute(), (tmp_path / "base.yaml").absolute())  # presets are not watched
    assert load_policy_and_files("default")[1] == ()
