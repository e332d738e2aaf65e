from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

typer = pytest.importorskip("typer")
from typer.testing import CliRunner  # noqa: E402

from training_helpers import make_dataset  # noqa: E402


@pytest.fixture
def app():
    from edgeface.cli import register

    application = typer.Typer()
    register(application)
    return application


def test_train_and_evaluate_commands(app, tmp_path, mini_lfw):
    runner = CliRunner()
    config = tmp_path / "train.toml"
    config.write_text('backbone = "tiny"\nweights = "none"\nembedding_size = 16\nepochs_frozen = 0\n'
                      'scale = 16.0\nmargin = 0.2\nval_fraction = 0.3\n')
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", str(config), "--lfw", "--data", str(mini_lfw), "--input-size", "32",
                                 "--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "8", "--out", str(out),
                                 "--quiet"])
    assert result.exit_code == 0, result.output
    assert "model:" in result.output and "LFW folds 6-10: accuracy" in result.output
    card = json.loads((out / "training_card.json").read_text())
    assert card["hyperparameters"]["input_size"] == [32, 32] and card["hyperparameters"]["dataset"] == "lfw"

    report = tmp_path / "report.json"
    result = runner.invoke(app, ["evaluate", str(out / "model.keras"), "--pairs", str(mini_lfw / "pairs.txt"),
                                 "--images", str(mini_lfw / "lfw-deepfunneled"), "--calibrate-far", "0.1",
                                 "--json", str(report)])
    assert result.exit_code == 0, result.output
    assert "accuracy" in result.output and "wrote threshold" in result.output
    assert json.loads(report.read_text())["calibrated"][0]["far"] == 0.1


def test_bad_input_is_one_line_and_exit_code_2(app, tmp_path):
    runner = CliRunner()
    data = make_dataset(tmp_path / "faces", identities=2, per_identity=2)
    result = runner.invoke(app, ["train", "--data", str(data), "--backbone", "mobilenet_v2_05", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert "error: unknown backbone 'mobilenet_v2_05'; did you mean 'mobilenet_v2_050'" in result.output
    result = runner.invoke(app, ["train", "--backbone", "tiny", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "no training data" in result.output
    result = runner.invoke(app, ["evaluate", str(tmp_path / "none.keras"), "--pairs", "p.txt", "--images", "."])
    assert result.exit_code == 2 and result.output.count("\n") == 1
    result = runner.invoke(app, ["train", "--input-size", "big", "--data", str(data)])
    assert result.exit_code == 2 and "--input-size" in result.output


def test_list_backbones(app):
    result = CliRunner().invoke(app, ["train", "--list-backbones"])
    assert result.exit_code == 0 and "mobilenet_v1_025" in result.output and "tiny" in result.output


def test_register_adds_the_training_commands_without_tensorflow():
    script = ("import sys, typer\nfrom edgeface.cli import register\napp = typer.Typer()\nregister(app)\n"
              "from typer.testing import CliRunner\nout = CliRunner().invoke(app, ['--help']).output\n"
              "print(all(c in out for c in ('train', 'evaluate', 'report')), 'tensorflow' in sys.modules)\n")
    repo = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(repo / "runtime"), str(repo)]))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert done.stdout.split() == ["True", "False"], done.stderr[-2000:]
