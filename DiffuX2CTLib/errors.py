"""Exception types shared by the whole package.

Every error caused by bad input names the offending file and the problem in one line, so a
command-line tool can print ``str(error)`` and exit non-zero, and the Slicer module can show it
in a message box unchanged.
"""

from __future__ import annotations

import os


class DiffuX2CTError(Exception):
    """Base class of all errors raised on purpose by DiffuX2CTLib."""


class InputError(DiffuX2CTError, ValueError):
    """A file or value given by the user cannot be used.

    Args:
        path: the file or folder at fault (``None`` for a value that is not a file).
        problem: what is wrong with it, as a short phrase without a trailing full stop.
    """

    def __init__(self, path: str | os.PathLike | None, problem: str) -> None:
        self.path = None if path is None else os.fspath(path)
        self.problem = problem
        message = problem if self.path is None else f"{self.path}: {problem}"
        super().__init__(message.replace("\n", " "))


class CheckpointError(InputError):
    """A model checkpoint is missing, corrupted, tampered with or incompatible."""


class CancelledError(DiffuX2CTError):
    """A long-running job was cancelled by the user; nothing was written."""


def error_line(exc: BaseException) -> str:
    """The first line of ``str(exc)``, or the exception's type name when it has no message: what
    a command-line tool prints after ``error:``."""
    text = str(exc)
    return text.splitlines()[0] if text else type(exc).__name__
