"""The models that ship inside the edgeface-runtime package, so a device works offline after
``pip install``: the default embedding model and the short-range BlazeFace detector.

Their licences are in ``models/NOTICE.md`` beside them. Each file is checked against its pinned
sha256 the first time it is asked for, so a damaged install is an error, not wrong answers.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ._errors import ModelError
from .registry import Registry

MODELS_DIR = Path(__file__).resolve().parent / "models"



@dataclass(frozen=True)
class BundledFile:
    """A file in MODELS_DIR and its pinned sha256."""

    name: str
    filename: str
    sha256: str


# The embedding model's provenance, licence and measured accuracy are in its own metadata
# (`edgeface inspect` shows them) and in models/NOTICE.md.
DEFAULT_MODEL = "edgeface_sface.tflite"
BUNDLED: Registry[BundledFile] = Registry("bundled file", [
    BundledFile("default-model", DEFAULT_MODEL, "3f3e12a78127ea790b379a3e94b1d0bfc66547ed86cc30f9c31bc253ca3d71ea"),
    BundledFile("detector-short", "face_detection_short_range.tflite",
                "3bc182eb9f33925d9e58b5c8d59308a760f4adea8f282370e428c51212c26633"),
])
_checked: dict[str, Path] = {}


def bundled_path(name: str) -> Optional[Path]:
    """The verified path of bundled file ``name`` (a key of ``BUNDLED``), or None when this
    installation does not carry it (a slimmed-down package).

    Raises :class:`ModelError` when the file is there but its sha256 is not the pinned one."""
    entry = BUNDLED[name]  # an unknown name: a ValueError naming the closest and the choices
    if name in _checked:
        return _checked[name]
    filename, sha256 = entry.filename, entry.sha256
    path = MODELS_DIR / filename
    if not path.is_file():
        return None
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != sha256:
        raise ModelError(f"the bundled {filename} is damaged (sha256 {digest[:12]}…, expected {sha256[:12]}…); "
                         "reinstall edgeface-runtime")
    _checked[name] = path
    return path


def bundled_detector(variant: str) -> Optional[Path]:
    """The verified bundled BlazeFace file for ``variant``, or None (only "short" ships)."""
    name = f"detector-{variant}"
    return bundled_path(name) if name in BUNDLED else None


def default_model_path() -> Path:
    """The default embedding model that ships with the package (see ``models/NOTICE.md``)."""
    path = bundled_path("default-model")
    if path is None:
        raise ModelError(f"this installation of edgeface-runtime carries no default model ({MODELS_DIR / DEFAULT_MODEL}"
                         " is missing); pass a model explicitly (-m model.tflite) or reinstall edgeface-runtime")
    return path
