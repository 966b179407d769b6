"""Command-line entry point: argument parsing only.

Each package contributes its sub-commands through an ``add_commands(subparsers)``
function in its ``commands`` module; every sub-command sets ``func`` to a handler
``handler(args) -> int`` that calls into the library.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# Packages that contribute sub-commands, in the order they appear in ``--help``.
_COMMAND_MODULES = (
    "pansynth.data.commands",
    "pansynth.train.commands",
    "pansynth.eval.commands",
    "pansynth.serve.commands",
)


class UserError(Exception):
    """An error caused by the user's input: printed without a traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pansynth",
        description="Panoptic-based image synthesis: train, synthesize, evaluate.",
    )
    from pansynth import __version__

    parser.add_argument("--version", action="version", version=f"pansynth {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name != module_name:
                raise
            continue
        module.add_commands(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (UserError, FileNotFoundError, NotADirectoryError, FileExistsError, ValueError) as error:
        # Errors about the user's input read as one line, not a traceback
        # (PANSYNTH_DEBUG=1 shows the traceback, to report a bug).
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
