"""Magnitude pruning: ``apply_pruning`` wraps the prunable layers, ``strip_pruning`` unwraps them.

Between the two, fine-tuning (``_finetune``) drives ``UpdatePruningStep``: a PolynomialDecay
schedule raises sparsity from 0 to the target over the first ~2/3 of the steps and the last
third recovers at the final mask (each raise moves the embedding; the recovery pulls it back). tfmot 0.8.1 prunes Conv2D and Dense kernels only
(DepthwiseConv2D and BatchNorm have nothing it prunes), and whole-model pruning rejects
layers it does not know (the L2Normalize output layer), so layers are wrapped one by one
through ``clone_model``.
"""

from __future__ import annotations

import logging
from typing import Any

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
        raise ValueError(f"sparsity must be between 0 and 1 (a fraction of weights set to zero), got {target_sparsity!r}")
    frequency = max(1, min(PRUNE_EVERY, steps // 4))
    end = max(frequency, int(steps * RAMP_FRACTION) // frequency * frequency)
    return tfmot.sparsity.keras.PolynomialDecay(initial_sparsity=0.0, final_sparsity=float(target_sparsity),
                                                begin_step=0, end_step=end, frequency=frequency)


def _prunable(layer: Any) -> bool:
    from edgeface._keras import keras

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


def apply_pruning(model: Any, target_sparsity: float, steps: int) -> tuple[Any, list[Any]]:
    """``(model with prunable layers wrapped, callbacks the fine-tuning loop must drive)``.

    ``model`` should be a copy (``_model.copy_model``): the wrappers share its layers' weights.
    """
    import tensorflow_model_optimization as tfmot
    from edgeface._keras import keras

    plan = schedule(target_sparsity, steps)
    chosen = layers_to_prune(model)
    wrapped = []

    def wrap(layer):
        if layer.name in chosen:
            wrapped.append(layer.name)
            return tfmot.sparsity.keras.prune_low_magnitude(layer, pruning_schedule=plan)
        return layer

    pruned = keras.models.clone_model(model, clone_function=wrap)
    if not wrapped:
        raise ValueError("the model has no Conv2D or Dense layer to prune")
    logger.info("pruning %d layers to %.0f%% sparsity over %d steps (%d small layers kept dense)", len(wrapped),
                100 * target_sparsity, steps, sum(1 for layer in model.layers if _prunable(layer)) - len(wrapped))
    return pruned, [tfmot.sparsity.keras.UpdatePruningStep()]


def strip_pruning(model: Any) -> Any:
    """The plain Keras model with the pruned (zeroed) weights."""
    import tensorflow_model_optimization as tfmot

    return tfmot.sparsity.keras.strip_pruning(model)
