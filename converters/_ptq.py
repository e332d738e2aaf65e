"""Post-training conversion to TFLite: float32, float16, dynamic-range and full-integer int8.

Every variant, compressed or not, ends here. The Keras model is first exported as a
minimal SavedModel (its variables and one inference function): ``from_keras_model``
serialises every layer's call graphs first, which made each conversion of a small model
take ~6 s instead of ~1.5 s on two cores.
"""

from __future__ import annotations

import logging
import os
import tempfile
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np

from ._variants import IO_TYPES, QUANTIZATIONS

logger = logging.getLogger(__name__)

INPUT_NAME, OUTPUT_NAME = "image", "embedding"


@contextmanager
def exported(model: Any, input_size: tuple[int, int]) -> Iterator[str]:
    """A temporary SavedModel directory serving ``model`` in inference mode (batch dimension free)."""
    from edgeface.keras import tf

    module = tf.Module()
    module.variables_ = list(model.variables)  # tracked, so the SavedModel owns them
    spec = tf.TensorSpec([None, *input_size, 3], tf.float32, name=INPUT_NAME)
    module.serve = tf.function(lambda x: {OUTPUT_NAME: model(x, training=False)}, input_signature=[spec])
    with tempfile.TemporaryDirectory(prefix="edgeface-convert-") as directory:
        path = os.path.join(directory, "saved_model")
        tf.saved_model.save(module, path, signatures=module.serve.get_concrete_function())
        yield path


def convert(saved_model: str, quantization: str, *, representative: np.ndarray | None = None, io: str = "float32",
            per_channel_dense: bool = True, quantization_aware: bool = False) -> bytes:
    """TFLite flatbuffer bytes for ``quantization`` (one of ``QUANTIZATIONS``).

    ``representative``: preprocessed face crops for int8 calibration (required for int8 of a
    model that was not trained quantization-aware). ``io``: input/output type of int8 models.
    ``per_channel_dense=False`` makes dynamic-range FULLY_CONNECTED loadable by tflite-runtime 2.14.
    ``quantization_aware``: the model carries fake-quant ranges from QAT; calibrating on top of
    them (a representative dataset) was measured to wreck it (cosine 0.15), so none is used.
    """
    from edgeface.keras import tf

    if quantization not in QUANTIZATIONS:
        raise ValueError(f"unknown quantization {quantization!r}; choose one of {QUANTIZATIONS}")
    if io not in IO_TYPES:
        raise ValueError(f"io must be one of {IO_TYPES}, got {io!r}")
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model)
    if quantization == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantization == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if not per_channel_dense:
            converter._experimental_disable_per_channel_quantization_for_dense_layers = True  # noqa: SLF001
    elif quantization == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if not quantization_aware:
            if representative is None or len(representative) == 0:
                raise ValueError("full-integer int8 needs calibration face crops (calibration=DIR)")
            samples = np.asarray(representative, np.float32)
            converter.representative_dataset = lambda: ([samples[i:i + 1]] for i in range(len(samples)))
            # Fail loudly rather than silently keep float ops in a model called "int8".
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if io != "float32":
            dtype = tf.int8 if io == "int8" else tf.uint8
            converter.inference_input_type = dtype
            converter.inference_output_type = dtype
    from edgeface_runtime.commandline import native_log_captured

    with native_log_captured():  # the calibrator prints "fully_quantize: 0, inference_type: 6, ..." from C++
        return bytes(converter.convert())
