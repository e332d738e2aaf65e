"""``model.keras`` with edgeface metadata inside: save, load, and update the metadata.

The metadata travels as an extra zip member, ``edgeface.json`` (``ModelMetadata.to_dict()``
without a fingerprint: that is the ``.tflite``'s sha256, stamped by ``write_metadata`` at
conversion), which Keras ignores when loading. Every write goes to a temporary name in the
destination folder and is renamed into place, so a failure never leaves a partial file.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from edgeface_runtime.metadata import METADATA_MEMBER, ModelMetadata


def _tmp_name(destination: Path, suffix: str) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{destination.stem}-", suffix=suffix, dir=destination.parent)
    os.close(fd)
    # mkstemp creates 0600; a model file is shared like any other output (honour the umask).
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    return Path(tmp)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename."""
    destination = Path(path)
    tmp = _tmp_name(destination, ".tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, destination)
    finally:
        if tmp.exists():
            tmp.unlink()
    return destination


def save_model(model: Any, path: str | os.PathLike, metadata: ModelMetadata | None = None) -> Path:
    """Save an embedding model as ``.keras`` (atomically) with ``metadata`` as ``edgeface.json``."""
    destination = Path(path)
    if destination.suffix != ".keras":
        raise ValueError(f"edgeface saves models in the .keras format; got {str(path)!r} (use a name ending in .keras)")
    destination.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(destination, ".keras")  # Keras insists on the .keras suffix
    try:
        model.save(tmp, overwrite=True)
        if metadata is not None:
            with zipfile.ZipFile(tmp, "a", compression=zipfile.ZIP_DEFLATED) as archive:
                archive.writestr(METADATA_MEMBER, _metadata_json(metadata))
        os.replace(tmp, destination)
    finally:
        if tmp.exists():
            tmp.unlink()
    return destination


def _metadata_json(metadata: ModelMetadata) -> str:
    record = replace(metadata, fingerprint="").to_dict()
    return json.dumps(record, indent=1, sort_keys=True)


def _check_keras_file(path: str | os.PathLike) -> Path:
    from ._keras import is_keras3_file

    file = Path(path)
    if not file.is_file():
        raise ValueError(f"model file not found: {str(path)!r}")
    if file.suffix == ".tflite":
        raise ValueError(f"{file} is a TFLite model; load it with edgeface_runtime.Embedder.from_path")
    if not zipfile.is_zipfile(file):
        raise ValueError(f"{file} is not a .keras model (not a zip archive); edgeface models are saved by "
                         "`edgeface train`")
    if is_keras3_file(file):
        raise ValueError(
            f"{file} was saved by Keras 3, which the training side (tf-keras, for tensorflow-model-optimization) "
            "cannot load; re-save it from tf_keras (`TF_USE_LEGACY_KERAS=1`, `import tf_keras`) or retrain with "
            "`edgeface train`"
        )
    return file


def read_keras_metadata(path: str | os.PathLike) -> ModelMetadata | None:
    """The ``edgeface.json`` of a ``.keras`` file, or None when it carries none."""
    file = _check_keras_file(path)
    with zipfile.ZipFile(file) as archive:
        if METADATA_MEMBER not in archive.namelist():
            return None
        return ModelMetadata.from_dict(json.loads(archive.read(METADATA_MEMBER)))


def write_keras_metadata(path: str | os.PathLike, metadata: ModelMetadata) -> None:
    """Replace the ``edgeface.json`` of a ``.keras`` file (rewritten atomically)."""
    file = _check_keras_file(path)
    tmp = _tmp_name(file, ".keras")
    try:
        with zipfile.ZipFile(file) as src, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as dst:
            for info in src.infolist():
                if info.filename != METADATA_MEMBER:
                    dst.writestr(info, src.read(info.filename))
            dst.writestr(METADATA_MEMBER, _metadata_json(metadata))
        os.replace(tmp, file)
    finally:
        if tmp.exists():
            tmp.unlink()


def load_model(path: str | os.PathLike) -> tuple[Any, ModelMetadata | None]:
    """Load ``model.keras`` and its edgeface metadata (None for a plain Keras file).

    Registers edgeface's custom layers first, so a fresh process can load the file.
    """
    file = _check_keras_file(path)
    from . import _heads, layers  # noqa: F401  (registers the custom layers)
    from ._keras import keras

    metadata = read_keras_metadata(file)
    try:
        model = keras.models.load_model(file, compile=False)
    except (ValueError, TypeError, KeyError, OSError) as exc:
        raise ValueError(f"could not load {file} as a Keras model: "
                         f"{str(exc).splitlines()[0] if str(exc) else exc!r}") from exc
    return model, metadata
