"""Console logging of the ``drcl`` loggers, shared by the CLI and the ``python -m`` entry
points below it (kept out of :mod:`drcl.cli` so that those do not import the CLI package)."""

from __future__ import annotations

import logging
import os
import sys


class _StdStream(logging.StreamHandler):
    """Writes to whatever ``sys.stdout`` / ``sys.stderr`` is at the time of each record (so
    output redirected after set-up, e.g. by pytest's capsys, still goes where it should)."""

    def __init__(self, name: str, max_level: int | None = None) -> None:
        super().__init__()
        self._name, self._max_level = name, max_level

    @property
    def stream(self):  # type: ignore[override]
        return getattr(sys, self._name)

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ assigns it; always follow sys
        pass

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (logging's name)
        # A closed stdout (`drcl ... | head`) must reach main(), which exits quietly; logging
        # would otherwise print "--- Logging error ---" and a traceback to stderr.
        if isinstance(sys.exc_info()[1], BrokenPipeError):
            raise
        super().handleError(record)

    def filter(self, record: logging.LogRecord) -> bool:
        if self._max_level is not None and record.levelno >= self._max_level:
            return False
        return super().filter(record)


def setup_logging(quiet: bool = False, verbose: bool = False) -> None:
    """Route the ``drcl`` loggers: INFO and DEBUG to stdout, warnings and errors to stderr, as
    bare messages. Only rank 0 (``RANK`` of torchrun) prints below ERROR.

    Handlers are replaced on each call, so repeated ``main()`` calls (tests) do not stack them.
    """
    rank = int(os.environ.get("RANK", "0"))
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    root = logging.getLogger("drcl")
    for handler in list(root.handlers):
        root.removeHandler(handler)
    err = _StdStream("stderr")
    err.setLevel(logging.WARNING)
    for handler in (_StdStream("stdout", max_level=logging.WARNING), err):
        handler.setFormatter(logging.Formatter("%(message)s"))
        root.addHandler(handler)
    root.setLevel(level if rank == 0 else logging.ERROR)
    root.propagate = True  # pytest caplog (and any root handler of an embedding app) sees it too
