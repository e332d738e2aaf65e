"""edgeface_converters: a trained ``model.keras`` → checked ``.tflite`` variants for devices.

>>> from edgeface_converters import convert, format_table, VARIANTS
>>> manifest = convert("runs/demo/model.keras", "runs/demo/variants", variants="all",
...                    calibration="faces/crops", data="faces/train", calibration_pairs="lfw/pairs.txt")
>>> print(format_table(manifest))

The options are one dataclass, :class:`ConvertOptions` (the same keywords, also read from a TOML
file with :meth:`ConvertOptions.from_toml`): ``convert(model, options=ConvertOptions(...))``.

One table, :data:`VARIANTS`, names every variant (float32, float16, dynamic, int8, and the
tfmot recipes pruned-/clustered-/qat-int8 and their combinations). Every file written has
loaded in the runtime's interpreter, uses only operators the ``target`` interpreter has
(default: tflite-runtime 2.14, the oldest supported), agrees with the Keras model on
held-out face crops (mean cosine >= 0.98) and carries the runtime's metadata; anything
else is recorded in ``manifest.json`` as failed or skipped, with the reason.

Importing this package loads no TensorFlow; :func:`convert` does.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._data import FineTuneData
from ._manifest import Manifest, VariantResult, format_table, read_manifest
from ._model import kernel_sparsity
from ._options import ConvertOptions
from ._variants import DEFAULT_TARGET, TARGETS, VARIANTS, Target, Variant, parse_variants, variants_markdown

__all__ = [
    "ConvertOptions",
    "DEFAULT_TARGET",
    "FineTuneData",
    "Manifest",
    "TARGETS",
    "Target",
    "VARIANTS",
    "Variant",
    "VariantResult",
    "convert",
    "format_table",
    "kernel_sparsity",
    "parse_variants",
    "read_manifest",
    "variants_markdown",
]

_LAZY = {"convert": "._convert"}

if TYPE_CHECKING:  # what type checkers see; at run time __getattr__ imports it (and TensorFlow) on first use
    from ._convert import convert as convert


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
