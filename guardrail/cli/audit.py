"""`guardrail audit verify|tail|stats|replay|report|import`: read audit logs on any store.

A log is a JSONL file, a SQLite database or a ``postgresql://`` URL (``guardrail.audit.open_store``;
default: ``$GUARDRAIL_AUDIT_URL``). Each subcommand calls one function of ``guardrail.audit``
(``report``: ``guardrail.report``); a path that is not an audit log, a database that cannot be
read, or a line in it that is no record, is a ``CliError`` naming it. ``verify`` alone has exit
statuses of its own: 1 tampered, 3 torn tail.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
from pathlib import Path

from guardrail.cli.io import CliError, audit_target, check_target, load_policy_or_fail

LOG_HELP = (
    "the audit log: a JSONL file (rotated segments included), a SQLite database, or "
    "postgresql://USER@HOST/DB?log=NAME (password from PGPASSWORD or ~/.pgpass); default: $GUARDRAIL_AUDIT_URL"
)


def cmd_audit(args: argparse.Namespace) -> int:
    from guardrail import audit

    path = audit_target(args.path)
    if path is None:
        raise CliError("give the audit log (a path or a postgresql:// URL), or set $GUARDRAIL_AUDIT_URL")
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
            policy = load_policy_or_fail(args.policy)
            print(json.dumps(audit.replay(path, policy, examples=args.examples), indent=2))
            return 0
        if args.audit_command == "report":
            from guardrail.report import build_report

            check_target("--out", args.out, ("the audit log", path))
            page = build_report(path, args.window)
            try:
                Path(args.out).write_text(page, encoding="utf-8")
            except OSError as exc:
                raise CliError(f"cannot write {args.out}: {exc.strerror}") from None
            print(f"wrote {args.out}")
            return 0
        if args.audit_command == "import":
            with audit.open_store(args.into) as into:
                count = audit.import_records(path, into)
            print(f"imported {count} record(s) from {path} into {into.name}; archive {path} now")
            return 0
    except audit.AuditLogError as exc:  # not an audit log, or a line in it is no record: names file and line
        raise CliError(str(exc)) from None
    except KeyboardInterrupt:
        return 0
    except sqlite3.Error as exc:  # a .db/.sqlite/.sqlite3 name is read as SQLite (audit.is_sqlite)
        raise CliError(f"{path}: cannot read it as a SQLite audit log ({exc})") from None
    raise CliError(f"unknown audit command {args.audit_command}")


def _count(text: str) -> int:
    """argparse type of a count: an integer, 0 or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `guardrail audit` and its subcommands."""
    audit = commands.add_parser("audit", help="verify, inspect and replay audit logs")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    verify = audit_sub.add_parser("verify", help="check the hash chain (exit 0 intact, 1 tampered, 3 torn tail)")
    verify.add_argument("path", nargs="?", help=LOG_HELP)
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
    tail.add_argument("path", nargs="?", help=LOG_HELP)
    tail.add_argument("-n", type=_count, default=10, help="how many of the last records to show (default 10; 0: none)")
    tail.add_argument("--follow", action="store_true", help="keep printing new records")
    stats = audit_sub.add_parser("stats", help="counts by action, violated value, policy, deployment and time")
    stats.add_argument("path", nargs="?", help=LOG_HELP)
    stats.add_argument("--window", choices=["hour", "day", "week"], default="day")
    replay = audit_sub.add_parser("replay", help="what another policy would have decided, without re-scoring")
    replay.add_argument("path", nargs="?", help=LOG_HELP)
    replay.add_argument("--policy", required=True, help="preset name or policy file")
    replay.add_argument("--examples", type=_count, default=5, help="changed decisions to show (default 5)")
    report = audit_sub.add_parser("report", help="write a self-contained HTML report")
    report.add_argument("path", nargs="?", help=LOG_HELP)
    report.add_argument(
        "--out", default="report.html", help="HTML file to write (default report.html; replaced if it exists)"
    )
    report.add_argument("--window", choices=["hour", "day", "week"], default="day")
    imported = audit_sub.add_parser(
        "import", help="append the records of a fallback log (kept while a database was down) to a store"
    )
    imported.add_argument("path", help="the fallback log (JSONL) to import")
    imported.add_argument("--into", required=True, help="the store to append to, e.g. postgresql://USER@HOST/DB")
    audit.set_defaults(func=cmd_audit)
