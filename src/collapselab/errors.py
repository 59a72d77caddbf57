"""Errors a user can act on. The CLI prints their message (no traceback unless ``--debug``)."""

from __future__ import annotations


class CollapselabError(Exception):
    """Base class: a problem with the user's input, explained in the message."""


class ConfigError(CollapselabError, ValueError):
    """One or more config fields are invalid; ``problems`` lists each as ``field: rule; got value``."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid config ({len(problems)} problem{'s' * (len(problems) > 1)}):\n{lines}")


class DataError(CollapselabError, ValueError):
    """Input data (a file, a folder, an array) is unusable; the message names it."""


class RunError(CollapselabError, RuntimeError):
    """A run directory cannot be used as asked (locked, finished, config changed)."""


class NumericalError(ArithmeticError):
    """A fit or a sample failed numerically (a singular covariance, a diverged loss, non-finite
    samples): the generation is *degenerate*, a result of the experiment, not an input problem.
    Components raise it (or ``FloatingPointError`` / ``numpy.linalg.LinAlgError``) for exactly
    that; anything the user gave them that is unusable is a ``ConfigError`` or ``DataError``."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a run; the message says what was kept and where."""
