"""`edgeface report`: a tiny Keras model, two converted variants, synthetic people."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from training_helpers import make_dataset, synthetic_face

TRAIN_PEOPLE = 4


def _make_people(root: Path, names: list[str], first_identity: int, per_person: int = 4) -> Path:
    """A folder per person whose images the tiny model tells apart (distinct colours and stripes)."""
    from PIL import Image

    for offset, name in enumerate(names):
        (root / name).mkdir(parents=True, exist_ok=True)
        for j in range(per_person):
            Image.fromarray(synthetic_face(first_identity + offset, j)).save(root / name / f"{j:03d}.png")
    return root


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """run/model.keras + training_card.json, run/variants (float32, int8), and an evaluation dataset."""
    from edgeface._keras import keras
    from edgeface._modelio import save_model
    from edgeface.layers import L2Normalize
    from edgeface_converters import convert
    from edgeface_runtime.metadata import ModelMetadata, Preprocess

    root = tmp_path_factory.mktemp("report")
    train_faces = make_dataset(root / "train_faces", identities=TRAIN_PEOPLE, per_identity=4)  # person_00..03
    guests = _make_people(root / "guests", [f"guest_{i}" for i in range(5)], first_identity=20)

    keras.utils.set_random_seed(0)
    image = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(image)
    x = keras.layers.Conv2D(16, 3, strides=2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    embedding = L2Normalize()(keras.layers.Dense(16)(x))
    metadata = ModelMetadata(preprocess=Preprocess(input_size=(32, 32), alignment="none"), embedding_size=16,
                             thresholds={1e-3: 0.9})
    model_path = save_model(keras.Model(image, embedding), root / "run" / "model.keras", metadata)
    card = {"format": "edgeface-training-card/1",
            "data": {"train": {"identity_names": [f"person_{i:02d}" for i in range(TRAIN_PEOPLE - 1)]},
                     "validation": {"identity_names": [f"person_{TRAIN_PEOPLE - 1:02d}"]}}}
    (root / "run" / "training_card.json").write_text(json.dumps(card))
    manifest = convert(model_path, root / "run" / "variants", "float32,int8", calibration=train_faces,
                       face_detector=None)
    assert [v.status for v in manifest.variants] == ["ok", "ok"], manifest.variants
    return {"root": root, "model": model_path, "variants": root / "run" / "variants", "guests": guests,
            "train_faces": train_faces}


def _table_rows(markdown: str, heading: str) -> list[str]:
    """The body rows of the first table after ``heading``."""
    lines = markdown.split(heading, 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return lines[start + 2:end]  # past the header and the alignment row


@pytest.mark.slow
def test_report_compares_the_keras_model_and_its_variants(run, tmp_path):
    from edgeface.report import build_report

    stages = []
    report = build_report([run["model"], run["variants"]], dataset=run["guests"], n_pairs=40, seed=0,
                          latency_runs=3, out_dir=tmp_path / "out",
                          progress=lambda stage, done, total: stages.append(stage))
    assert [row.name for row in report.rows] == ["keras", "float32", "int8"]
    assert {"crop images", "embed keras", "embed int8", "time variants"} <= set(stages)

    keras_row, float_row, int8_row = report.rows
    assert keras_row.parameters == float_row.parameters == int8_row.parameters > 0
    assert int8_row.bytes < float_row.bytes and int8_row.gzip_bytes < int8_row.bytes
    assert float_row.cosine_to_keras["mean"] > 0.999 and int8_row.cosine_to_keras["min"] > 0.9
    assert float_row.verification["accuracy"]["mean"] == pytest.approx(keras_row.verification["accuracy"]["mean"],
                                                                        abs=0.05)
    assert int8_row.threshold["threshold"] == pytest.approx(0.9) and 0.0 <= int8_row.threshold["achieved_far"] <= 1
    for row in (float_row, int8_row):
        assert set(row.latency) == {str(t) for t in report.settings["threads"]} and "1" in row.latency
        assert row.latency["1"]["n"] == 3 and row.latency["1"]["median_ms"] > 0
        assert 0 < row.memory["model_rss_mb"] < row.memory["peak_rss_mb"]
    assert keras_row.latency is None and keras_row.memory is None

    recommended = report.recommendation["variant"]
    assert recommended in {"float32", "int8"}
    best = max(row.accuracy for row in report.rows)
    assert report[recommended].accuracy >= best - 0.005 - 1e-12

    markdown = report.to_markdown()
    assert len(_table_rows(markdown, "### Accuracy and size")) == 3
    assert len(_table_rows(markdown, "### Speed and memory")) == 3
    assert f"**Recommendation:** `{recommended}`" in markdown
    assert report.device["cpu"] in markdown and report.device["python"] in markdown
    assert "40 pairs (20 same, 20 different) of 5 people" in markdown

    page = report.to_html()
    assert page.count("data:image/png;base64,") == 3  # accuracy vs size, ROC, latency
    data = json.loads(report.to_json())
    assert data["format"] == "edgeface-report/1"
    assert [v["name"] for v in data["variants"]] == ["keras", "float32", "int8"]
    assert data["recommendation"]["variant"] == recommended
    assert data["protocol"]["identity_disjoint_from"] == [str(run["root"] / "run" / "training_card.json")]

    written = {p.name: p.read_text() for p in (tmp_path / "out").iterdir()}
    assert set(written) == {"report.md", "report.html", "report.json"}
    assert written["report.md"] == markdown and json.loads(written["report.json"])["variants"][2]["name"] == "int8"


@pytest.mark.slow
def test_report_is_deterministic_and_finds_the_source_model(run):
    from edgeface.report import build_report

    explicit = build_report([run["model"], run["variants"]], dataset=run["guests"], n_pairs=40, latency_runs=0)
    # Only the folder: its manifest names model.keras, which becomes the reference row.
    folder_only = build_report([run["variants"]], dataset=run["guests"], n_pairs=40, latency_runs=0)
    assert [row.name for row in folder_only.rows] == ["keras", "float32", "int8"]
    assert folder_only.to_markdown() == explicit.to_markdown()
    assert folder_only.to_json() == explicit.to_json()
    assert folder_only.to_html() == explicit.to_html()  # the plots too
    assert "### Speed and memory" not in explicit.to_markdown()
    assert explicit.to_html().count("data:image/png;base64,") == 2  # no latency plot without timings

    reseeded = build_report([run["variants"]], dataset=run["guests"], n_pairs=40, seed=1, latency_runs=0)
    assert reseeded.protocol["seed"] == 1 and reseeded.to_json() != explicit.to_json()


@pytest.mark.slow
def test_two_convert_folders_in_one_report(run, tmp_path):
    import shutil

    from edgeface.report import build_report

    other = tmp_path / "copy" / "variants"
    shutil.copytree(run["variants"], other)
    report = build_report([run["variants"], other], dataset=run["guests"], n_pairs=40, latency_runs=0)
    assert [row.name for row in report.rows] == ["keras", "run/variants/float32", "run/variants/int8",
                                                 "copy/variants/float32", "copy/variants/int8"]
    assert len(_table_rows(report.to_markdown(), "### Accuracy and size")) == 5
    for name in ("float32", "int8"):  # the same files give the same numbers
        assert report[f"copy/variants/{name}"].verification == report[f"run/variants/{name}"].verification
    # Equal size and accuracy: the name breaks the tie, so the choice does not depend on input order.
    assert report.recommendation["variant"].startswith("copy/variants/")


@pytest.mark.slow
def test_lfw_pairs_are_reported_on_folds_6_to_10(run, mini_lfw):
    from edgeface.report import build_report

    report = build_report([run["variants"]], pairs=mini_lfw / "pairs.txt", images=mini_lfw / "lfw-deepfunneled",
                          latency_runs=0)
    assert report.protocol["folds"] == [6, 7, 8, 9, 10] and report.protocol["num_pairs"] == 20
    assert report["int8"].verification["accuracy"]["folds"] == [6, 7, 8, 9, 10]
    assert "pairs.txt folds 6-10" in report.to_markdown()


@pytest.mark.slow
def test_training_people_in_the_evaluation_are_refused(run, tmp_path):
    from edgeface.report import build_report

    # Two training people and two new ones.
    mixed = make_dataset(tmp_path / "mixed", identities=2, per_identity=4)
    _make_people(mixed, ["guest_a", "guest_b"], first_identity=30)
    with pytest.raises(ValueError, match=r"2 of the 4 people .* seen in training \(person_00, person_01"):
        build_report([run["variants"]], dataset=mixed, n_pairs=20, latency_runs=0)
    report = build_report([run["variants"]], dataset=mixed, n_pairs=20, latency_runs=0, allow_overlap=True)
    assert report.protocol["training_overlap"] == ["person_00", "person_01"]
    assert any(note.startswith("WARNING: 2 of the 4 people") for note in report.notes)
    assert "WARNING: 2 of the 4 people" in report.to_markdown()


@pytest.mark.slow
def test_measure_variant_runs_the_runtime_without_tensorflow(run):
    from edgeface.report import measure_variant

    crops = np.full((2, 32, 32, 3), 128, np.uint8)
    result = measure_variant(run["variants"] / "int8.tflite", crops, runs=4, threads=[1])
    assert result["tensorflow_loaded"] is False
    assert list(result["latency"]) == ["1"] and result["latency"]["1"]["n"] == 4
    assert result["peak_rss_mb"] > 0


@pytest.mark.slow
def test_cli_writes_the_three_files(run, tmp_path, edgeface):
    out = tmp_path / "out"
    code, stdout, stderr = edgeface("report", run["variants"], "--dataset", run["guests"], "--n-pairs", "40",
                                    "--latency-runs", "0", "--out", out, "--no-progress")
    assert code == 0, stderr
    assert "Recommendation: `" in stdout
    assert sorted(p.name for p in out.iterdir()) == ["report.html", "report.json", "report.md"]

    code, _, stderr = edgeface("report", run["variants"], "--dataset", tmp_path / "nowhere", "--out", out)
    assert code == 2 and "error:" in stderr and "nowhere" in stderr


# --------------------------------------------------------------------------- bad input (no TensorFlow needed)


@pytest.fixture
def two_people(tmp_path) -> Path:
    return make_dataset(tmp_path / "people", identities=2, per_identity=3, formats=("png",))


def test_a_protocol_is_required_exactly_once(two_people, tmp_path):
    from edgeface.report import build_report

    with pytest.raises(ValueError, match="choose one protocol.*got neither"):
        build_report([tmp_path])
    with pytest.raises(ValueError, match="choose one protocol.*got both"):
        build_report([tmp_path], pairs=tmp_path / "pairs.txt", images=tmp_path, dataset=two_people)
    with pytest.raises(ValueError, match="pairs= needs images="):
        build_report([tmp_path], pairs=tmp_path / "pairs.txt")
    with pytest.raises(ValueError, match="pairs file not found"):
        build_report([tmp_path], pairs=tmp_path / "pairs.txt", images=tmp_path)


def test_a_dataset_needs_two_people(tmp_path):
    from edgeface.report import build_report

    one = make_dataset(tmp_path / "one", identities=1, per_identity=3)
    with pytest.raises(ValueError, match=r"holds 1 person \(person_00\).*at least two people"):
        build_report([tmp_path], dataset=one)
    with pytest.raises(ValueError, match="does not exist"):
        build_report([tmp_path], dataset=tmp_path / "nowhere")


def test_pairs_naming_missing_images(tmp_path):
    from PIL import Image

    from edgeface.report import build_report

    images = tmp_path / "images"
    (images / "Ann").mkdir(parents=True)
    Image.fromarray(synthetic_face(0, 0)).save(images / "Ann" / "Ann_0001.jpg")
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("1\nAnn\t1\t2\nAnn\t1\tBob\t1\n")
    with pytest.raises(ValueError, match=r"names 2 image\(s\) missing under .*'Ann/Ann_0002.jpg', 'Bob/Bob_0001.jpg'"):
        build_report([tmp_path], pairs=pairs, images=images, folds=None)
    with pytest.raises(ValueError, match=r"names 2 image\(s\) missing"):  # a one-fold file: its fold, as it is
        build_report([tmp_path], pairs=pairs, images=images)
    with pytest.raises(ValueError, match=r"folds 1-1, not \[6, 7, 8, 9, 10\]"):
        build_report([tmp_path], pairs=pairs, images=images, folds=(6, 7, 8, 9, 10))


def test_bad_models_and_folders(two_people, tmp_path):
    from edgeface.report import build_report

    def report(models):
        return build_report(models, dataset=two_people, n_pairs=4, dataset_folds=2, latency_runs=0)

    with pytest.raises(ValueError, match="no models given"):
        report([])
    with pytest.raises(ValueError, match="model or folder not found: .*missing.keras"):
        report([tmp_path / "missing.keras"])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="neither manifest.json .* nor model.keras"):
        report([empty])
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="expected a .keras model, a .tflite model or a convert output folder"):
        report([tmp_path / "notes.txt"])

    failed = tmp_path / "failed"
    failed.mkdir()
    variants = [{"name": "int8", "technique": "full integer", "status": "failed", "reason": "ops missing"},
                {"name": "qat-int8", "technique": "qat", "status": "skipped", "reason": "needs data"}]
    (failed / "manifest.json").write_text(json.dumps({"version": 1, "source": {}, "target": "x", "variants": variants}))
    with pytest.raises(ValueError, match="no variants to report.*int8: failed, qat-int8: skipped"):
        report([failed])

    lost = tmp_path / "lost"
    lost.mkdir()
    variants = [{"name": "int8", "technique": "full integer", "status": "ok", "file": "int8.tflite"}]
    (lost / "manifest.json").write_text(json.dumps({"version": 1, "source": {}, "target": "x", "variants": variants}))
    with pytest.raises(ValueError, match="lists variant 'int8' as int8.tflite, but the file is missing"):
        report([lost])

    not_a_model = tmp_path / "fake.tflite"
    not_a_model.write_bytes(b"not a model at all")
    with pytest.raises(ValueError, match="not a TFLite model"):
        report([not_a_model])


def test_bad_settings(two_people, tmp_path):
    from edgeface.report import build_report

    with pytest.raises(ValueError, match="tolerance is in accuracy points"):
        build_report([tmp_path], dataset=two_people, tolerance=-1)
    with pytest.raises(ValueError, match="latency_runs must be a whole number"):
        build_report([tmp_path], dataset=two_people, latency_runs=-5)
    with pytest.raises(ValueError, match="n_pairs must be a positive even integer"):
        build_report([tmp_path], dataset=two_people, n_pairs=7)


def test_importing_the_report_loads_no_heavy_modules():
    import subprocess
    import sys

    code = ("import sys, edgeface.report, edgeface._report_cli; "
            "print(sorted(m for m in ('tensorflow', 'matplotlib', 'tqdm') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_recommendation_rule():
    from edgeface._report import VariantRow, _recommend
    from edgeface._report_render import _pareto

    def row(name, kind, size, accuracy):
        verification = {"accuracy": {"mean": accuracy, "std": 0.0}}
        return VariantRow(name, kind, name, "", size, size, None, None, verification)

    rows = [row("keras", "keras", 9000, 0.990), row("float32", "tflite", 4000, 0.990),
            row("int8", "tflite", 1000, 0.986), row("tiny", "tflite", 500, 0.950)]
    rec = _recommend(rows, 0.5)
    assert rec["variant"] == "int8" and rec["best"] == "keras"
    assert re.search(r"within 0.5 points .*best: `keras`, 99.00 %", rec["text"])
    assert _recommend(rows, 0.1)["variant"] == "float32"
    assert _recommend(rows, 5.0)["variant"] == "tiny"
    assert _recommend(rows[:1], 0.5)["variant"] is None
    assert _recommend([rows[0], rows[3]], 0.5)["text"].startswith("none: no variant is within 0.5 points")
    assert [r.name for r in _pareto(rows)] == ["tiny", "int8", "float32"]
