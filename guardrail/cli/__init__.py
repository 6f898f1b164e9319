"""The `guardrail` command line.

Commands: ``score`` (one text or a JSONL file), ``check`` (guard text with a policy, optionally
auditing), ``policy validate|show|schema|list``, ``audit verify|tail|stats|replay|report``,
``serve`` (the OpenAI-compatible proxy), ``demo``, ``train``, ``cv``, ``eval`` and
``batch score|profile|rescore`` (large corpora, locally or on Ray).

Every command calls the library's public pipeline; nothing here reaches around it. Errors in
user input (a bad line, a file that cannot be read or written) exit with status 2 and one line
that names the problem; they never show a traceback. Exit statuses (also in ``--help``): 0 done,
1 and 3 only from ``audit verify`` (tampered, torn tail), 2 bad input, 4 an unexpected error
(printed with its traceback, as it is a bug to report), 130 interrupted.

One module per command group: ``score``, ``check``, ``training`` (train, cv, eval), ``policy``,
``audit``, ``serve`` (serve, demo), ``batch``; what they share (reading input lines, opening outputs,
``--policy`` and ``--audit``, ``CliError``) is in ``io``. Each group's module has a
``register(commands)`` that adds its subcommands; adding a group is one new module and its line
in ``COMMANDS``. This module builds the top level and runs a command, turning its errors into
the exit statuses above.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import traceback
from collections.abc import Sequence
from typing import Protocol

from guardrail.cli import audit, batch, check, policy, score, serve, training
from guardrail.cli.io import CliError


class CommandGroup(Protocol):
    """A module of commands: ``register`` adds them to the command line."""

    def register(self, commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None: ...


COMMANDS: tuple[CommandGroup, ...] = (score, training, check, policy, audit, serve, batch)
"""The modules of the command groups, in the order ``--help`` lists their commands: each one's
``register(commands)`` adds its subcommands, each with ``func`` set to the function that runs it."""

EXIT_INPUT_ERROR = 2
EXIT_UNEXPECTED = 4
EXIT_INTERRUPTED = 130
EXIT_STATUSES = (
    "exit status: 0 done; 2 bad input (a bad option, line or policy, a file that cannot be read or written); "
    "1 tampered and 3 torn tail, only from 'audit verify'; 4 an unexpected error (a bug: its traceback is "
    "printed, please report it); 130 interrupted ('serve' stops cleanly on Ctrl-C or SIGTERM and exits 0)"
)


def build_parser() -> argparse.ArgumentParser:
    """The parser of the whole command line: the top level here, each command group's from its module."""
    parser = argparse.ArgumentParser(
        prog="guardrail", description="Value-space guardrail for LLM responses.", epilog=EXIT_STATUSES
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for group in COMMANDS:
        group.register(commands)
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


__all__ = ["COMMANDS", "CliError", "CommandGroup", "build_parser", "main"]
