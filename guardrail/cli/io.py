"""What the commands share: reading input lines, opening outputs, the policy and audit options.

``CliError`` is a problem with the user's input (printed as one line, exit status 2). A JSONL
input file is read line by line into ``ScoreRequest``s, or error lines ``{"id", "line", "error"}``
with ``--skip-invalid``; ``check_target`` refuses an output path that would overwrite an input,
the audit log or one of its files; ``load_policy_or_fail`` and ``audit_sink`` turn ``--policy``
and ``--audit`` into a policy and a store (``guardrail.audit.open_store``), with their errors as
``CliError``s. The help texts of options that several commands share live here too, so that they
read alike everywhere.
"""

from __future__ import annotations

import codecs
import os
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from pydantic import ValidationError

from guardrail.score_lines import ErrorLine, ScoreRequest, error_line


class CliError(Exception):
    """A problem with the user's input: printed as one line, exit status 2."""


def input_lines(path: Path) -> Iterator[tuple[int, str, str | None]]:
    """(line number, text, why it is unreadable or None) for each non-blank line of a JSONL file.

    Lines are decoded one by one, so a byte that is not UTF-8 is reported with its line; a UTF-8
    byte-order mark at the start of the file (as some Windows editors write) is skipped.
    """
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from None
    with handle:
        for lineno, raw in enumerate(handle, 1):
            if lineno == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8) :]
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                bad = f"byte 0x{raw[exc.start]:02x} at column {exc.start + 1}"
                yield lineno, raw.decode("utf-8", errors="replace"), f"not valid UTF-8 ({bad}; save the file as UTF-8)"
                continue
            if line.strip():
                yield lineno, line, None


def read_requests(path: Path, skip_invalid: bool) -> Iterator[tuple[int, ScoreRequest | ErrorLine]]:
    """Yield (line number, request) or (line number, error line) for each non-blank line."""
    for lineno, line, unreadable in input_lines(path):
        message = f"{path}:{lineno}: {unreadable}" if unreadable else None
        if message is None:
            try:
                yield lineno, ScoreRequest.model_validate_json(line)
                continue
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"]) or "line"
                message = f"{path}:{lineno}: {where}: {str(first['msg']).removeprefix('Value error, ')}"
                if first["type"] == "json_invalid":
                    message = f"{path}:{lineno}: not valid JSON ({first['msg']})"
        if not skip_invalid:
            raise CliError(message + " (use --skip-invalid to record it and go on)")
        yield lineno, error_line(lineno, line, message)


def _same_file(a: str | Path, b: str | Path) -> bool:
    """Whether two paths name one file (resolved alike, or one inode through links)."""
    if Path(a).resolve() == Path(b).resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet): then they are not the same file
        return False


def check_target(option: str, target: str | None, *others: tuple[str, str | None]) -> None:
    """Refuse an output path that is a folder or the same file as another path of the command.

    ``others`` are (option, path) pairs: writing ``target`` would truncate or append to them.
    """
    if target in (None, "-"):
        return
    assert target is not None
    from guardrail.audit import is_url

    if is_url(target):  # a database log: no file of it can be overwritten
        return
    if Path(target).is_dir():
        raise CliError(f"{option} {target} is a folder; give a file path")
    for other_option, other in others:
        if other not in (None, "-") and _same_file(target, other):
            assert other is not None
            raise CliError(
                f"{option} {target} is the same file as {other_option} {other}: writing to it would change "
                "that file, give another path"
            )
        pairs = ((option, target, other_option, other), (other_option, other, option, target))
        for log_option, log, out_option, out in pairs:
            if log_option in _AUDIT_OPTIONS and log not in (None, "-") and out not in (None, "-") and not is_url(log):
                assert log is not None and out is not None
                clash = _log_file_named(log, out)
                if clash is not None:
                    raise CliError(
                        f"{out_option} {out} is {clash} of the audit log {log}: writing to it would change "
                        "the log, give another path"
                    )


_AUDIT_OPTIONS = ("--audit", "the audit log")


def _log_file_named(log: str, other: str) -> str | None:
    """What ``other`` is of the audit log ``log`` (a rotated segment, existing or to come, its lock
    file, SQLite's journal), or None when it is none of them."""
    import re

    from guardrail.audit import is_sqlite
    from guardrail.audit.segments import segments

    log_path, other_path = Path(log), Path(other)
    if any(_same_file(other_path, segment) for segment in segments(log_path)):
        return "a segment"
    if other_path.parent.resolve() != log_path.parent.resolve():
        return None
    name = other_path.name
    if name == f"{log_path.name}.lock":
        return "the lock file"
    if is_sqlite(log_path):
        return "a journal file" if name in {f"{log_path.name}{s}" for s in ("-wal", "-shm", "-journal")} else None
    if re.fullmatch(rf"{re.escape(log_path.stem)}\.\d+{re.escape(log_path.suffix)}", name):
        return "the name of a rotated segment"
    return None


def open_output(path: str | None) -> IO[str]:
    """Standard output for None or "-", else ``path`` opened for writing (after ``check_target``)."""
    if path in (None, "-"):
        return sys.stdout
    assert path is not None
    try:
        return open(path, "w", encoding="utf-8")  # closed by the caller
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror}") from None


def load_policy_or_fail(ref: str | None) -> Any:
    """The policy ``--policy`` names (a preset or a file; None: the default), or a ``CliError``."""
    from guardrail.policy import PolicyError, load_policy

    try:
        return load_policy(ref)
    except PolicyError as exc:
        raise CliError(str(exc)) from None


def audit_target(target: str | None) -> str | None:
    """What ``--audit`` (or an audit command's log argument) names: the option, else ``$GUARDRAIL_AUDIT_URL``."""
    from guardrail.audit import target_from_env

    return target if target is not None else target_from_env()


def audit_sink(target: str | None, redact: bool) -> Any:
    """The store for ``--audit TARGET`` (else ``$GUARDRAIL_AUDIT_URL``; neither: None), by ``open_store``.

    A path is a SQLite database if it ends in .db/.sqlite/.sqlite3, else a JSONL log; a
    ``postgresql://`` URL a log in that database; any other URL is refused. The rule is the one
    `guardrail audit` reads logs by, so a log is always read back the way it was written.
    """
    target = audit_target(target)
    if target is None:
        return None
    from guardrail.audit import AuditLogError, is_url, open_store

    check_target("--audit", target)
    try:
        return open_store(target, redact=redact)
    except AuditLogError as exc:  # a folder, an unwritable path, a file that is not an audit log, a bad URL
        raise CliError(f"--audit: {exc}" if is_url(target) else f"--audit {target}: {exc}") from None  # URL: named
    except sqlite3.Error as exc:
        raise CliError(
            f"--audit {target}: cannot open it as a SQLite database ({exc}); a .db/.sqlite/.sqlite3 name "
            "means a SQLite audit log, name a JSONL log .jsonl"
        ) from None


INPUT_HELP = (
    'JSONL file of {"id"?, "prompt"?, "response"} lines (UTF-8); an id is a string or an integer, '
    "lines without one are known by their line number"
)
SKIP_INVALID_HELP = (
    'write a bad input line as {"id", "line", "error"} (its own id if readable, else its line number) '
    "and go on, instead of stopping before any work"
)
AUDIT_HELP = (
    "append every decision to this audit log: a SQLite database if the name ends in .db, .sqlite or "
    ".sqlite3 (as `guardrail audit` reads it), a log in PostgreSQL for postgresql://USER@HOST/DB?log=NAME "
    "(password from PGPASSWORD or ~/.pgpass), else JSONL (default: $GUARDRAIL_AUDIT_URL)"
)
