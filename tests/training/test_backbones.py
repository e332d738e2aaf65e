from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

SHARED_WEIGHTS = Path(__file__).resolve().parents[3] / "shared" / "weights" / "mobilenet_2_5_224_tf_no_top.h5"


def test_registry_lists_the_builtin_backbones():
    from edgeface.backbones import list_backbones

    names = list_backbones()
    for expected in ("mobilenet_v1_025", "mobilenet_v1_100", "mobilenet_v2_035", "mobilenet_v2_100",
                     "mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0", "resnet50", "vgg16",
                     "inception_v3", "tiny"):
        assert expected in names


def test_unknown_backbone_suggests_the_closest_name():
    from edgeface.backbones import create_backbone

    with pytest.raises(ValueError, match=r"unknown backbone 'mobilenetv2_050'.*did you mean 'mobilenet_v2_050'"):
        create_backbone("mobilenetv2_050")


def test_preprocess_per_family():
    from edgeface.backbones import backbone_preprocess

    mobile = backbone_preprocess("mobilenet_v1_025", (112, 112))
    assert (mobile.color_order, mobile.mean, mobile.std, mobile.input_size) == ("RGB", (127.5,) * 3, (127.5,) * 3,
                                                                                (112, 112))
    caffe = backbone_preprocess("resnet50")
    assert (caffe.color_order == "BGR" and caffe.std == (1.0,) * 3
            and caffe.mean == pytest.approx((103.939, 116.779, 123.68)))
    assert backbone_preprocess("vgg16") == backbone_preprocess("resnet50")
    assert backbone_preprocess("efficientnet_b0").mean == (0.0,) * 3
    assert backbone_preprocess("inception_v3").std == (127.5,) * 3


def test_tiny_backbone_is_built_flat_on_the_given_tensor():
    from edgeface._keras import keras
    from edgeface.backbones import create_backbone

    inputs = keras.Input((32, 32, 3))
    backbone = create_backbone("tiny", input_tensor=inputs, input_size=(32, 32))
    assert backbone.output.shape[1:] == (4, 4, 64)
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(backbone.output))
    assert not any(isinstance(layer, keras.Model) for layer in model.layers)  # flat: no nested model
    assert {layer.name for layer in backbone.layers} <= {layer.name for layer in model.layers}


def test_input_size_and_weights_are_checked():
    from edgeface.backbones import create_backbone

    with pytest.raises(ValueError, match="at least 75x75"):
        create_backbone("inception_v3", input_size=(64, 64))
    with pytest.raises(ValueError, match="has no ImageNet weights"):
        create_backbone("tiny", weights="imagenet", input_size=(32, 32))
    with pytest.raises(ValueError, match="does not exist"):
        create_backbone("tiny", weights="/nonexistent/weights.h5", input_size=(32, 32))


def test_register_backbone_like_the_builtins(monkeypatch):
    from edgeface import _backbones
    from edgeface.backbones import backbone_preprocess, create_backbone, list_backbones, register_backbone

    monkeypatch.setattr(_backbones, "_REGISTRY", _backbones._REGISTRY.copy())  # the test's entry goes with it
    register_backbone("tiny_copy", _backbones._tiny, (32, 32), backbone_preprocess("tiny"), min_input_size=8)
    assert "tiny_copy" in list_backbones()
    assert create_backbone("tiny_copy", input_size=(16, 16)).output.shape[1:] == (2, 2, 64)
    with pytest.raises(ValueError, match="already registered"):
        register_backbone("tiny_copy", _backbones._tiny, (32, 32), backbone_preprocess("tiny"))


def test_mobilenet_v3_has_no_rescaling_layer():
    from edgeface._keras import keras
    from edgeface.backbones import create_backbone

    model = create_backbone("mobilenet_v3_small", input_size=(32, 32))
    assert not [layer for layer in model.layers if isinstance(layer, keras.layers.Rescaling)]


@pytest.mark.skipif(not SHARED_WEIGHTS.is_file(), reason=f"shared ImageNet weights not found at {SHARED_WEIGHTS}")
def test_shared_mobilenet_weights_load_and_are_recognised():
    from edgeface._backbones import build_backbone

    backbone = build_backbone("mobilenet_v1_025", weights=SHARED_WEIGHTS, input_size=(64, 64))
    assert backbone.weights_sha256 == "dbdb03ee2a22fd895301636cd328b234bb3a9952358f436d82f46b81e0d5b0bf"
    conv = backbone.model.get_layer("conv1").get_weights()[0]
    assert conv.shape == (3, 3, 3, 8) and np.abs(conv).sum() > 0
    with pytest.raises(ValueError, match=r"holds the weights of backbone 'mobilenet_v1_025'.*not 'mobilenet_v1_050'"):
        build_backbone("mobilenet_v1_050", weights=SHARED_WEIGHTS, input_size=(64, 64))


def test_weights_of_another_width_are_diagnosed(tmp_path):
    from edgeface._backbones import build_backbone

    path = tmp_path / "mobilenet_025_random.h5"
    build_backbone("mobilenet_v1_025", input_size=(32, 32)).model.save_weights(path)
    with pytest.raises(ValueError, match=r"do not fit backbone 'mobilenet_v1_050'.*seems to be for 'mobilenet_v1_025'"):
        build_backbone("mobilenet_v1_050", weights=path, input_size=(32, 32))


def test_a_file_that_is_not_weights_is_refused(tmp_path):
    from edgeface._backbones import build_backbone

    path = tmp_path / "notes.h5"
    path.write_text("not hdf5")
    with pytest.raises(ValueError, match="do not fit backbone 'tiny'"):
        build_backbone("tiny", weights=os.fspath(path), input_size=(32, 32))


def test_top_blocks_and_frozen_batchnorm():
    from edgeface._backbones import build_backbone, top_block_layers
    from edgeface._keras import keras
    from edgeface._train import TrainConfig, _set_trainable

    backbone = build_backbone("mobilenet_v2_035", input_size=(32, 32))
    top = {layer.name for layer in top_block_layers(backbone.spec, backbone.model.layers, 2)}
    assert "block_16_project" in top and "block_15_expand" in top and "Conv_1" in top
    assert not any(name.startswith("block_14") for name in top)
    config = TrainConfig(backbone="mobilenet_v2_035", data="x", unfreeze=2, freeze_bn=True)
    assert _set_trainable(backbone, "frozen", config) == 0
    assert _set_trainable(backbone, "finetune", config) > 0
    trainable = [layer for layer in backbone.model.layers if layer.trainable and layer.weights]
    assert {layer.name for layer in trainable} <= top
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in trainable)
