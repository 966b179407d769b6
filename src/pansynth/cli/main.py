"""The ``pansynth`` command: one sub-command group per module of :mod:`pansynth.cli`.

Every module adds its sub-commands with ``add_commands(subparsers)``; each sub-command sets
``func``, a handler ``handler(args) -> int`` that parses nothing more and calls into the library.
"""

from __future__ import annotations

import argparse
import os
import sys

from pansynth import __version__
from pansynth.cli import data, evaluate, experiments, export, serve, train
from pansynth.errors import UserError
from pansynth.train import TrainingInterrupted

# In the order they appear in ``--help``.
COMMAND_GROUPS = (data, train, evaluate, experiments, serve, export)
# Errors in the user's input or environment: one line, no traceback (PANSYNTH_DEBUG=1 shows it).
USER_ERRORS = (UserError, FileNotFoundError, NotADirectoryError, FileExistsError, ValueError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pansynth",
        description="Panoptic-based image synthesis: train, synthesize, evaluate.",
    )
    parser.add_argument("--version", action="version", version=f"pansynth {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for group in COMMAND_GROUPS:
        group.add_commands(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except TrainingInterrupted as stop:
        print(f"pansynth {args.command}: {stop}", file=sys.stderr)
        return stop.exit_code
    except USER_ERRORS as error:
        if os.environ.get("PANSYNTH_DEBUG"):
            raise
        print(f"pansynth {args.command}: error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # Output piped into a command that stopped reading (e.g. `| head`): not an error.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print(f"pansynth {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
