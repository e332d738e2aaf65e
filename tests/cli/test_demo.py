"""The README's main job, `edgeface demo`, as a smoke run: one epoch per stage, two variants, real LFW."""

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
WEIGHTS = REPO.parent / "shared" / "weights" / "mobilenet_2_5_224_tf_no_top.h5"


@pytest.mark.slow
@pytest.mark.lfw
def test_demo_runs_end_to_end_and_leaves_every_artefact(lfw_dir, detector_models_dir, tmp_path, edgeface):
    if not WEIGHTS.exists():
        pytest.skip(f"MobileNet v1 0.25 ImageNet weights not found at {WEIGHTS}")
    out = tmp_path / "demo"
    code, stdout, stderr = edgeface("demo", "--quick", "--epochs-frozen", "1", "--epochs", "1", "--data", lfw_dir,
                                    "--weights", WEIGHTS, "--detector",
                                    detector_models_dir / "face_detection_short_range.tflite", "--out", out)
    assert code == 0, (stdout + stderr)[-3000:]
    for artefact in ("train/model.keras", "train/training_card.json", "variants/manifest.json",
                     "variants/float32.tflite", "report/report.md", "report/report.html", "gallery.db"):
        assert (out / artefact).is_file(), artefact
    output = stdout + stderr
    assert "edgeface demo: done" in output and "their other photos accepted" in output


def test_demo_plans_keep_their_epochs_against_the_recipe():
    from edgeface._demo import _plan, train_config

    for quick, frozen, epochs in ((True, 1, 2), (False, 3, 20)):
        config = train_config(_plan(quick), lfw="lfw", weights="w.h5", detector="d.tflite", out="runs/x", seed=0)
        # 20 is also TrainConfig's default: the recipe's 57 must not replace it
        assert (config.epochs_frozen, config.epochs) == (frozen, epochs)
        assert config.recipe == "lfw-mobilenet-v1-025" and config.align is True and config.detector == "d.tflite"


def test_the_device_gets_the_smallest_full_int8_variant_that_passed_even_when_dynamic_is_smaller():
    from types import SimpleNamespace

    from edgeface._demo import device_variant

    def record(name, ok, size, agreement=0.99):
        return SimpleNamespace(name=name, ok=ok, bytes=size, agreement={"mean": agreement})

    records = [record("float32", True, 990_200), record("dynamic", True, 307_700), record("int8", True, 340_700),
               record("pruned-int8", False, 200_000)]
    assert device_variant(records).name == "int8"
    # a pruned file is as large as the plain one (its zeros only compress): it must agree better to be shipped
    records.append(record("pruned-int8", True, 340_650, agreement=0.906))
    assert device_variant(records).name == "int8"
    records.append(record("qat-int8", True, 330_000, agreement=0.95))
    assert device_variant(records).name == "qat-int8"  # more than 1 % smaller
    without_int8 = [r for r in records if "int8" not in r.name]
    assert device_variant(without_int8).name == "dynamic"  # no integer variant passed: the smallest that did
    assert device_variant([record("int8", False, 1)]) is None
