"""The command-line convention every ``edgeface`` command follows, written down once.

Both halves use this module: the device commands (argparse, :mod:`edgeface_runtime.cli`) and
the training commands (typer, ``edgeface.cli``), so a rule changes in one place.

The convention
--------------
- **Naming a model.** A command *about* a model takes it as its first argument (``inspect``,
  ``evaluate``, ``convert``, ``adapt``; ``report`` takes models or folders). A command about
  photos takes it as ``--model/-m`` (``verify``, ``enroll``, ``identify``, ``calibrate``,
  ``bench``; default: the model bundled with the runtime). Every command that takes a model
  accepts ``--model/-m``, so ``-m`` never fails.
- **Output.** Results go to stdout as text; ``--json`` is a switch that prints them as JSON
  instead. A file or folder the command writes is ``--out/-o`` (never ``--json PATH``).
- **Verbosity.** By default a command prints its results, warnings and errors. ``-v/--verbose``
  adds progress lines and TensorFlow's own log lines; ``-q/--quiet`` leaves results and errors.
- **Errors.** One line on stderr, ``error: ...``, and an exit code from :data:`EXIT_CODES`,
  the same table for every command.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from dataclasses import dataclass
from typing import Iterator, Optional, Sequence

from . import _errors

__all__ = ["EXIT_CODES", "ExitCode", "console_logging", "error_line", "exit_code", "exit_code_for",
           "exit_codes_text", "log_level", "native_log_captured", "quiet_native_logs", "wants_verbose"]

# "0": a command asked for quiet native libraries (see native_log_captured); unset or "1": leave them be.
NATIVE_LOG_ENV = "EDGEFACE_NATIVE_LOG"


@dataclass(frozen=True)
class ExitCode:
    code: int
    name: str
    meaning: str


# The one exit-code table. Checked in order by exit_code_for: the first matching class wins,
# so the specific edgeface errors come before the builtins they derive from.
EXIT_CODES: tuple[ExitCode, ...] = (
    ExitCode(0, "ok", "done; verify: same person; identify: someone matched"),
    ExitCode(1, "negative", "verify: different people; identify: nobody matched; convert: a variant failed its checks"),
    ExitCode(2, "usage", "bad input or usage: an option, a missing file, data that cannot be used"),
    ExitCode(3, "image", "an image cannot be decoded (or is too large)"),
    ExitCode(4, "no_face", "no face found in an image that needs one"),
    ExitCode(5, "model", "a model file is missing, corrupt or not an edgeface embedding model"),
    ExitCode(6, "engine", "the interpreter or TensorFlow failed, or lacks an operator the model uses"),
    ExitCode(7, "missing_package", "an optional package is not installed (the message gives the pip command)"),
    ExitCode(8, "gallery", "a gallery file is corrupt, locked, or enrolled with another model"),
    ExitCode(9, "download", "a download failed or its checksum did not match"),
    ExitCode(10, "worker_lost", "multi-worker training lost a worker; restart every worker with --resume"),
    ExitCode(130, "interrupted", "stopped with Ctrl-C"),
)
_CODE = {e.name: e.code for e in EXIT_CODES}
_BY_CLASS: tuple[tuple[type[BaseException], str], ...] = (
    (_errors.ImageDecodeError, "image"),
    (_errors.NoFaceError, "no_face"),
    (_errors.ModelError, "model"),
    (_errors.UnsupportedOpError, "engine"),
    (_errors.InterpreterError, "engine"),
    (_errors.InterpreterNotFoundError, "missing_package"),
    (_errors.GalleryError, "gallery"),
    (_errors.DownloadError, "download"),
    (KeyboardInterrupt, "interrupted"),
    (ImportError, "missing_package"),
    (ValueError, "usage"),
    (LookupError, "usage"),
    (OSError, "usage"),  # FileNotFoundError, PermissionError, IsADirectoryError: the path given is wrong
    (RuntimeError, "engine"),
)


def exit_code(name: str) -> int:
    """The code of row ``name`` of :data:`EXIT_CODES` (e.g. ``"usage"`` → 2)."""
    return _CODE[name]


def exit_code_for(exc: BaseException) -> Optional[int]:
    """The exit code for an error a command reports as one line; None for a bug (let it raise).

    An exception class of a package above the runtime names its row with ``exit_code_name``."""
    named = getattr(type(exc), "exit_code_name", None)
    if named in _CODE:
        return _CODE[named]
    for cls, name in _BY_CLASS:
        if isinstance(exc, cls):
            return _CODE[name]
    return None


def error_line(exc: BaseException) -> str:
    """``error: <message>`` on one line (multi-line messages are joined)."""
    text = str(exc)
    if isinstance(exc, KeyboardInterrupt):
        text = "interrupted"
    message = " ".join(line.strip() for line in text.splitlines() if line.strip()) or type(exc).__name__
    return f"error: {message}"


def exit_codes_text() -> str:
    """The table as lines for ``--help`` epilogues and docs."""
    return "\n".join(f"{e.code:>3}  {e.meaning}" for e in EXIT_CODES)


def log_level(verbose: bool = False, quiet: bool = False) -> int:
    """The logging level of ``-v/--verbose`` (INFO), ``-q/--quiet`` (ERROR) or neither (WARNING)."""
    if verbose and quiet:
        raise ValueError("--verbose and --quiet contradict each other; give one")
    return logging.INFO if verbose else logging.ERROR if quiet else logging.WARNING


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


def quiet_native_logs(verbose: bool) -> None:
    """Silence TensorFlow's and the interpreter's own log lines for a command unless ``verbose``.

    Imports nothing; call it first, before TensorFlow is imported: its C++ side reads
    ``TF_CPP_MIN_LOG_LEVEL`` once (3 also hides the ``cuInit`` error a CUDA build logs on a
    machine without a GPU). The banner TensorFlow prints while importing, and LiteRT's
    "Created TensorFlow Lite XNNPACK delegate" line, come before any setting is read: those
    calls run inside :func:`native_log_captured`, which ``EDGEFACE_NATIVE_LOG=0`` turns on.
    Levels the user set in the environment are kept.
    """
    if verbose:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
        os.environ[NATIVE_LOG_ENV] = "1"
    else:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        os.environ.setdefault(NATIVE_LOG_ENV, "0")
    for name in ("tensorflow", "absl", "tensorflow_model_optimization"):
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.ERROR)


@contextlib.contextmanager
def native_log_captured() -> Iterator[None]:
    """Hold what native code writes to file descriptor 2 inside the block; show it only on failure.

    Active only when a command asked for it (``EDGEFACE_NATIVE_LOG=0``, set by
    :func:`quiet_native_logs`): an application embedding the library keeps its stderr
    untouched, since redirecting a process-wide descriptor would also swallow its other
    threads' lines for that moment. On an exception the held lines are written out, so a
    native error message is never lost.
    """
    if os.environ.get(NATIVE_LOG_ENV) != "0":
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable descriptor 2 (an embedded interpreter): nothing to hold
        yield
        return
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        failed = True
        try:
            yield
            failed = False
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            if failed:
                held.seek(0)
                os.write(2, held.read())


def wants_verbose(argv: Sequence[str]) -> bool:
    """Whether ``argv`` asks for ``-v``/``--verbose`` (read before any parser exists, to set up logging)."""
    return any(a in ("-v", "--verbose") for a in argv)
