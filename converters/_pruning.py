"""Magnitude pruning: ``apply_pruning`` wraps the prunable layers, ``strip_pruning`` unwraps them.

Between the two, fine-tuning (``_finetune``) drives ``UpdatePruningStep``: a PolynomialDecay
schedule raises sparsity from 0 to the target over the first ~2/3 of the steps and the last
third recovers at the final mask (each raise moves the embedding; the recovery pulls it back).
tfmot 0.8.1 prunes Conv2D and Dense kernels only
(DepthwiseConv2D and BatchNorm have nothing it prunes), and whole-model pruning rejects
layers it does not know (the L2Normalize output layer), so layers are wrapped one by one
through ``clone_model``.

``block > 1`` prunes whole blocks of ``block`` consecutive input-channel weights of one output
channel (scored by their mean magnitude, as tfmot's block pooling does). TFLite stores Conv2D
kernels as (out, h, w, in) and Dense weights as (out, in), so each block is one run of zero
bytes in the file, which deflate codes as a single match where it spends about a bit on every
scattered zero. tfmot's own ``block_size`` takes 2-D weights only (not 1x1 convolutions), so
these masks are kept by :class:`BlockMasks`, a callback of the same fine-tuning loop.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from ._variants import DEFAULT_PRUNE_BLOCK

logger = logging.getLogger(__name__)

RAMP_FRACTION = 2 / 3  # of the fine-tuning steps spent raising sparsity
PRUNE_EVERY = 5  # steps between mask updates (tfmot's default is 100: far too coarse for short runs)
# The smallest layers, together at most this share of the prunable weights, stay dense: in a
# MobileNet they are the stem and first pointwise convolutions (8-64 channels, 1.7 % of the
# weights), where every weight matters and pruning them saves next to nothing.
KEEP_DENSE_SHARE = 0.02


def schedule(target_sparsity: float, steps: int):
    """PolynomialDecay from 0 to ``target_sparsity``, reaching it exactly on a mask-update step."""
    import tensorflow_model_optimization as tfmot

    if not 0.0 < target_sparsity < 1.0:
        raise ValueError("sparsity must be between 0 and 1 (a fraction of weights set to zero), "
                         f"got {target_sparsity!r}")
    frequency = max(1, min(PRUNE_EVERY, steps // 4))
    end = max(frequency, int(steps * RAMP_FRACTION) // frequency * frequency)
    return tfmot.sparsity.keras.PolynomialDecay(initial_sparsity=0.0, final_sparsity=float(target_sparsity),
                                                begin_step=0, end_step=end, frequency=frequency)


def _prunable(layer: Any) -> bool:
    from edgeface.keras import keras

    if isinstance(layer, keras.layers.DepthwiseConv2D):  # a Conv subclass, but tfmot leaves it alone
        return False
    return isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense))


def layers_to_prune(model: Any, keep_dense_share: float = KEEP_DENSE_SHARE) -> set[str]:
    """Names of the Conv2D/Dense layers to prune: all but the smallest, which together hold at most
    ``keep_dense_share`` of the prunable weights."""
    sizes = sorted((int(layer.kernel.shape.num_elements()), layer.name) for layer in model.layers if _prunable(layer))
    total = sum(size for size, _ in sizes)
    kept, dense = 0, set()
    for size, name in sizes:
        if kept + size > keep_dense_share * total:
            break
        kept += size
        dense.add(name)
    return {name for _, name in sizes} - dense


def check_block(block: Any) -> int:
    if isinstance(block, bool) or not isinstance(block, (int, np.integer)) or block < 1:
        raise ValueError(f"prune_block must be a whole number of weights >= 1 (1: unstructured), got {block!r}")
    return int(block)


def block_mask(kernel: np.ndarray, sparsity: float, block: int) -> np.ndarray:
    """Boolean keep-mask of ``kernel`` (Keras layout, input channels on axis -2) that zeroes the
    ``sparsity`` share of its ``block``-long input-channel runs with the smallest mean magnitude."""
    magnitude = np.moveaxis(np.abs(np.asarray(kernel, np.float64)), -2, -1)  # (..., out, in): runs last
    inputs = magnitude.shape[-1]
    pad = (-inputs) % block  # a last, shorter block is scored by the weights it has
    padded = np.pad(magnitude, [(0, 0)] * (magnitude.ndim - 1) + [(0, pad)]).reshape(*magnitude.shape[:-1], -1, block)
    counts = np.full(padded.shape[-2], block)
    counts[-1] -= pad
    scores = padded.sum(axis=-1) / counts
    pruned = int(round(float(sparsity) * scores.size))
    keep = np.ones(scores.size, bool)
    keep[np.argsort(scores, axis=None, kind="stable")[:pruned]] = False
    mask = np.repeat(keep.reshape(scores.shape), block, axis=-1)[..., :inputs]
    return np.moveaxis(mask, -1, -2)


class BlockMasks:
    """Fine-tuning callback of block pruning, in step with tfmot's wrappers: before each batch,
    on the schedule's mask-update steps, recompute each layer's :func:`block_mask`; then zero
    the pruned weights (the optimizer moved them in the last step), and once more at the end."""

    def __init__(self, layers: list[Any], plan: Any, block: int):
        self.layers, self.plan, self.block = layers, plan, block
        self.masks = [np.ones(layer.kernel.shape, bool) for layer in layers]

    def set_model(self, model: Any) -> None:
        pass

    def on_train_begin(self, logs: Any = None) -> None:
        pass

    def on_train_batch_begin(self, step: int, logs: Any = None) -> None:
        update, sparsity = self.plan(step)
        if bool(update):
            self.masks = [block_mask(layer.kernel.numpy(), float(sparsity), self.block) for layer in self.layers]
        self.apply()

    def on_train_batch_end(self, step: int, logs: Any = None) -> None:
        pass

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        self.apply()

    def on_train_end(self, logs: Any = None) -> None:
        self.apply()

    def apply(self) -> None:
        for layer, mask in zip(self.layers, self.masks):
            layer.kernel.assign(layer.kernel.numpy() * mask)


def apply_pruning(model: Any, target_sparsity: float, steps: int,
                  block: int = DEFAULT_PRUNE_BLOCK) -> tuple[Any, list[Any]]:
    """``(model with prunable layers wrapped, callbacks the fine-tuning loop must drive)``.

    ``model`` should be a copy (``_model.copy_model``): the wrappers share its layers' weights.
    ``block > 1``: the model itself is returned, its pruning done by a :class:`BlockMasks` callback.
    """
    import tensorflow_model_optimization as tfmot
    from edgeface.keras import keras

    block = check_block(block)
    plan = schedule(target_sparsity, steps)
    chosen = layers_to_prune(model)
    if not chosen:
        raise ValueError("the model has no Conv2D or Dense layer to prune")
    kept_dense = sum(1 for layer in model.layers if _prunable(layer)) - len(chosen)
    logger.info("pruning %d layers to %.0f%% sparsity over %d steps, blocks of %d (%d small layers kept dense)",
                len(chosen), 100 * target_sparsity, steps, block, kept_dense)
    if block > 1:
        return model, [BlockMasks([layer for layer in model.layers if layer.name in chosen], plan, block)]

    def wrap(layer):
        if layer.name in chosen:
            return tfmot.sparsity.keras.prune_low_magnitude(layer, pruning_schedule=plan)
        return layer

    return keras.models.clone_model(model, clone_function=wrap), [tfmot.sparsity.keras.UpdatePruningStep()]


def strip_pruning(model: Any) -> Any:
    """The plain Keras model with the pruned (zeroed) weights."""
    import tensorflow_model_optimization as tfmot

    return tfmot.sparsity.keras.strip_pruning(model)
