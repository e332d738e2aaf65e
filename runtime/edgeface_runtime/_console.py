"""Log lines for the command line, shared by every `edgeface` command (runtime and training side)."""

from __future__ import annotations

import logging
import sys


class _CurrentStderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of each record.

    A plain StreamHandler keeps the stream it was created with; when a command runs twice in
    one process (tests, notebooks, an embedding application swapping stderr) that stream may
    be closed by then, and every later log line becomes a "Logging error" traceback.
    """

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ assigns it; the property ignores that
        pass


def console_logging(name: str, level: int, *, defer_to_root: bool = False) -> logging.Logger:
    """Give logger ``name`` a plain-message handler on the current stderr (once), at ``level``.

    ``propagate`` is turned off: TensorFlow (absl) adds a root handler on import, which would
    print every line twice. ``defer_to_root``: add nothing when the root logger already has
    handlers (an application or test harness that configured logging itself).
    """
    logger = logging.getLogger(name)
    if not logger.handlers and not (defer_to_root and logging.getLogger().handlers):
        handler = _CurrentStderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(level)
    return logger
