"""Custom layers of edgeface models, registered so ``model.keras`` reloads without ``safe_mode=False``.

Importing this module registers them; :func:`edgeface.load_model` does that for you. (A
process that loads a ``.keras`` file without importing it fails with Keras' misleading
``TypeError: 'str' object is not callable``.)
"""

from __future__ import annotations

from ._keras import keras, tf


@keras.saving.register_keras_serializable(package="edgeface")
class L2Normalize(keras.layers.Layer):
    """Scales each embedding to unit length (converts to the TFLite L2_NORMALIZATION op)."""

    def __init__(self, axis: int = -1, epsilon: float = 1e-12, **kwargs):
        super().__init__(**kwargs)
        self.axis = axis
        self.epsilon = epsilon

    def call(self, inputs):
        return tf.math.l2_normalize(inputs, axis=self.axis, epsilon=self.epsilon)

    def get_config(self):
        return {**super().get_config(), "axis": self.axis, "epsilon": self.epsilon}
