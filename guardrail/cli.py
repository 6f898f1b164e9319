"""The `guardrail` command line.

Commands: ``score`` (one text or a JSONL file), ``check`` (guard text with a policy, optionally
auditing), ``policy validate|show|schema|list``, ``audit verify|tail|stats|replay|report``,
``serve`` (the OpenAI-compatible proxy), ``demo``, ``train``, ``cv`` and ``eval``.

Every command calls the library's public pipeline; nothing here reaches around it. Errors in
user input (a bad line, a file that cannot be read or written) exit with status 2 and one line
that names the problem; they never show a traceback. Exit statuses (also in ``--help``): 0 done,
1 and 3 only from ``audit verify`` (tampered, torn tail), 2 bad input, 4 an unexpected error
(printed with its traceback, as it is a bug to report), 130 interrupted.
"""

from __future__ import annotations

import argparse
import codecs
import json
import os
import sqlite3
import sys
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from guardrail.text import normalize_text

EXIT_INPUT_ERROR = 2
EXIT_UNEXPECTED = 4
EXIT_INTERRUPTED = 130
EXIT_STATUSES = (
    "exit status: 0 done; 2 bad input (a bad option, line or policy, a file that cannot be read or written); "
    "1 tampered and 3 torn tail, only from 'audit verify'; 4 an unexpected error (a bug: its traceback is "
    "printed, please report it); 130 interrupted ('serve' stops cleanly on Ctrl-C or SIGTERM and exits 0)"
)


class CliError(Exception):
    """A problem with the user's input: printed as one line, exit status 2."""


class ScoreRequest(BaseModel):
    """One line of a `guardrail score --input` file."""

    model_config = ConfigDict(extra="ignore")

    id: str | int | None = None
    prompt: str | None = None
    response: str

    @field_validator("id", mode="before")
    @classmethod
    def _string_or_integer(cls, value: object) -> object:
        # Lax validation would read true as 1 and 2.0 as 2: an id is copied to the output as given, or refused.
        if value is None or _usable_id(value):
            return value
        raise ValueError(f"must be a string or an integer, got {json.dumps(value)}")

    @field_validator("response")
    @classmethod
    def _scorable(cls, value: str) -> str:
        normalize_text(value)  # empty or invisible-only text is refused here, before any scoring
        return value


def _usable_id(value: object) -> bool:
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def _scores_json(result: Any, item_id: object = None) -> dict[str, object]:
    out: dict[str, object] = {} if item_id is None else {"id": item_id}
    out.update(
        scores=result.scores,
        labels=result.labels,
        confidence=result.confidence,
        model=result.model_id,
        precision=result.precision,
        engine=result.engine,
    )
    return out


ErrorLine = dict[str, object]
"""The output line of an input line that could not be read: ``{"id", "line", "error"}``."""


def _input_lines(path: Path) -> Iterator[tuple[int, str, str | None]]:
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


def _error_line(lineno: int, line: str, message: str) -> ErrorLine:
    """The error line for an unreadable input line: its own id when that can be read, else its number."""
    item_id: object = lineno
    try:
        data = json.loads(line)
    except ValueError:
        data = None
    if isinstance(data, dict) and _usable_id(data.get("id")):
        item_id = data["id"]
    return {"id": item_id, "line": lineno, "error": message}


def _read_requests(path: Path, skip_invalid: bool) -> Iterator[tuple[int, ScoreRequest | ErrorLine]]:
    """Yield (line number, request) or (line number, error line) for each non-blank line."""
    for lineno, line, unreadable in _input_lines(path):
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
        yield lineno, _error_line(lineno, line, message)


def _same_file(a: str | Path, b: str | Path) -> bool:
    """Whether two paths name one file (resolved alike, or one inode through links)."""
    if Path(a).resolve() == Path(b).resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet): then they are not the same file
        return False


def _check_target(option: str, target: str | None, *others: tuple[str, str | None]) -> None:
    """Refuse an output path that is a folder or the same file as another path of the command.

    ``others`` are (option, path) pairs: writing ``target`` would truncate or append to them.
    """
    if target in (None, "-"):
        return
    assert target is not None
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
            if log_option in _AUDIT_OPTIONS and log not in (None, "-") and out not in (None, "-"):
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
    from guardrail.sinks.jsonl import segments

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


def _open_output(path: str | None) -> IO[str]:
    """Standard output for None or "-", else ``path`` opened for writing (after ``_check_target``)."""
    if path in (None, "-"):
        return sys.stdout
    assert path is not None
    try:
        return open(path, "w", encoding="utf-8")  # closed by the caller
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror}") from None


def _chunks(
    items: Iterator[tuple[int, ScoreRequest | ErrorLine]], size: int
) -> Iterator[list[tuple[int, ScoreRequest | ErrorLine]]]:
    chunk: list[tuple[int, ScoreRequest | ErrorLine]] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def cmd_score(args: argparse.Namespace) -> int:
    from guardrail.scorers.local import LocalScorer
    from guardrail.text import InvalidTextError

    if args.input is None:
        if args.text is None:
            raise CliError("give a TEXT to score, or --input FILE.jsonl")
        if args.output is not None:
            raise CliError("--output goes with --input; the score of one TEXT is printed")
        try:
            normalize_text(args.text)  # refused before the model loads
        except InvalidTextError as exc:
            raise CliError(str(exc)) from None
        scorer = LocalScorer(precision=args.precision)
        try:
            result = scorer.score(args.text, prompt=args.prompt)
        except InvalidTextError as exc:
            raise CliError(str(exc)) from None
        print(json.dumps(_scores_json(result)))
        return 0
    if args.text is not None:
        raise CliError("give either TEXT or --input, not both")
    input_path = Path(args.input)
    _check_target("--output", args.output, ("--input", args.input))
    if not args.skip_invalid:  # validate the whole file before any work, so no half-written output
        for _ in _read_requests(input_path, skip_invalid=False):
            pass
    total = sum(1 for _ in _input_lines(input_path))
    out = _open_output(args.output)
    try:
        scorer = LocalScorer(precision=args.precision)
        from tqdm import tqdm

        with tqdm(total=total, unit="line", file=sys.stderr, disable=total < 64 or args.quiet) as bar:
            for chunk in _chunks(_read_requests(input_path, args.skip_invalid), 64):
                valid = [(n, req) for n, req in chunk if isinstance(req, ScoreRequest)]
                scored = scorer.score_batch([r.response for _, r in valid], [r.prompt for _, r in valid])
                results = {
                    n: _scores_json(s, r.id if r.id is not None else n) for (n, r), s in zip(valid, scored, strict=True)
                }
                for n, item in chunk:
                    if not isinstance(item, ScoreRequest):
                        results[n] = item
                    out.write(json.dumps(results[n]) + "\n")
                bar.update(len(chunk))
    finally:
        if out is not sys.stdout:
            out.close()
    return 0


def _parse_settings(settings: Sequence[str] | None) -> dict[str, object]:
    """``KEY=VALUE`` recipe settings from ``--set``; a VALUE that parses as JSON is taken as JSON."""
    from guardrail.training.train import TrainConfig

    parsed: dict[str, object] = {}
    for item in settings or []:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise CliError(f"--set takes KEY=VALUE, got {item!r}")
        if key not in TrainConfig.model_fields:
            raise CliError(f"--set {key}: no such recipe setting (known: {', '.join(TrainConfig.model_fields)})")
        try:
            parsed[key] = json.loads(raw)
        except json.JSONDecodeError:
            parsed[key] = raw
    return parsed


def _recipe(settings: Sequence[str] | None = None, **overrides: object) -> Any:
    """The training recipe with the options the user gave (None = not given), its data checked.

    ``settings`` are ``--set KEY=VALUE`` strings for any ``TrainConfig`` field; the named options
    (``--epochs``, ``--seed`` ...) win over them.
    """
    from guardrail.training.train import TrainConfig

    values = _parse_settings(settings)
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        cfg = TrainConfig(**values)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"])
        raise CliError(f"--set {field}: {error['msg']} (got {error.get('input')!r})") from None
    if not (cfg.data_dir / "fulcra" / "train.jsonl").exists():
        raise CliError(f"no FULCRA data at {cfg.data_dir / 'fulcra' / 'train.jsonl'} (set --data-dir)")
    return cfg


def cmd_train(args: argparse.Namespace) -> int:
    from guardrail.training.train import train

    cfg = _recipe(
        args.settings,
        data_dir=args.data_dir,
        out_dir=args.out,
        epochs=args.epochs,
        seed=args.seed,
        final_fit=args.final_fit or None,
    )
    train(cfg, log=lambda line: print(line, flush=True))
    return 0


def cmd_cv(args: argparse.Namespace) -> int:
    from guardrail.training.crossval import cross_validate, summarize_saved

    # Options left out are None here, so that cross_validate's defaults are the only ones.
    run_options = {"folds": args.folds, "train_fraction": args.train_fraction}
    if args.from_predictions is not None:
        given = [args.settings, args.seed, args.data_dir, *run_options.values()]
        if any(option is not None for option in given):
            raise CliError("--from-predictions re-reads a finished run: its recipe cannot be changed")
        try:
            summarize_saved(args.from_predictions, out=args.out, log=lambda line: print(line, flush=True))
        except (FileNotFoundError, ValueError) as exc:
            raise CliError(str(exc)) from None
        return 0
    cfg = _recipe(args.settings, data_dir=args.data_dir, seed=args.seed)
    if args.folds is not None and args.folds < 2:
        raise CliError(f"--folds must be at least 2, got {args.folds}")
    if args.train_fraction is not None and not 0.0 < args.train_fraction <= 1.0:
        raise CliError(f"--train-fraction must be in (0, 1], got {args.train_fraction}")
    cross_validate(
        cfg,
        out=args.out or Path("benchmarks/results/crossval.json"),
        log=lambda line: print(line, flush=True),
        **{name: value for name, value in run_options.items() if value is not None},
    )
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from guardrail.training.quality import evaluate_quality, format_table

    data = Path(args.data)
    if not data.exists():
        raise CliError(f"no such data file: {data}")
    train_data = Path(args.train_data) if args.train_data else None
    result = evaluate_quality(data, args.split, train_data=train_data, log=lambda s: print(s, flush=True))
    print(format_table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


def _decision_json(decision: Any, item_id: object = None) -> dict[str, object]:
    out: dict[str, object] = {} if item_id is None else {"id": item_id}
    out.update(
        action=decision.action,
        intended_action=decision.intended_action,
        text=decision.text,
        violations=[v.model_dump() for v in decision.violations],
        scores=decision.scores.scores if decision.scores else None,
        labels=decision.scores.labels if decision.scores else None,
        policy=decision.policy.model_dump(),
        model=decision.model_id,
        explanation=decision.explain(),
        error=decision.error,
    )
    return out


def _load_policy_or_fail(ref: str | None) -> Any:
    from guardrail.policy import PolicyError, load_policy

    try:
        return load_policy(ref)
    except PolicyError as exc:
        raise CliError(str(exc)) from None


def _audit_sink(path: str | None, redact: bool) -> Any:
    """The sink for ``--audit PATH``: SQLite for a .db/.sqlite/.sqlite3 name, a JSONL log otherwise.

    The rule is ``guardrail.audit.is_sqlite``, the one `guardrail audit` reads logs by, so a log is
    always read back the way it was written.
    """
    if path is None:
        return None
    from guardrail.audit import AuditLogError, is_sqlite
    from guardrail.sinks.jsonl import JsonlSink
    from guardrail.sinks.sqlite import SqliteSink

    _check_target("--audit", path)
    try:
        return SqliteSink(path, redact=redact) if is_sqlite(path) else JsonlSink(path, redact=redact)
    except AuditLogError as exc:  # a folder, an unwritable path, or a file that is not an audit log
        raise CliError(f"--audit {path}: {exc}") from None
    except sqlite3.Error as exc:
        raise CliError(
            f"--audit {path}: cannot open it as a SQLite database ({exc}); a .db/.sqlite/.sqlite3 name "
            "means a SQLite audit log, name a JSONL log .jsonl"
        ) from None


def cmd_check(args: argparse.Namespace) -> int:
    from guardrail.guard import Guard
    from guardrail.text import InvalidTextError

    policy = _load_policy_or_fail(args.policy)
    if args.input is None and args.text is None:
        raise CliError("give a TEXT to check, or --input FILE.jsonl")
    if args.input is not None and args.text is not None:
        raise CliError("give either TEXT or --input, not both")
    if args.input is None and args.output is not None:
        raise CliError("--output goes with --input; the decision on one TEXT is printed")
    _check_target("--output", args.output, ("--input", args.input))
    _check_target("--audit", args.audit, ("--input", args.input), ("--output", args.output))
    if args.input is not None and not args.skip_invalid:
        for _ in _read_requests(Path(args.input), skip_invalid=False):
            pass
    if args.input is None:
        # Refused here, before the guard: the guard would make (and audit) a fail-mode decision on
        # it, and an audit log must not hold a decision the user was told did not happen.
        try:
            normalize_text(args.text)
        except InvalidTextError as exc:
            raise CliError(f"{exc}; nothing was checked or recorded") from None
    audit = _audit_sink(args.audit, args.redact)
    guard = Guard(policy, audit=audit, deployment=args.deployment)
    try:
        if args.input is None:
            decision = guard.check(args.text, prompt=args.prompt)
            print(json.dumps(_decision_json(decision), indent=None if args.json else 2))
            return 0
        out = _open_output(args.output)
        try:
            for n, req in _read_requests(Path(args.input), args.skip_invalid):
                if not isinstance(req, ScoreRequest):
                    out.write(json.dumps(req) + "\n")
                    continue
                decision = guard.check(req.response, prompt=req.prompt, context={"id": req.id, "line": n})
                out.write(json.dumps(_decision_json(decision, req.id if req.id is not None else n)) + "\n")
        finally:
            if out is not sys.stdout:
                out.close()
        return 0
    finally:
        guard.close()


def cmd_policy(args: argparse.Namespace) -> int:
    from guardrail.policy import json_schema, presets

    if args.policy_command == "schema":
        print(json.dumps(json_schema(), indent=2))
    elif args.policy_command == "validate":
        policy = _load_policy_or_fail(args.file)
        summary = f"{policy.name} v{policy.version}, {len(policy.rules)} rules, hash {policy.content_hash[:16]}"
        print(f"{args.file}: OK - {summary}")
    elif args.policy_command == "show":
        import yaml

        policy = _load_policy_or_fail(args.name)
        print(f"# resolved policy (after extends); hash {policy.content_hash}")
        print(yaml.safe_dump(policy.model_dump(mode="json", exclude={"extends", "remove_rules"}), sort_keys=False))
    elif args.policy_command == "list":
        for name in presets():
            policy = _load_policy_or_fail(name)
            print(f"{name:<18} v{policy.version:<8} {policy.description}")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from guardrail import audit

    path = Path(args.path)
    try:
        if args.audit_command == "verify":
            report = audit.verify(path, head=args.head, expect_seq=args.expect_seq)
            print(report.summary())
            return report.exit_code
        if args.audit_command == "tail":
            shown, last_seq = audit.tail_and_last_seq(path, args.n)
            for record in shown:
                print(audit.one_line(record))
            if args.follow:  # from the last seq the scan read: nothing appended since is skipped
                for record in audit.follow(path, after_seq=last_seq):
                    print(audit.one_line(record), flush=True)
            return 0
        if args.audit_command == "stats":
            print(json.dumps(audit.stats(path, args.window), indent=2))
            return 0
        if args.audit_command == "replay":
            policy = _load_policy_or_fail(args.policy)
            print(json.dumps(audit.replay(path, policy, examples=args.examples), indent=2))
            return 0
        if args.audit_command == "report":
            from guardrail.report import build_report

            _check_target("--out", args.out, ("the audit log", args.path))
            page = build_report(path, args.window)
            try:
                Path(args.out).write_text(page, encoding="utf-8")
            except OSError as exc:
                raise CliError(f"cannot write {args.out}: {exc.strerror}") from None
            print(f"wrote {args.out}")
            return 0
    except audit.AuditLogError as exc:  # not an audit log, or a line in it is no record: names file and line
        raise CliError(str(exc)) from None
    except KeyboardInterrupt:
        return 0
    except sqlite3.Error as exc:  # a .db/.sqlite/.sqlite3 name is read as SQLite (audit.is_sqlite)
        raise CliError(f"{path}: cannot read it as a SQLite audit log ({exc})") from None
    raise CliError(f"unknown audit command {args.audit_command}")


def cmd_serve(args: argparse.Namespace) -> int:
    from guardrail.integrations.proxy_server import ProxySettings, check_listen, check_upstream, serve

    try:  # before the scorer loads
        check_upstream(args.upstream)
        check_listen(args.host, args.port)
    except (ValueError, OSError) as exc:
        raise CliError(str(exc)) from None
    if args.workers < 1:
        raise CliError(f"--workers must be 1 or more, got {args.workers}")
    policy = _load_policy_or_fail(args.policy)
    allowed = args.allow_policy
    if allowed is None:
        allowed = [name.strip() for name in os.environ.get(ALLOWED_POLICIES_ENV, "").split(",") if name.strip()]
    sink = _audit_sink(args.audit, args.redact)  # checked here (one clear line), opened again by each worker
    if sink is not None:
        sink.close()
    settings = ProxySettings(
        upstream=args.upstream,
        timeout=args.timeout,
        policy=policy,
        allowed=[_load_policy_or_fail(ref) for ref in allowed],
        audit=args.audit,
        redact=args.redact,
        deployment=args.deployment,
        metrics=args.metrics,
    )

    def announce(detail: str) -> None:
        print(
            f"guardrail proxy on http://{args.host}:{args.port}/v1 -> {args.upstream} "
            f"(policy {policy.name} v{policy.version}, {detail}); Ctrl-C or SIGTERM stops it",
            flush=True,
        )

    try:
        serve(settings, host=args.host, port=args.port, workers=args.workers, announce=announce)
    except OSError as exc:
        raise CliError(str(exc)) from None
    print("guardrail proxy stopped", file=sys.stderr, flush=True)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from guardrail.demo import run_demo

    policy = _load_policy_or_fail(args.policy)  # before the minute it takes to load the LLM
    audit = Path(args.audit)
    audit.parent.mkdir(parents=True, exist_ok=True)
    run_demo(audit, policy=policy, log=lambda line: print(line, flush=True))
    return 0


def _add_recipe_settings(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--set",
        dest="settings",
        action="append",
        metavar="KEY=VALUE",
        help="any other setting of the recipe (TrainConfig in guardrail/training/train.py), "
        "e.g. --set touche_epochs=2; repeatable",
    )


INPUT_HELP = (
    'JSONL file of {"id"?, "prompt"?, "response"} lines (UTF-8); an id is a string or an integer, '
    "lines without one are known by their line number"
)
SKIP_INVALID_HELP = (
    'write a bad input line as {"id", "line", "error"} (its own id if readable, else its line number) '
    "and go on, instead of stopping before any work"
)
ALLOWED_POLICIES_ENV = "GUARDRAIL_ALLOWED_POLICIES"
AUDIT_HELP = (
    "append every decision to this audit log: a SQLite database if the name ends in .db, .sqlite or "
    ".sqlite3 (as `guardrail audit` reads it), else JSONL"
)


def _count(text: str) -> int:
    """argparse type of a count: an integer, 0 or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="guardrail", description="Value-space guardrail for LLM responses.", epilog=EXIT_STATUSES
    )
    sub = parser.add_subparsers(dest="command", required=True)

    score = sub.add_parser("score", help="score text in value space (one text, or a JSONL file)")
    score.add_argument("text", nargs="?", help="the response to score")
    score.add_argument("--prompt", help="the prompt the response answers (used as context)")
    score.add_argument(
        "--precision",
        choices=["int8", "fp32"],
        default="int8",
        help="int8 (default): the quantized model, as the guard uses it; fp32: the full-precision weights",
    )
    score.add_argument("--input", help=INPUT_HELP)
    score.add_argument(
        "--output",
        help='JSONL file of {"id", "scores", "labels", "confidence", "model", ...} lines, in input order '
        "(default: standard output; never the --input file)",
    )
    score.add_argument("--skip-invalid", action="store_true", help=SKIP_INVALID_HELP)
    score.add_argument("--quiet", action="store_true", help="no progress bar")
    score.set_defaults(func=cmd_score)

    train = sub.add_parser("train", help="reproduce the shipped value heads from ../shared/data")
    train.add_argument("--data-dir", type=Path, help="folder holding fulcra/ and toxigen/ (default ../shared/data)")
    train.add_argument("--out", type=Path, help="where to write the weights (default: the package's model/ folder)")
    train.add_argument("--epochs", type=int)
    train.add_argument("--seed", type=int)
    train.add_argument(
        "--final-fit", action="store_true", help="after choosing epochs and thresholds on dev, retrain on train + dev"
    )
    _add_recipe_settings(train)
    train.set_defaults(func=cmd_train)

    cv = sub.add_parser(
        "cv", help="k-fold cross-validation of the training recipe on train + dev, fp32 and int8 (~40-80 min)"
    )
    cv.add_argument("--data-dir", type=Path, help="folder holding fulcra/ and toxigen/ (default ../shared/data)")
    cv.add_argument("--folds", type=int, help="number of folds (default 5)")
    cv.add_argument("--seed", type=int)
    cv.add_argument(
        "--out",
        type=Path,
        help="where to write the figures (JSON; the predictions go beside it as .npz; default "
        "benchmarks/results/crossval.json, or the --from-predictions file)",
    )
    cv.add_argument(
        "--from-predictions",
        type=Path,
        nargs="+",
        metavar="RUN.json",
        help="recompute a finished run's figures from its saved predictions (RUN.npz beside it), no training; "
        "several runs: score the average of their predictions (an ensemble; needs --out)",
    )
    cv.add_argument(
        "--train-fraction",
        type=float,
        help="train each fold on this fraction of its rows (a point of the learning curve; default 1)",
    )
    _add_recipe_settings(cv)
    cv.set_defaults(func=cmd_cv)

    evaluate = sub.add_parser("eval", help="measure quality on FULCRA-format data, model vs baselines")
    evaluate.add_argument("--data", required=True, help="FULCRA-format JSONL file")
    evaluate.add_argument(
        "--split",
        choices=["all", "train", "dev", "test"],
        default="all",
        help="keep only rows of one hash split (use 'test' on the shared training file)",
    )
    evaluate.add_argument(
        "--train-data",
        default="../shared/data/fulcra/train.jsonl",
        help="FULCRA file whose train split fits the TF-IDF baseline ('' to skip it)",
    )
    evaluate.add_argument("--json", help="also write the figures to this JSON file")
    evaluate.set_defaults(func=cmd_eval)

    check = sub.add_parser(
        "check",
        help="guard text with a policy and print the decision",
        description="Guard text with a policy and print the decision (exit 0 whatever the action). "
        "Every decision printed is the one recorded in --audit, and only those: an empty TEXT (or one of "
        "only invisible characters) is refused with exit 2 before the guard sees it, so nothing is recorded; "
        "a decision the guard makes in its fail mode (scoring failed) is printed and recorded like any other, "
        "with its error. Bad --input lines are refused the same way (or, with --skip-invalid, written as "
        "error lines and not recorded).",
    )
    check.add_argument("text", nargs="?", help="the response to check")
    check.add_argument("--prompt", help="the prompt the response answers")
    check.add_argument("--policy", help="preset name or policy file (default: $GUARDRAIL_POLICY or 'default')")
    check.add_argument("--input", help=INPUT_HELP)
    check.add_argument("--output", help="JSONL file of decisions (default: standard output; never the --input file)")
    check.add_argument("--audit", help=AUDIT_HELP)
    check.add_argument("--redact", action="store_true", help="audit only hashes of prompts and texts")
    check.add_argument("--deployment", default="default", help="deployment name recorded in the audit log")
    check.add_argument("--skip-invalid", action="store_true", help=SKIP_INVALID_HELP)
    check.add_argument("--json", action="store_true", help="one-line JSON output")
    check.set_defaults(func=cmd_check)

    policy = sub.add_parser("policy", help="validate, show and describe value policies")
    policy_sub = policy.add_subparsers(dest="policy_command", required=True)
    validate = policy_sub.add_parser("validate", help="check a policy file (or a preset, by name)")
    validate.add_argument("file", help="policy file (YAML), or a preset name such as 'default'")
    show = policy_sub.add_parser("show", help="print the resolved policy (after extends)")
    show.add_argument("name", help="preset name or file")
    policy_sub.add_parser("schema", help="print the JSON Schema of policy files")
    policy_sub.add_parser("list", help="list the shipped presets")
    policy.set_defaults(func=cmd_policy)

    audit = sub.add_parser("audit", help="verify, inspect and replay audit logs")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    verify = audit_sub.add_parser("verify", help="check the hash chain (exit 0 intact, 1 tampered, 3 torn tail)")
    verify.add_argument("path", help="JSONL log (rotated segments included) or SQLite database")
    verify.add_argument(
        "--head",
        metavar="HASH",
        help="a head hash an earlier verify printed: the log must still hold that record (a hash chain alone "
        "cannot tell that records were deleted from its end)",
    )
    verify.add_argument(
        "--expect-seq",
        metavar="N",
        type=int,
        help="the seq noted with --head (then that record must be at seq N); alone: the log must reach seq N",
    )
    tail = audit_sub.add_parser("tail", help="show the last records")
    tail.add_argument("path")
    tail.add_argument("-n", type=_count, default=10, help="how many of the last records to show (default 10; 0: none)")
    tail.add_argument("--follow", action="store_true", help="keep printing new records")
    stats = audit_sub.add_parser("stats", help="counts by action, violated value, policy, deployment and time")
    stats.add_argument("path")
    stats.add_argument("--window", choices=["hour", "day", "week"], default="day")
    replay = audit_sub.add_parser("replay", help="what another policy would have decided, without re-scoring")
    replay.add_argument("path")
    replay.add_argument("--policy", required=True, help="preset name or policy file")
    replay.add_argument("--examples", type=_count, default=5, help="changed decisions to show (default 5)")
    report = audit_sub.add_parser("report", help="write a self-contained HTML report")
    report.add_argument("path")
    report.add_argument(
        "--out", default="report.html", help="HTML file to write (default report.html; replaced if it exists)"
    )
    report.add_argument("--window", choices=["hour", "day", "week"], default="day")
    audit.set_defaults(func=cmd_audit)

    serve = sub.add_parser("serve", help="run an OpenAI-compatible proxy that guards an upstream LLM server")
    serve.add_argument("--upstream", required=True, help="upstream base URL, e.g. http://127.0.0.1:8000/v1")
    serve.add_argument("--policy", help="preset name or policy file (default: $GUARDRAIL_POLICY or 'default')")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the upstream")
    serve.add_argument("--audit", help=AUDIT_HELP)
    serve.add_argument("--redact", action="store_true", help="audit only hashes of prompts and texts")
    serve.add_argument("--deployment", default="proxy", help="deployment name recorded in the audit log")
    serve.add_argument(
        "--workers", type=int, default=1, help="server processes (uvicorn workers) sharing the audit log; default 1"
    )
    serve.add_argument(
        "--allow-policy",
        action="append",
        metavar="NAME",
        help="a policy (preset or file) a client may pick by name with the x-guardrail-policy header; repeatable "
        f"(default: ${ALLOWED_POLICIES_ENV}, comma-separated; without either, only --policy applies)",
    )
    serve.add_argument(
        "--metrics",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="serve Prometheus metrics on /metrics (default: on)",
    )
    serve.set_defaults(func=cmd_serve)

    demo = sub.add_parser("demo", help="run a guarded chat session with a small local LLM")
    demo.add_argument("--policy", help="preset name or policy file (default: $GUARDRAIL_POLICY or 'default')")
    demo.add_argument("--audit", default="runs/demo-audit.jsonl", help="audit log to append to")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `guardrail` console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except CliError as exc:
        print(f"guardrail {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    except BrokenPipeError:  # the reader went away (`guardrail policy show x | head -1`): not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit flush does not fail again
        return 0
    except (OSError, ValueError, sqlite3.Error) as exc:
        # Last resort for a file or data problem no command names itself (a folder given for a file,
        # a file that is not a SQLite database, bytes that are not UTF-8): one line, keeping the
        # exception's type and message so that a real bug is not disguised.
        print(f"guardrail {args.command}: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    except KeyboardInterrupt:
        print(f"guardrail {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        # A bug: show everything, and never exit 1 or 3, which `audit verify` gives their own meaning.
        traceback.print_exc()
        print(
            f"guardrail {args.command}: unexpected error: {type(exc).__name__}: {exc} (a bug; please report it "
            "with the traceback above)",
            file=sys.stderr,
        )
        return EXIT_UNEXPECTED


if __name__ == "__main__":
    sys.exit(main())
