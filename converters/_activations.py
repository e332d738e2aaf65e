"""PReLU → LeakyReLU: the full-int8 fast path for models whose activations lack an int8 kernel.

XNNPACK, the CPU delegate of LiteRT and tflite-runtime, runs int8 convolutions with their ReLU
fused, and LEAKY_RELU, but has no int8 PRELU: TFLite's reference kernel runs it, and a full-int8
SFace took 36 ms per face against 2.4 ms with its PReLUs replaced by ReLU (ai-edge-litert 2.3,
x86_64, one thread; 2.9 ms with LeakyReLU). A per-channel slope cannot be folded away (PReLU(s·x)
= s·PReLU(x) for s > 0 keeps every channel's slope), and building PReLU exactly from ops with int8
kernels (two 1×1 depthwise convolutions and an add per activation) gave 5.4 ms, no faster than the
dynamic-range file. So the ``leaky`` compression step gives each PReLU layer one slope, the median
of its channels', and fine-tuning by distillation pulls the model back to its source
(docs/conversion.md has the measurements).
"""

from __future__ import annotations

from typing import Any

import numpy as np


class NothingToReplace(ValueError):
    """The model has no PReLU: the variant does not apply to it (convert records it as skipped)."""


def prelu_layers(model: Any) -> list[str]:
    """Names of ``model``'s PReLU layers, in order."""
    from edgeface.keras import keras

    return [layer.name for layer in model.layers if isinstance(layer, keras.layers.PReLU)]


def leaky_slopes(model: Any) -> dict[str, float]:
    """For each PReLU layer, the one slope its LeakyReLU gets: the median of its channels' slopes."""
    return {name: float(np.median(model.get_layer(name).get_weights()[0])) for name in prelu_layers(model)}


def replace_prelu(model: Any) -> Any:
    """A copy of ``model`` with every PReLU layer a LeakyReLU of the same name (weights copied).

    :class:`NothingToReplace` (a ValueError) when there is none: its int8 file has the fast kernels already.
    """
    from edgeface.keras import keras

    slopes = leaky_slopes(model)
    if not slopes:
        raise NothingToReplace(f"model {model.name!r} has no PReLU layers: the leaky step has nothing to replace, "
                               "and its plain int8 variant already runs on XNNPACK's int8 kernels")

    def clone(layer: Any) -> Any:
        if layer.name in slopes:
            return keras.layers.LeakyReLU(alpha=slopes[layer.name], name=layer.name)
        return layer.__class__.from_config(layer.get_config())  # keeps trainable=False of frozen BatchNorm

    copy = keras.models.clone_model(model, clone_function=clone)
    for layer in copy.layers:
        if layer.name not in slopes and layer.weights:
            layer.set_weights(model.get_layer(layer.name).get_weights())
    return copy
