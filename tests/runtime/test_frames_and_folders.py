"""What a kiosk needs around the pipeline: frames from a camera, video or folder; people enrolled from folders."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from PIL import Image

from edgeface_runtime import FaceVerifier, Frame, FrameSourceError, image_files, open_frames


def test_image_files_are_the_images_in_a_folder_sorted_by_name(tmp_path):
    for name in ("b.png", "a.jpg", "c.JPEG", "d.tiff", "notes.txt", ".hidden.jpg"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub.jpg").mkdir()  # a folder with an image's name is no image
    assert [p.name for p in image_files(tmp_path)] == ["a.jpg", "b.png", "c.JPEG", "d.tiff"]
    with pytest.raises(FileNotFoundError):
        image_files(tmp_path / "nope")


def test_a_folder_gives_its_images_as_rgb_frames_labelled_by_name(tmp_path, caplog):
    for name in ("2.png", "1.jpg", "x.txt"):
        (tmp_path / name).write_bytes(b"")
    frames = list(open_frames(tmp_path))
    assert frames == [Frame(str(tmp_path / "1.jpg"), "1.jpg", "RGB"), Frame(str(tmp_path / "2.png"), "2.png", "RGB")]
    (tmp_path / "empty").mkdir()
    with caplog.at_level("WARNING", logger="edgeface_runtime._frames"):
        assert list(open_frames(str(tmp_path / "empty"))) == []
    assert "no images" in caplog.text


def test_sources_that_cannot_be_opened_say_why(tmp_path, monkeypatch):
    with pytest.raises(FrameSourceError, match="does not exist; give 'camera:0', a folder of images or a video"):
        open_frames(tmp_path / "nope")
    with pytest.raises(FrameSourceError, match="needs a camera: 'camera:0'"):
        open_frames("camera:")
    monkeypatch.setitem(sys.modules, "cv2", None)  # OpenCV not installed
    video = tmp_path / "door.mp4"
    video.write_bytes(b"\x00")
    for spec in ("camera:0", str(video)):
        with pytest.raises(FrameSourceError, match="need OpenCV.*pip install opencv-python-headless"):
            next(open_frames(spec))
    assert isinstance(FrameSourceError("x"), OSError)  # a device or file problem, as the builtins see it


def test_a_camera_that_stops_delivering_is_an_error_not_a_hang(monkeypatch):
    released = []

    class DeadCamera:
        def __init__(self, target):
            self.reads = 0

        def isOpened(self):
            return True

        def set(self, *args):
            pass

        def read(self):
            self.reads += 1
            return (True, np.zeros((4, 4, 3), np.uint8)) if self.reads == 1 else (False, None)

        def release(self):
            released.append(True)

    fake = type(sys)("cv2")
    fake.VideoCapture, fake.CAP_PROP_BUFFERSIZE = DeadCamera, 38
    monkeypatch.setitem(sys.modules, "cv2", fake)
    monkeypatch.setattr("edgeface_runtime._frames._CAMERA_RETRY_S", 0.0)
    frames = open_frames("camera:0")
    first = next(frames)
    assert (first.label, first.color_order, first.image.shape) == ("camera#0", "BGR", (4, 4, 3))
    with pytest.raises(FrameSourceError, match="camera 0 stopped delivering frames"):
        next(frames)
    assert released == [True]


def _pattern(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    colors = rng.integers(0, 256, (2, 3))
    blocks = rng.random((8, 8)) < 0.5
    return Image.fromarray(np.where(blocks[..., None], colors[0], colors[1]).astype(np.uint8).repeat(8, 0).repeat(8, 1))


def test_enroll_folders_enrolls_each_person_and_reports_what_it_skipped(tmp_path, fixtures_dir):
    people = tmp_path / "people"
    for name, seed in (("alice", 1), ("bob", 2)):
        (people / name).mkdir(parents=True)
        _pattern(seed).save(people / name / f"{name}.png")
    _pattern(3).save(people / "alice" / "second.png")
    (people / "alice" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (people / "carol").mkdir()  # nobody usable
    (people / ".cache").mkdir()  # hidden: not a person
    with FaceVerifier.from_path(fixtures_dir / "tiny_float32.tflite", detect=False,
                                gallery_path=tmp_path / "gallery.db") as verifier:
        verifier.enroll("carol", [str(people / "bob" / "bob.png")])  # stays: carol's folder has no photo
        reports = verifier.enroll_folders(people)
        assert [(r.name, r.photos, r.enrolled) for r in reports] == [("alice", 3, 2), ("bob", 1, 1), ("carol", 0, 0)]
        assert [name for name, _ in reports[0].skipped] == ["broken.jpg"]
        assert reports[0].skipped[0][1].startswith("unreadable: ")
        counts = {p.name: p.templates for p in verifier.gallery.people()}
        assert counts == {"alice": 2, "bob": 1, "carol": 1}
        verifier.enroll_folders(people)  # again: replaced, not doubled
        assert {p.name: p.templates for p in verifier.gallery.people()}["alice"] == 2
        assert verifier.identify(str(people / "alice" / "second.png")).best.name == "alice"

        with pytest.raises(ValueError, match="people folder .* does not exist; expected"):
            verifier.enroll_folders(tmp_path / "nope")
        (tmp_path / "flat").mkdir()
        with pytest.raises(ValueError, match="no person folders in .*one folder per person"):
            verifier.enroll_folders(tmp_path / "flat")
