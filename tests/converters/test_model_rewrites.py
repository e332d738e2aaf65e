"""Graph rewrites before tfmot: flattening nested models, folding the embedding BatchNorm."""

from __future__ import annotations

import numpy as np
import pytest

from converters_testkit import build_tiny


def _nested():
    """A backbone model called inside the embedding model, and a Sequential head: as users build them."""
    from edgeface.keras import keras
    from edgeface.layers import L2Normalize

    layers = keras.layers
    backbone_in = keras.Input((32, 32, 3))
    x = layers.Conv2D(8, 3, strides=2, padding="same", use_bias=False, name="bb_conv")(backbone_in)
    x = layers.BatchNormalization(name="bb_bn")(x)
    x = layers.ReLU(name="bb_relu")(x)
    backbone = keras.Model(backbone_in, x, name="backbone")
    head = keras.Sequential([layers.GlobalAveragePooling2D(name="pool"), layers.Dense(16, name="dense")], name="head")
    inputs = keras.Input((32, 32, 3), name="image")
    model = keras.Model(inputs, L2Normalize(name="embedding")(head(backbone(inputs))), name="nested")
    rng = np.random.default_rng(0)
    model.get_layer("backbone").get_layer("bb_bn").set_weights(
        [rng.uniform(0.5, 2, 8), rng.normal(size=8), rng.normal(size=8), rng.uniform(0.5, 2, 8)])
    return model, backbone


def test_flatten_inlines_nested_models_exactly():
    from edgeface_converters._model import flatten, is_nested

    model, _ = _nested()
    assert is_nested(model)
    flat = flatten(model)
    assert not is_nested(flat)
    assert [layer.name for layer in flat.layers] == ["image", "bb_conv", "bb_bn", "bb_relu", "pool", "dense",
                                                     "embedding"]
    x = np.random.default_rng(1).normal(size=(3, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(flat(x), model(x), atol=1e-6)
    plain = build_tiny()
    assert flatten(plain) is plain


def test_flatten_refuses_a_nested_model_called_twice():
    from edgeface.keras import keras
    from edgeface.layers import L2Normalize
    from edgeface_converters._model import flatten

    _, backbone = _nested()
    inputs = keras.Input((32, 32, 3))
    twice = keras.layers.Add()([backbone(inputs), backbone(inputs)])
    model = keras.Model(inputs, L2Normalize()(keras.layers.GlobalAveragePooling2D()(twice)))
    with pytest.raises(ValueError, match="calls its nested model 'backbone' 2 times"):
        flatten(model)


@pytest.mark.slow
def test_qat_needs_the_flat_model():
    from edgeface_converters._model import flatten
    from edgeface_converters._qat import apply_qat

    model, _ = _nested()
    with pytest.raises(ValueError,
                       match=r"needs a flat model, but 'nested' contains the model\(s\) \['backbone', 'head'\]"):
        apply_qat(model)
    qat, callbacks = apply_qat(flatten(model))
    assert callbacks == [] and any(type(layer).__name__ == "QuantizeWrapperV2" for layer in qat.layers)
    assert type(qat.layers[-1]).__name__ == "L2Normalize"  # kept in float


def test_fold_dense_batchnorm_is_exact():
    from edgeface_converters._model import fold_dense_batchnorm

    model = build_tiny()
    rng = np.random.default_rng(0)
    bn = model.get_layer("embedding_bn")
    bn.set_weights([rng.uniform(0.5, 2, 32), rng.normal(size=32), rng.normal(size=32), rng.uniform(0.1, 2, 32)])
    folded = fold_dense_batchnorm(model)
    names = [layer.name for layer in folded.layers]
    assert "embedding_bn" not in names and folded.get_layer("embedding_dense").use_bias
    assert "b1_pw_bn" in names  # conv BatchNorms stay: the converter folds those itself
    x = rng.normal(size=(4, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(folded(x), model(x), atol=1e-5)
    assert fold_dense_batchnorm(folded) is folded
