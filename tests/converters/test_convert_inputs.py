"""Bad input fails early with a ValueError that says what was received and what to do."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from converters_testkit import SIZE, build_tiny, metadata_for


def _convert(model, out, variants="int8", **options):
    from edgeface_converters import convert

    options.setdefault("face_detector", None)
    return convert(model, out, variants, **options)


def test_not_a_keras_file(tmp_path, faces_dir):
    text = tmp_path / "model.keras"
    text.write_text("hello")
    with pytest.raises(ValueError, match="is not a Keras file"):
        _convert(text, tmp_path / "out", calibration=faces_dir / "calibration")
    h5 = tmp_path / "model.h5"
    h5.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))
    with pytest.raises(ValueError, match="an HDF5 file: re-save it as .keras"):
        _convert(h5, tmp_path / "out", calibration=faces_dir / "calibration")
    tflite = tmp_path / "model.tflite"
    tflite.write_bytes(b"\x1c\x00\x00\x00TFL3" + bytes(100))
    with pytest.raises(ValueError, match="already a TFLite model"):
        _convert(tflite, tmp_path / "out", calibration=faces_dir / "calibration")
    with pytest.raises(ValueError, match="model file not found"):
        _convert(tmp_path / "missing.keras", tmp_path / "out", calibration=faces_dir / "calibration")
    assert not (tmp_path / "out").exists()  # nothing written for a refused input


def test_keras3_file_is_refused_clearly(tmp_path, faces_dir):
    path = tmp_path / "k3.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("metadata.json", json.dumps({"keras_version": "3.5.0"}))
        archive.writestr("config.json", "{}")
    with pytest.raises(ValueError, match="saved by Keras 3.*tf_keras"):
        _convert(path, tmp_path / "out", calibration=faces_dir / "calibration")


@pytest.fixture(scope="module")
def bad_models(tmp_path_factory):
    """A classifier, a training-style two-input model, a model without metadata, a size mismatch."""
    from edgeface.keras import keras
    from edgeface.training import save_model

    root = tmp_path_factory.mktemp("bad")
    embedder = build_tiny()
    classifier = keras.Model(embedder.input, keras.layers.Dense(5, activation="softmax", name="logits")(
        embedder.get_layer("embedding_bn").output))
    save_model(classifier, root / "classifier.keras", metadata_for(embedder))
    labels = keras.Input((), dtype="int32", name="label")
    two = keras.Model([embedder.input, labels], embedder.output)
    save_model(two, root / "two_inputs.keras", metadata_for(embedder))
    save_model(embedder, root / "plain.keras")  # no edgeface.json
    save_model(embedder, root / "wrong_size.keras", metadata_for(embedder, input_size=(48, 48)))
    return root


def test_models_that_are_not_embedding_models(bad_models, faces_dir, tmp_path):
    calibration = faces_dir / "calibration"
    with pytest.raises(ValueError,
                       match=r"not an embedding model: its output is Dense 'logits' with shape \(None, 5\)"):
        _convert(bad_models / "classifier.keras", tmp_path, calibration=calibration)
    with pytest.raises(ValueError, match="takes 2 inputs.*not the training model"):
        _convert(bad_models / "two_inputs.keras", tmp_path, calibration=calibration)
    with pytest.raises(ValueError, match="carries no edgeface metadata"):
        _convert(bad_models / "plain.keras", tmp_path, calibration=calibration)
    with pytest.raises(ValueError, match="takes 32×32 images but its metadata says input_size 48×48"):
        _convert(bad_models / "wrong_size.keras", tmp_path, calibration=calibration)


def test_plain_keras_file_with_metadata_given(bad_models, faces_dir, tmp_path):
    from edgeface_converters._model import load_source

    model, metadata = load_source(bad_models / "plain.keras", metadata_for(build_tiny()))
    assert metadata.preprocess.input_size == (SIZE, SIZE) and model.output_shape == (None, 32)


def _write(folder: Path, images: list[np.ndarray], names: list[str] | None = None) -> Path:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / (names[i] if names else f"{i:03d}.png"))
    return folder


def test_bad_calibration_folders(tiny_model_path, faces_dir, tmp_path):
    from converters_testkit import face

    with pytest.raises(ValueError, match="does not exist or is not a folder"):
        _convert(tiny_model_path, tmp_path / "o", calibration=tmp_path / "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    with pytest.raises(ValueError, match="holds 0 image file"):
        _convert(tiny_model_path, tmp_path / "o", calibration=empty)
    broken = _write(tmp_path / "broken", [face(i, 0) for i in range(12)])
    for i in range(4):
        (broken / f"bad{i}.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(ValueError, match=r"4 of 16 calibration images could not be read.*bad0.jpg"):
        _convert(tiny_model_path, tmp_path / "o", calibration=broken)
    blank = _write(tmp_path / "blank", [np.full((40, 40, 3), 90, np.uint8)] * 12)
    with pytest.raises(ValueError, match="12 of 12 images .* are blank or a single colour"):
        _convert(tiny_model_path, tmp_path / "o", calibration=blank)


def test_calibration_images_without_faces(tiny_model_path, tmp_path, detector_models_dir):
    from converters_testkit import face
    from edgeface_runtime import FaceDetector

    detector = FaceDetector.from_path(detector_models_dir / "face_detection_short_range.tflite")
    patterns = _write(tmp_path / "patterns", [face(i, 0, size=128) for i in range(12)])
    with pytest.raises(ValueError, match=r"no face found in \d+ of 12 sampled calibration images"):
        _convert(tiny_model_path, tmp_path / "o", calibration=patterns, face_detector=detector)


def test_bad_options_fail_before_any_work(tmp_path):
    missing = tmp_path / "missing.keras"  # never opened: options are checked first
    missing.with_suffix(".txt").write_text("a file where the output folder should be")
    for options, message in [
        (dict(variants="int4"), "unknown variant"),
        (dict(target="tflite-runtime-2.10"), "unknown target 'tflite-runtime-2.10'"),
        (dict(io="int16"), "io must be one of float32, int8, uint8"),
        (dict(sparsity=1.5), "sparsity must be a fraction"),
        (dict(clusters=1), "clusters must be at least 2"),
        (dict(fars=(0.0,)), "FAR values must be between 0 and 1"),
        (dict(finetune_steps=0), "finetune_steps must be at least 1"),
        (dict(distill_weight=0.0), "distill_weight and task_weight must be >= 0 and not both 0"),
        (dict(out_dir=missing.with_suffix(".txt")), "is a file; give a folder"),
    ]:
        variants = options.pop("variants", "int8")
        out = options.pop("out_dir", tmp_path)
        with pytest.raises(ValueError, match=message):
            _convert(missing, out, variants, calibration=tmp_path, **options)


def test_finetune_data_of_another_size(tiny_model_path, faces_dir, tmp_path):
    from edgeface.keras import tf
    from edgeface_converters import FineTuneData

    images = tf.zeros((8, 48, 48, 3))
    data = FineTuneData(tf.data.Dataset.from_tensor_slices((images, tf.zeros(8, tf.int32))).batch(4), 3)
    with pytest.raises(ValueError, match=r"images of shape \(None, 48, 48, 3\) but the model takes 32×32×3"):
        _convert(tiny_model_path, tmp_path, "qat-int8", calibration=faces_dir / "calibration", data=data)


def test_pairs_file_problems(tiny_model_path, faces_dir, tmp_path):
    calibration = faces_dir / "calibration"
    with pytest.raises(ValueError, match="calibration pairs file .* not found"):
        _convert(tiny_model_path, tmp_path, calibration=calibration, calibration_pairs=tmp_path / "pairs.txt")
    (tmp_path / "pairs.txt").write_text((faces_dir / "lfw" / "pairs.txt").read_text())  # images elsewhere
    with pytest.raises(ValueError, match="could not be read under .*; pass the folder holding them"):
        _convert(tiny_model_path, tmp_path / "o", calibration=calibration, calibration_pairs=tmp_path / "pairs.txt")


def test_a_face_source_models_learning_rate_in_its_metadata_is_the_fine_tuning_default(tiny_model_path, faces_dir,
                                                                                         tmp_path):
    from dataclasses import replace

    from edgeface.training import load_model, save_model

    model, meta = load_model(tiny_model_path)
    hinted = tmp_path / "hinted.keras"
    save_model(model, hinted, replace(meta, extra={**meta.extra, "compression_learning_rate": 2e-5}))
    common = dict(calibration=faces_dir / "calibration", data=faces_dir / "data", finetune_steps=2)
    by_default = _convert(hinted, tmp_path / "a", "pruned-int8", **common)["pruned-int8"]
    assert [step["learning_rate"] for step in by_default.finetune] == [2e-5]
    chosen = _convert(hinted, tmp_path / "b", "pruned-int8", learning_rate=1e-3, **common)["pruned-int8"]
    assert [step["learning_rate"] for step in chosen.finetune] == [1e-3]  # the flag wins
    plain = _convert(tiny_model_path, tmp_path / "c", "pruned-int8", **common)["pruned-int8"]
    assert [step["learning_rate"] for step in plain.finetune] == [1e-3]  # no hint: the pruning default
    save_model(model, hinted, replace(meta, extra={**meta.extra, "compression_learning_rate": "fast"}))
    with pytest.raises(ValueError, match="compression_learning_rate='fast'.*--learning-rate"):
        _convert(hinted, tmp_path / "d", "pruned-int8", **common)
