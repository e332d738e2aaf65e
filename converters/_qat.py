"""Quantization-aware training: ``apply_qat`` inserts fake-quant, ``strip_qat`` readies it for TFLite.

Every layer tfmot can quantize is annotated; the rest stay float (``L2Normalize``, which QAT
refuses with "Layer ... is not supported", ``Rescaling``, custom layers). Annotating by
``Default8BitQuantizeRegistry.supports`` alone would leave BatchNormalization out, which
tfmot does handle (it folds it with the preceding convolution), so BN is added explicitly.
After pruning or clustering, tfmot's prune-/cluster-preserving schemes keep the zeros and the
centroids while the quantization ranges are learnt.

The QAT model is meaningless in inference mode until training-mode batches have set its
activation ranges: the fine-tuning that follows ``apply_qat`` does that. The wrappers are
not removed: the converter reads the learnt ranges from them.
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)


def apply_qat(model: Any, *, after: tuple[str, ...] = ()) -> tuple[Any, list[Any]]:
    """``(quantization-aware copy of a flat model, fine-tuning callbacks (none))``.

    ``after``: the compression steps already applied (``"prune"``, ``"cluster"``), whose
    structure the quantization scheme must preserve.
    """
    import tensorflow_model_optimization as tfmot
    from edgeface.keras import keras

    nested = [layer.name for layer in model.layers if isinstance(layer, keras.Model)]
    if nested:
        raise ValueError(f"quantization-aware training needs a flat model, but {model.name!r} contains the model(s) "
                         f"{nested}; flatten it first (_model.flatten) or build the backbone on the input tensor")
    quantize = tfmot.quantization.keras
    registry = quantize.default_8bit.Default8BitQuantizeRegistry()
    blocking = [layer.name for layer in model.layers if type(layer).__name__ in ("TFOpLambda", "Lambda")]
    if blocking:
        raise ValueError(f"quantization-aware training cannot handle the op layers {blocking[:3]} (e.g. MobileNetV3's "
                         "hard-swish); use the int8 variant (post-training) for this backbone")
    kept_float = []

    def annotate(layer):
        if isinstance(layer, keras.layers.InputLayer):
            return layer
        if registry.supports(layer) or isinstance(layer, keras.layers.BatchNormalization):
            return quantize.quantize_annotate_layer(layer)
        kept_float.append(f"{layer.name} ({type(layer).__name__})")
        return layer

    annotated = keras.models.clone_model(model, clone_function=annotate)
    if "cluster" in after:
        scheme = tfmot.experimental.combine.Default8BitClusterPreserveQuantizeScheme(preserve_sparsity="prune" in after)
    elif "prune" in after:
        scheme = tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme()
    else:
        scheme = quantize.default_8bit.Default8BitQuantizeScheme()
    with quantize.quantize_scope():
        qat = quantize.quantize_apply(annotated, scheme)
    if kept_float:
        logger.info("QAT keeps %d layer(s) in float: %s", len(kept_float), ", ".join(kept_float))
    return qat, []


def strip_qat(model: Any, *, after: tuple[str, ...] = ()) -> Any:
    """The model to convert: fake-quant wrappers kept (they hold the ranges), training-only state dropped."""
    if "cluster" in after:
        import tensorflow_model_optimization as tfmot

        return tfmot.experimental.combine.strip_clustering_cqat(model)
    return model
