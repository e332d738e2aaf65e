"""Run training commands under tcmalloc when the system has it.

Under glibc's malloc, TensorFlow's CPU training steps map and unmap multi-megabyte buffers every
step, and their pages fault in again each time (30-50 thousand minor faults per MobileNet step on
the development machine, even with ``tune_allocator_for_training``'s thresholds). tcmalloc keeps
those pages and saves the kernel's time (103-191 → 16-18 ms of CPU per MobileNet step on the 2-core
development VM). Wall time there is noisy: medians of alternating runs 412 → 353 ms per step, a
full 57-epoch run no faster than the same recipe's epochs an hour earlier without it. An
allocator can only be chosen before the process starts, so a training command started from the
shell re-executes itself once with ``LD_PRELOAD`` (as Intel's ``ipexrun`` does). Opt out with
``EDGEFACE_TCMALLOC=0``; install with ``apt install libtcmalloc-minimal4`` (Debian/Ubuntu).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Sequence

logger = logging.getLogger(__name__)

_CANDIDATES = ("tcmalloc_minimal", "tcmalloc")
_ENV_SWITCH = "EDGEFACE_TCMALLOC"


def find_tcmalloc() -> str | None:
    """The shared-library name of an installed tcmalloc (loader-resolvable), or None."""
    import ctypes.util

    for name in _CANDIDATES:
        found = ctypes.util.find_library(name)
        if found:
            return found
    return None


def started_from_shell(command: str, argv: Sequence[str]) -> bool:
    """True when this process is ``edgeface COMMAND ARGV...`` itself, not a library or test call."""
    script = sys.argv[0] if sys.argv else ""
    return (os.path.basename(script) == "edgeface" and os.path.isfile(script)
            and list(sys.argv[1:]) == [command, *argv])


def relaunch_with_tcmalloc(command: str, argv: Sequence[str]) -> None:
    """Re-execute ``edgeface COMMAND ARGV`` with tcmalloc preloaded, when that is possible and wanted.

    Returns (doing nothing) when: ``EDGEFACE_TCMALLOC=0``; tcmalloc is already preloaded; not on
    Linux; the process was not started as the ``edgeface`` command with exactly these arguments
    (so tests and Python callers are never replaced); or no tcmalloc is installed.
    """
    if os.environ.get(_ENV_SWITCH, "1") == "0" or not sys.platform.startswith("linux"):
        return
    preload = os.environ.get("LD_PRELOAD", "")
    if "tcmalloc" in preload or not started_from_shell(command, argv):
        return
    library = find_tcmalloc()
    if library is None:
        logger.debug("tcmalloc not found; training with the system allocator "
                     "(apt install libtcmalloc-minimal4 saves the kernel's page-fault time)")
        return
    env = dict(os.environ, LD_PRELOAD=f"{library}:{preload}" if preload else library)
    env[_ENV_SWITCH] = "0"  # the relaunched process must not try again
    # tcmalloc writes a line to stderr for every allocation over 1 GiB; big backbones make such tensors.
    env.setdefault("TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD", str(64 << 30))
    logger.debug("relaunching with %s preloaded", library)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, [sys.executable, sys.argv[0], *sys.argv[1:]], env)
    except OSError as exc:  # e.g. a read-only or vanished interpreter: train as we are
        logger.debug("could not relaunch with tcmalloc: %s", exc)
