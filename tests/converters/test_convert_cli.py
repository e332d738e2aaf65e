"""`edgeface convert`: a thin command over the library."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner


@pytest.fixture
def app() -> typer.Typer:
    from edgeface_converters.cli import register

    app = typer.Typer()
    register(app)

    @app.command("noop")  # a second command, so typer keeps `convert` as a sub-command
    def noop() -> None:
        pass

    return app


@pytest.mark.slow
def test_convert_prints_json_manifest(app, tiny_model_path, faces_dir, tmp_path, monkeypatch):
    monkeypatch.setattr("edgeface_converters._convert._detector", lambda choice: None)  # synthetic faces
    result = CliRunner().invoke(app, ["convert", str(tiny_model_path), "--out", str(tmp_path), "--variants",
                                      "float32,int8", "--calibration", str(faces_dir / "calibration"), "--json"])
    assert result.exit_code == 0, result.output
    manifest = json.loads(result.stdout)
    assert [v["name"] for v in manifest["variants"]] == ["float32", "int8"]
    assert all(v["status"] == "ok" for v in manifest["variants"])
    assert (tmp_path / "int8.tflite").exists()


def test_errors_are_one_line_and_exit_2(app, tmp_path):
    bad = tmp_path / "model.keras"
    bad.write_text("not a model")
    runner = CliRunner()
    result = runner.invoke(app, ["convert", str(bad), "--out", str(tmp_path / "o"), "--calibration", str(tmp_path)])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and "is not a Keras file" in result.stderr
    assert result.stderr.count("\n") == 1
    result = runner.invoke(app, ["convert", str(bad), "--out", str(tmp_path), "--calibration", str(tmp_path),
                                 "--variants", "int4"])
    assert result.exit_code == 2 and "unknown variant(s) 'int4'" in result.stderr


def test_help_lists_the_variants(app):
    result = CliRunner().invoke(app, ["convert", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for option in ("--out", "--variants", "--calibration", "--data", "--calibration-pairs", "--target",
                   "--sparsity", "--clusters", "--json"):
        assert option in result.stdout
    assert "pruned-clustered-int8" in result.stdout
