"""The error type of problems with the user's input or environment (reported as one line, no traceback)."""

from __future__ import annotations

import yaml

__all__ = ["UserError", "yaml_error_line"]


class UserError(Exception):
    """Something the user can fix (a busy run directory, a bad option...): the command line prints it as one
    line. Errors in input values also arrive as ``ValueError`` / ``FileNotFoundError``, treated the same way."""


def yaml_error_line(error: yaml.YAMLError) -> str:
    """PyYAML's several-line message as one line: the problem and where (``... at line 3, column 7``)."""
    problem = getattr(error, "problem", None) or getattr(error, "context", None)
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    if problem is None:
        return " ".join(str(error).split())
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{problem}{where}"
