"""Error types the command line reports as one line (``drcl CMD: error: ...``) plus a hint.

``main()`` prints a :class:`UserError` (and the built-in types that mean bad input: ValueError,
OSError, ...) without a traceback and exits 1. Anything else is a bug in drcl: it is reported
as an internal error, with the traceback behind ``-v`` and in a log file.
"""

from __future__ import annotations


class UserError(Exception):
    """Something the user can fix: bad input, a reused folder, a full disk.

    Args:
        message: one line naming the file, record or key at fault.
        hint: what to do about it (printed on a second, indented line), or None.
    """

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.hint = hint


class RunFolderError(UserError, ValueError):
    """A ``--work-dir`` that holds another run, or a ``--resume`` that would change it."""


class OutputOverInputError(UserError, ValueError):
    """An output path that is one of the command's inputs (same file, link or hard link)."""


class DiskFullError(UserError, OSError):
    """A write that failed for lack of space (ENOSPC); the message names the path."""


class NoBatchError(UserError, RuntimeError):
    """The training data gave no batch: an empty dataset, or every image skipped."""
