"""Heads: the embedding head that is saved with the model, and training-only margin heads.

>>> from edgeface.heads import build_face_models
>>> models = build_face_models(inputs, backbone.output, num_classes=100, head="arcface")
>>> models.embedding   # image → unit-length embedding: what training saves
>>> models.training    # [image, label] → logits: what training fits

ArcFace, CosFace and the softmax head are registered Keras layers taking
``[embedding, labels]`` and returning logits (train them with ``from_logits=True``).
"""

from __future__ import annotations

from ._heads import (
    DEFAULT_MARGINS,
    DEFAULT_SCALES,
    HEADS,
    ArcFaceHead,
    CosFaceHead,
    FaceModels,
    SoftmaxHead,
    build_face_models,
    classification_head,
    embedding_head,
)

__all__ = [
    "ArcFaceHead",
    "CosFaceHead",
    "DEFAULT_MARGINS",
    "DEFAULT_SCALES",
    "FaceModels",
    "HEADS",
    "SoftmaxHead",
    "build_face_models",
    "classification_head",
    "embedding_head",
]
