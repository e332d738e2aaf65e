"""The one place the training side gets Keras from.

tensorflow-model-optimization works only with Keras 2 (the ``tf_keras`` package), while
TensorFlow >= 2.16 makes ``tf.keras`` mean Keras 3 unless ``TF_USE_LEGACY_KERAS=1`` is set
before TensorFlow is first imported. Importing tfmot sets it too, so what ``tf.keras`` means
would depend on import order; every training-side module imports Keras from here instead.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ banner is noise for CLI users

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

__all__ = ["tf", "keras", "is_keras3_file"]


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
