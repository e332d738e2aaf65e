"""The models that ship inside edgeface-runtime: found without flags, checked, and described."""

from __future__ import annotations

import hashlib

import pytest

from edgeface_runtime import _bundled


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    """No detector in the download cache: whatever is found must come from the package."""
    monkeypatch.setenv("EDGEFACE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(_bundled, "_checked", {})


def test_every_bundled_file_ships_with_its_pinned_checksum():
    for name, entry in _bundled.BUNDLED.items():
        filename, sha256 = entry.filename, entry.sha256
        path = _bundled.MODELS_DIR / filename
        assert path.is_file(), f"{name}: {path} is missing from the package"
        assert hashlib.sha256(path.read_bytes()).hexdigest() == sha256, name
    notice = (_bundled.MODELS_DIR / "NOTICE.md").read_text()
    assert "Apache-2.0" in notice and (_bundled.MODELS_DIR / "LICENSE.Apache-2.0").is_file()


def test_the_detector_is_found_in_the_package_with_an_empty_cache(empty_cache):
    from edgeface_runtime import FaceDetector
    from edgeface_runtime._detector import resolve_detector_path

    path = resolve_detector_path(None, "short")
    assert path.parent == _bundled.MODELS_DIR
    assert FaceDetector.from_path(path).input_size == (128, 128)


def test_a_damaged_bundled_file_is_an_error_not_a_wrong_answer(tmp_path, monkeypatch, empty_cache):
    from edgeface_runtime import ModelError

    (tmp_path / "face_detection_short_range.tflite").write_bytes(b"not the detector")
    monkeypatch.setattr(_bundled, "MODELS_DIR", tmp_path)
    with pytest.raises(ModelError, match="damaged.*reinstall edgeface-runtime"):
        _bundled.bundled_path("detector-short")


def test_a_package_without_the_default_model_says_what_to_pass(tmp_path, monkeypatch, empty_cache):
    from edgeface_runtime import ModelError

    monkeypatch.setattr(_bundled, "MODELS_DIR", tmp_path)
    assert _bundled.bundled_path("default-model") is None
    with pytest.raises(ModelError, match="-m model.tflite"):
        _bundled.default_model_path()
    with pytest.raises(ValueError, match="unknown bundled file"):
        _bundled.bundled_path("nope")


def test_inspect_without_a_path_describes_the_default_model_and_its_provenance(edgeface, empty_cache):
    code, out, _ = edgeface("inspect")
    assert code == 0
    assert "edgeface_sface.tflite" in out and "alignment arcface4" in out
    assert "source: sface (Apache-2.0" in out and "measured on LFW 10 folds: accuracy" in out


@pytest.mark.lfw
def test_verify_with_no_flags_uses_the_bundled_model_and_detector(edgeface, lfw_dir, empty_cache):
    root = lfw_dir / "lfw-deepfunneled"
    same = [root / "Colin_Powell" / f"Colin_Powell_{i:04d}.jpg" for i in (1, 2)]
    other = root / "Tony_Blair" / "Tony_Blair_0001.jpg"
    code, out, _ = edgeface("verify", same[0], same[1])
    assert code == 0 and "SAME" in out
    code, out, _ = edgeface("verify", same[0], other)
    assert code == 1 and "DIFFERENT" in out
