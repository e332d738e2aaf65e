"""The `edgeface` command with only the runtime's own commands (runs without TensorFlow)."""

import json
from importlib import metadata

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from edgeface_runtime import cli

runner = CliRunner()


@pytest.fixture(scope="module", autouse=True)
def plugins_loaded():
    cli.load_plugins()


def crops(tmp_path, count):
    rng = np.random.default_rng(7)
    paths = []
    for i in range(count):
        path = tmp_path / f"face{i}.png"
        Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


def test_inspect_reports_metadata_operators_and_legacy_support(fixtures_dir):
    result = runner.invoke(cli.app, ["inspect", str(fixtures_dir / "tiny_dynamic_fc_v12.tflite"), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["metadata"]["embedding_size"] == 16
    assert info["unsupported"]["tflite-runtime-2.14"] == ["FULLY_CONNECTED v12"]


def test_verify_same_image_exits_zero_and_reports_the_threshold(fixtures_dir, tmp_path):
    a, b = crops(tmp_path, 2)
    model = str(fixtures_dir / "tiny_float32.tflite")
    same = runner.invoke(cli.app, ["verify", a, a, "-m", model, "--no-detect", "--json"])
    assert same.exit_code == 0, same.output
    record = json.loads(same.output)
    assert record["same"] is True and record["threshold"] == 0.6 and record["far"] == 0.001
    strict = runner.invoke(cli.app, ["verify", a, b, "-m", model, "--no-detect", "--threshold", "1.0"])
    assert strict.exit_code == 1 and "DIFFERENT" in strict.output


def test_enroll_identify_and_gallery_admin_commands(fixtures_dir, tmp_path):
    paths = crops(tmp_path, 3)
    model, gallery = str(fixtures_dir / "tiny_float32.tflite"), str(tmp_path / "g.db")
    assert runner.invoke(cli.app, ["enroll", "alice", paths[0], paths[1], "-g", gallery, "-m", model, "--no-detect"]).exit_code == 0
    assert runner.invoke(cli.app, ["enroll", "bob", paths[2], "-g", gallery, "-m", model, "--no-detect"]).exit_code == 0
    found = runner.invoke(cli.app, ["identify", paths[2], "-g", gallery, "-m", model, "--no-detect", "--json"])
    assert found.exit_code == 0 and json.loads(found.output)["best"] == "bob"
    listed = runner.invoke(cli.app, ["gallery", "list", gallery, "--json"])
    assert {p["name"]: p["templates"] for p in json.loads(listed.output)} == {"alice": 2, "bob": 1}
    assert runner.invoke(cli.app, ["gallery", "rename", gallery, "bob", "robert"]).exit_code == 0
    assert runner.invoke(cli.app, ["gallery", "remove", gallery, "alice"]).exit_code == 0
    missing = runner.invoke(cli.app, ["gallery", "remove", gallery, "alice"])
    assert missing.exit_code == 8 and missing.output.startswith("error:")
    listed = runner.invoke(cli.app, ["gallery", "list", gallery, "--json"])
    assert [p["name"] for p in json.loads(listed.output)] == ["robert"]


def test_bad_inputs_are_one_line_errors_with_their_exit_codes(fixtures_dir, tmp_path):
    not_image = tmp_path / "notes.jpg"
    not_image.write_text("hello")
    model = str(fixtures_dir / "tiny_float32.tflite")
    decode = runner.invoke(cli.app, ["verify", str(not_image), str(not_image), "-m", model, "--no-detect"])
    assert decode.exit_code == 3 and decode.output.count("\n") == 1
    bad_model = runner.invoke(cli.app, ["inspect", str(not_image)])
    assert bad_model.exit_code == 5 and "not a TFLite model" in bad_model.output


def test_training_commands_explain_how_to_get_them_when_edgeface_is_absent():
    installed = any(ep.value.startswith("edgeface.") for ep in metadata.entry_points(group=cli.ENTRY_POINT_GROUP))
    result = runner.invoke(cli.app, ["train", "--help"] if installed else ["train", "anything"])
    if installed:
        assert result.exit_code == 0
    else:
        assert result.exit_code == 2 and "pip install edgeface" in result.output
