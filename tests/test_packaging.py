"""What `pip install` delivers: adapters and presets inside the package, the same modules everywhere."""

from __future__ import annotations

import shutil
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


def _source_modules() -> set[str]:
    """Every module of the source tree, named as the wheel must hold it."""
    names = {
        str(path.relative_to(REPO)) for path in (REPO / "guardrail").rglob("*.py") if "__pycache__" not in path.parts
    }
    for folder in ("integrations", "policies"):  # reached through guardrail/<folder> symlinks
        names |= {f"guardrail/{folder}/{path.name}" for path in (REPO / folder).glob("*.py")}
    return names


def test_wheel_carries_every_module_presets_weights_and_model_card(tmp_path: Path) -> None:
    # Built from a copy without build outputs: a stale build/ folder would hide a package missing
    # from pyproject.toml's list.
    source = tmp_path / "src"
    shutil.copytree(
        REPO,
        source,
        symlinks=True,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", "runs"
        ),
    )
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
            str(source),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("value_guardrail-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for preset in presets():
        assert f"guardrail/policies/{preset}.yaml" in names
    expected = _source_modules() | {
        "guardrail/policies/schema.json",
        "guardrail/model/value_heads.safetensors",
        "guardrail/model/value_heads.json",
        "guardrail/model/MODEL_CARD.md",
        "guardrail/py.typed",
    }
    expected |= {f"guardrail/training/{path.name}" for path in (REPO / "guardrail" / "training").glob("*.jsonl")}
    assert expected <= names, f"missing from the wheel (add the package to pyproject.toml): {sorted(expected - names)}"
    assert not any(n.startswith(("integrations/", "policies/", "tests/")) for n in names)
    weights = zipfile.ZipFile(wheel).getinfo("guardrail/model/value_heads.safetensors")
    assert weights.file_size <= 10 * 1024 * 1024


def test_presets_load_by_name() -> None:
    assert load_policy("default").name == "default"
