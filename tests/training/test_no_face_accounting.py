"""Images without a detected face: skipped as the device would (default) or centre-cropped when
asked, and counted either way; pairs files over PNG/PGM images; a pairs file's folds as they are.

No training: the model is the runtime's tiny test .tflite (alignment "arcface"), and the detector a
stub that finds a face only in bright images, so no BlazeFace file is needed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

FIXTURES = Path(__file__).resolve().parents[1] / "runtime" / "fixtures"
MODEL = FIXTURES / "tiny_float32.tflite"


class BrightFaceDetector:
    """Finds one face (ArcFace-template keypoints) in images brighter than mid-grey, none in dark ones."""

    min_score = 0.5

    def detect(self, rgb):
        from edgeface_runtime import Face, template_points

        array = np.asarray(rgb)
        if array.mean() < 100:
            return []
        h, w = array.shape[:2]
        four = np.asarray(template_points("arcface", (h, w)), np.float32)  # eyes, nose tip, mouth centre
        keypoints = np.vstack([four, four[0] - [8, 0], four[1] + [8, 0]])  # + the two ear tragions
        return [Face((0.0, 0.0, float(w), float(h)), 0.9, keypoints)]


def write_people(root: Path, suffix: str, *, people: int = 4, per_person: int = 4, dark: set = frozenset(),
                 naming: str = "lfw") -> Path:
    """``root/<name>/`` images; those whose (person, number) is in ``dark`` have no face for the stub."""
    rng = np.random.default_rng(3)
    for p in range(people):
        name = f"p{p}"
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(1, per_person + 1):
            level = 40 if (p, i) in dark else 180
            pixels = np.clip(rng.normal(level, 20, (64, 64)), 0, 255).astype(np.uint8)
            file = f"{name}_{i:04d}{suffix}" if naming == "lfw" else f"{i}{suffix}"
            Image.fromarray(pixels, "L").save(root / name / file)
    return root


def write_pairs(path: Path, folds: int = 2) -> Path:
    """``folds`` folds of 2 matched + 2 mismatched pairs over people p0-p3, images 1-4."""
    lines = [f"{folds}\t2"]
    for f in range(folds):
        a, b = (2 * f) % 4, (2 * f + 1) % 4
        lines += [f"p{a}\t1\t2", f"p{b}\t3\t4", f"p{a}\t3\tp{b}\t1", f"p{b}\t2\tp{a}\t4"]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_read_pairs_finds_png_pgm_and_orl_style_names(tmp_path):
    from edgeface_runtime.metrics import read_pairs

    lfw_png = write_people(tmp_path / "png", ".png")
    orl = write_people(tmp_path / "orl", ".pgm", naming="orl")
    pairs_file = write_pairs(tmp_path / "pairs.txt")
    assert read_pairs(pairs_file)[0].path_a == "p0/p0_0001.jpg"  # no root: the LFW convention, as before
    assert read_pairs(pairs_file, image_root=lfw_png)[0].path_a == "p0/p0_0001.png"
    orl_pairs = read_pairs(pairs_file, image_root=orl)
    assert (orl_pairs[0].path_a, orl_pairs[0].path_b) == ("p0/1.pgm", "p0/2.pgm")
    assert all((orl / p.path_a).is_file() and (orl / p.path_b).is_file() for p in orl_pairs)
    (orl / "p0" / "1.pgm").rename(orl / "p0" / "1.PGM")  # any letter case
    assert read_pairs(pairs_file, image_root=orl)[0].path_a == "p0/1.PGM"
    (orl / "p0" / "1.PGM").unlink()  # missing: the LFW name, so the caller reports the missing file
    assert read_pairs(pairs_file, image_root=orl)[0].path_a == "p0/p0_0001.jpg"


def test_evaluate_skips_images_without_a_face_and_says_how_many(tmp_path):
    from edgeface.evaluation import evaluate

    root = write_people(tmp_path / "img", ".pgm", naming="orl", dark={(0, 1), (1, 1)})
    pairs_file = write_pairs(tmp_path / "pairs.txt")
    report = evaluate(MODEL, pairs_file, root, detector=BrightFaceDetector())
    # Two folds, as the file has them (no --folds all needed); p0/1 and p1/1 refused as on the device.
    assert report["evaluated_folds"] == [1, 2]
    assert report["no_face"]["no_face"] == 2 and report["no_face"]["policy"] == "skip"
    assert sorted(report["no_face"]["examples"]) == ["p0/1.pgm", "p1/1.pgm"]
    assert report["skipped_pairs"] == 2 and report["num_pairs"] == 6

    kept = evaluate(MODEL, pairs_file, root, detector=BrightFaceDetector(), no_face="center")
    assert kept["no_face"]["no_face"] == 2 and kept["no_face"]["policy"] == "center"
    assert kept["skipped_pairs"] == 0 and kept["num_pairs"] == 8
    with pytest.raises(ValueError, match="no_face must be one of"):
        evaluate(MODEL, pairs_file, root, detector=BrightFaceDetector(), no_face="guess")


def test_decode_dataset_leaves_out_images_without_a_face_apart_from_unreadable_ones(tmp_path):
    from edgeface.data import CropMaker, decode_dataset, scan_folder

    root = write_people(tmp_path / "img", ".png", dark={(0, 1), (0, 2), (2, 4)})
    (root / "p3" / "broken.png").write_bytes(b"not a png")
    dataset = scan_folder(root)
    maker = CropMaker(str(root), (48, 48), align=True, detector=BrightFaceDetector())
    kept, crops = decode_dataset(dataset, maker, max_unreadable=0.2)
    assert len(kept) == len(crops) == 16 - 3 and maker.no_face == 3
    described = kept.describe()
    assert described["no_face_skipped"] == 3 and described["unreadable"] == 1

    centre = CropMaker(str(root), (48, 48), align=True, detector=BrightFaceDetector(), no_face="center")
    kept, crops = decode_dataset(scan_folder(root), centre, max_unreadable=0.2)
    assert len(kept) == 16 and centre.no_face == 3 and kept.describe()["no_face_skipped"] == 0


def test_images_without_a_face_do_not_count_against_the_unreadable_limit(tmp_path):
    from edgeface.data import CropMaker, decode_dataset, scan_folder

    root = write_people(tmp_path / "img", ".png", dark={(p, i) for p in range(4) for i in (1, 2)})  # half
    maker = CropMaker(str(root), (48, 48), align=True, detector=BrightFaceDetector())
    kept, _ = decode_dataset(scan_folder(root), maker, max_unreadable=0.0)
    assert len(kept) == 8 and maker.no_face == 8


def test_evaluate_command_prints_the_no_face_count(tmp_path, monkeypatch, edgeface):
    from edgeface._data import CropMaker

    root = write_people(tmp_path / "img", ".jpg", dark={(0, 1)})
    pairs_file = write_pairs(tmp_path / "pairs.txt")
    stub = BrightFaceDetector()
    monkeypatch.setattr(CropMaker, "_largest_face", lambda self, rgb: (stub.detect(rgb) or [None])[0])
    out_json = tmp_path / "report.json"
    code, out, err = edgeface("evaluate", MODEL, "--pairs", pairs_file, "--images", root, "--out", out_json)
    assert code == 0, err
    assert "folds 1-2" in out
    assert "no face detected in 1 of 16 images: left out, as the device refuses them (1 pairs left out)" in out
    assert json.loads(out_json.read_text())["no_face"]["no_face"] == 1
    code, out, err = edgeface("evaluate", MODEL, "--pairs", pairs_file, "--images", root, "--no-face", "center")
    assert code == 0 and "centre-cropped and kept" in out
