"""edgeface: transfer-learned face verification for Raspberry-Pi-class devices (training side).

Importing ``edgeface`` loads nothing heavy; TensorFlow is imported by the first function
that needs it. Public modules: :mod:`edgeface.backbones`, :mod:`edgeface.heads`,
:mod:`edgeface.data`, :mod:`edgeface.training`, :mod:`edgeface.evaluation`,
:mod:`edgeface.layers`; the most used names are re-exported here.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "TrainConfig": "edgeface.training",
    "TrainResult": "edgeface.training",
    "train": "edgeface.training",
    "load_model": "edgeface.training",
    "save_model": "edgeface.training",
    "evaluate": "edgeface.evaluation",
    "create_backbone": "edgeface.backbones",
    "list_backbones": "edgeface.backbones",
    "register_backbone": "edgeface.backbones",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'edgeface' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
