"""examples/door_access and examples/kiosk_embed.py: decision logic, configuration, end-to-end runs.

TensorFlow-free. examples/ is not a package, so the scripts are imported by path.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import runpy
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgeface_runtime import IdentifyResult, Match, image_files, read_metadata

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
DOOR_SCRIPT = EXAMPLES / "door_access" / "door_access.py"


def _import_by_path(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


door = _import_by_path("door_access", DOOR_SCRIPT)

THRESHOLD = 0.5


def seen(name: str, score: float = 0.8) -> IdentifyResult:
    """A frame in which ``name`` passed the threshold."""
    return IdentifyResult(matches=(Match(name, score, score >= THRESHOLD),), threshold=THRESHOLD, far=1e-3)


def stranger(closest: str = "alice", score: float = 0.2) -> IdentifyResult:
    """A frame with a face nobody enrolled matches (closest is below the threshold)."""
    return IdentifyResult(matches=(Match(closest, score, False),), threshold=THRESHOLD, far=1e-3)


NO_FACE = None


def feed(controller, frames, start: float = 0.0, step: float = 0.1):
    """Feed identities at ``step``-second intervals; return the decisions (None included)."""
    return [controller.update(start + i * step, identity) for i, identity in enumerate(frames)]


def actions(decisions):
    return [(d.action, d.person) if d else None for d in decisions]


# --- DoorController ----------------------------------------------------------------------------


def test_opens_only_after_required_hits_of_the_same_person():
    decisions = feed(door.DoorController(required_hits=3, window=5), [seen("alice")] * 3)
    assert actions(decisions) == [None, None, ("open", "alice")]
    opened = decisions[-1]
    assert (opened.hits, opened.window, opened.threshold, opened.far) == (3, 5, THRESHOLD, 1e-3)
    assert opened.score == pytest.approx(0.8)


def test_hits_must_fall_within_the_last_window_frames():
    controller = door.DoorController(required_hits=3, window=4)
    frames = [seen("alice"), seen("alice"), NO_FACE, NO_FACE, seen("alice")]  # the first two slid out
    assert actions(feed(controller, frames)) == [None] * 5
    assert actions(feed(controller, [seen("alice")], start=1.0)) == [None]  # alice x2 of the last 4
    assert actions(feed(controller, [seen("alice")], start=2.0)) == [("open", "alice")]


def test_interleaved_people_do_not_add_up():
    controller = door.DoorController(required_hits=3, window=4, cooldown_seconds=0)
    decisions = feed(controller, [seen("alice"), seen("bob")] * 6)  # 4 hits in every window, 2 per person
    assert actions(decisions) == [None] * 12


def test_unknown_faces_never_open_and_are_denied_once_per_cooldown():
    controller = door.DoorController(required_hits=2, window=3, cooldown_seconds=5.0)
    empty_gallery = IdentifyResult(matches=(), threshold=THRESHOLD, far=None)
    frames = [stranger("alice", 0.49), stranger("bob", 0.3), empty_gallery] * 10
    decisions = feed(controller, frames, step=0.1)  # 3 seconds: one cooldown
    assert all(d is None or d.action == "deny" for d in decisions)
    denies = [d for d in decisions if d]
    assert len(denies) == 1
    assert (denies[0].person, denies[0].closest, denies[0].score, denies[0].hits) == (None, "bob", 0.3, 2)
    # Still there after the cooldown: the votes in the window deny again at once, then wait again.
    later = feed(controller, [stranger(), stranger()], start=10.0)
    assert actions(later) == [("deny", None), None]


def test_a_near_miss_is_not_a_hit():
    controller = door.DoorController(required_hits=2, window=2)
    below = IdentifyResult(matches=(Match("alice", THRESHOLD - 1e-6, False),), threshold=THRESHOLD, far=None)
    assert [d.action if d else None for d in feed(controller, [below, below])] == [None, "deny"]


def test_cooldown_suppresses_a_second_open():
    controller = door.DoorController(required_hits=2, window=3, cooldown_seconds=5.0)
    assert actions(feed(controller, [seen("alice")] * 2, start=0.0)) == [None, ("open", "alice")]
    # Still at the door 1-4 s later: no second open, whoever it is.
    assert actions(feed(controller, [seen("alice")] * 4 + [seen("bob")] * 4, start=1.0, step=0.4)) == [None] * 8
    # After the cooldown the votes still in the window count.
    assert actions(feed(controller, [seen("bob")], start=5.2)) == [("open", "bob")]


def test_votes_start_afresh_after_an_open():
    controller = door.DoorController(required_hits=2, window=5, cooldown_seconds=0)
    assert actions(feed(controller, [seen("alice")] * 4)) == [None, ("open", "alice"), None, ("open", "alice")]


def test_a_frame_without_a_face_counts_as_a_miss():
    controller = door.DoorController(required_hits=3, window=4)
    assert actions(feed(controller, [seen("alice"), NO_FACE, seen("alice"), NO_FACE, seen("alice")])) == [None] * 5
    controller = door.DoorController(required_hits=3, window=4)
    assert actions(feed(controller, [seen("alice"), seen("alice"), NO_FACE, seen("alice")]))[-1] == ("open", "alice")


@pytest.mark.parametrize("settings, message", [
    (dict(required_hits=0), "required_hits must be an integer >= 1"),
    (dict(required_hits=4, window=3), "window must be an integer >= required_hits (4)"),
    (dict(required_hits=True), "required_hits must be an integer"),
    (dict(cooldown_seconds=-1), "cooldown_seconds must be a number >= 0"),
])
def test_controller_rejects_bad_settings(settings, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        door.DoorController(**settings)


# --- configuration -----------------------------------------------------------------------------

MINIMAL = """
[model]
path = "model.tflite"
[gallery]
path = "gallery.db"
[source]
input = "frames"
"""


def write_config(folder: Path, text: str) -> Path:
    path = folder / "door.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_example_config_is_valid_and_documents_every_key():
    example = EXAMPLES / "door_access" / "door.example.toml"
    config = door.load_config(example)
    base = example.parent.resolve()
    assert config.model_path == base / "model.tflite"
    assert config.gallery_path == base / "var" / "gallery.db"
    assert (config.source, config.far, config.threshold) == ("camera:0", 1e-3, None)
    assert (config.required_hits, config.window, config.cooldown_seconds, config.action) == (3, 5, 5.0, "log")
    text = example.read_text(encoding="utf-8")
    for section, keys in door._SCHEMA.items():
        assert f"[{section}]" in text
        for key in keys:
            assert f"{key} =" in text, f"door.example.toml does not document [{section}] {key}"


def test_minimal_config_gets_defaults_and_paths_relative_to_the_file(tmp_path):
    config = door.load_config(write_config(tmp_path, MINIMAL))
    assert config.model_path == tmp_path / "model.tflite"
    assert config.source == str(tmp_path / "frames")
    assert config.log_path == tmp_path / "access.jsonl"
    assert (config.required_hits, config.window, config.detect, config.max_fps) == (3, 5, True, 0.0)


@pytest.mark.parametrize("override, message", [
    ('[decision]\nrequired_hits = 4\nwindow = 3', "window (3) must be >= required_hits (4)"),
    ('[decision]\nrequred_hits = 2', "unknown key 'requred_hits' in [decision] (did you mean 'required_hits'?)"),
    ('[decison]\nwindow = 2', "unknown section [decison] (did you mean 'decision'?)"),
    ('[decision]\nwindow = "5"', "[decision] window must be an integer, got str '5'"),
    ('[decision]\ncooldown_seconds = -1', "cooldown_seconds must be >= 0"),
    ('[decision]\nrequired_hits = true', "required_hits must be an integer, got bool True"),
    ('[model]\nthreshold = 0.5\nfar = 1e-3', "sets both threshold (0.5) and far (0.001)"),
    ('[model]\nthreshold = 1.5', "threshold is a cosine similarity in [-1, 1], got 1.5"),
    ('[model]\nfar = 0', "far is a false-accept rate in (0, 1)"),
    ('[detector]\nvariant = "long"', "variant must be one of short, full, got 'long'"),
    ('[detector]\ninput_size = 100', "input_size is a multiple of 16 between 64 and 512"),
    ('[source]\ninput = "camera:"', "needs a camera: 'camera:0'"),
    ('[source]\nmax_fps = -1', "max_fps must be >= 0"),
    ('[action]\ntype = "relay"', "type must be one of log, command, python, got 'relay'"),
    ('[action]\ntype = "command"', "type 'command' needs command = [\"program\""),
    ('[action]\ntype = "command"\ncommand = "open-door --now"', "[action] command must be a list, got str"),
    ('[action]\ntype = "python"\ncallable = "relay"', "needs callable = \"module:function\""),
    ('log = "access.jsonl"', "[log] must be a table, got str"),
])
def test_config_errors_say_what_to_fix(tmp_path, override, message):
    toml = door._toml_module()
    data = toml.loads(MINIMAL)
    for section, values in toml.loads(override).items():
        data[section] = {**data[section], **values} if isinstance(values, dict) and section in data else values
    with pytest.raises(door.ConfigError) as caught:
        door.parse_config(data, base_dir=tmp_path, origin="door.toml")
    assert str(caught.value).startswith("door.toml: ")
    assert message in str(caught.value)


def test_config_reports_every_problem_at_once(tmp_path):
    with pytest.raises(door.ConfigError) as caught:
        door.load_config(write_config(tmp_path, "[decision]\nwindow = 0\n"))
    message = str(caught.value)
    for fragment in ("[model] path is required", "[gallery] path is required", "[source] input is required",
                     "window (0) must be >= required_hits (3)"):
        assert fragment in message


def test_config_file_problems(tmp_path):
    with pytest.raises(door.ConfigError, match="not found; start from door.example.toml"):
        door.load_config(tmp_path / "missing.toml")
    with pytest.raises(door.ConfigError, match="is not valid TOML"):
        door.load_config(write_config(tmp_path, "[model\npath = 1\n"))


def test_missing_tomllib_and_tomli_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "tomllib", None)  # None in sys.modules makes the import fail
    monkeypatch.setitem(sys.modules, "tomli", None)
    with pytest.raises(door.ConfigError, match=r"Python >= 3.11 \(tomllib\) or the tomli package.*pip install tomli"):
        door._toml_module()


def test_command_action_must_exist(tmp_path):
    config = door.load_config(write_config(tmp_path, MINIMAL + '[action]\ntype = "command"\ncommand = ["./nope.sh"]\n'))
    with pytest.raises(door.ConfigError, match="program './nope.sh' not found"):
        door.make_action(config)


def test_python_action_is_imported_from_the_config_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))  # make_action adds the config folder
    (tmp_path / "relay_for_test.py").write_text("opened = []\ndef open_door(decision):\n    opened.append(decision)\n")
    config = door.load_config(write_config(tmp_path, MINIMAL + '[action]\ntype = "python"\n'
                                                               'callable = "relay_for_test:open_door"\n'))
    action = door.make_action(config)
    assert action.__name__ == "open_door"
    bad = door.load_config(write_config(tmp_path, MINIMAL + '[action]\ntype = "python"\n'
                                                            'callable = "relay_for_test:nope"\n'))
    with pytest.raises(door.ConfigError, match="cannot be loaded"):
        door.make_action(bad)
    sys.modules.pop("relay_for_test", None)


def test_gpio_relay_example_pulses_the_relay_in_the_background(monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))
    calls = []

    class FakeRelay:
        def __init__(self, pin, **options):
            calls.append(("init", pin, options))

        def blink(self, **options):
            calls.append(("blink", options))

    monkeypatch.setitem(sys.modules, "gpiozero", type(sys)("gpiozero"))
    sys.modules["gpiozero"].DigitalOutputDevice = FakeRelay
    monkeypatch.delitem(sys.modules, "gpio_relay", raising=False)
    config = door.parse_config(door._toml_module().loads(MINIMAL + '[action]\ntype = "python"\n'
                                                         'callable = "gpio_relay:open_door"\n'),
                               base_dir=EXAMPLES / "door_access")
    door.make_action(config)(door.Decision("open", "alice", 0.8, THRESHOLD, 1e-3, 3, 5))
    assert calls == [("init", 17, {"active_high": False, "initial_value": False}),
                     ("blink", {"on_time": 2.0, "off_time": 0, "n": 1, "background": True})]
    monkeypatch.delitem(sys.modules, "gpio_relay")
    monkeypatch.setitem(sys.modules, "gpiozero", None)  # not installed
    with pytest.raises(door.ConfigError, match="'gpio_relay:open_door' cannot be loaded: ModuleNotFoundError"):
        door.make_action(config)
    sys.modules.pop("gpio_relay", None)


def test_command_action_gets_the_person_and_fails_loudly(tmp_path):
    script = tmp_path / "relay.sh"
    script.write_text('#!/bin/sh\necho "$EDGEFACE_PERSON $EDGEFACE_SCORE" > "$(dirname "$0")/opened.txt"\n')
    script.chmod(0o755)
    config = door.load_config(write_config(tmp_path, MINIMAL + '[action]\ntype = "command"\n'
                                                               'command = ["./relay.sh"]\n'))
    decision = door.Decision("open", "alice", 0.81234, THRESHOLD, 1e-3, 3, 5)
    door.make_action(config)(decision)
    assert (tmp_path / "opened.txt").read_text().strip() == "alice 0.8123"
    with pytest.raises(RuntimeError, match="exited with 1"):
        door.CommandAction(["false"])(decision)


# --- frame sources and the access log ------------------------------------------------------------


def test_folder_source_is_sorted_and_skips_other_files(tmp_path):
    for name in ("b.png", "a.jpg", "c.JPEG", "notes.txt", ".hidden.jpg"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub").mkdir()
    assert [frame.label for frame in door.open_frames(str(tmp_path))] == ["a.jpg", "b.png", "c.JPEG"]


def test_camera_and_video_sources_without_opencv_say_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)
    video = tmp_path / "door.mp4"
    video.write_bytes(b"\x00")
    for spec in ("camera:0", str(video)):
        with pytest.raises(door.SourceError, match="need OpenCV.*pip install opencv-python-headless"):
            next(door.open_frames(spec))


def test_missing_source_is_a_clear_error(tmp_path):
    with pytest.raises(door.SourceError, match="does not exist; give 'camera:0', a folder of images or a video"):
        door.open_frames(str(tmp_path / "nope"))


def test_access_log_writes_json_lines(tmp_path):
    path = tmp_path / "logs" / "access.jsonl"
    with door.AccessLog(path, "ab" * 32) as log:
        log.write(door.Decision("open", "José", 0.812345, 0.5, 1e-3, 3, 5), frame="f1.jpg")
        log.write(door.Decision("deny", None, 0.2, 0.5, None, 3, 5, closest="bob"), frame="f2.jpg")
    first, second = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert first["person"] == "José" and first["score"] == 0.8123 and first["decision"] == "open"
    assert second["person"] == "unknown" and second["closest"] == "bob" and second["far"] is None
    for record in (first, second):
        assert set(door.LOG_FIELDS) <= set(record)
        assert datetime.fromisoformat(record["time"]).tzinfo is not None
        assert record["model"] == "ab" * 32


# --- end to end with the tiny fixture model (mechanics; no trained model, no detector) -------------


def pattern(seed: int, size: int = 64) -> Image.Image:
    """A two-colour block pattern: the random-weight fixture model maps different ones well apart."""
    rng = np.random.default_rng(seed)
    colors = rng.integers(0, 256, (2, 3))
    blocks = rng.random((8, 8)) < 0.5
    pixels = np.where(blocks[..., None], colors[0], colors[1]).astype(np.uint8)
    return Image.fromarray(pixels.repeat(size // 8, 0).repeat(size // 8, 1))


def tiny_config(tmp_path: Path, fixtures_dir: Path, **decision) -> Path:
    settings = {"required_hits": 2, "window": 3, "cooldown_seconds": 60.0, **decision}
    text = f"""
[model]
path = "{fixtures_dir / 'tiny_float32.tflite'}"
threshold = 0.999   # random weights: only the very same picture passes
[detector]
enabled = false     # the pictures are taken as face crops
[gallery]
path = "var/gallery.db"
people = "people"
[decision]
{chr(10).join(f'{key} = {value}' for key, value in settings.items())}
[source]
input = "frames"
[log]
path = "var/access.jsonl"
"""
    return write_config(tmp_path, text)


def read_log(path: Path) -> list:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_tiny_model_enroll_then_run_opens_for_the_enrolled_picture_only(tmp_path, fixtures_dir, capsys):
    people = {"alice": 1, "bob": 2, "carol": 3}
    for name, seed in people.items():
        (tmp_path / "people" / name).mkdir(parents=True)
        pattern(seed).save(tmp_path / "people" / name / f"{name}.png")
    (tmp_path / "people" / "alice" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (tmp_path / "people" / "dave").mkdir()  # no photos at all
    config_path = tiny_config(tmp_path, fixtures_dir)

    assert door.main(["--config", str(config_path), "enroll"]) == door.EXIT_FAILURE  # dave has no photo
    printed = capsys.readouterr().out
    assert "alice: enrolled from 1 of 2 photos" in printed
    assert "skipped broken.jpg: unreadable" in printed
    assert "dave: NOT enrolled - none of 0 photos" in printed
    assert "3 of 4 people enrolled" in printed

    frames = tmp_path / "frames"
    frames.mkdir()
    order = ["stranger7"] + ["alice"] * 3 + ["stranger8", "stranger9", "stranger8"] + ["bob"]
    for index, who in enumerate(order):
        picture = tmp_path / "people" / who / f"{who}.png"
        target = frames / f"frame_{index:02d}.png"
        if picture.exists():
            shutil.copy(picture, target)  # the very same bytes as enrolled
        else:
            pattern(int(who[-1])).save(target)

    config = door.load_config(config_path)
    opened = []
    summary = door.run_door(config, action=opened.append, handle_signals=False)
    assert (summary.frames, summary.opens, summary.denies, summary.bad_frames) == (8, 1, 1, 0)
    assert [(d.action, d.person) for d in opened] == [("open", "alice")]

    records = read_log(config.log_path)
    assert [(r["decision"], r["person"], r["frame"]) for r in records] == [
        ("open", "alice", "frame_02.png"),   # the second of three alice frames: 2 of the last 3
        ("deny", "unknown", "frame_05.png"),  # two stranger frames in the last three
    ]
    fingerprint = read_metadata(fixtures_dir / "tiny_float32.tflite").fingerprint
    for record in records:
        assert set(door.LOG_FIELDS) <= set(record)
        assert (record["threshold"], record["far"], record["model"]) == (0.999, None, fingerprint)
    assert records[0]["score"] >= 0.999 and records[1]["score"] < 0.999
    assert records[0]["action_error"] is None


def test_run_survives_a_failing_door_action_and_an_unreadable_frame(tmp_path, fixtures_dir):
    (tmp_path / "people" / "alice").mkdir(parents=True)
    pattern(1).save(tmp_path / "people" / "alice" / "a.png")
    config = door.load_config(tiny_config(tmp_path, fixtures_dir, required_hits=1, window=1))
    door.enroll_people(config)
    (tmp_path / "frames").mkdir()
    (tmp_path / "frames" / "0.jpg").write_bytes(b"garbage")
    shutil.copy(tmp_path / "people" / "alice" / "a.png", tmp_path / "frames" / "1.png")

    def broken_relay(decision):
        raise OSError("GPIO busy")

    summary = door.run_door(config, action=broken_relay, handle_signals=False)
    assert (summary.frames, summary.bad_frames, summary.opens) == (2, 1, 1)
    (record,) = read_log(config.log_path)
    assert record["person"] == "alice" and record["action_error"] == "OSError: GPIO busy"


def test_sigterm_finishes_the_current_frame_then_closes_everything(tmp_path, fixtures_dir):
    (tmp_path / "people" / "alice").mkdir(parents=True)
    pattern(1).save(tmp_path / "people" / "alice" / "a.png")
    config = door.load_config(tiny_config(tmp_path, fixtures_dir))
    door.enroll_people(config)
    picture = str(tmp_path / "people" / "alice" / "a.png")
    closed = []

    def endless_camera():
        try:
            index = 0
            while True:
                if index == 2:
                    os.kill(os.getpid(), signal.SIGTERM)  # arrives while frame 2 is being handed over
                yield door.Frame(picture, f"#{index}")
                index += 1
        finally:
            closed.append(True)

    before = signal.getsignal(signal.SIGTERM)
    summary = door.run_door(config, frames=endless_camera(), action=lambda decision: None)
    assert summary.stopped_by_signal and summary.frames == 3  # frames 0, 1 and the one in hand
    assert closed == [True]
    assert signal.getsignal(signal.SIGTERM) is before
    assert [r["frame"] for r in read_log(config.log_path)] == ["#1"]


def test_max_fps_paces_the_frames(tmp_path, fixtures_dir):
    (tmp_path / "people" / "alice").mkdir(parents=True)
    pattern(1).save(tmp_path / "people" / "alice" / "a.png")
    config = dataclasses.replace(door.load_config(tiny_config(tmp_path, fixtures_dir)), max_fps=20.0)
    door.enroll_people(config)
    frames = [door.Frame(str(tmp_path / "people" / "alice" / "a.png"), f"#{i}") for i in range(4)]
    started = time.monotonic()
    assert door.run_door(config, frames=iter(frames), action=lambda d: None, handle_signals=False).frames == 4
    assert time.monotonic() - started >= 3 / 20


def test_run_without_a_gallery_says_enroll_first(tmp_path, fixtures_dir, capsys):
    config_path = tiny_config(tmp_path, fixtures_dir)
    assert door.main(["--config", str(config_path)]) == door.EXIT_CONFIG
    assert "does not exist; enroll people first" in capsys.readouterr().err
    assert not (tmp_path / "var" / "gallery.db").exists()  # and nothing was created


def test_script_runs_from_the_command_line(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(EXAMPLES.parent / "runtime"),
                                                                    os.environ.get("PYTHONPATH")])))
    done = subprocess.run([sys.executable, str(DOOR_SCRIPT), "--config", str(tmp_path / "door.toml"), "run"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == door.EXIT_CONFIG
    assert "door_access: error: configuration file" in done.stderr and "not found" in done.stderr


# --- with the BlazeFace detector and LFW faces ----------------------------------------------------


def lfw_people(lfw_dir: Path, count: int, min_images: int) -> list:
    """People of LFW pairs.txt folds 6-10 (never used for training here), most photographed first."""
    lines = (lfw_dir / "pairs.txt").read_text().splitlines()[1:]
    names = set()
    for line in lines[5 * 600:10 * 600]:
        fields = line.split("\t")
        names.update([fields[0]] if len(fields) == 3 else [fields[0], fields[2]])
    sizes = {name: len(list((lfw_dir / "lfw-deepfunneled" / name).glob("*.jpg"))) for name in names}
    ranked = sorted((name for name in names if sizes[name] >= min_images), key=lambda n: (-sizes[n], n))
    return ranked[:count]


def lfw_photo(lfw_dir: Path, name: str, number: int) -> Path:
    return lfw_dir / "lfw-deepfunneled" / name / f"{name}_{number:04d}.jpg"


@pytest.mark.lfw
@pytest.mark.parametrize("input_size", [None, 96])
def test_enroll_skips_and_reports_photos_without_a_face(tmp_path, fixtures_dir, lfw_dir, detector_models_dir,
                                                        input_size):
    person = tmp_path / "people" / "someone"
    person.mkdir(parents=True)
    name = lfw_people(lfw_dir, 1, 3)[0]
    for number in (1, 2):
        shutil.copy(lfw_photo(lfw_dir, name, number), person / f"{number}.jpg")
    Image.new("RGB", (200, 200), (128, 128, 128)).save(person / "wall.jpg")
    config = door.load_config(tiny_config(tmp_path, fixtures_dir))
    config = dataclasses.replace(config, detect=True, detector_input_size=input_size,
                                 detector_path=detector_models_dir / "face_detection_short_range.tflite")
    (report,) = door.enroll_people(config)
    assert (report.name, report.photos, report.enrolled) == ("someone", 3, 2)
    assert report.skipped == [("wall.jpg", "no face found")]


@pytest.mark.lfw
def test_kiosk_example_names_the_enrolled_face(tmp_path, fixtures_dir, lfw_dir, detector_models_dir, monkeypatch,
                                               capsys):
    from edgeface_runtime import FaceVerifier

    detector = detector_models_dir / "face_detection_short_range.tflite"
    model, gallery = fixtures_dir / "tiny_float32.tflite", tmp_path / "gallery.db"
    name = lfw_people(lfw_dir, 1, 3)[0]
    with FaceVerifier.from_path(model, detector_path=detector, gallery_path=gallery) as verifier:
        verifier.enroll("visitor", [str(lfw_photo(lfw_dir, name, 1))])
    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(lfw_photo(lfw_dir, name, 1), images / "a.jpg")
    Image.new("RGB", (120, 120), (30, 30, 30)).save(images / "b.png")
    monkeypatch.setattr(sys, "argv", ["kiosk_embed.py", "--model", str(model), "--detector", str(detector),
                                      "--gallery", str(gallery), "--images", str(images)])
    runpy.run_path(str(EXAMPLES / "kiosk_embed.py"), run_name="__main__")
    assert capsys.readouterr().out.splitlines() == ["a.jpg: welcome, visitor (score 1.00)", "b.png: no face"]


# --- end to end with a trained model ------------------------------------------------------------


# The benchmark recipe's model (`edgeface train --recipe lfw-mobilenet-v1-025`: ImageNet weights,
# detector-aligned crops of LFW people outside folds 6-10; 84.2 % on folds 6-10), converted with
# `edgeface convert --variants int8`, thresholds calibrated on folds 6-10's impostor pairs.
TRAINED_MODEL = Path(__file__).resolve().parent / "fixtures" / "lfw_mobilenet_v1_025_int8.tflite"


@pytest.fixture(scope="session")
def face_model() -> Path:
    """A trained embedding .tflite with metadata and calibrated thresholds: $EDGEFACE_TEST_MODEL, else the fixture."""
    value = os.environ.get("EDGEFACE_TEST_MODEL")
    path = Path(value).resolve() if value else TRAINED_MODEL  # the door config is written elsewhere
    if not path.is_file():
        pytest.fail(f"{'EDGEFACE_TEST_MODEL=' + value if value else 'the fixture model ' + str(path)} is not a file")
    metadata = read_metadata(path)
    if metadata is None or not metadata.thresholds:
        pytest.fail(f"{path} has no edgeface metadata with calibrated thresholds")
    if metadata.preprocess.alignment == "none":
        pytest.fail(f"{path} was trained on centre crops; the door detects and aligns faces (train with --align)")
    return path


def best_match_per_frame(config) -> str:
    """What the model saw in each frame, for failure messages."""
    from edgeface_runtime import FaceVerifier

    lines = []
    with FaceVerifier(door.verifier_options(config)) as verifier:
        for path in image_files(config.source):
            faces = verifier.process_frame(str(path)).faces
            top = faces[0].identity.matches[0] if faces and faces[0].identity.matches else None
            lines.append(f"  {path.name}: " + (f"{top.name} {top.score:.3f}{' (accepted)' if top.accepted else ''}"
                                               if top else "no face"))
    return "\n".join(lines)


@pytest.mark.lfw
def test_trained_model_opens_for_an_enrolled_person_and_never_for_strangers(tmp_path, face_model, lfw_dir,
                                                                            detector_models_dir, capsys):
    enrolled, strangers = lfw_people(lfw_dir, 3, 16), lfw_people(lfw_dir, 6, 16)[3:]
    for name in enrolled:
        folder = tmp_path / "people" / name
        folder.mkdir(parents=True)
        for number in range(1, 6):
            shutil.copy(lfw_photo(lfw_dir, name, number), folder)
    visitor = enrolled[0]
    frames = tmp_path / "frames"
    frames.mkdir()
    # Strangers, then ten held-out photos of an enrolled person in a row, then strangers again.
    sequence = [(s, n) for s in strangers for n in (1, 2, 3)] + [(visitor, n) for n in range(6, 16)] \
        + [(s, n) for s in strangers for n in (4,)]
    for index, (name, number) in enumerate(sequence):
        shutil.copy(lfw_photo(lfw_dir, name, number), frames / f"frame_{index:02d}_{name}.jpg")
    write_config(tmp_path, f"""
[model]
path = "{face_model}"          # the threshold calibrated at FAR 1e-3 (else the strictest)
[detector]
path = "{detector_models_dir / 'face_detection_short_range.tflite'}"
[gallery]
path = "gallery.db"
people = "people"
[decision]
required_hits = 2
window = 4
cooldown_seconds = 60
[source]
input = "frames"
[log]
path = "access.jsonl"
""")
    assert door.main(["--config", str(tmp_path / "door.toml"), "enroll"]) == door.EXIT_OK
    printed = capsys.readouterr().out
    assert all(f"{name}: enrolled from" in printed for name in enrolled), printed

    config = door.load_config(tmp_path / "door.toml")
    summary = door.run_door(config, action=lambda decision: None, handle_signals=False)
    records = read_log(config.log_path)
    assert summary.frames == len(sequence)
    opens = [r for r in records if r["decision"] == "open"]
    wrong = [r for r in opens if r["person"] != visitor or visitor not in r["frame"]]
    if not opens or wrong:
        decisions = "\n".join(json.dumps(r) for r in records)
        pytest.fail(f"{visitor} was {'never let in' if not opens else 'not the only one let in'}.\n"
                    f"Decisions:\n{decisions}\nBest match per frame:\n{best_match_per_frame(config)}")
    fingerprint = read_metadata(face_model).fingerprint
    for record in records:
        assert set(door.LOG_FIELDS) <= set(record)
        assert record["model"] == fingerprint and record["far"] is not None
        datetime.fromisoformat(record["time"])


# --- presentation-attack (liveness) hook -------------------------------------------------------


def _opened(name: str = "alice"):
    return door.Decision(door.OPEN, name, 0.9, THRESHOLD, 1e-3, 3, 5)


@pytest.mark.parametrize("check, reason", [
    (lambda image, face: False, "rejected"),
    (lambda image, face: "yes", "rejected"),  # only True opens: a truthy string is not a verdict
    (lambda image, face: 1 / 0, "ZeroDivisionError"),
])
def test_a_liveness_check_that_says_no_or_breaks_turns_an_open_into_a_deny(check, reason):
    decided = door.check_presentation(_opened(), check, "frame.png", face=None)
    assert (decided.action, decided.person, decided.closest) == (door.DENY, None, "alice")
    assert reason in decided.reason


def test_a_live_face_opens_and_no_check_leaves_the_decision_alone():
    seen_args = []
    decided = door.check_presentation(_opened(), lambda image, face: seen_args.append((image, face)) or True,
                                      "frame.png", face="the face")
    assert decided == _opened() and seen_args == [("frame.png", "the face")]
    assert door.check_presentation(_opened(), None, "frame.png", None) == _opened()
    denied = door.Decision(door.DENY, None, 0.1, THRESHOLD, 1e-3, 3, 5, closest="bob")
    assert door.check_presentation(denied, lambda image, face: 1 / 0, "f", None) == denied  # never asked


def test_liveness_callable_must_be_module_colon_function(tmp_path):
    path = write_config(tmp_path, '[model]\npath = "m.tflite"\n[gallery]\npath = "g.db"\n[source]\ninput = "f"\n'
                                  '[liveness]\ncallable = "just_a_name"\n')
    with pytest.raises(door.ConfigError, match=r"\[liveness\] callable must be \"module:function\""):
        door.load_config(path)


def test_run_denies_a_photo_the_liveness_check_rejects_and_warns_without_one(tmp_path, fixtures_dir, caplog):
    (tmp_path / "people" / "alice").mkdir(parents=True)
    pattern(1).save(tmp_path / "people" / "alice" / "a.png")
    config = door.load_config(tiny_config(tmp_path, fixtures_dir, required_hits=1, window=1))
    door.enroll_people(config)
    (tmp_path / "frames").mkdir()
    shutil.copy(tmp_path / "people" / "alice" / "a.png", tmp_path / "frames" / "1.png")

    opened = []
    faces = []
    summary = door.run_door(config, action=opened.append, handle_signals=False,
                            liveness_check=lambda image, face: faces.append(face) and False)
    assert (summary.opens, summary.denies, opened) == (0, 1, [])
    assert faces[0].identity.best.name == "alice"  # the check sees the face that decided
    (record,) = read_log(config.log_path)
    assert (record["decision"], record["person"], record["closest"]) == ("deny", "unknown", "alice")
    assert "liveness" in record["reason"]

    with caplog.at_level("WARNING", logger="door_access"):
        assert door.run_door(config, action=opened.append, handle_signals=False).opens == 1
    assert "printed photo or a phone screen" in caplog.text


def test_calibrate_sets_the_doors_own_threshold_which_the_run_then_uses_and_logs(tmp_path, fixtures_dir, capsys):
    for seed in range(6):
        (tmp_path / "people" / f"p{seed}").mkdir(parents=True)
        for shot in range(2):
            pattern(10 * seed + shot).save(tmp_path / "people" / f"p{seed}" / f"{shot}.png")
    text = tiny_config(tmp_path, fixtures_dir, required_hits=1, window=1).read_text()
    config_path = write_config(tmp_path, text.replace("threshold = 0.999", "far = 1e-2"))
    assert door.main(["--config", str(config_path), "enroll"]) == door.EXIT_OK
    assert "now set the door's own threshold" in capsys.readouterr().out

    assert door.main(["--config", str(config_path), "calibrate"]) == door.EXIT_OK
    printed = capsys.readouterr().out
    assert "site threshold" in printed and "from 60 different-person pairs of 6 people" in printed
    assert "warning: only 60 impostor pairs back FAR 0.01" in printed  # 300 are needed
    config = door.load_config(config_path)
    record = door.calibrate_door(config)

    (tmp_path / "frames").mkdir()
    shutil.copy(tmp_path / "people" / "p1" / "0.png", tmp_path / "frames" / "f0.png")
    door.run_door(config, action=lambda decision: None, handle_signals=False)
    logged = read_log(config.log_path)
    assert logged and all(r["threshold_source"] == "site" for r in logged)
    assert logged[0]["threshold"] == round(record.threshold, 4) and logged[0]["far"] == 1e-2
