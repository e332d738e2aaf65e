"""Bias correction: take out the per-channel mean shift that rounding weights to int8 adds.

Rounding a kernel to int8 (per output channel, symmetric, as the TFLite converter does after
folding the following BatchNorm into it) changes each output by ``(W_q - W)·x``. On face
crops the inputs of most layers are ReLU6 activations with a large mean and a small spread,
so that error is mostly a constant per channel, and the folded BatchNorm then divides it by
the channel's (small) standard deviation. Measured on the reference MobileNet v1 0.25 ArcFace
model (held-out LFW crops): rounding the weights alone, activations in float, brought the
embedding down to a mean cosine of 0.980 with the float model, one depthwise layer
(``conv_dw_3``) alone to 0.987; the full-int8 file reached 0.976. Activation rounding is
not the problem: with the shift removed, the full-int8 file reaches 0.995.

Only full-integer files are corrected: dynamic-range ones round the weights the same way,
but their error is dominated by the on-the-fly quantization of the activations (measured:
0.986 before, 0.985 after correction), so there it buys nothing.

The fix is empirical bias correction (Nagel et al., "Data-Free Quantization Through Weight
Equalization and Bias Correction", ICCV 2019): the expected shift ``E[(W_q - W)·x]`` is
measured on the calibration crops (the float model's activations, one pass) and subtracted
from the layer's bias, or added to the moving mean of the BatchNorm folded into it. The
kernels are left as they are: the converter rounds them to the same integers as here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

INT8_MAX = 127  # TFLite int8 weights: symmetric, narrow range [-127, 127]
BATCH_SIZE = 32


@dataclass
class _Target:
    layer: Any  # Conv2D, DepthwiseConv2D or Dense
    fold: np.ndarray  # per output channel: the scale the converter folds into the kernel (1 without BatchNorm)
    batchnorm: Any  # the BatchNorm folded into the layer, or None


def bias_corrected(model: Any, samples: np.ndarray) -> tuple[Any, dict[str, Any]]:
    """``(copy of model with corrected biases, summary)``; ``model`` itself is left unchanged.

    ``samples``: preprocessed calibration crops (the representative set, never the held-out
    ones). Layers that cannot be corrected (no bias and no folded BatchNorm, a shared layer, a
    nested model that cannot be flattened) are listed in the summary and left alone.
    """
    from ._model import copy_model, flatten

    if len(samples) == 0:
        raise ValueError("bias correction needs calibration crops, got none; pass --calibration DIR "
                         "or turn it off with --no-bias-correction")
    try:
        flat = flatten(model)
    except ValueError as exc:
        logger.warning("bias correction skipped: %s", exc)
        return model, {"layers": 0, "skipped": ["(nested model)"]}
    corrected = copy_model(flat, freeze_batchnorm=False)
    targets, skipped = _targets(corrected)
    if not targets:
        return corrected, {"layers": 0, "skipped": skipped}
    means = _mean_inputs(corrected, [t.layer for t in targets], np.asarray(samples, np.float32))
    largest = 0.0
    for target, mean in zip(targets, means):
        shift = _shift(target, mean)
        largest = max(largest, float(np.max(np.abs(shift * target.fold))))
        _apply(target, shift)
    logger.info("bias correction: %d layers, largest shift %.3g (in BatchNorm-normalised units)", len(targets), largest)
    return corrected, {"layers": len(targets), "skipped": skipped}


def quantization_error(kernel: np.ndarray, fold: np.ndarray, kind: str) -> np.ndarray:
    """``W_q - W`` in the kernel's own units: the converter's int8 rounding of the folded kernel
    (per output channel, scale = max |w| / 127; FULLY_CONNECTED too in full-integer files from TF 2.21).

    ``kind``: ``"conv"`` (…, out), ``"depthwise"`` (h, w, in, multiplier) or ``"dense"`` (in, out).
    """
    if kind == "depthwise":
        fold = fold.reshape(1, 1, kernel.shape[2], kernel.shape[3])
        axes: tuple[int, ...] = (0, 1)
    else:
        fold = fold.reshape((1,) * (kernel.ndim - 1) + (-1,))
        axes = tuple(range(kernel.ndim - 1))
    folded = kernel.astype(np.float64) * fold
    peak = np.max(np.abs(folded), axis=axes, keepdims=True)
    scale = np.where(peak > 0, peak / INT8_MAX, 1.0)
    error = np.round(folded / scale) * scale - folded
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(fold != 0, error / fold, 0.0).astype(np.float32)


def _kind(layer: Any) -> str | None:
    from edgeface.keras import keras

    # Exact types: Conv2DTranspose and SeparableConv2D quantize differently.
    if type(layer) is keras.layers.DepthwiseConv2D:
        return "depthwise" if layer.data_format == "channels_last" else None
    if type(layer) is keras.layers.Conv2D:
        return "conv" if layer.data_format == "channels_last" and layer.groups == 1 else None
    if type(layer) is keras.layers.Dense:
        return "dense"
    return None


def _targets(model: Any) -> tuple[list[_Target], list[str]]:
    from edgeface.keras import keras

    consumers: dict[str, list[Any]] = {}
    for layer in model.layers:
        for node in layer.inbound_nodes:
            for inbound in node.inbound_layers if isinstance(node.inbound_layers, list) else [node.inbound_layers]:
                consumers.setdefault(inbound.name, []).append(layer)
    outputs = {ref[0] for ref in model.get_config()["output_layers"]}
    targets, skipped = [], []
    for layer in model.layers:
        kind = _kind(layer)
        if kind is None:
            continue
        if len(layer.inbound_nodes) != 1:
            skipped.append(layer.name)
            continue
        after = consumers.get(layer.name, [])
        batchnorm = None
        # The converter folds a BatchNorm into the kernel when it alone reads the linear output.
        if (len(after) == 1 and isinstance(after[0], keras.layers.BatchNormalization) and layer.name not in outputs
                and layer.activation is keras.activations.linear and _last_axis(after[0])):
            batchnorm = after[0]
        if not layer.use_bias and batchnorm is None:
            skipped.append(layer.name)
            continue
        shape = _kernel(layer).shape
        channels = int(shape[-1]) if kind != "depthwise" else int(shape[2] * shape[3])
        fold = np.ones(channels, np.float64)
        if batchnorm is not None:
            gamma = batchnorm.gamma.numpy() if batchnorm.scale else 1.0
            fold = gamma / np.sqrt(batchnorm.moving_variance.numpy().astype(np.float64) + batchnorm.epsilon)
        targets.append(_Target(layer, np.asarray(fold, np.float64).reshape(-1), batchnorm))
    return targets, skipped


def _kernel(layer: Any) -> Any:
    return layer.depthwise_kernel if _kind(layer) == "depthwise" else layer.kernel


def _last_axis(batchnorm: Any) -> bool:
    axis = batchnorm.axis if isinstance(batchnorm.axis, (list, tuple)) else [batchnorm.axis]
    rank = len(batchnorm.input_shape)
    return len(axis) == 1 and axis[0] in (-1, rank - 1)


def _mean_inputs(model: Any, layers: list[Any], samples: np.ndarray) -> list[np.ndarray]:
    """Each layer's input averaged over the samples (one float pass, kept per position)."""
    from edgeface.keras import keras, tf

    features = keras.Model(model.inputs, [layer.input for layer in layers])

    @tf.function
    def sums(x):
        out = features(x, training=False)
        out = out if isinstance(out, (list, tuple)) else [out]
        return [tf.reduce_sum(tf.cast(t, tf.float64), axis=0) for t in out]

    totals = None
    for start in range(0, len(samples), BATCH_SIZE):
        batch = [v.numpy() for v in sums(tf.constant(samples[start:start + BATCH_SIZE]))]
        totals = batch if totals is None else [a + b for a, b in zip(totals, batch)]
    return [t / len(samples) for t in totals or []]


def _shift(target: _Target, mean_input: np.ndarray) -> np.ndarray:
    """E[(W_q - W)·x] per output channel: the layer's linear op with the error kernel, on the mean input."""
    layer = target.layer
    kind = _kind(layer)
    if kind is None:  # _targets keeps only the layers _kind names
        raise TypeError(f"bias correction cannot handle layer {layer.name} ({type(layer).__name__})")
    kernel = _kernel(layer).numpy()
    error = quantization_error(kernel, target.fold, kind)
    config = {**layer.get_config(), "use_bias": False, "activation": "linear", "name": f"{layer.name}_error"}
    for key in ("kernel_regularizer", "depthwise_regularizer", "bias_regularizer", "activity_regularizer",
                "kernel_constraint", "depthwise_constraint", "bias_constraint"):
        config.pop(key, None)
    twin = type(layer).from_config(config)
    twin.build((1, *mean_input.shape))
    twin.set_weights([error])
    out = np.asarray(twin(mean_input[None].astype(np.float32)), np.float64)
    return out.reshape(-1, out.shape[-1]).mean(axis=0)  # one constant per channel, averaged over positions


def _apply(target: _Target, shift: np.ndarray) -> None:
    layer = target.layer
    if layer.use_bias:
        layer.bias.assign((layer.bias.numpy() - shift).astype(np.float32))
    else:  # the BatchNorm subtracts its moving mean before the folded scale
        bn = target.batchnorm
        bn.moving_mean.assign((bn.moving_mean.numpy() + shift).astype(np.float32))
