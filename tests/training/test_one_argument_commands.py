"""Each command in its one-argument form on a small trained model: the training card and the
manifest supply every other input. And the CLI convention both halves share."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training_helpers import make_dataset

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lfw_trained(tmp_path_factory, mini_lfw) -> Path:
    """A tiny model trained with `edgeface train --lfw`: its card records LFW and folds 6-10."""
    from edgeface_runtime.cli import main

    out = tmp_path_factory.mktemp("lfw_run")
    code = main(["train", "--lfw", "--data", str(mini_lfw), "--backbone", "tiny", "--weights", "none",
                 "--input-size", "32", "--embedding-size", "16", "--epochs-frozen", "0", "--epochs", "2",
                 "--steps-per-epoch", "3", "--batch-size", "8", "--no-align", "--out", str(out), "--quiet"])
    assert code == 0
    return out / "model.keras"


@pytest.fixture(scope="module")
def folder_trained(tmp_path_factory) -> Path:
    """A tiny model trained on a folder with people held out for validation (recorded in its card)."""
    from edgeface_runtime.cli import main

    root = tmp_path_factory.mktemp("folder_run")
    data = make_dataset(root / "faces", identities=9, per_identity=6, size=40)
    code = main(["train", "--data", str(data), "--backbone", "tiny", "--weights", "none", "--input-size", "32",
                 "--embedding-size", "16", "--epochs-frozen", "0", "--epochs", "2", "--steps-per-epoch", "3",
                 "--batch-size", "8", "--val-fraction", "0.34", "--no-align", "--out", str(root / "run"), "--quiet"])
    assert code == 0
    return root / "run" / "model.keras"


def test_convert_with_only_the_model_takes_every_input_from_the_training_card(edgeface, lfw_trained):
    code, out, err = edgeface("convert", lfw_trained, "--finetune-steps", "30")
    assert code in (0, 1), err
    variants = lfw_trained.parent / "variants"
    manifest = json.loads((variants / "manifest.json").read_text())
    card = str(lfw_trained.parent / "training_card.json")
    assert card in manifest["inputs"]["calibration"] and card in manifest["inputs"]["pairs"]
    assert "mixed with the calibration crops" in manifest["inputs"]["fine-tuning"]
    assert manifest["pairs"]["folds"] == [6, 7, 8, 9, 10]
    status = {v["name"]: v["status"] for v in manifest["variants"]}
    assert [status[n] for n in ("float32", "float16", "dynamic", "int8")] == ["ok"] * 4
    assert status["pruned-int8"] in ("ok", "failed")  # built: the card supplied fine-tuning data
    assert status["pruned-dynamic"] in ("ok", "failed")  # the same pruned model, dynamic-range
    skipped = [v for v in manifest["variants"] if v["status"] == "skipped"]
    assert {v["name"] for v in skipped} == {"leaky-int8", "clustered-int8", "qat-int8", "pruned-clustered-int8",
                                            "pruned-qat-int8", "clustered-qat-int8"}
    assert all("--variants all" in v["reason"] for v in skipped)
    for line in ("calibration: ", "pairs: ", "clustered-int8: not in the default set"):
        assert line in out  # the table says where each input came from, and why a variant is missing


def test_report_with_only_the_convert_folder_uses_the_recorded_protocol(edgeface, lfw_trained):
    variants = lfw_trained.parent / "variants"
    if not (variants / "manifest.json").exists():
        code, _, err = edgeface("convert", lfw_trained, "--variants", "float32,int8")
        assert code == 0, err
    code, out, err = edgeface("report", variants, "--latency-runs", "0", "--no-progress")
    assert code == 0, err
    assert "protocol: " in err and "pairs.txt" in err
    report = json.loads((variants / "report" / "report.json").read_text())
    assert report["protocol"]["folds"] == [6, 7, 8, 9, 10]


def test_evaluate_with_only_the_model_uses_the_card_protocol_and_json_is_a_switch(edgeface, lfw_trained, tmp_path):
    code, out, err = edgeface("evaluate", lfw_trained, "--json", "--out", tmp_path / "eval.json")
    assert code == 0, err
    printed = json.loads(out)
    assert printed == json.loads((tmp_path / "eval.json").read_text()) and "accuracy" in printed
    code, out, err = edgeface("evaluate", "-m", lfw_trained)
    assert code == 0 and "accuracy" in out


def test_a_folder_trained_model_calibrates_and_reports_on_its_validation_people(edgeface, folder_trained):
    code, out, err = edgeface("convert", folder_trained, "--variants", "float32,int8")
    assert code == 0, err
    manifest = json.loads((folder_trained.parent / "variants" / "manifest.json").read_text())
    assert "validation people" in manifest["inputs"]["pairs"] and manifest["pairs"]["impostor"] > 0
    assert all(v["thresholds"] for v in manifest["variants"])  # calibrated here, not inherited
    code, out, err = edgeface("report", folder_trained.parent / "variants", "--latency-runs", "0", "--no-progress")
    assert code == 0, err
    report = json.loads((folder_trained.parent / "variants" / "report" / "report.json").read_text())
    assert report["protocol"]["kind"] == "generated" and report["protocol"]["num_identities"] == 3


def test_without_a_card_the_error_names_the_flag_to_add(edgeface, tmp_path, lfw_trained):
    import shutil

    alone = tmp_path / "alone.keras"
    shutil.copy(lfw_trained, alone)
    code, out, err = edgeface("convert", alone)
    assert code == 2 and out == ""
    assert err.startswith("error: no calibration faces") and "--calibration DIR" in err and err.count("\n") == 1
    code, _, err = edgeface("report", alone, "--latency-runs", "0")
    assert code == 2 and "--pairs FILE --images DIR" in err


def test_both_halves_share_one_exit_code_table_and_model_option(edgeface, tmp_path):
    from edgeface_runtime.commandline import EXIT_CODES, exit_code

    missing = tmp_path / "missing.tflite"
    code, _, err = edgeface("inspect", "-m", missing)  # device half (argparse)
    assert code == exit_code("model") == 5 and err.startswith("error: ")
    code, _, err = edgeface("evaluate", "-m", tmp_path / "m.keras", missing)  # two different models
    assert code == exit_code("usage") and "two models given" in err
    code, _, err = edgeface("verify", "a.jpg", "b.jpg", "-v", "-q")
    assert code == 2 and "contradict" in err
    assert [e.code for e in EXIT_CODES] == sorted(e.code for e in EXIT_CODES)
    code, out, _ = edgeface("convert", "--help")
    assert code == 0 and "Exit codes" in out and "--quiet" in out and "--model" in out
