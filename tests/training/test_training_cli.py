from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from training_helpers import make_dataset


def test_train_and_evaluate_commands(edgeface, tmp_path, mini_lfw):
    config = tmp_path / "train.toml"
    config.write_text('backbone = "tiny"\nweights = "none"\nembedding_size = 16\nepochs_frozen = 0\n'
                      'scale = 16.0\nmargin = 0.2\nval_fraction = 0.3\n')
    out = tmp_path / "run"
    code, out_text, err = edgeface("train", config, "--lfw", "--data", mini_lfw, "--input-size", "32", "--epochs", "1",
                                   "--steps-per-epoch", "2", "--batch-size", "8", "--embedding-style", "gdc",
                                   "--out", out, "--quiet")
    assert code == 0, err
    assert "model:" in out_text and "LFW folds 6-10: accuracy" in out_text
    card = json.loads((out / "training_card.json").read_text())
    assert card["hyperparameters"]["input_size"] == [32, 32] and card["hyperparameters"]["dataset"] == "lfw"
    assert card["hyperparameters"]["embedding_style"] == "gdc"

    report = tmp_path / "report.json"
    code, out_text, err = edgeface("evaluate", out / "model.keras", "--pairs", mini_lfw / "pairs.txt",
                                   "--images", mini_lfw / "lfw-deepfunneled", "--calibrate-far", "0.1", "--out", report)
    assert code == 0, err
    assert "accuracy" in out_text and "wrote threshold" in out_text
    assert json.loads(report.read_text())["calibrated"][0]["far"] == 0.1


def test_bad_input_is_one_line_and_exit_code_2(edgeface, tmp_path):
    data = make_dataset(tmp_path / "faces", identities=2, per_identity=2)
    code, _, err = edgeface("train", "--data", data, "--backbone", "mobilenet_v2_05", "--out", tmp_path / "r")
    assert code == 2
    assert "error: unknown backbone 'mobilenet_v2_05'; did you mean 'mobilenet_v2_050'" in err
    code, _, err = edgeface("train", "--backbone", "tiny", "--out", tmp_path / "r")
    assert code == 2 and "no training data" in err
    code, out, err = edgeface("evaluate", tmp_path / "none.keras", "--pairs", "p.txt", "--images", ".")
    assert code == 2 and out == "" and err.count("\n") == 1
    code, _, err = edgeface("train", "--input-size", "big", "--data", data)
    assert code == 2 and "--input-size" in err
    code, _, err = edgeface("train", "--data", data, "--backbone", "tiny", "--embedding-style", "pool")
    assert code == 2 and "embedding_style" in err and "gdc" in err


def test_list_backbones(edgeface):
    code, out, _ = edgeface("train", "--list-backbones")
    assert code == 0 and "mobilenet_v1_025" in out and "tiny" in out


def test_help_lists_the_training_commands_and_loads_no_tensorflow():
    """The installed entry points answer `edgeface --help` and `edgeface train --help` without TensorFlow."""
    script = ("import sys\nfrom edgeface_runtime.cli import main\n"
              "codes = [main(['--help']), main(['train', '--help']), main(['convert', '--help'])]\n"
              "print(codes, 'tensorflow' in sys.modules, file=sys.stderr)\n")
    repo = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(repo / "runtime"), str(repo)]), COLUMNS="200")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert done.stderr.strip().splitlines()[-1] == "[0, 0, 0] False", done.stderr[-2000:]
    assert "Usage: edgeface train" in done.stdout and "Usage: edgeface convert" in done.stdout
    assert "[needs `pip install edgeface`]" not in done.stdout  # installed: no install hints
    assert all(f"    {name} " in done.stdout for name in ("train", "evaluate", "report", "convert", "adapt"))
