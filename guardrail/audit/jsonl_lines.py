"""What a line of a JSONL audit log is: a parsed record, or what a crash can leave of one.

A crash in mid-write leaves a *torn line*: the start of a JSON object, cut short (``is_torn_fragment``),
possibly followed by NUL bytes (a file extended but not written before a power loss). Anything
else that does not parse was put there by someone: ``guardrail audit verify`` tells the two apart.
"""

from __future__ import annotations

import codecs
import json
import re

from guardrail.audit.store import LogLine

_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?")
_NUMBER_START = re.compile(r"-?(?:0|[1-9]\d*)?(?:\.\d*)?(?:[eE][+-]?\d*)?")
_NUMBER_CHARS = re.compile(r"[-+0-9.eE]*")


def _scan_string(text: str, i: int) -> int | None:
    """End (after the closing quote) of the JSON string starting at ``text[i]``; None: runs to the end; -1: invalid."""
    j, n = i + 1, len(text)
    while j < n:
        ch = text[j]
        if ch == '"':
            return j + 1
        if ch == "\\":
            if j + 1 >= n:
                return None
            escape = text[j + 1]
            if escape == "u":
                digits = text[j + 2 : j + 6]
                if any(c not in "0123456789abcdefABCDEF" for c in digits):
                    return -1
                if len(digits) < 4:
                    return None
                j += 6
                continue
            if escape not in '"\\/bfnrt':
                return -1
            j += 2
            continue
        if ord(ch) < 0x20:
            return -1
        j += 1
    return None


def is_torn_fragment(raw: bytes) -> bool:
    """Whether ``raw`` is the start of a JSON object cut short: what a crash in mid-write leaves.

    True for ``{"action":"allow","atte``; False for complete JSON, for text that is not JSON
    (``hello``) and for JSON that goes wrong before it ends (``{"a" 1``).
    """
    try:
        text = codecs.getincrementaldecoder("utf-8")().decode(raw, final=False)  # a cut multi-byte char is fine
    except UnicodeDecodeError:
        return False
    if not text.startswith("{"):
        return False
    stack: list[str] = []
    expect, i, n = "value", 0, len(text)
    while i < n:
        c = text[i]
        if c in " \t\r":
            i += 1
            continue
        if (expect == "key_or_close" and c == "}") or (expect == "value_or_close" and c == "]"):
            expect = "after"  # an empty object or array: it closes as it would after a value
        if expect in ("key", "key_or_close"):
            if c != '"':
                return False
            end = _scan_string(text, i)
            if end is None:
                return True
            if end < 0:
                return False
            i, expect = end, "colon"
        elif expect == "colon":
            if c != ":":
                return False
            i, expect = i + 1, "value"
        elif expect in ("value", "value_or_close"):
            if c in "{[":
                stack.append(c)
                i, expect = i + 1, ("key_or_close" if c == "{" else "value_or_close")
            elif c == '"':
                end = _scan_string(text, i)
                if end is None:
                    return True
                if end < 0:
                    return False
                i, expect = end, "after"
            elif c in "-0123456789":
                match = _NUMBER_CHARS.match(text, i)
                assert match is not None
                if match.end() == n:
                    return _NUMBER_START.fullmatch(match.group()) is not None
                if not _NUMBER.fullmatch(match.group()):
                    return False
                i, expect = match.end(), "after"
            elif c in "tfn":
                word = {"t": "true", "f": "false", "n": "null"}[c]
                if text.startswith(word, i):
                    i, expect = i + len(word), "after"
                else:
                    return word.startswith(text[i:])  # cut inside the literal, or a wrong word
            else:
                return False
        else:  # after a complete value
            if c == "," and stack:
                i, expect = i + 1, ("key" if stack[-1] == "{" else "value")
            elif stack and c == ("}" if stack[-1] == "{" else "]"):
                stack.pop()
                i += 1
                if not stack:
                    return False  # the object is complete, and something follows it
            else:
                return False
    return bool(stack)


def is_crash_residue(raw: bytes) -> bool:
    """Whether ``raw`` is what a crash can leave of a line: a torn fragment, a run of NUL bytes
    (a file extended but not written before a power loss), or a torn fragment followed by NULs."""
    stripped = raw.rstrip(b"\x00")
    if not stripped:
        return bool(raw)
    return is_torn_fragment(stripped)


def parse_line(name: str, n: int, chunk: bytes, terminated: bool = True) -> LogLine:
    """One stored line (without its newline) as a ``LogLine``."""
    if not chunk.strip():
        return LogLine(name, n, None, "an empty line", terminated=terminated)
    try:
        data = json.loads(chunk)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        return LogLine(name, n, data, terminated=terminated, raw=chunk)
    except ValueError as exc:  # UnicodeDecodeError included
        return LogLine(
            name,
            n,
            None,
            f"not a complete JSON record ({exc})",
            terminated=terminated,
            fragment=is_crash_residue(chunk),
        )
