"""The one place the training side gets Keras from.

tensorflow-model-optimization works only with Keras 2 (the ``tf_keras`` package), while
TensorFlow >= 2.16 makes ``tf.keras`` mean Keras 3 unless ``TF_USE_LEGACY_KERAS=1`` is set
before TensorFlow is first imported. Importing tfmot sets it too, so what ``tf.keras`` means
would depend on import order; every training-side module imports Keras from here instead.
"""

from __future__ import annotations

import os

from edgeface_runtime.commandline import native_log_captured

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ banner is noise for CLI users
# TensorFlow turns its oneDNN kernels on only for CPUs with AVX-512 VNNI/BF16 or AMX; on AVX2-only
# CPUs (this project's 2-core build machine, most laptops and small servers) they halve a MobileNet
# training step (305 -> 150 ms per batch of 64 here) and stop glibc's page faults. "0" opts out.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

with native_log_captured():  # in a command without -v: TensorFlow's import banner, written before absl is set up
    import tensorflow as tf  # noqa: E402
    import tf_keras as keras  # noqa: E402

__all__ = ["tf", "keras", "is_keras3_file", "tune_allocator_for_training"]


def is_keras3_file(path: str | os.PathLike) -> bool:
    """True when a ``.keras`` archive was written by Keras 3 (which tf-keras/tfmot cannot load)."""
    import json
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            meta = json.loads(archive.read("metadata.json"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return False
    return str(meta.get("keras_version", "")).startswith("3.")


_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3  # glibc's mallopt() parameters
_allocator_tuned = False


def tune_allocator_for_training() -> bool:
    """Make glibc keep freed memory instead of returning it to the OS after every step.

    TensorFlow frees and reallocates multi-megabyte tensors every training step; with glibc's
    default thresholds each one is a fresh ``mmap`` whose pages fault in again. On the 2-core
    development machine that was a third of the wall time of a MobileNet fine-tuning step
    (0.46 → 0.28 s per batch of 64). Costs some retained memory; ``EDGEFACE_TUNE_MALLOC=0``
    turns it off. Returns whether the settings were applied (glibc only).
    """
    global _allocator_tuned
    if _allocator_tuned or os.environ.get("EDGEFACE_TUNE_MALLOC", "1") == "0":
        return _allocator_tuned
    import ctypes
    import ctypes.util
    import logging

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to tune
        return False
    ok = all(mallopt(param, value) == 1 for param, value in ((_M_MMAP_THRESHOLD, 32 << 20),
                                                            (_M_TRIM_THRESHOLD, 1 << 30),
                                                            (_M_TOP_PAD, 256 << 20)))
    logging.getLogger(__name__).debug("glibc allocator tuned for training: %s", ok)
    _allocator_tuned = ok
    return ok
