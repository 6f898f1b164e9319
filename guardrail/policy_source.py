"""The policy a guard enforces, optionally hot-reloaded from its files while the guard runs."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from guardrail.policy import Policy, PolicyError, policy_path


class PolicySource:
    """The policy in force, optionally hot-reloaded from its files when one of them changes.

    The files are the policy's own and every file of its ``extends`` chain (shipped presets do not
    change at run time). A broken edit keeps the last good policy in force; the error is kept in
    ``last_error``, and fixing it (in whichever file) reloads.
    """

    def __init__(self, policy: Policy | str | Path | None, hot_reload: bool = False, check_every_s: float = 1.0):
        self._lock = threading.Lock()
        self.last_error: PolicyError | None = None
        self._path: Path | None = None
        self._watched: dict[Path, tuple[int, int, int] | None] = {}  # file -> its stamp when last read
        if isinstance(policy, Policy):
            self._policy = policy
        else:
            self._policy, files = self._load(policy)
            candidate = policy_path(policy)  # None for a preset: presets do not change at run time
            if hot_reload and candidate is not None and candidate.is_file():
                self._path = candidate
                self._watched = {file: self._stamp(file) for file in files}
        self._check_every = check_every_s
        self._next_check = time.monotonic() + check_every_s

    @staticmethod
    def _load(ref: str | Path | None, files: list[Path] | None = None) -> tuple[Policy, tuple[Path, ...]]:
        from guardrail.policy import load_policy_and_files

        return load_policy_and_files(ref, files)

    @staticmethod
    def _stamp(path: Path) -> tuple[int, int, int] | None:
        """What changes when the file is edited (or replaced, as editors and ConfigMaps do); None if absent."""
        try:
            st = path.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    @property
    def current(self) -> Policy:
        if self._path is not None and time.monotonic() >= self._next_check:
            self._maybe_reload()
        return self._policy

    def _maybe_reload(self) -> None:
        assert self._path is not None
        with self._lock:
            self._next_check = time.monotonic() + self._check_every
            now = {file: self._stamp(file) for file in self._watched}
            if self._stamp(self._path) is None or now == self._watched:
                return  # unchanged, or the policy file itself is gone (deleted, or mid-save): look again later
            tried: list[Path] = []
            try:
                self._policy, files = self._load(self._path, tried)
                # The chain may have changed: watch the files this policy was read from.
                self._watched = {file: now[file] if file in now else self._stamp(file) for file in files}
                self.last_error = None
            except PolicyError as exc:
                # Also watch what the failed attempt read (a new parent, perhaps), so that fixing it reloads.
                self._watched = now | {file: self._stamp(file) for file in tried if file not in now}
                self.last_error = exc
                import warnings

                warnings.warn(
                    f"policy reload failed, keeping {self._policy.name} v{self._policy.version}: {exc}",
                    RuntimeWarning,
                    stacklevel=3,
                )

    def reload_now(self) -> None:
        """Check the files immediately (tests, admin endpoints)."""
        if self._path is not None:
            self._next_check = 0.0
            self._maybe_reload()
