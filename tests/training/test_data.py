from __future__ import annotations

import numpy as np
import pytest

from training_helpers import make_dataset


def _crop(root, size=(32, 32)):
    from edgeface.data import CropMaker

    return CropMaker(str(root), size)


def test_scan_folder_sorts_people_and_ignores_other_files(tmp_path):
    from edgeface.data import scan_folder

    root = make_dataset(tmp_path / "faces", identities=3, per_identity=2)
    (root / "person_00" / "notes.txt").write_text("not an image")
    (root / "empty_person").mkdir()
    ds = scan_folder(root)
    assert ds.identities == ["person_00", "person_01", "person_02"]
    assert len(ds) == 6 and ds.counts().tolist() == [2, 2, 2]


def test_empty_folder_and_missing_folder_are_clear_errors(tmp_path):
    from edgeface.data import scan_folder

    (tmp_path / "nobody").mkdir()
    with pytest.raises(ValueError, match="no images found"):
        scan_folder(tmp_path / "nobody")
    with pytest.raises(ValueError, match="does not exist"):
        scan_folder(tmp_path / "missing")


def test_grayscale_pgm_becomes_three_channels(tmp_path):
    from edgeface.data import decode_dataset, scan_folder

    root = make_dataset(tmp_path / "faces", identities=2, per_identity=2, formats=("pgm",))
    ds, crops = decode_dataset(scan_folder(root), _crop(root))
    assert crops.shape == (4, 32, 32, 3) and crops.dtype == np.uint8
    assert np.array_equal(crops[..., 0], crops[..., 1]) and np.array_equal(crops[..., 1], crops[..., 2])


def test_unreadable_images_are_skipped_and_counted(tmp_path):
    from edgeface.data import decode_dataset, scan_folder

    root = make_dataset(tmp_path / "faces", identities=4, per_identity=10)
    (root / "person_01" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    ds, crops = decode_dataset(scan_folder(root), _crop(root), max_unreadable=0.05)
    assert len(ds) == 40 and len(crops) == 40
    assert [p for p, _ in ds.skipped] == ["person_01/broken.jpg"]
    assert ds.describe()["unreadable"] == 1


def test_too_many_unreadable_images_fail_with_the_fraction(tmp_path):
    from edgeface.data import decode_dataset, scan_folder

    root = make_dataset(tmp_path / "faces", identities=2, per_identity=4)
    for i in range(2):
        (root / "person_00" / f"bad{i}.png").write_bytes(b"")
    with pytest.raises(ValueError, match=r"2 of 10 images \(20.0%\) could not be read, more than the allowed 5.0%"):
        decode_dataset(scan_folder(root), _crop(root))


def test_identity_split_is_disjoint_and_reproducible(tmp_path):
    from edgeface.data import scan_folder, split_identities

    ds = scan_folder(make_dataset(tmp_path / "faces", identities=10, per_identity=2))
    train, val = split_identities(ds, 0.3, seed=3)
    assert set(train.identities).isdisjoint(val.identities)
    assert len(train.identities) + len(val.identities) == 10 and len(val.identities) == 3
    again, _ = split_identities(ds, 0.3, seed=3)
    assert again.identities == train.identities
    assert split_identities(ds, 0.0, seed=3)[1] is None


def test_lfw_loader_applies_the_evaluation_rule(mini_lfw):
    from edgeface.data import load_lfw

    train, pairs = load_lfw(mini_lfw)
    assert {p.fold for p in pairs} == {6, 7, 8, 9, 10} and len(pairs) == 20
    eval_people = {p.path_a.split("/")[0] for p in pairs} | {p.path_b.split("/")[0] for p in pairs}
    assert eval_people and eval_people.isdisjoint(train.identities)
    assert train.source == "lfw" and len(train.identities) == 10


def test_lfw_without_a_folder_says_how_to_fix(monkeypatch, tmp_path):
    from edgeface.data import load_lfw

    monkeypatch.delenv("EDGEFACE_DATA_HOME", raising=False)
    with pytest.raises(ValueError, match="EDGEFACE_DATA_HOME"):
        load_lfw()
    with pytest.raises(ValueError, match="not an LFW folder"):
        load_lfw(tmp_path)


def test_pipeline_batches_preprocesses_and_augments(tmp_path):
    from edgeface.backbones import backbone_preprocess
    from edgeface.data import Augment, decode_dataset, make_train_dataset, scan_folder, to_model_input

    root = make_dataset(tmp_path / "faces", identities=3, per_identity=4)
    ds, crops = decode_dataset(scan_folder(root), _crop(root))
    pre = backbone_preprocess("resnet50", (32, 32))  # BGR, caffe means
    plain = make_train_dataset(ds, batch_size=5, preprocess=pre, crops=crops, augment=None, seed=0)
    (x, y), y2 = next(iter(plain))
    assert x.shape == (5, 32, 32, 3) and y.shape == (5,) and np.array_equal(y, y2)
    # Without augmentation a row is exactly the device preprocessing of its crop.
    row = int(np.flatnonzero(ds.labels == int(y[0]))[0])
    candidates = [to_model_input(crops[i:i + 1], pre)[0] for i in np.flatnonzero(ds.labels == int(y[0]))]
    assert any(np.allclose(x[0].numpy(), c, atol=1e-4) for c in candidates), row
    augmented = make_train_dataset(ds, batch_size=6, preprocess=backbone_preprocess("tiny", (32, 32)), crops=crops,
                                   augment=Augment(grayscale=0.5), seed=0)
    (xa, _), _ = next(iter(augmented))
    assert xa.shape == (6, 32, 32, 3) and float(np.min(xa)) >= -1.0 - 1e-6 and float(np.max(xa)) <= 1.0 + 1e-6


def test_balanced_sampling_is_uniform_over_people():
    from edgeface._data import index_stream

    labels = np.array([0] * 90 + [1] * 10)
    stream = index_stream(labels, seed=0, balanced=True)
    drawn = labels[[next(stream) for _ in range(2000)]]
    assert 0.4 < drawn.mean() < 0.6
    plain = index_stream(labels, seed=0)
    assert sorted(next(plain) for _ in range(100)) == list(range(100))


def test_unknown_augmentation_option():
    from edgeface.data import Augment

    with pytest.raises(ValueError, match="unknown augmentation option"):
        Augment.from_dict({"flip": True, "rotate": 10})


def _shared_detector():
    import os
    from pathlib import Path

    home = os.environ.get("EDGEFACE_DATA_HOME")
    path = Path(home).parent / "models" / "face_detection_short_range.tflite" if home else None
    if path is None or not path.is_file():
        pytest.skip("BlazeFace model not found next to EDGEFACE_DATA_HOME "
                    "(../models/face_detection_short_range.tflite)")
    return path


def test_align_skips_images_without_a_face_unless_asked_to_centre_crop_them(tmp_path):
    from edgeface.data import CropMaker, decode_dataset, scan_folder

    detector = _shared_detector()
    root = make_dataset(tmp_path / "faces", identities=2, per_identity=2)
    maker = CropMaker(str(root), (32, 32), align=True, detector=detector)
    ds, crops = decode_dataset(scan_folder(root), maker)
    assert len(ds) == 0 and maker.no_face == 4  # as the device: no face, no crop
    maker = CropMaker(str(root), (32, 32), align=True, detector=detector, no_face="center")
    ds, crops = decode_dataset(scan_folder(root), maker)
    assert crops.shape == (4, 32, 32, 3) and maker.no_face == 4


def _mid_grey_batch(n: int = 8) -> np.ndarray:
    """Images in 96..160: brightness ±20 % and contrast ±20 % never reach the clipping bounds."""
    return np.random.default_rng(3).integers(96, 161, (n, 12, 12, 3)).astype(np.uint8)


def test_brightness_shifts_every_pixel_of_an_image_by_one_amount():
    from edgeface.data import Augment, augment_batch

    images = _mid_grey_batch()
    out = augment_batch(images, Augment(flip=False, crop_scale=1.0, shift=0.0, brightness=0.2, contrast=0.0)).numpy()
    shift = out - images.astype(np.float32)
    per_image = shift.reshape(len(images), -1)
    np.testing.assert_allclose(per_image, per_image[:, :1].repeat(per_image.shape[1], 1), atol=1e-3)
    assert np.all(np.abs(per_image[:, 0]) <= 0.2 * 255 + 1e-3) and np.ptp(per_image[:, 0]) > 1.0


def test_contrast_scales_around_the_mean_of_the_brightened_image():
    from edgeface.data import Augment, augment_batch

    images = _mid_grey_batch()
    x = images.astype(np.float64)
    out = augment_batch(images, Augment(flip=False, crop_scale=1.0, shift=0.0, brightness=0.2, contrast=0.2)).numpy()
    for before, after in zip(x, out.astype(np.float64)):
        # after = c * (before + b) + (1 - c) * mean(before + b): an affine map with gain c in [0.8, 1.2]
        gain, offset = np.polyfit(before.ravel(), after.ravel(), 1)
        assert 0.8 - 1e-6 <= gain <= 1.2 + 1e-6
        np.testing.assert_allclose(after, gain * before + offset, atol=1e-3)
        # and the mean moved by the brightness alone, which is within ±20 % of the range
        assert abs(after.mean() - before.mean()) <= 0.2 * 255 + 1e-3
