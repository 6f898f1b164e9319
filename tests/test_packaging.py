"""What `pip install` delivers: adapters and presets inside the package, the same modules everywhere."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import guardrail.integrations
import guardrail.policies
from guardrail.policy import load_policy, presets

REPO = Path(__file__).resolve().parent.parent


def test_integrations_and_policies_import_from_the_top_level_folders() -> None:
    assert Path(guardrail.integrations.__file__).resolve() == (REPO / "integrations" / "__init__.py").resolve()
    assert Path(guardrail.policies.__file__).resolve() == (REPO / "policies" / "__init__.py").resolve()


def test_wheel_carries_presets_adapters_weights_and_model_card(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(REPO),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("value_guardrail-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for preset in presets():
        assert f"guardrail/policies/{preset}.yaml" in names
    expected = {
        "guardrail/policies/schema.json",
        "guardrail/policy/__init__.py",
        "guardrail/integrations/__init__.py",
        "guardrail/model/value_heads.safetensors",
        "guardrail/model/value_heads.json",
        "guardrail/model/MODEL_CARD.md",
        "guardrail/py.typed",
        "guardrail/cli/__init__.py",
        "guardrail/cli/__main__.py",
    }
    expected |= {f"guardrail/cli/{module.name}" for module in (REPO / "guardrail" / "cli").glob("*.py")}
    expected |= {f"guardrail/audit/{module.name}" for module in (REPO / "guardrail" / "audit").glob("*.py")}
    assert expected <= names, expected - names
    assert not any(n.startswith(("integrations/", "policies/", "tests/")) for n in names)
    weights = zipfile.ZipFile(wheel).getinfo("guardrail/model/value_heads.safetensors")
    assert weights.file_size <= 10 * 1024 * 1024


def test_presets_load_by_name() -> None:
    assert load_policy("default").name == "default"
