"""`edgeface convert`: a thin command over the library."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.mark.slow
def test_convert_prints_json_manifest(edgeface, tiny_model_path, faces_dir, tmp_path, monkeypatch):
    monkeypatch.setattr("edgeface_converters._convert._detector", lambda *choice: None)  # synthetic faces
    code, out, err = edgeface("convert", tiny_model_path, "--out", tmp_path, "--variants", "float32,int8",
                              "--calibration", faces_dir / "calibration", "--json")
    assert code == 0, err
    manifest = json.loads(out)
    assert [v["name"] for v in manifest["variants"]] == ["float32", "int8"]
    assert all(v["status"] == "ok" for v in manifest["variants"])
    assert (tmp_path / "int8.tflite").exists()


def test_errors_are_one_line_and_exit_2(edgeface, tmp_path):
    bad = tmp_path / "model.keras"
    bad.write_text("not a model")
    code, _, err = edgeface("convert", bad, "--out", tmp_path / "o", "--calibration", tmp_path)
    assert code == 2
    assert err.startswith("error: ") and "is not a Keras file" in err
    assert err.count("\n") == 1
    code, _, err = edgeface("convert", bad, "--out", tmp_path, "--calibration", tmp_path, "--variants", "int4")
    assert code == 2 and "unknown variant(s) 'int4'" in err


def test_help_lists_the_variants(edgeface, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    code, out, _ = edgeface("convert", "--help")
    assert code == 0 and "Usage: edgeface convert" in out
    for option in ("--out", "--variants", "--calibration", "--data", "--calibration-pairs", "--target",
                   "--sparsity", "--clusters", "--json"):
        assert option in out
    assert "pruned-clustered-int8" in out


def test_detector_option_reaches_the_library_and_a_missing_file_is_one_line(edgeface, tmp_path, monkeypatch,
                                                                           detector_models_dir):
    seen = {}

    def fake_convert(model, options=None, **kwargs):
        seen["options"] = options
        raise ValueError("stop here")

    monkeypatch.setattr("edgeface_converters.convert", fake_convert)
    detector = detector_models_dir / "face_detection_short_range.tflite"
    code, _, err = edgeface("convert", tmp_path / "m.keras", "--out", tmp_path / "o", "--calibration", tmp_path,
                            "--detector", detector)
    assert code == 2 and "stop here" in err
    assert Path(seen["options"].detector) == detector
    code, _, err = edgeface("convert", tmp_path / "m.keras", "--out", tmp_path / "o", "--calibration", tmp_path)
    assert seen["options"].detector is None  # the library's "auto": the card's detector, else the runtime's
    monkeypatch.undo()  # the library loads the detector before it opens the model
    code, _, err = edgeface("convert", tmp_path / "m.keras", "--out", tmp_path / "o", "--calibration", tmp_path,
                            "--detector", tmp_path / "missing.tflite")
    assert code == 5 and err.startswith("error: ") and "missing.tflite" in err and err.count("\n") == 1  # a model file
