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

``layer_sparsity`` gives layers their own target, by name pattern (:func:`sparsity_plan`). One
number for every layer suits networks whose weights are spread evenly; a face model such as SFace
keeps two thirds of its 9.7 M weights in one 50,176 x 128 fully connected layer that tolerates
90 % sparsity with no fine-tuning at all (99.23 -> 98.97 % on LFW), while its convolutions are
where a few zeros cost accuracy. Patterns are regular expressions searched in layer names, as
NNCF's scopes and Distiller's schedules address layers.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Iterable, Mapping

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


def parse_layer_sparsity(spec: Mapping[str, Any] | Iterable[str] | str | None) -> dict[str, float]:
    """``{"sface_fc": 0.95}``, ``["sface_fc=0.95", "conv_1[0-9]=0.3"]`` or ``"sface_fc=0.95,..."`` →
    ``{pattern: sparsity}`` in the order given (the first pattern a layer matches wins). 0 keeps the
    matching layers dense."""
    if spec is None:
        return {}
    if isinstance(spec, str):
        spec = [part for part in spec.split(",") if part.strip()]
    items: list[tuple[str, Any]] = []
    if isinstance(spec, Mapping):
        items = list(spec.items())
    else:
        for entry in spec:
            pattern, sep, value = str(entry).rpartition("=")
            if not sep or not pattern.strip():
                raise ValueError(f"layer sparsity {entry!r} is not PATTERN=FRACTION (e.g. 'sface_fc=0.95': "
                                 "layers whose name matches the regular expression PATTERN, pruned to FRACTION)")
            items.append((pattern.strip(), value.strip()))
    plan: dict[str, float] = {}
    for pattern, value in items:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"layer sparsity pattern {pattern!r} is not a regular expression: {exc}") from exc
        try:
            fraction = float(value)
        except (TypeError, ValueError):
            fraction = float("nan")
        if not 0.0 <= fraction < 1.0:
            raise ValueError(f"layer sparsity for {pattern!r} must be a fraction in [0, 1) (0 keeps the layers "
                             f"dense), got {value!r}")
        plan[pattern] = fraction
    return plan


def sparsity_plan(model: Any, sparsity: float, layer_sparsity: Mapping[str, float] | None = None,
                  keep_dense_share: float = KEEP_DENSE_SHARE) -> dict[str, float]:
    """``{layer name: target sparsity}`` of the layers to prune.

    The layers :func:`layers_to_prune` picks get ``sparsity``; a prunable layer whose name matches
    a ``layer_sparsity`` pattern gets that pattern's value instead (the first match; the smallest
    layers too, since naming them is deliberate); 0 leaves it dense. A pattern that matches no
    prunable layer is a ValueError naming the layers there are: a typo must not silently prune
    with the default.
    """
    if not 0.0 < float(sparsity) < 1.0:
        raise ValueError(f"sparsity must be a fraction between 0 and 1, got {sparsity!r}")
    prunable = [layer.name for layer in model.layers if _prunable(layer)]
    plan = {name: float(sparsity) for name in layers_to_prune(model, keep_dense_share)}
    overrides = parse_layer_sparsity(layer_sparsity)
    for name in prunable:
        fraction = next((f for pattern, f in overrides.items() if re.search(pattern, name)), None)
        if fraction is not None:
            plan[name] = fraction
    unmatched = [p for p in overrides if not any(re.search(p, name) for name in prunable)]
    if unmatched:
        shown = ", ".join(prunable[:12]) + (f", ... ({len(prunable)} in all)" if len(prunable) > 12 else "")
        raise ValueError(f"layer sparsity pattern(s) {', '.join(map(repr, unmatched))} match no Conv2D/Dense layer "
                         f"of the model; its prunable layers are: {shown}")
    return {name: fraction for name, fraction in plan.items() if fraction > 0.0}


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

    def __init__(self, layers: list[Any], plans: list[Any], block: int):
        self.layers, self.plans, self.block = layers, plans, block  # one schedule per layer
        self.masks = [np.ones(layer.kernel.shape, bool) for layer in layers]

    def set_model(self, model: Any) -> None:
        pass

    def on_train_begin(self, logs: Any = None) -> None:
        pass

    def on_train_batch_begin(self, step: int, logs: Any = None) -> None:
        for i, (layer, plan) in enumerate(zip(self.layers, self.plans)):
            update, sparsity = plan(step)
            if bool(update):
                self.masks[i] = block_mask(layer.kernel.numpy(), float(sparsity), self.block)
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


def apply_pruning(model: Any, target_sparsity: float, steps: int, block: int = DEFAULT_PRUNE_BLOCK,
                  layer_sparsity: Mapping[str, float] | None = None) -> tuple[Any, list[Any]]:
    """``(model with prunable layers wrapped, callbacks the fine-tuning loop must drive)``.

    ``model`` should be a copy (``_model.copy_model``): the wrappers share its layers' weights.
    ``block > 1``: the model itself is returned, its pruning done by a :class:`BlockMasks` callback.
    ``layer_sparsity``: per-layer targets by name pattern (:func:`sparsity_plan`).
    """
    import tensorflow_model_optimization as tfmot
    from edgeface.keras import keras

    block = check_block(block)
    chosen = sparsity_plan(model, target_sparsity, layer_sparsity)
    if not chosen:
        raise ValueError("the model has no Conv2D or Dense layer to prune")
    plans = {fraction: schedule(fraction, steps) for fraction in set(chosen.values())}
    kept_dense = sum(1 for layer in model.layers if _prunable(layer)) - len(chosen)
    logger.info("pruning %d layers to %s sparsity over %d steps, blocks of %d (%d layers kept dense)",
                len(chosen), ", ".join(f"{100 * f:.0f}%" for f in sorted(plans)), steps, block, kept_dense)
    if block > 1:
        layers = [layer for layer in model.layers if layer.name in chosen]
        return model, [BlockMasks(layers, [plans[chosen[layer.name]] for layer in layers], block)]

    def wrap(layer):
        if layer.name in chosen:
            return tfmot.sparsity.keras.prune_low_magnitude(layer, pruning_schedule=plans[chosen[layer.name]])
        return layer

    return keras.models.clone_model(model, clone_function=wrap), [tfmot.sparsity.keras.UpdatePruningStep()]


def strip_pruning(model: Any) -> Any:
    """The plain Keras model with the pruned (zeroed) weights."""
    import tensorflow_model_optimization as tfmot

    return tfmot.sparsity.keras.strip_pruning(model)
