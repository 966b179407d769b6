"""The error type of problems with the user's input or environment (reported as one line, no traceback)."""

from __future__ import annotations

__all__ = ["UserError"]


class UserError(Exception):
    """Something the user can fix (a busy run directory, a bad option...): the command line prints it as one
    line. Errors in input values also arrive as ``ValueError`` / ``FileNotFoundError``, treated the same way."""
