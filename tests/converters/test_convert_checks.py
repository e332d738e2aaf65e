"""The checks that stop a bad file from shipping: old-interpreter ops, agreement, I/O types, skips."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


def _convert(model, faces, out, variants, **options):
    from edgeface_converters import convert

    return convert(model, out, variants, calibration=faces / "calibration", face_detector=None, **options)


def test_check_ops_catches_the_dynamic_range_fc_v12(tiny_model_path, faces_dir, tmp_path):
    from edgeface_runtime import UnsupportedOpError, check_ops
    from edgeface_runtime.metadata import strip_metadata

    # Converted for current LiteRT only: per-channel dense weights, FULLY_CONNECTED v12.
    manifest = _convert(tiny_model_path, faces_dir, tmp_path / "new", "dynamic", target="ai-edge-litert-2.3")
    result = manifest["dynamic"]
    assert result.ok and "FULLY_CONNECTED/v12" in result.ops
    model = strip_metadata((tmp_path / "new" / result.file).read_bytes())
    with pytest.raises(UnsupportedOpError, match=r"FULLY_CONNECTED version 12 \(has up to 10\)"):
        check_ops(model, "tflite-runtime-2.14")
    check_ops(model, "ai-edge-litert-2.3")


def test_without_fine_tuning_data_the_compressed_variants_distil_on_the_calibration_crops(tiny_model_path, faces_dir,
                                                                                          tmp_path):
    manifest = _convert(tiny_model_path, faces_dir, tmp_path, "int8,pruned-int8", finetune_steps=40)
    assert manifest["int8"].ok
    pruned = manifest["pruned-int8"]
    assert pruned.status in ("ok", "failed") and pruned.finetune[0]["steps"] == 40  # built, not skipped
    assert manifest.inputs["fine-tuning"].startswith("the calibration crops")
    assert manifest.finetune_data["source"].startswith("calibration crops")
    # Without calibration pairs the source's thresholds are carried over, and say so.
    from edgeface_runtime.metadata import read_metadata

    metadata = read_metadata(tmp_path / "int8.tflite")
    assert metadata.thresholds == {1e-3: 0.5} and "not recalibrated" in metadata.extra["thresholds_from"]


def test_a_classification_loss_without_labelled_data_skips_with_the_reason(tiny_model_path, faces_dir, tmp_path,
                                                                          caplog):
    manifest = _convert(tiny_model_path, faces_dir, tmp_path, "int8,clustered-qat-int8", task_weight=0.5)
    result = manifest["clustered-qat-int8"]
    assert result.status == "skipped" and result.file is None
    assert "task_weight > 0 needs labelled fine-tuning data" in result.reason and "--data DIR" in result.reason
    assert not (tmp_path / "clustered-qat-int8.tflite").exists()
    assert "skipping clustered-qat-int8" in caplog.text


def test_auto_lists_what_it_did_not_build_and_why(tiny_model_path, faces_dir, tmp_path):
    manifest = _convert(tiny_model_path, faces_dir, tmp_path, "auto")
    assert [r.name for r in manifest if r.ok] == ["float32", "float16", "dynamic", "int8"]
    assert "without fine-tuning data" in manifest["pruned-int8"].reason  # no data, no card: not by default
    assert "--variants all" in manifest["qat-int8"].reason
    assert [r.name for r in manifest] == list(__import__("edgeface_converters").VARIANTS)  # table order


def test_a_variant_below_the_agreement_floor_is_failed_not_shipped(tiny_model_path, faces_dir, tmp_path):
    (tmp_path / "int8.tflite").write_bytes(b"stale output of an earlier run")
    manifest = _convert(tiny_model_path, faces_dir, tmp_path, "float16,int8", min_cosine=0.99995)
    assert manifest["float16"].ok
    failed = manifest["int8"]
    assert failed.status == "failed" and failed.file is None
    assert "below 0.99995" in failed.reason and failed.agreement["mean"] < 0.99995
    assert not (tmp_path / "int8.tflite").exists()  # neither the new file nor the stale one
    assert sorted(p.name for p in tmp_path.iterdir()) == ["float16.tflite", "manifest.json"]  # no staging left


def test_integer_io_on_request(tiny_model_path, faces_dir, tmp_path):
    from edgeface_runtime import Embedder

    manifest = _convert(tiny_model_path, faces_dir, tmp_path, "int8", io="uint8")
    result = manifest["int8"]
    assert result.ok and result.io == {"input": "uint8", "output": "uint8"}
    assert result.agreement["mean"] > 0.98
    with Embedder.from_path(tmp_path / "int8.tflite") as embedder:  # the device path quantizes the input itself
        assert embedder.embed_many([__import__("numpy").full((32, 32, 3), 128, "uint8")]).shape == (1, 32)


def test_a_nested_model_is_flattened_for_tfmot(tiny_model_path, faces_dir, tmp_path):
    from edgeface.keras import keras
    from edgeface.training import load_model, save_model
    from edgeface_converters import convert

    trained, metadata = load_model(tiny_model_path)
    backbone = keras.Model(trained.input, trained.get_layer("b2_pw_relu").output, name="backbone")
    inputs = keras.Input((32, 32, 3), name="image")
    x = backbone(inputs)
    for name in ("embedding_pool", "embedding_dense", "embedding_bn", "embedding"):
        x = trained.get_layer(name)(x)
    nested = keras.Model(inputs, x, name="nested_embedder")
    path = save_model(nested, tmp_path / "nested.keras", metadata)
    manifest = convert(path, tmp_path / "out", "qat-int8", calibration=faces_dir / "calibration",
                       data=faces_dir / "data", finetune_steps=20, learning_rate=1e-4, face_detector=None)
    assert manifest.source["nested"] is True
    result = manifest["qat-int8"]
    assert result.ok, result.reason
    assert result.agreement["mean"] > 0.95


def test_runs_of_zeros_by_default_only_when_thresholds_are_recalibrated_on_pairs(tiny_model_path, faces_dir,
                                                                                 tmp_path):
    with_pairs = _convert(tiny_model_path, faces_dir, tmp_path / "a", "pruned-int8", finetune_steps=20,
                          calibration_pairs=faces_dir / "lfw" / "pairs.txt")
    without = _convert(tiny_model_path, faces_dir, tmp_path / "b", "pruned-int8", finetune_steps=20)
    assert with_pairs["pruned-int8"].options["prune_block"] == 4
    assert without["pruned-int8"].options["prune_block"] == 1  # inherited thresholds need the closer embedding
