"""The leaky step: PReLU models (SFace) get a full-int8 file on XNNPACK's int8 kernels."""

from __future__ import annotations

import numpy as np
import pytest

from converters_testkit import build_tiny, metadata_for, train_tiny


@pytest.fixture(scope="module")
def prelu_model_path(faces_dir, tmp_path_factory):
    from edgeface.keras import keras
    from edgeface.training import save_model

    keras.utils.set_random_seed(0)
    model = build_tiny(prelu=True)
    train_tiny(model, faces_dir / "data")
    path = tmp_path_factory.mktemp("prelu") / "model.keras"
    save_model(model, path, metadata_for(model))
    return path


def test_each_prelu_becomes_a_leaky_relu_with_its_channels_median_slope():
    from edgeface.keras import keras
    from edgeface_converters._activations import replace_prelu

    model = build_tiny(prelu=True)
    rewritten = replace_prelu(model)
    prelus = [layer for layer in model.layers if isinstance(layer, keras.layers.PReLU)]
    assert len(prelus) == 5
    for layer in prelus:
        leaky = rewritten.get_layer(layer.name)
        assert isinstance(leaky, keras.layers.LeakyReLU)
        assert leaky.alpha == pytest.approx(float(np.median(layer.get_weights()[0])))
    for layer in model.layers:
        if layer.weights and not isinstance(layer, keras.layers.PReLU):
            for a, b in zip(layer.get_weights(), rewritten.get_layer(layer.name).get_weights()):
                np.testing.assert_array_equal(a, b)
    assert model.get_layer("stem_conv") is not rewritten.get_layer("stem_conv")  # a copy: the source is kept


def test_a_model_without_prelu_is_refused_with_the_reason():
    from edgeface_converters._activations import replace_prelu

    with pytest.raises(ValueError, match="no PReLU layers.*plain int8 variant"):
        replace_prelu(build_tiny())


@pytest.mark.slow
def test_leaky_int8_replaces_prelu_and_distils_back_toward_the_source(prelu_model_path, faces_dir, tmp_path):
    from edgeface_converters import convert
    from edgeface_converters._activations import replace_prelu
    from edgeface_converters._data import load_calibration
    from edgeface.training import load_model

    manifest = convert(prelu_model_path, tmp_path / "out", "int8,leaky-int8", calibration=faces_dir / "calibration",
                       data=faces_dir / "data", finetune_steps=150, face_detector=None)
    plain, leaky = manifest["int8"], manifest["leaky-int8"]
    assert plain.status == leaky.status == "ok", (plain.reason, leaky.reason)
    assert any(op.startswith("PRELU/") for op in plain.ops)
    assert not any(op.startswith("PRELU/") for op in leaky.ops)
    assert any(op.startswith("LEAKY_RELU/") for op in leaky.ops)
    (step,) = leaky.finetune
    assert step["step"] == "leaky" and step["learning_rate"] == 3e-4  # the step's own default
    assert step["distill_loss"][1] < step["distill_loss"][0]
    # Distillation made up for most of what the one-slope replacement lost.
    model, meta = load_model(prelu_model_path)
    x = load_calibration(faces_dir / "calibration", meta.preprocess).held_out  # preprocessed, as convert checks
    untuned = float(np.mean(np.sum(np.asarray(model(x)) * np.asarray(replace_prelu(model)(x)), axis=1)))
    assert leaky.agreement["mean"] > untuned + 0.5 * (1 - untuned), (untuned, leaky.agreement)
