"""What a policy reference names: a shipped preset or a file, found and parsed.

How a reference (``load_policy(ref)``, ``--policy``, ``GUARDRAIL_POLICY``, ``extends``) is read:

* a **file path** is anything with a path separator or a ``.yaml``/``.yml``/``.json`` suffix
  (``./default`` names a file called ``default``); a ``pathlib.Path`` is always a file path.
  In ``extends`` it is relative to the file that says it (then, for user files, to the current
  directory); a preset's own ``extends`` only ever reaches the shipped presets' folder.
* any other **bare name** is a preset (``default``, ``childrens-tutor``, ...): a file or folder
  of that name in the current directory never replaces a preset.

The presets are the YAML files of the ``guardrail.policies`` package (the repository's
``policies/`` folder), not to be confused with this package, ``guardrail.policy``, which reads them.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from guardrail.policy.errors import Unresolved
from guardrail.policy.parse import parse_policy_yaml, read_policy_file

POLICY_ENV = "GUARDRAIL_POLICY"
PRESET_PACKAGE = "guardrail.policies"


def presets() -> list[str]:
    """Names of the presets shipped in ``guardrail.policies``."""
    folder = resources.files(PRESET_PACKAGE)
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))


def looks_like_path(ref: str) -> bool:
    """Whether a policy reference names a file rather than a preset (see this module's docstring).

    A path has a separator (``./default``, ``configs/bot.yaml``) or a ``.yaml``/``.yml``/``.json``
    suffix; ``.`` and ``..`` are paths too. Everything else is a preset name.
    """
    separators = {"/", os.sep} | ({os.altsep} if os.altsep else set())
    return (
        any(sep in ref for sep in separators)
        or ref.lower().endswith((".yaml", ".yml", ".json"))
        or ref.strip() in (".", "..")
    )


def policy_path(ref: str | Path | None) -> Path | None:
    """The file a policy reference names, or None when it names a preset (for hot reload)."""
    if ref is None:
        ref = os.environ.get(POLICY_ENV) or "default"
    if isinstance(ref, Path) or looks_like_path(ref):
        return Path(ref)
    return None


@dataclass(frozen=True)
class Found:
    """A policy reference, resolved and parsed."""

    data: dict[str, Any]
    source: str  # how errors name it: the file path, or "preset 'default'"
    node: yaml.Node | None
    path: Path | None  # the user file it came from (None for presets)
    preset: bool  # shipped with guardrail: its own `extends` stays inside the presets' folder

    @property
    def key(self) -> str:
        """What identifies it in an ``extends`` chain (to catch cycles)."""
        return str(self.path.resolve()) if self.path is not None else self.source


def resolve_ref(
    ref: str, relative_to: Path | None, files: list[Path], *, in_preset: bool = False, is_path: bool = False
) -> Found:
    """Find the policy ``ref`` names (the rules are in the module docstring), and parse it.

    ``relative_to``: the user file whose ``extends`` this is; ``in_preset``: a preset's ``extends``.
    A reference that cannot be found or read raises ``Unresolved``, for the caller to say where
    it was written; a problem inside the file it names is a ``PolicyError`` naming that file.
    Each user file looked at (read, or looked for in vain) is added to ``files``.
    """
    if not ref.strip():
        raise Unresolved(f"is empty: give a preset name ({', '.join(presets())}) or a policy file")
    if in_preset and (is_path or looks_like_path(ref)):
        target = resources.files(PRESET_PACKAGE).joinpath(ref)
        if Path(ref).is_absolute() or ".." in Path(ref).parts or not target.is_file():
            raise Unresolved(f"no policy file '{ref}' among the presets")
        source = f"preset file '{ref}'"
        with resources.as_file(target) as preset_path:
            data, node = parse_policy_yaml(read_policy_file(preset_path, f"{source} "), source)
        return Found(data, source, node, None, preset=True)
    if is_path or looks_like_path(ref):
        candidate = Path(ref) if relative_to is None else relative_to.parent / ref
        if not candidate.exists() and relative_to is not None and Path(ref).exists():
            candidate = Path(ref)  # a path relative to the current directory
        files.append(candidate.absolute())
        if not candidate.exists():
            raise Unresolved(f"no policy file at {candidate}")
        shown = "" if relative_to is None else f"{candidate} "  # in `extends`, say which file
        if candidate.is_dir():  # (Windows reports reading a folder as a permission error)
            raise Unresolved(f"{shown}is a directory, not a policy file")
        data, node = parse_policy_yaml(read_policy_file(candidate, shown), str(candidate))
        return Found(data, str(candidate), node, candidate, preset=False)
    if ref in presets():
        source = f"preset '{ref}'"
        with resources.as_file(resources.files(PRESET_PACKAGE) / f"{ref}.yaml") as preset_path:
            data, node = parse_policy_yaml(read_policy_file(preset_path, f"{source} "), source)
        return Found(data, source, node, None, preset=True)
    close = difflib.get_close_matches(ref, presets(), n=1)
    hints = [f"did you mean '{close[0]}'?" if close else f"available presets: {', '.join(presets())}"]
    local = Path(ref) if relative_to is None else relative_to.parent / ref
    if not in_preset and local.is_file():
        hints.append(f"to use the file {local}, write ./{ref}")
    raise Unresolved(f"unknown preset '{ref}' ({'; '.join(hints)})")
