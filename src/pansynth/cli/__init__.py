"""The command line: :mod:`pansynth.cli.main` builds the parser from one module per command group
(:mod:`~pansynth.cli.data`, :mod:`~pansynth.cli.train`, :mod:`~pansynth.cli.evaluate`,
:mod:`~pansynth.cli.experiments`, :mod:`~pansynth.cli.serve`), each nothing but argument parsing
and calls into the library."""

from pansynth.cli.main import main

__all__ = ["main"]
