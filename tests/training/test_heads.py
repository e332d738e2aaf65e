from __future__ import annotations

import math

import numpy as np
import pytest


def _reference_logits(embedding, kernel, labels, kind, scale, margin):
    e = embedding / np.linalg.norm(embedding, axis=1, keepdims=True)
    w = kernel / np.linalg.norm(kernel, axis=0, keepdims=True)
    cos = np.clip(e @ w, -1 + 1e-6, 1 - 1e-6)
    target = cos.copy()
    rows = np.arange(len(labels))
    c = cos[rows, labels]
    if kind == "arcface":
        theta = np.arccos(c)
        target[rows, labels] = np.where(theta + margin < math.pi, np.cos(theta + margin), c - margin * math.sin(margin))
    else:
        target[rows, labels] = c - margin
    return scale * target


@pytest.mark.parametrize("kind,scale,margin", [("arcface", 64.0, 0.5), ("arcface", 30.0, 0.2), ("cosface", 64.0, 0.35)])
def test_margin_logits_match_numpy(kind, scale, margin):
    from edgeface.heads import classification_head

    rng = np.random.default_rng(0)
    head = classification_head(kind, 7, scale=scale, margin=margin)
    embedding = rng.normal(size=(32, 5)).astype(np.float32)
    labels = rng.integers(0, 7, size=32)
    # Include the fallback region of ArcFace (theta + m > pi): an embedding opposite its class centre.
    logits = head([embedding, labels]).numpy()
    kernel = head.kernel.numpy()
    embedding[0] = -kernel[:, labels[0]]
    logits = head([embedding, labels]).numpy()
    np.testing.assert_allclose(logits, _reference_logits(embedding, kernel, labels, kind, scale, margin),
                               rtol=1e-4, atol=1e-3 * scale)


def test_margin_heads_have_finite_gradients_at_the_extremes():
    from edgeface._keras import tf
    from edgeface.heads import ArcFaceHead, CosFaceHead

    for head in (ArcFaceHead(3, margin=0.5), CosFaceHead(3)):
        head.build([tf.TensorShape((None, 4)), tf.TensorShape((None,))])
        kernel = head.kernel.numpy()
        embedding = tf.constant(np.stack([kernel[:, 0], -kernel[:, 1], kernel[:, 2] * 1e-8]), tf.float32)
        with tf.GradientTape() as tape:
            tape.watch(embedding)
            loss = tf.reduce_sum(head([embedding, tf.constant([0, 1, 2])]))
        grads = tape.gradient(loss, [embedding, head.kernel])
        assert all(np.isfinite(g.numpy()).all() for g in grads)


def test_softmax_head_ignores_labels():
    from edgeface.heads import classification_head

    head = classification_head("softmax", 4)
    x = np.ones((2, 3), np.float32)
    np.testing.assert_allclose(head([x, np.array([0, 1])]).numpy(), head([x, np.array([3, 2])]).numpy())


def test_unknown_head_and_bad_sizes():
    from edgeface.heads import classification_head

    with pytest.raises(ValueError, match="unknown head 'sphereface'"):
        classification_head("sphereface", 4)
    with pytest.raises(ValueError, match="at least 2 classes"):
        classification_head("arcface", 1)


@pytest.mark.parametrize("style,size", [("standard", 16), ("seed", 24)])
def test_face_models_shapes_and_unit_norm(style, size):
    from edgeface._keras import keras
    from edgeface.backbones import create_backbone
    from edgeface.heads import build_face_models

    inputs = keras.Input((32, 32, 3))
    backbone = create_backbone("tiny", input_tensor=inputs, input_size=(32, 32))
    models = build_face_models(inputs, backbone.output, num_classes=5, embedding_size=size, style=style,
                               head="softmax" if style == "seed" else "arcface")
    x = np.random.default_rng(0).normal(size=(3, 32, 32, 3)).astype(np.float32)
    emb = models.embedding.predict(x, verbose=0)
    assert emb.shape == (3, size)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    assert models.training.predict([x, np.array([0, 1, 2])], verbose=0).shape == (3, 5)
    assert models.embedding.layers[-1].name == "embedding"
    if style == "standard":
        assert not models.embedding.get_layer("embedding_dense").use_bias


def test_heads_round_trip_through_config():
    from edgeface.heads import ArcFaceHead, CosFaceHead, SoftmaxHead

    for head in (ArcFaceHead(9, scale=20.0, margin=0.3), CosFaceHead(9), SoftmaxHead(9)):
        clone = type(head).from_config(head.get_config())
        assert clone.get_config() == head.get_config()
