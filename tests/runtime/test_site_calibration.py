"""Site calibration: a threshold set on the gallery's own different-person pairs (TensorFlow-free).

Synthetic embeddings for the arithmetic, the storage and the decisions; the ORL measurement
(a domain the bundled model never saw, people never used to calibrate) when ORL is present.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import sqlite3
import sys
from pathlib import Path

import numpy as np
import pytest

from edgeface_runtime import FaceVerifier, Gallery, GalleryError, SiteCalibration
from edgeface_runtime._calibration import calibrate_templates, cross_person_scores
from edgeface_runtime.metrics import calibrate_threshold

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
DIM = 16


def people_embeddings(people: int, per_person: int, *, spread: float = 0.6, seed: int = 0):
    """Unit embeddings: each person a random centre plus noise; returns (matrix, labels)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(people, DIM))
    rows, labels = [], []
    for p in range(people):
        for _ in range(per_person):
            rows.append(centres[p] + spread * rng.normal(size=DIM))
            labels.append(f"p{p:03d}")
    matrix = np.array(rows)
    return (matrix / np.linalg.norm(matrix, axis=1, keepdims=True)).astype(np.float32), labels


def brute_force_pairs(matrix, labels, same=False):
    scores = []
    for i in range(len(labels)):
        for j in range(i + 1, len(labels)):
            if (labels[i] == labels[j]) == same:
                scores.append(float(np.dot(matrix[i], matrix[j])))
    return np.sort(np.array(scores, dtype=np.float32))


# --------------------------------------------------------------------------- the arithmetic


def test_cross_person_scores_are_every_pair_of_two_different_people_once():
    matrix, labels = people_embeddings(7, 3)
    scores, sampled = cross_person_scores(matrix, labels)
    assert not sampled and scores.size == (21 * 21 - 7 * 9) // 2
    np.testing.assert_allclose(np.sort(scores), brute_force_pairs(matrix, labels), atol=1e-6)
    genuine, _ = cross_person_scores(matrix, labels, same=True)
    np.testing.assert_allclose(np.sort(genuine), brute_force_pairs(matrix, labels, same=True), atol=1e-6)


def test_site_threshold_is_the_metrics_calibration_on_the_impostor_pairs():
    matrix, labels = people_embeddings(30, 4)
    record = calibrate_templates(matrix, labels, 1e-2, model_fingerprint="ab" * 32)
    impostors = brute_force_pairs(matrix, labels)
    assert record.impostor_pairs == impostors.size == (120 * 120 - 30 * 16) // 2
    assert record.threshold == pytest.approx(calibrate_threshold(impostors, 1e-2), abs=1e-6)
    assert record.false_accepts == np.count_nonzero(impostors >= record.threshold) <= 1e-2 * impostors.size
    assert record.achieved_far <= record.far == 1e-2
    assert record.min_supported_far == pytest.approx(3 / impostors.size)  # rule of three
    assert record.people == 30 and record.templates == 120 and record.warning is None
    assert record.genuine_pairs == 30 * 6 and 0.0 <= record.tar <= 1.0


def test_too_few_impostor_pairs_for_the_far_asked_warn_and_say_how_many_are_needed(caplog):
    matrix, labels = people_embeddings(5, 2)  # 40 impostor pairs back FAR >= 0.075 only
    with caplog.at_level(logging.WARNING, logger="edgeface_runtime"):
        record = calibrate_templates(matrix, labels, 1e-3, model_fingerprint="ab" * 32)
    assert record.impostor_pairs == 40 and not record.supported
    assert "3000" in record.warning and "40 impostor pairs" in record.warning
    assert record.threshold > max(brute_force_pairs(matrix, labels))  # zero false accepts allowed
    assert any("site calibration" in r.getMessage() for r in caplog.records)


def test_calibration_needs_two_people_and_a_far_inside_zero_one():
    matrix, labels = people_embeddings(1, 5)
    with pytest.raises(ValueError, match="at least two enrolled people"):
        calibrate_templates(matrix, labels, 1e-3, model_fingerprint="ab" * 32)
    matrix, labels = people_embeddings(3, 2)
    for far in (0, 1, -0.1, "often"):
        with pytest.raises(ValueError, match="far must be a false-accept rate"):
            calibrate_templates(matrix, labels, far, model_fingerprint="ab" * 32)


def test_a_huge_gallery_is_calibrated_on_a_seeded_sample_of_its_pairs():
    matrix, labels = people_embeddings(40, 5)
    full = calibrate_templates(matrix, labels, 0.05, model_fingerprint="ab" * 32)
    sampled = calibrate_templates(matrix, labels, 0.05, model_fingerprint="ab" * 32, max_pairs=5000)
    assert sampled.sampled and sampled.impostor_pairs == 5000 and not full.sampled
    assert abs(sampled.threshold - full.threshold) < 0.05


def test_the_models_own_threshold_is_measured_on_the_site_pairs():
    matrix, labels = people_embeddings(20, 3)
    impostors = brute_force_pairs(matrix, labels)
    record = calibrate_templates(matrix, labels, 1e-2, model_fingerprint="ab" * 32,
                                 model_thresholds={1e-3: 0.9, 1e-2: 0.1})
    assert record.model_threshold == 0.1
    assert record.model_far_on_site == pytest.approx(np.mean(impostors >= 0.1))


# --------------------------------------------------------------------------- storage in the gallery


def enrolled_gallery(path, people=12, per_person=3, fingerprint="ab" * 32):
    matrix, labels = people_embeddings(people, per_person)
    gallery = Gallery.open(path, model_fingerprint=fingerprint, embedding_size=DIM)
    for name in sorted(set(labels)):
        gallery.enroll(name, matrix[[i for i, label in enumerate(labels) if label == name]])
    return gallery


def test_a_site_threshold_is_stored_per_far_and_read_back_by_another_connection(tmp_path):
    with enrolled_gallery(tmp_path / "g.db") as gallery:
        assert gallery.site_calibration() is None and gallery.site_calibrations() == {}
        first = gallery.calibrate(1e-2)
        gallery.calibrate(0.05)
        again = gallery.calibrate(1e-2)  # replaces the one at the same FAR
    with Gallery.open(tmp_path / "g.db", model_fingerprint="ab" * 32, embedding_size=DIM) as other:
        stored = other.site_calibrations()
        assert sorted(stored) == [1e-2, 0.05]
        assert stored[1e-2].threshold == first.threshold == again.threshold
        assert other.site_calibration(0.05).far == 0.05
        assert other.site_calibration().far == 1e-2  # no 1e-3 stored: the strictest
        assert other.site_calibration(1e-4) is None
        other.clear_site_calibration()
        assert other.site_calibrations() == {}


def test_a_gallery_from_before_site_calibration_opens_and_calibrates(tmp_path):
    path = tmp_path / "old.db"
    enrolled_gallery(path).close()
    with sqlite3.connect(path) as conn:  # what an older edgeface wrote: no site key in meta
        assert conn.execute("SELECT COUNT(*) FROM meta WHERE key = 'site_calibration'").fetchone()[0] == 0
    with Gallery.open(path, model_fingerprint="ab" * 32, embedding_size=DIM) as gallery:
        assert gallery.site_calibration() is None
        assert gallery.calibrate(0.05).impostor_pairs > 0


def test_a_stored_site_threshold_of_another_model_is_ignored(tmp_path, caplog):
    path = tmp_path / "g.db"
    with enrolled_gallery(path) as gallery:
        record = gallery.calibrate(0.05)
    with sqlite3.connect(path) as conn:  # as if copied in from another model's gallery
        forged = dict(record.to_dict(), model_fingerprint="cd" * 32)
        conn.execute("UPDATE meta SET value = ? WHERE key = 'site_calibration'", (json.dumps([forged]),))
    with Gallery.open(path, model_fingerprint="ab" * 32, embedding_size=DIM) as gallery:
        with caplog.at_level(logging.WARNING, logger="edgeface_runtime"):
            assert gallery.site_calibration() is None
        assert "calibrated for model cdcdcdcdcdcd" in caplog.text


def test_calibrating_a_gallery_of_one_person_is_a_gallery_error(tmp_path):
    with enrolled_gallery(tmp_path / "g.db", people=1) as gallery:
        with pytest.raises(GalleryError, match="at least two enrolled people"):
            gallery.calibrate(1e-3)


# --------------------------------------------------------------------------- decisions


@pytest.fixture
def verifier(fixtures_dir, tmp_path):
    """The tiny 16-d test model (thresholds 0.6 at FAR 1e-3, 0.45 at 1e-2) with a gallery of 12 people."""
    matrix, labels = people_embeddings(12, 3)
    fv = FaceVerifier.from_path(fixtures_dir / "tiny_float32.tflite", detect=False, gallery_path=tmp_path / "g.db")
    for name in sorted(set(labels)):
        fv.enroll(name, [row for row, label in zip(matrix, labels) if label == name])
    yield fv, matrix
    fv.close()


def test_verify_and_identify_say_which_threshold_decided(verifier):
    fv, matrix = verifier
    assert fv.verify(matrix[0], matrix[1]).threshold_source == "model"
    record = fv.calibrate(1e-2)
    assert isinstance(record, SiteCalibration) and record.model_threshold == 0.45
    result = fv.verify(matrix[0], matrix[1])
    assert (result.threshold, result.far, result.threshold_source) == (record.threshold, 1e-2, "site")
    found = fv.identify(matrix[4])
    assert found.threshold_source == "site" and found.threshold == record.threshold
    assert fv.verify(matrix[0], matrix[1], threshold=0.3).threshold_source == "explicit"
    assert fv.threshold_choice().calibration == record


def test_identify_states_the_far_compounded_over_the_enrolled_people(verifier):
    fv, matrix = verifier
    fv.calibrate(1e-2)
    result = fv.identify(matrix[0])
    assert result.people == 12 and result.comparisons == 36
    assert result.compounded_far == pytest.approx(1 - (1 - 1e-2) ** 12)
    assert result.compounded_far < result.stranger_accept_rate == pytest.approx(1 - (1 - 1e-2) ** 36)


def test_a_far_without_a_site_threshold_falls_back_to_the_models(fixtures_dir, verifier, tmp_path):
    fv, matrix = verifier
    fv.calibrate(1e-2)
    fv.close()
    with FaceVerifier.from_path(fixtures_dir / "tiny_float32.tflite", detect=False, gallery_path=tmp_path / "g.db",
                                far=1e-3) as strict:
        choice = strict.threshold_choice()
        assert (choice.threshold, choice.far, choice.source) == (0.6, 1e-3, "model")
    with FaceVerifier.from_path(fixtures_dir / "tiny_float32.tflite", detect=False, gallery_path=tmp_path / "g.db",
                                site_threshold=False) as ignoring:
        assert ignoring.threshold_choice().source == "model"


def test_enrolling_after_calibration_warns_that_the_site_threshold_is_stale(fixtures_dir, verifier, tmp_path,
                                                                             caplog):
    fv, matrix = verifier
    fv.calibrate(1e-2)
    fv.enroll("newcomer", [matrix[0] + 0.1])
    fv.close()
    with caplog.at_level(logging.WARNING, logger="edgeface_runtime"):
        FaceVerifier.from_path(fixtures_dir / "tiny_float32.tflite", detect=False,
                               gallery_path=tmp_path / "g.db").close()
    assert "changed since its site threshold was calibrated (36 templates then, 37 now)" in caplog.text


# --------------------------------------------------------------------------- the command


def test_calibrate_command_stores_the_threshold_that_verify_and_identify_then_use(verifier, fixtures_dir,
                                                                                   tmp_path, edgeface):
    fv, _ = verifier
    fv.close()
    model, gallery = fixtures_dir / "tiny_float32.tflite", tmp_path / "g.db"
    code, out, err = edgeface("calibrate", "-g", gallery, "-m", model, "--far", "0.01", "--json")
    assert code == 0, err
    record = json.loads(out)
    assert record["saved"] and record["far"] == 0.01 and record["impostor_pairs"] == (36 * 36 - 12 * 9) // 2
    assert record["min_supported_far"] == pytest.approx(3 / record["impostor_pairs"])
    code, out, err = edgeface("calibrate", "-g", gallery, "-m", model, "--far", "1e-3")
    assert code == 0 and "warning: only 594 impostor pairs back FAR 0.001" in out
    code, out, _ = edgeface("calibrate", "-g", gallery, "-m", model, "--far", "0.05", "--dry-run")
    assert code == 0 and "not saved" in out

    from PIL import Image

    photo = tmp_path / "probe.png"
    Image.fromarray(np.full((48, 48, 3), 128, np.uint8)).save(photo)
    code, out, _ = edgeface("verify", photo, photo, "-m", model, "--no-detect", "-g", gallery, "--json")
    assert json.loads(out)["threshold_source"] == "site" and json.loads(out)["far"] == 1e-3
    code, out, _ = edgeface("identify", photo, "-m", model, "--no-detect", "-g", gallery, "--json")
    found = json.loads(out)
    assert found["threshold_source"] == "site" and found["people"] == 12
    assert found["compounded_far"] == pytest.approx(1 - (1 - 1e-3) ** 12)
    code, out, _ = edgeface("identify", photo, "-m", model, "--no-detect", "-g", gallery)
    assert "site threshold, calibrated on this gallery at FAR 0.001" in out and "12 people" in out


def test_calibrate_command_refuses_a_missing_gallery(fixtures_dir, tmp_path, edgeface):
    code, out, err = edgeface("calibrate", "-g", tmp_path / "none.db", "-m", fixtures_dir / "tiny_float32.tflite")
    assert code == 8 and out == "" and "enroll people first" in err
    assert not (tmp_path / "none.db").exists()


def test_calibrate_command_says_a_far_outside_zero_one_is_bad_input(verifier, fixtures_dir, tmp_path, edgeface):
    verifier[0].close()
    code, out, err = edgeface("calibrate", "-g", tmp_path / "g.db", "-m", fixtures_dir / "tiny_float32.tflite",
                              "--far", "2")
    assert code == 2 and out == "" and "far must be a false-accept rate in (0, 1)" in err


# --------------------------------------------------------------------------- a domain the model never saw


def _example(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.orl
def test_on_orl_a_site_threshold_keeps_its_far_on_people_never_used_to_calibrate(orl_dir):
    measure = _example("site_calibration")
    people, counts = measure.embed_folder(orl_dir)  # the bundled model and detector
    assert counts["images"] == 400 and len(people) == 40
    # s1-s20 enrolled (5 photos each) and calibrated, then every pair of s21-s40's 200 photos.
    records = measure.measure(people, [1e-3, 1e-2], splits=10, enroll=5)
    for row in measure.summarise(records):
        assert row["calibration_pairs"] == 4750 and row["test_impostor_pairs"] == 19000
        # Averaged over 10 halvings of the people: within 1.5x of the FAR asked for...
        assert row["site_far"]["mean"] <= 1.5 * row["far"], row
        # ...while accepting (nearly) every genuine pair of the unseen people.
        assert row["site_tar"]["mean"] >= 0.99, row
    canonical = [r for r in records if r["split"] == 0]
    assert all(r["site_far"] <= 1.5 * r["far"] for r in canonical), canonical
