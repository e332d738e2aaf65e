"""Embedding heads and the training-only classification heads that shape them.

The embedding head (GAP → Dropout → Dense(no bias) → BatchNorm → L2Normalize) is part of
the saved model; a classification head (softmax, ArcFace, CosFace) exists only while
training. Every classification head is a registered layer called on ``[embedding, labels]``
(softmax ignores the labels) and returns logits, so training models all have the same
signature and losses use ``from_logits=True``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from edgeface_runtime.registry import unknown_name

from ._choices import EMBEDDING_STYLES, HEADS
from ._keras import keras, tf
from .layers import L2Normalize

EMBEDDING_LAYER = "embedding"
# Defaults from the papers: ArcFace (Deng et al. 2019) s=64, m=0.5; CosFace (Wang et al. 2018) s=64, m=0.35.
DEFAULT_MARGINS = {"softmax": 0.0, "arcface": 0.5, "cosface": 0.35}
DEFAULT_SCALES = {"softmax": 1.0, "arcface": 64.0, "cosface": 64.0}
_EPS = 1e-6


def _one_hot(labels, num_classes: int, dtype):
    return tf.one_hot(tf.reshape(tf.cast(labels, tf.int32), [-1]), num_classes, dtype=dtype)


def _embedding_dim(input_shape) -> int:
    nested = (isinstance(input_shape, (list, tuple)) and input_shape
              and isinstance(input_shape[0], (list, tuple, tf.TensorShape)))
    return int((input_shape[0] if nested else input_shape)[-1])


class _ClassHead(keras.layers.Layer):
    """Base: holds ``num_classes`` and checks the ``[embedding, labels]`` call signature."""

    def __init__(self, num_classes: int, **kwargs):
        super().__init__(**kwargs)
        if int(num_classes) < 2:
            raise ValueError(f"a classification head needs at least 2 classes, got num_classes={num_classes!r}")
        self.num_classes = int(num_classes)

    @staticmethod
    def _split(inputs):
        if isinstance(inputs, (list, tuple)):
            if len(inputs) != 2:
                raise ValueError(f"expected [embedding, labels], got {len(inputs)} inputs")
            return inputs[0], inputs[1]
        return inputs, None

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}


@keras.saving.register_keras_serializable(package="edgeface")
class SoftmaxHead(_ClassHead):
    """A plain dense classifier on the embedding (labels accepted and ignored)."""

    def build(self, input_shape):
        dim = _embedding_dim(input_shape)
        self.kernel = self.add_weight("kernel", shape=(dim, self.num_classes), initializer="glorot_uniform")
        self.bias = self.add_weight("bias", shape=(self.num_classes,), initializer="zeros")
        super().build(input_shape)

    def call(self, inputs):
        embedding, _ = self._split(inputs)
        return tf.matmul(embedding, self.kernel) + self.bias


class _MarginHead(_ClassHead):
    def __init__(self, num_classes: int, scale: float, margin: float, **kwargs):
        super().__init__(num_classes, **kwargs)
        if scale <= 0:
            raise ValueError(f"scale must be positive, got {scale!r}")
        self.scale = float(scale)
        self.margin = float(margin)

    def build(self, input_shape):
        dim = _embedding_dim(input_shape)
        self.kernel = self.add_weight("kernel", shape=(dim, self.num_classes),
                                      initializer=keras.initializers.GlorotUniform())
        super().build(input_shape)

    def cosine(self, embedding):
        """Cosine of the angle between each embedding and each class centre, clipped off ±1."""
        e = tf.math.l2_normalize(embedding, axis=1, epsilon=1e-12)
        w = tf.math.l2_normalize(self.kernel, axis=0, epsilon=1e-12)
        return tf.clip_by_value(tf.matmul(e, w), -1.0 + _EPS, 1.0 - _EPS)

    def call(self, inputs):
        embedding, labels = self._split(inputs)
        cos = self.cosine(embedding)
        if labels is None:  # no labels (e.g. inspection): scaled cosines, no margin
            return self.scale * cos
        target = self.target_logit(cos)
        mask = _one_hot(labels, self.num_classes, cos.dtype)
        return self.scale * (mask * target + (1.0 - mask) * cos)

    def target_logit(self, cos):
        raise NotImplementedError

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "margin": self.margin}


@keras.saving.register_keras_serializable(package="edgeface")
class ArcFaceHead(_MarginHead):
    """Additive angular margin: the target logit is ``s·cos(θ + m)``.

    Past θ = π − m, cos(θ + m) would rise again; there the standard fallback
    ``cos θ − m·sin m`` keeps the target logit monotonic in θ. sin θ comes from the clipped
    cosine, so the square root never sees zero and gradients stay finite.
    """

    def __init__(self, num_classes: int, scale: float = DEFAULT_SCALES["arcface"],
                 margin: float = DEFAULT_MARGINS["arcface"], **kwargs):
        super().__init__(num_classes, scale, margin, **kwargs)

    def target_logit(self, cos):
        m = self.margin
        sin = tf.sqrt(tf.maximum(1.0 - tf.square(cos), _EPS))
        phi = cos * math.cos(m) - sin * math.sin(m)
        return tf.where(cos > math.cos(math.pi - m), phi, cos - m * math.sin(m))


@keras.saving.register_keras_serializable(package="edgeface")
class CosFaceHead(_MarginHead):
    """Additive cosine margin: the target logit is ``s·(cos θ − m)``."""

    def __init__(self, num_classes: int, scale: float = DEFAULT_SCALES["cosface"],
                 margin: float = DEFAULT_MARGINS["cosface"], **kwargs):
        super().__init__(num_classes, scale, margin, **kwargs)

    def target_logit(self, cos):
        return cos - self.margin


def embedding_head(features, embedding_size: int = 128, dropout: float = 0.2, *, style: str = "standard"):
    """Add the embedding head on a feature map; return the L2-normalised embedding tensor.

    ``style="standard"``: GAP → Dropout → Dense(no bias) → BatchNorm → L2Normalize.
    ``style="seed"`` (the seed project's VGG16 recipe): GAP → Dense(relu) → L2Normalize;
    its classifier then sits on the ReLU output (see :func:`classifier_input`).
    ``style="gdc"`` (MobileFaceNet's global depthwise convolution): a depthwise kernel as large
    as the feature map → BatchNorm → Flatten, then as "standard". Average pooling weighs every
    position alike and so forgets where on the face a feature was; the GDC learns one weight
    per position and channel (4,096 for a 4×4×256 map), so the layout survives.
    ``style="adapter"`` (for a face source, whose "features" are already its embedding (N, d)):
    Dense(no bias) → L2Normalize, the Dense initialised to the identity when ``embedding_size == d``
    (else orthogonal), so the untrained model *is* the source model and training only adapts it.
    """
    layers = keras.layers
    if int(embedding_size) < 2:
        raise ValueError(f"embedding_size must be at least 2, got {embedding_size!r}")
    if not 0.0 <= float(dropout) < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
    if style not in EMBEDDING_STYLES:
        raise unknown_name("embedding head style", style, EMBEDDING_STYLES)
    if len(features.shape) == 2 and style != "adapter":
        raise ValueError(f"features of shape {tuple(features.shape)} are already an embedding (a face source): "
                         "use embedding_style='adapter'")
    if style == "adapter":
        if len(features.shape) != 2:
            raise ValueError(f"embedding_style='adapter' needs an embedding (N, d) from a face source, got "
                             f"features of shape {tuple(features.shape)}")
        square = int(features.shape[-1]) == int(embedding_size)
        init = keras.initializers.Identity() if square else keras.initializers.Orthogonal(seed=0)
        x = layers.Dropout(dropout, name="embedding_dropout")(features) if dropout > 0 else features
        x = layers.Dense(embedding_size, use_bias=False, kernel_initializer=init, name="embedding_dense")(x)
        return L2Normalize(name=EMBEDDING_LAYER)(x)
    if style == "gdc":
        height, width = features.shape[1], features.shape[2]
        if height is None or width is None:
            raise ValueError("the 'gdc' embedding head needs a fixed input size (its kernel covers the whole "
                             f"feature map), got features of shape {tuple(features.shape)}")
        x = layers.DepthwiseConv2D((height, width), use_bias=False, name="embedding_gdc")(features)
        x = layers.BatchNormalization(name="embedding_gdc_bn")(x)
        x = layers.Flatten(name="embedding_pool")(x)
    else:
        x = layers.GlobalAveragePooling2D(name="embedding_pool")(features)
    if style == "seed":
        x = layers.Dense(embedding_size, activation="relu", name="embedding_dense")(x)
    else:
        if dropout > 0:
            x = layers.Dropout(dropout, name="embedding_dropout")(x)
        x = layers.Dense(embedding_size, use_bias=False, name="embedding_dense")(x)
        x = layers.BatchNormalization(name="embedding_bn")(x)
    return L2Normalize(name=EMBEDDING_LAYER)(x)


def classification_head(name: str, num_classes: int, *, scale: float | None = None, margin: float | None = None):
    """A training-only head layer by name: 'softmax', 'arcface' or 'cosface'."""
    if name == "softmax":
        return SoftmaxHead(num_classes, name="softmax_head")
    if name not in HEADS:
        raise unknown_name("head", name, HEADS)
    scale = DEFAULT_SCALES[name] if scale is None else scale
    margin = DEFAULT_MARGINS[name] if margin is None else margin
    cls = ArcFaceHead if name == "arcface" else CosFaceHead
    return cls(num_classes, scale=scale, margin=margin, name=f"{name}_head")


@dataclass
class FaceModels:
    """The embedding model (what is saved) and the training model (image, label → logits)."""

    embedding: Any
    training: Any


def build_face_models(image_input, features, *, num_classes: int, embedding_size: int = 128,
                      dropout: float = 0.2, head: str = "arcface", style: str = "standard",
                      scale: float | None = None, margin: float | None = None, name: str = "edgeface") -> FaceModels:
    """Assemble both models on a (flat) backbone's ``image_input`` → ``features``."""
    embedding = embedding_head(features, embedding_size, dropout, style=style)
    embedding_model = keras.Model(image_input, embedding, name=name)
    labels = keras.Input(shape=(), dtype="int32", name="label")
    # The seed recipe's classifier reads the ReLU features, not their normalised copy.
    head_input = embedding_model.get_layer("embedding_dense").output if style == "seed" else embedding
    logits = classification_head(head, num_classes, scale=scale, margin=margin)([head_input, labels])
    training_model = keras.Model([image_input, labels], logits, name=f"{name}_training")
    return FaceModels(embedding_model, training_model)
