"""Distillation in training: teacher targets, the losses, and the training model around the student.

The student is the ordinary embedding model (backbone + embedding head); what it learns is
the teacher's embedding of the same image. Targets are the teacher's unit vectors with their
training-set mean subtracted, re-normalised: face embeddings from one model share a common
direction (dlib's unit vectors have a mean of length 0.91 on LFW), and matching that shared
part teaches the student nothing that separates people. Measured before this project on LFW
folds 6-10 with MobileNet v1 0.25: 86.4 % for plain cosine distillation towards dlib, 90.0 % with
centring (60 epochs; the README has this project's own numbers).

A teacher whose dimension differs from the student's embedding gets a training-only linear
projection; like the classification heads it is not part of the saved model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

DISTILL_LOSSES = ("cosine", "l2")
DISTILL_OUTPUT = "distill"
PROJECTION_LAYER = "distill_projection"


def distill_targets(vectors: np.ndarray, *, center: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """Unit teacher vectors, minus their mean over these rows, re-normalised: ``(targets, mean)``.

    Pass the training images' vectors only: the mean is part of what the student learns, and
    validation or evaluation images must not shape it.
    """
    vectors = np.asarray(vectors, np.float64)
    if vectors.ndim != 2 or len(vectors) == 0:
        raise ValueError(f"expected (N, D) teacher embeddings with N >= 1, got shape {vectors.shape}")
    if not np.all(np.isfinite(vectors)):
        raise ValueError("teacher embeddings contain NaN or infinite values; drop the images the teacher failed on")
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    if not center:
        return unit.astype(np.float32), None
    mean = unit.mean(axis=0)
    centred = unit - mean
    norms = np.linalg.norm(centred, axis=1, keepdims=True)
    if np.any(norms < 1e-6):
        raise ValueError("a teacher embedding equals the training-set mean (all images embed alike?); "
                         "check the teacher, or turn centring off (center_teacher = false)")
    return (centred / norms).astype(np.float32), mean.astype(np.float32)


def cosine_distance(y_true, y_pred):
    """1 - cos(student, target) per sample (targets are unit vectors; the prediction is normalised here)."""
    from ._keras import tf

    y_pred = tf.math.l2_normalize(tf.cast(y_pred, tf.float32), axis=-1, epsilon=1e-12)
    return 1.0 - tf.reduce_sum(y_pred * tf.cast(y_true, tf.float32), axis=-1)


def squared_l2(y_true, y_pred):
    """||student - target||^2 per sample, on the student's *unnormalised* output (magnitude included)."""
    from ._keras import tf

    return tf.reduce_sum(tf.square(tf.cast(y_pred, tf.float32) - tf.cast(y_true, tf.float32)), axis=-1)


def teacher_cosine(y_true, y_pred):
    """Metric: mean cosine between the student's output and its target."""
    return 1.0 - cosine_distance(y_true, y_pred)


LOSS_FUNCTIONS = {"cosine": cosine_distance, "l2": squared_l2}


@dataclass
class DistillModels:
    """``embedding``: what is saved; ``training``: image [, label] → [distill output, logits];
    ``student``: image → the distill output (for measuring agreement with the teacher)."""

    embedding: Any
    training: Any
    student: Any
    projection: dict | None
    uses_labels: bool


def build_distill_models(image_input, features, *, teacher_dim: int, loss: str = "cosine",
                         num_classes: int | None = None, embedding_size: int = 128, dropout: float = 0.2,
                         head: str = "arcface", style: str = "standard", scale: float | None = None,
                         margin: float | None = None, name: str = "edgeface") -> DistillModels:
    """The embedding model plus the distillation output (and, with ``num_classes``, a margin head)."""
    from ._heads import EMBEDDING_LAYER, classification_head, embedding_head
    from ._keras import keras

    if loss not in LOSS_FUNCTIONS:
        raise ValueError(f"distill_loss must be one of {', '.join(DISTILL_LOSSES)}, got {loss!r}")
    embedding = embedding_head(features, embedding_size, dropout, style=style)
    embedding_model = keras.Model(image_input, embedding, name=name)
    # cosine compares directions: the normalised embedding; l2 also regresses magnitude: its input.
    source = embedding if loss == "cosine" else embedding_model.get_layer(EMBEDDING_LAYER).input
    projection = None
    if int(teacher_dim) != int(embedding_size):
        source = keras.layers.Dense(int(teacher_dim), use_bias=False, name=PROJECTION_LAYER)(source)
        projection = {"from": int(embedding_size), "to": int(teacher_dim)}
    distill = keras.layers.Activation("linear", name=DISTILL_OUTPUT)(source)
    student = keras.Model(image_input, distill, name=f"{name}_student")
    if num_classes is None:
        training = keras.Model(image_input, distill, name=f"{name}_training")
        return DistillModels(embedding_model, training, student, projection, False)
    labels = keras.Input(shape=(), dtype="int32", name="label")
    head_input = embedding_model.get_layer("embedding_dense").output if style == "seed" else embedding
    logits = classification_head(head, num_classes, scale=scale, margin=margin)([head_input, labels])
    training = keras.Model([image_input, labels], [distill, logits], name=f"{name}_training")
    return DistillModels(embedding_model, training, student, projection, True)


def compile_arguments(loss: str, distill_weight: float, label_weight: float, uses_labels: bool) -> dict[str, Any]:
    """``compile`` keywords for a distillation training model (outputs: distill [, logits])."""
    from ._keras import keras

    losses: list = [LOSS_FUNCTIONS[loss]]
    weights = [float(distill_weight)]
    metrics: list = [[teacher_cosine]]
    if uses_labels:
        losses.append(keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        weights.append(float(label_weight))
        metrics.append([keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
    return {"loss": losses, "loss_weights": weights, "metrics": metrics}


def student_cosine(student: Any, crops: np.ndarray, targets: np.ndarray, preprocess, *,
                   batch_size: int = 256) -> float:
    """Mean cosine between the student's distill output on ``crops`` (no augmentation) and ``targets``."""
    from ._data import to_model_input

    total = 0.0
    for start in range(0, len(crops), batch_size):
        out = np.asarray(student(to_model_input(crops[start:start + batch_size], preprocess), training=False))
        out = out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        total += float(np.sum(out * targets[start:start + batch_size]))
    return total / max(1, len(crops))
