"""Reading batch input: JSONL and Parquet files named by a file, a folder or a glob.

``resolve_inputs`` turns what the user typed into files (in a stable order), ``spans`` cuts a file
into pieces of at most N rows that a worker can read on its own (a byte range of a JSONL file, a
run of Parquet row groups), and ``read_span`` yields every row of a piece with its source file and
line (Parquet: its row, counted from 1). A row that cannot be read or is not a valid request comes
back as an error line naming file and line, never raised and never dropped; blank lines are skipped
as `guardrail score` skips them.
"""

from __future__ import annotations

import codecs
import glob
import io
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from guardrail.batch.formats import ScoreRequest, error_line

Kind = Literal["jsonl", "parquet"]
SUFFIXES: dict[str, Kind] = {".jsonl": "jsonl", ".parquet": "parquet"}


class BatchError(ValueError):
    """A problem with a batch job's input, output folder or options: one line naming it."""


class InputFile(BaseModel):
    """One input file: where it is, how the user named it, and what identifies its content."""

    model_config = ConfigDict(frozen=True)

    path: str  # absolute, so that workers on any node (sharing the file system) find it
    source: str  # as the user named it: shown in error lines and output
    kind: Kind
    size: int
    mtime_ns: int


class Span(BaseModel):
    """Rows ``first_line .. first_line + lines - 1`` of one file: JSONL bytes [start, stop), or
    Parquet row groups [start, stop)."""

    model_config = ConfigDict(frozen=True)

    path: str
    source: str
    kind: Kind
    start: int
    stop: int
    first_line: int
    lines: int


@dataclass(frozen=True)
class Row:
    """One input row: a request to score, or the error line that says why it is none."""

    source: str
    line: int
    request: ScoreRequest | None
    error: dict[str, object] | None = None
    fields: dict[str, object] = field(default_factory=dict)


def _has_magic(spec: str) -> bool:
    return any(ch in spec for ch in "*?[")


def _input_file(path: Path, source: str) -> InputFile:
    try:
        st = path.stat()
    except OSError as exc:
        raise BatchError(f"cannot read {source}: {exc.strerror}") from None
    kind = SUFFIXES.get(path.suffix.lower(), "jsonl")  # a file named outright is JSONL unless .parquet
    return InputFile(path=str(path.resolve()), source=source, kind=kind, size=st.st_size, mtime_ns=st.st_mtime_ns)


def resolve_inputs(specs: Sequence[str]) -> list[InputFile]:
    """The files named by ``specs``, in order: a file as given; a folder's and a glob's ``.jsonl`` and
    ``.parquet`` files sorted by path (a folder's searched recursively)."""
    files: list[InputFile] = []
    for spec in specs:
        path = Path(spec)
        if _has_magic(spec) and not path.exists():
            found = sorted(Path(p) for p in glob.glob(spec, recursive=True))
            found = [p for p in found if p.is_file() and p.suffix.lower() in SUFFIXES]
            if not found:
                raise BatchError(f"{spec}: no .jsonl or .parquet file matches")
            files.extend(_input_file(p, str(p)) for p in found)
        elif path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)
            if not found:
                raise BatchError(f"{spec}: no .jsonl or .parquet file in this folder")
            files.extend(_input_file(p, str(p)) for p in found)
        elif path.exists():
            files.append(_input_file(path, spec))
        else:
            raise BatchError(f"{spec}: no such file or folder")
    seen: dict[str, str] = {}
    for f in files:
        if f.path in seen:
            raise BatchError(f"{f.source} is given twice (also as {seen[f.path]}): each row would be scored twice")
        seen[f.path] = f.source
    return files


def spans(file: InputFile, max_rows: int) -> Iterator[Span]:
    """``file`` cut into pieces of at most ``max_rows`` rows (lines, blank ones included), in order."""
    if file.kind == "parquet":
        yield from _parquet_spans(file, max_rows)
        return
    try:
        handle = open(file.path, "rb")  # noqa: SIM115 (closed by the with below; an error here is the user's)
    except OSError as exc:
        raise BatchError(f"cannot read {file.source}: {exc.strerror}") from None
    with handle:
        start = pos = rows = lineno = 0
        for raw in handle:
            lineno += 1
            rows += 1
            pos += len(raw)
            if rows == max_rows:
                yield Span(**_where(file), start=start, stop=pos, first_line=lineno - rows + 1, lines=rows)
                start, rows = pos, 0
        if rows:
            yield Span(**_where(file), start=start, stop=pos, first_line=lineno - rows + 1, lines=rows)


def _where(file: InputFile) -> dict[str, Any]:
    return {"path": file.path, "source": file.source, "kind": file.kind}


def _parquet(source: str) -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise BatchError(
            f"{source}: reading Parquet needs pyarrow (pip install pyarrow, or 'value-guardrail[ray]')"
        ) from None
    return pq


def _parquet_file(path: str, source: str) -> Any:
    pq = _parquet(source)
    try:
        return pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises its own ArrowInvalid / OSError kinds
        raise BatchError(f"{source}: cannot read it as Parquet ({exc})") from None


def _parquet_spans(file: InputFile, max_rows: int) -> Iterator[Span]:
    meta = _parquet_file(file.path, file.source)
    columns = set(meta.schema_arrow.names)
    if "response" not in columns:
        raise BatchError(f"{file.source}: no 'response' column (columns: {', '.join(sorted(columns)) or 'none'})")
    start, rows, first = 0, 0, 1
    for group in range(meta.num_row_groups):
        rows += meta.metadata.row_group(group).num_rows
        if rows >= max_rows:
            yield Span(**_where(file), start=start, stop=group + 1, first_line=first, lines=rows)
            start, first, rows = group + 1, first + rows, 0
    if rows:
        yield Span(**_where(file), start=start, stop=meta.num_row_groups, first_line=first, lines=rows)


def _problem(exc: ValidationError) -> str:
    """What is wrong with a request, worded as `guardrail score` words it."""
    first = exc.errors()[0]
    if first["type"] == "json_invalid":
        return f"not valid JSON ({first['msg']})"
    where = ".".join(str(p) for p in first["loc"]) or "line"
    return f"{where}: {str(first['msg']).removeprefix('Value error, ')}"


def parse_jsonl(source: str, lineno: int, raw: bytes, keep: Sequence[str] = ()) -> Row | None:
    """The row of one JSONL line (``raw`` as read, newline included); None for a blank line."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = f"byte 0x{raw[exc.start]:02x} at column {exc.start + 1}"
        message = f"{source}:{lineno}: not valid UTF-8 ({bad}; save the file as UTF-8)"
        shown = raw.decode("utf-8", errors="replace")
        return Row(source, lineno, None, error_line(source, lineno, shown, message))
    if not text.strip():
        return None
    try:
        request = ScoreRequest.model_validate_json(text)
    except ValidationError as exc:
        return Row(source, lineno, None, error_line(source, lineno, text, f"{source}:{lineno}: {_problem(exc)}"))
    fields: dict[str, object] = {}
    if keep:
        data = json.loads(text)
        fields = {name: data.get(name) for name in keep}
    return Row(source, lineno, request, fields=fields)


def _jsonl_rows(span: Span, keep: Sequence[str]) -> Iterator[Row]:
    try:
        with open(span.path, "rb") as handle:
            handle.seek(span.start)
            chunk = handle.read(span.stop - span.start)
    except OSError as exc:
        raise BatchError(f"cannot read {span.source}: {exc.strerror}") from None
    for offset, raw in enumerate(io.BytesIO(chunk)):
        if span.start == 0 and offset == 0 and raw.startswith(codecs.BOM_UTF8):
            raw = raw[len(codecs.BOM_UTF8) :]  # as some Windows editors write
        row = parse_jsonl(span.source, span.first_line + offset, raw, keep)
        if row is not None:
            yield row


def _parquet_rows(span: Span, keep: Sequence[str]) -> Iterator[Row]:
    handle = _parquet_file(span.path, span.source)
    names = set(handle.schema_arrow.names)
    columns = [c for c in dict.fromkeys(("id", "prompt", "response", *keep)) if c in names]
    table = handle.read_row_groups(list(range(span.start, span.stop)), columns=columns)
    for offset, data in enumerate(table.to_pylist()):
        lineno = span.first_line + offset
        try:
            request = ScoreRequest.model_validate(data)
        except ValidationError as exc:
            message = f"{span.source}:{lineno}: {_problem(exc)}"
            shown = json.dumps(data, default=str)
            yield Row(span.source, lineno, None, error_line(span.source, lineno, shown, message))
            continue
        yield Row(span.source, lineno, request, fields={name: data.get(name) for name in keep})


def read_span(span: Span, keep: Sequence[str] = ()) -> Iterator[Row]:
    """Every row of ``span`` in order, with ``keep``'s input fields carried along."""
    if span.kind == "parquet":
        return _parquet_rows(span, keep)
    return _jsonl_rows(span, keep)
