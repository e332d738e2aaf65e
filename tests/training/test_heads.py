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


@pytest.mark.parametrize("style,size", [("standard", 16), ("seed", 24), ("gdc", 16)])
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
    if style != "seed":
        assert not models.embedding.get_layer("embedding_dense").use_bias
    if style == "gdc":  # the kernel covers the whole feature map: one value per channel
        gdc = models.embedding.get_layer("embedding_gdc")
        assert tuple(gdc.kernel_size) == tuple(backbone.output.shape[1:3]) and gdc.output.shape[1:3] == (1, 1)


@pytest.mark.parametrize("style, keeps_layout", [("standard", False), ("gdc", True)])
def test_only_the_gdc_head_sees_where_features_are(style, keeps_layout):
    # Average pooling gives a feature map and its spatially shuffled copy the same embedding;
    # the global depthwise convolution weighs each position on its own.
    from edgeface._keras import keras
    from edgeface.heads import embedding_head

    features = keras.Input((4, 4, 8))
    model = keras.Model(features, embedding_head(features, 6, dropout=0.0, style=style))
    rng = np.random.default_rng(0)
    for layer in model.layers:  # random kernels: a fresh GDC kernel's init could be near-uniform
        if layer.weights and "bn" not in layer.name:
            layer.set_weights([rng.normal(size=w.shape).astype(np.float32) for w in layer.get_weights()])
    x = rng.normal(size=(1, 4, 4, 8)).astype(np.float32)
    shuffled = x.reshape(1, 16, 8)[:, rng.permutation(16)].reshape(1, 4, 4, 8)
    a, b = model.predict(x, verbose=0), model.predict(shuffled, verbose=0)
    assert np.allclose(a, b, atol=1e-5) != keeps_layout


def test_gdc_head_needs_a_fixed_feature_map():
    from edgeface._keras import keras
    from edgeface.heads import embedding_head

    with pytest.raises(ValueError, match="fixed input size"):
        embedding_head(keras.Input((None, None, 8)), 6, style="gdc")
    with pytest.raises(ValueError, match="choose one of standard, seed, gdc"):
        embedding_head(keras.Input((4, 4, 8)), 6, style="pool")


def test_heads_round_trip_through_config():
    from edgeface.heads import ArcFaceHead, CosFaceHead, SoftmaxHead

    for head in (ArcFaceHead(9, scale=20.0, margin=0.3), CosFaceHead(9), SoftmaxHead(9)):
        clone = type(head).from_config(head.get_config())
        assert clone.get_config() == head.get_config()
