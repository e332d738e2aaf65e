"""The `edgeface` command with only the runtime's own commands (runs without TensorFlow)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgeface_runtime import cli

RUNTIME = Path(__file__).resolve().parents[2] / "runtime"


def crops(tmp_path, count):
    rng = np.random.default_rng(7)
    paths = []
    for i in range(count):
        path = tmp_path / f"face{i}.png"
        Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


def test_inspect_reports_metadata_operators_and_legacy_support(fixtures_dir, edgeface):
    code, out, err = edgeface("inspect", fixtures_dir / "tiny_dynamic_fc_v12.tflite", "--json")
    assert code == 0, err
    info = json.loads(out)
    assert info["metadata"]["embedding_size"] == 16
    assert info["unsupported"]["tflite-runtime-2.14"] == ["FULLY_CONNECTED v12"]


def test_verify_same_image_exits_zero_and_reports_the_threshold(fixtures_dir, tmp_path, edgeface):
    a, b = crops(tmp_path, 2)
    model = fixtures_dir / "tiny_float32.tflite"
    code, out, err = edgeface("verify", a, a, "-m", model, "--no-detect", "--json")
    assert code == 0, err
    record = json.loads(out)
    assert record["same"] is True and record["threshold"] == 0.6 and record["far"] == 0.001
    code, out, _ = edgeface("verify", a, b, "--model", model, "--no-detect", "--threshold", "1.0")
    assert code == 1 and out.startswith("DIFFERENT person: score ")


def test_enroll_identify_and_gallery_admin_commands(fixtures_dir, tmp_path, edgeface):
    paths = crops(tmp_path, 3)
    model, gallery = fixtures_dir / "tiny_float32.tflite", tmp_path / "g.db"
    code, out, _ = edgeface("enroll", "alice", paths[0], paths[1], "-g", gallery, "-m", model, "--no-detect")
    assert code == 0 and out == f"enrolled 'alice' with 2 template(s) in {gallery}\n"
    assert edgeface("enroll", "bob", paths[2], "--gallery", gallery, "-m", model, "--no-detect")[0] == 0
    code, out, _ = edgeface("identify", paths[2], "-g", gallery, "-m", model, "--no-detect", "--json", "--top-k", "1")
    assert code == 0 and json.loads(out)["best"] == "bob" and len(json.loads(out)["matches"]) == 1
    assert json.loads(out)["comparisons"] == 3  # alice's two templates and bob's one
    code, out, _ = edgeface("gallery", "list", gallery, "--json")
    assert {p["name"]: p["templates"] for p in json.loads(out)} == {"alice": 2, "bob": 1}
    assert edgeface("gallery", "rename", gallery, "bob", "robert")[:2] == (0, "renamed 'bob' to 'robert'\n")
    assert edgeface("gallery", "remove", gallery, "alice")[0] == 0
    code, out, err = edgeface("gallery", "remove", gallery, "alice")
    assert code == 8 and out == "" and err.startswith("error:") and err.count("\n") == 1
    code, out, _ = edgeface("gallery", "list", gallery)
    assert code == 0 and out.splitlines() == [f"1 people in {gallery}", "  robert (1)"]


def test_bad_inputs_are_one_line_errors_with_their_exit_codes(fixtures_dir, tmp_path, edgeface):
    not_image = tmp_path / "notes.jpg"
    not_image.write_text("hello")
    model = fixtures_dir / "tiny_float32.tflite"
    code, out, err = edgeface("verify", not_image, not_image, "-m", model, "--no-detect")
    assert code == 3 and out == "" and err.count("\n") == 1
    code, _, err = edgeface("inspect", not_image)
    assert code == 5 and "not a TFLite model" in err


def test_usage_errors_and_help_follow_the_usual_exit_codes(edgeface):
    code, out, _ = edgeface()
    assert code == 2 and "usage: edgeface" in out  # no command: the help, as a usage error
    code, _, err = edgeface("verify", "a.jpg")
    assert code == 2 and "--model" in err and "image_b" in err
    code, _, err = edgeface("identify", "a.jpg", "-g", "g.db", "-m", "m.tflite", "--top-k", "three")
    assert code == 2 and "--top-k" in err
    code, _, err = edgeface("no-such-command")
    assert code == 2 and "invalid choice: 'no-such-command'" in err
    code, out, _ = edgeface("gallery")
    assert code == 2 and all(name in out for name in ("list", "remove", "rename"))
    code, out, _ = edgeface("enroll", "--help")
    assert code == 0 and all(flag in out for flag in ("--gallery", "-g", "--model", "-m", "--replace", "--json"))


def test_help_lists_device_and_training_commands(edgeface):
    code, out, _ = edgeface("--help")
    assert code == 0
    listed = {line.split()[0] for line in out.splitlines() if line.startswith("    ")}
    assert set(cli.DEVICE_COMMANDS) | set(cli.TRAINING_COMMANDS) <= listed


def test_training_commands_explain_how_to_get_them_when_edgeface_is_absent(monkeypatch, edgeface):
    monkeypatch.setattr(cli, "_entry_points", lambda: {})  # as on a device: no `edgeface` distribution
    code, out, err = edgeface("train", "--data", "faces/")
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "`edgeface train`" in err and "pip install edgeface" in err
    code, out, _ = edgeface("--help")
    assert code == 0 and "convert          [needs `pip install edgeface`]" in out


def test_training_commands_run_through_their_entry_point_with_the_remaining_arguments(monkeypatch, edgeface):
    seen = []

    class EntryPoint:
        value = "somewhere:main"

        def load(self):
            return lambda argv, prog_name: seen.append((argv, prog_name)) or 7

    monkeypatch.setattr(cli, "_entry_points", lambda: {"train": EntryPoint()})
    assert edgeface("train", "--epochs", "1", "data/")[0] == 7
    assert seen == [(["--epochs", "1", "data/"], "edgeface train")]

    class Broken(EntryPoint):
        def load(self):
            raise ImportError("No module named 'tensorflow'")

    monkeypatch.setattr(cli, "_entry_points", lambda: {"train": Broken()})
    code, _, err = edgeface("train")
    assert code == 2 and "somewhere:main" in err and "tensorflow" in err


def test_a_device_command_loads_no_cli_framework(fixtures_dir):
    """On a device the CLI costs only argparse: typer, click, pydantic and rich stay unimported."""
    script = ("import sys\nfrom edgeface_runtime.cli import main\ncodes = [main(sys.argv[1:]), main(['--help'])]\n"
              "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
              "{'typer', 'click', 'pydantic', 'pydantic_core', 'rich', 'tensorflow'})\n"
              "print(codes, heavy, file=sys.stderr)\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(RUNTIME), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-c", script, "inspect", str(fixtures_dir / "tiny_float32.tflite")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "embedding 16-d" in done.stdout and "edgeface: face verification" in done.stdout
    assert done.stderr.strip().splitlines()[-1] == "[0, 0] []"


@pytest.mark.lfw
def test_detect_runs_the_detector_at_the_requested_input_size(lfw_dir, detector_models_dir, edgeface):
    photo = sorted((lfw_dir / "lfw-deepfunneled").glob("*/*.jpg"))[0]
    detector = detector_models_dir / "face_detection_short_range.tflite"
    code, out, _ = edgeface("detect", photo, "--detector", detector, "--detector-size", "96", "--json")
    faces = json.loads(out)["faces"]
    x0, y0, x1, y1 = faces[0]["box"]
    assert code == 0 and x0 < 125 < x1 and y0 < 125 < y1  # LFW centres the person in 250x250
    code, _, err = edgeface("detect", photo, "--detector", detector, "--detector-size", "100")
    assert code == 2 and err.startswith("error:") and "multiple of 16" in err
