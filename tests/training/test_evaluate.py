from __future__ import annotations

import json

import pytest

from training_helpers import tiny_config


@pytest.fixture(scope="module")
def lfw_run(mini_lfw, tmp_path_factory):
    from edgeface.training import train

    out = tmp_path_factory.mktemp("lfw_run")
    config = tiny_config(mini_lfw, out, dataset="lfw", epochs=2, val_fraction=0.3, lr=1e-2)
    return train(config)


def test_lfw_training_reports_folds_6_to_10(lfw_run):
    report = lfw_run.metrics["lfw_folds_6_10"]
    assert report["num_pairs"] == 20 and report["accuracy"]["folds"] == [6, 7, 8, 9, 10]
    assert {"tar_at_far", "eer", "auc"} <= set(report)
    card = json.loads(lfw_run.card_path.read_text())
    assert card["data"]["evaluation"]["folds"] == [6, 7, 8, 9, 10]
    people = set(card["data"]["train"]["identity_names"]) | set(card["data"]["validation"]["identity_names"])
    assert len(people) == 10  # only the people outside folds 6-10


def test_evaluate_keras_matches_training_and_calibrates(lfw_run, mini_lfw):
    from edgeface.evaluation import evaluate
    from edgeface.training import read_keras_metadata

    report = evaluate(lfw_run.model_path, mini_lfw / "pairs.txt", mini_lfw / "lfw-deepfunneled", calibrate_far=0.1)
    trained = lfw_run.metrics["lfw_folds_6_10"]
    assert report["accuracy"]["mean"] == pytest.approx(trained["accuracy"]["mean"])
    assert report["evaluated_folds"] == [6, 7, 8, 9, 10]
    threshold = report["calibrated"][0]["threshold"]
    assert read_keras_metadata(lfw_run.model_path).thresholds == {0.1: pytest.approx(threshold)}


def test_evaluate_tflite_through_the_runtime(lfw_run, mini_lfw, tmp_path):
    from edgeface._keras import tf
    from edgeface.evaluation import evaluate
    from edgeface.training import load_model
    from edgeface_runtime.metadata import read_metadata, write_metadata

    model, metadata = load_model(lfw_run.model_path)
    flat = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    path = tmp_path / "model.tflite"
    write_metadata(flat, metadata, destination=path)
    keras_report = evaluate(lfw_run.model_path, mini_lfw / "pairs.txt", mini_lfw / "lfw-deepfunneled")
    report = evaluate(path, mini_lfw / "pairs.txt", mini_lfw / "lfw-deepfunneled", calibrate_far=[0.1, 0.2])
    assert report["auc"] == pytest.approx(keras_report["auc"], abs=1e-3)
    stored = read_metadata(path).thresholds
    assert sorted(stored) == [0.1, 0.2] and stored[0.1] == pytest.approx(report["calibrated"][0]["threshold"])


def test_evaluate_input_errors(lfw_run, mini_lfw, tmp_path):
    from edgeface.evaluation import evaluate

    pairs, images = mini_lfw / "pairs.txt", mini_lfw / "lfw-deepfunneled"
    with pytest.raises(ValueError, match="model file not found"):
        evaluate(tmp_path / "none.keras", pairs, images)
    with pytest.raises(ValueError, match="not \\[11\\]"):
        evaluate(lfw_run.model_path, pairs, images, folds=[11])
    with pytest.raises(ValueError, match="false-accept rate"):
        evaluate(lfw_run.model_path, pairs, images, calibrate_far=2.0)
