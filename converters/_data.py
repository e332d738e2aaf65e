"""What conversion reads besides the model: calibration crops, fine-tuning data, pairs.

* Calibration: a folder of face crops (any depth), cropped with the runtime's own
  ``center_crop`` and preprocessed with the model's :class:`Preprocess`, exactly as a device
  does. A deterministic 1-in-5 share is held out: the representative dataset never sees the
  crops that check each variant's agreement.
* Fine-tuning: the small interface :class:`FineTuneData`. ``data=DIR`` builds one with the
  training half's pipeline (``edgeface.data``: one sub-folder per person); any other source
  can be adapted by constructing the dataclass.
* Calibration pairs: an LFW-format pairs file (``edgeface_runtime.metrics.read_pairs``);
  only its impostor pairs set the thresholds, its genuine pairs give TAR at them.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from edgeface_runtime import IMAGE_SUFFIXES
from edgeface_runtime.metadata import Preprocess

logger = logging.getLogger(__name__)

MIN_CALIBRATION_IMAGES = 10
RECOMMENDED_CALIBRATION_IMAGES = 100
MAX_UNREADABLE = 0.05  # the training pipeline's default allowance
HOLD_OUT_EVERY = 5


def to_model_input(crops: np.ndarray, preprocess: Preprocess) -> np.ndarray:
    """uint8 RGB crops (N, h, w, 3) → float32 model input, as the device computes it."""
    return preprocess.normalize(crops)


@dataclass
class CalibrationSet:
    """Preprocessed crops: ``representative`` feeds int8 calibration, ``held_out`` the agreement check."""

    representative: np.ndarray
    held_out: np.ndarray
    source: str
    unreadable: list[tuple[str, str]] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        return {"folder": self.source, "representative": len(self.representative), "held_out": len(self.held_out),
                "unreadable": len(self.unreadable)}


def list_images(folder: str | os.PathLike) -> list[Path]:
    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"calibration folder {str(folder)!r} does not exist or is not a folder; pass a folder of "
                         "face crops (a few hundred, e.g. from your training data)")
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                  and not any(part.startswith(".") for part in p.relative_to(root).parts))


def load_crops(paths: Sequence[Path], input_size: tuple[int, int], *, max_unreadable: float = MAX_UNREADABLE,
               what: str = "calibration") -> tuple[np.ndarray, list[tuple[str, str]]]:
    """Decode and centre-crop ``paths`` with the runtime's loader; skip (and count) unreadable files."""
    from edgeface_runtime import ImageDecodeError, center_crop, load_image

    crops, bad = [], []
    for path in paths:
        try:
            crops.append(center_crop(load_image(path), input_size))
        except (ImageDecodeError, OSError, ValueError) as exc:
            bad.append((str(path), str(exc).splitlines()[0] if str(exc) else type(exc).__name__))
    if paths and len(bad) / len(paths) > max_unreadable:
        shown = "; ".join(f"{p}: {r}" for p, r in bad[:3])
        raise ValueError(f"{len(bad)} of {len(paths)} {what} images could not be read (more than "
                         f"{max_unreadable:.0%}), e.g. {shown}; remove or fix them")
    if bad:
        logger.warning("skipped %d unreadable %s image(s) of %d, e.g. %s: %s", len(bad), what, len(paths), *bad[0])
    h, w = input_size
    return (np.stack(crops) if crops else np.zeros((0, h, w, 3), np.uint8)), bad


def load_calibration(folder: str | os.PathLike, preprocess: Preprocess, *, max_images: int = 500,
                     face_detector: Any = None) -> CalibrationSet:
    """Read up to ``max_images`` face crops (evenly spread over the sorted files) and split them.

    ``face_detector`` (an ``edgeface_runtime`` FaceDetector): when given, a sample of the
    images must show faces; a folder of something else is refused instead of calibrating on it.
    """
    paths = list_images(folder)
    if len(paths) < MIN_CALIBRATION_IMAGES:
        raise ValueError(f"calibration folder {str(folder)!r} holds {len(paths)} image file(s) "
                         f"({', '.join(IMAGE_SUFFIXES)}); int8 calibration needs at least {MIN_CALIBRATION_IMAGES} "
                         f"face crops, ideally a few hundred")
    if len(paths) > max_images:
        paths = [paths[i] for i in np.linspace(0, len(paths) - 1, max_images).round().astype(int)]
    crops, bad = load_crops(paths, preprocess.input_size)
    if len(crops) < MIN_CALIBRATION_IMAGES:
        raise ValueError(f"only {len(crops)} readable image(s) in {str(folder)!r}; need {MIN_CALIBRATION_IMAGES}")
    _check_not_blank(crops, folder)
    if face_detector is not None:
        unreadable = {p for p, _ in bad}
        _check_faces([p for p in paths if str(p) not in unreadable], face_detector, folder)
    if len(crops) < RECOMMENDED_CALIBRATION_IMAGES:
        logger.warning("only %d calibration images: int8 ranges and the agreement check are rough; a few hundred "
                       "face crops are recommended", len(crops))
    return _split_held_out(to_model_input(crops, preprocess), str(folder), bad)


def calibration_from_dataset(dataset: Any, preprocess: Preprocess, *, max_images: int = 500,
                             detector: Any = None) -> CalibrationSet:
    """Calibration crops made from a training dataset (``edgeface.data.FaceDataset``) the way training
    made them: up to ``max_images`` images spread over the people, aligned when the model's
    ``Preprocess.alignment`` asks for it (``detector``: None for the runtime's default)."""
    from edgeface.data import CropMaker

    if len(dataset) < MIN_CALIBRATION_IMAGES:
        raise ValueError(f"the training data in {dataset.root} holds {len(dataset)} images; int8 calibration "
                         f"needs at least {MIN_CALIBRATION_IMAGES}; pass --calibration DIR")
    picks = np.linspace(0, len(dataset) - 1, min(max_images, len(dataset))).round().astype(int)
    maker = CropMaker(dataset.root, preprocess.input_size, align=preprocess.alignment, detector=detector)
    crops, bad = _crop_all([dataset.paths[i] for i in picks], maker)
    if len(crops) < MIN_CALIBRATION_IMAGES:
        raise ValueError(f"only {len(crops)} readable training images under {dataset.root}; pass --calibration DIR")
    if maker.no_face:
        logger.warning("calibration: no face found in %d of %d training images; they are left out, as the device "
                       "refuses them", maker.no_face, len(picks))
    return _split_held_out(to_model_input(crops, preprocess), f"{len(crops)} training images of {dataset.root}", bad)


def _split_held_out(x: np.ndarray, source: str, bad: list) -> CalibrationSet:
    held = np.zeros(len(x), bool)
    held[HOLD_OUT_EVERY - 1::HOLD_OUT_EVERY] = True
    if held.sum() < 4:
        held[-4:] = True
    return CalibrationSet(x[~held], x[held], source, bad)


def _check_not_blank(crops: np.ndarray, folder: Any) -> None:
    # A folder of blank frames or flat colour (a wrong export, a dead camera) calibrates int8
    # ranges to nothing: refuse it rather than ship a model quantized on no signal.
    flat = crops.reshape(len(crops), -1).std(axis=1) < 2.0
    if flat.mean() > 0.5:
        raise ValueError(f"{flat.sum()} of {len(crops)} images in {str(folder)!r} are blank or a single colour; "
                         "calibration needs real face crops")


FACE_SAMPLE = 16


def _check_faces(paths: Sequence[Path], detector: Any, folder: Any) -> None:
    from edgeface_runtime import load_image

    sample = [paths[i] for i in np.linspace(0, len(paths) - 1, min(FACE_SAMPLE, len(paths))).round().astype(int)]
    without = [p for p in sample if not detector.detect(load_image(p))]
    if len(without) > len(sample) // 2:
        raise ValueError(f"no face found in {len(without)} of {len(sample)} sampled calibration images in "
                         f"{str(folder)!r} (e.g. {without[0].name}); calibration needs face crops like the ones the "
                         "device will embed")
    if without:
        logger.warning("no face found in %d of %d sampled calibration images, e.g. %s", len(without), len(sample),
                       without[0])


# --------------------------------------------------------------------------- fine-tuning


@dataclass
class FineTuneData:
    """The stated interface between conversion and any training-data source.

    ``dataset``: an endless (or long enough) ``tf.data.Dataset`` of ``(images, labels)``
    batches, images float32 already preprocessed for the model (N, h, w, 3), labels int in
    ``[0, num_classes)``. The training half's ``make_train_dataset`` gives
    ``((images, labels), labels)``; that form is accepted too.
    ``head``: a layer called on ``[embedding, labels]`` giving logits (the training half's
    classification heads); None uses a margin-free cosine-softmax head.
    """

    dataset: Any
    num_classes: int
    head: Any = None
    describe: dict[str, Any] = field(default_factory=dict)


def folder_finetune_data(folder: str | os.PathLike, preprocess: Preprocess, *, batch_size: int = 32,
                         seed: int = 0, detector: Any = None) -> FineTuneData:
    """One sub-folder per person, through the training half's pipeline (same crops, same augmentation).

    ``detector`` aligns the crops when the model was trained on aligned faces (None: the
    runtime's default BlazeFace model).
    """
    from edgeface.data import scan_folder

    return dataset_finetune_data(scan_folder(folder, min_images=1), preprocess, batch_size=batch_size, seed=seed,
                                 detector=detector)


def dataset_finetune_data(people: Any, preprocess: Preprocess, *, batch_size: int = 32, seed: int = 0,
                          detector: Any = None) -> FineTuneData:
    """:func:`folder_finetune_data` for an ``edgeface.data.FaceDataset`` (e.g. a training card's people)."""
    from edgeface.data import Augment, CropMaker, decode_dataset, make_train_dataset

    if people.num_classes < 2:
        raise ValueError(f"fine-tuning data {people.root!r} holds {people.num_classes} person; it needs one "
                         "sub-folder per person, at least 2")
    crop = CropMaker(people.root, preprocess.input_size, align=preprocess.alignment, detector=detector)
    people, crops = decode_dataset(people, crop)
    # Fine-tuning restores, it does not re-learn: light augmentation only.
    dataset = make_train_dataset(people, batch_size=batch_size, preprocess=preprocess, crops=crops,
                                 augment=Augment(crop_scale=1.0, shift=0.0, brightness=0.1, contrast=0.1,
                                                 grayscale=0.0), seed=seed)
    # The people by name: a report keeps them out of its evaluation pairs (a root alone would mean all its folders).
    return FineTuneData(dataset, people.num_classes, describe={**people.describe(), "batch_size": batch_size,
                                                              "identity_names": list(people.identities)})


def check_finetune_data(data: FineTuneData, input_size: tuple[int, int]) -> None:
    spec = data.dataset.element_spec
    images = spec[0][0] if isinstance(spec[0], tuple) else spec[0]
    shape = tuple(images.shape)
    if len(shape) != 4 or (shape[1] is not None and tuple(shape[1:3]) != tuple(input_size)) or shape[3] != 3:
        raise ValueError(f"fine-tuning batches hold images of shape {shape} but the model takes "
                         f"{input_size[0]}×{input_size[1]}×3; make the data with the model's Preprocess.input_size")
    if int(data.num_classes) < 2:
        raise ValueError(f"fine-tuning needs at least 2 classes, got num_classes={data.num_classes!r}")


# --------------------------------------------------------------------------- pairs


@dataclass
class PairSet:
    """Crops of a pairs file, decoded once and scored by every variant."""

    crops: np.ndarray  # preprocessed, one row per distinct image
    index_a: np.ndarray
    index_b: np.ndarray
    same: np.ndarray
    source: str
    root: str = ""  # the folder the pairs' image paths are relative to
    folds: list[int] | None = None  # the folds of the file used; None: all

    def describe(self) -> dict[str, Any]:
        return {"file": self.source, "images": self.root, "folds": self.folds, "pairs": len(self.same),
                "genuine": int(self.same.sum()), "impostor": int((~self.same).sum()),
                "distinct_images": len(self.crops)}


def _image_root(pairs_file: Path) -> Path:
    for candidate in (pairs_file.parent / "lfw-deepfunneled", pairs_file.parent / "lfw", pairs_file.parent):
        if candidate.is_dir() and any(p.is_dir() for p in candidate.iterdir()):
            return candidate
    return pairs_file.parent


def load_pairs(pairs_file: str | os.PathLike, preprocess: Preprocess, *, image_root: str | os.PathLike | None = None,
               max_unreadable: float = MAX_UNREADABLE, detector: Any = None,
               folds: Sequence[int] | None = None) -> PairSet:
    """Decode the images of an LFW-format pairs file (root: ``image_root``, else beside the file);
    ``folds`` (1-based) keeps only those folds' pairs.

    Crops are made as for training and ``edgeface evaluate``: centre crops, or detection +
    alignment when the model's ``Preprocess.alignment`` asks for it (``detector``, None: the
    runtime's default BlazeFace model).
    """
    from edgeface_runtime.metrics import read_pairs

    source = Path(pairs_file)
    if not source.is_file():
        raise ValueError(f"calibration pairs file {str(pairs_file)!r} not found; pass an LFW-format pairs file "
                         "(e.g. lfw/pairs.txt, with the images in lfw/lfw-deepfunneled/)")
    root = Path(image_root) if image_root is not None else _image_root(source)
    pairs = read_pairs(source, image_root=root)
    if folds is not None:
        wanted = set(int(f) for f in folds)
        pairs = [p for p in pairs if p.fold in wanted]
        if not pairs:
            raise ValueError(f"{source} has no pairs in folds {sorted(wanted)}")
    return _pair_set(pairs, root, preprocess, detector, max_unreadable, str(source),
                     sorted(set(int(f) for f in folds)) if folds is not None else None)


def generated_pairs(people: Any, preprocess: Preprocess, *, n_pairs: int = 600, seed: int = 0,
                    detector: Any = None, max_unreadable: float = MAX_UNREADABLE) -> PairSet:
    """Verification pairs drawn from ``people`` (an ``edgeface.data.FaceDataset``, e.g. the people a
    training card held out for validation), half same-person, cropped as training cropped them."""
    from edgeface_runtime.metrics import generate_pairs

    with_two = sum(1 for paths in people.by_identity().values() if len(paths) >= 2)
    if people.num_classes < 2 or with_two < 1:
        raise ValueError(f"{people.num_classes} people ({with_two} with two or more images) in {people.root} cannot "
                         "form verification pairs; pass --calibration-pairs FILE")
    import warnings

    pairs: list = []
    for count in (int(n_pairs), 200, 60, 20, 4):  # a small validation split cannot supply many distinct pairs
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # one fold: folds sharing people is moot
                pairs = generate_pairs(people.by_identity(), min(count, int(n_pairs)), int(seed), folds=1)
            break
        except ValueError:
            continue
    if not pairs:
        raise ValueError(f"the validation people in {people.root} cannot form verification pairs; pass "
                         "--calibration-pairs FILE")
    return _pair_set(pairs, Path(people.root), preprocess, detector, max_unreadable,
                     f"{len(pairs)} pairs generated from {people.num_classes} validation people of {people.root}", None)


def _pair_set(pairs: Sequence[Any], root: Path, preprocess: Preprocess, detector: Any, max_unreadable: float,
              source: str, folds: list[int] | None) -> PairSet:
    same = np.array([p.same for p in pairs], bool)
    if same.all():
        raise ValueError(f"{source} has no impostor (different-person) pairs; thresholds are calibrated on them")
    names = sorted({p.path_a for p in pairs} | {p.path_b for p in pairs})
    if preprocess.alignment != "none":
        from edgeface.data import CropMaker  # same crops as training and `edgeface evaluate`: detect + align

        maker = CropMaker(str(root), preprocess.input_size, align=preprocess.alignment, detector=detector)
        crops, bad = _crop_all(names, maker)
    else:
        crops, bad = load_crops([root / n for n in names], preprocess.input_size, max_unreadable=1.0,
                                what="pair")
        bad = [(str(Path(p).relative_to(root)), r) for p, r in bad]
    from edgeface.data import NO_FACE_REASON

    unreadable = [b for b in bad if b[1] != NO_FACE_REASON]
    if len(unreadable) / len(names) > max_unreadable:
        raise ValueError(f"{len(unreadable)} of {len(names)} images of {source} could not be read under {root} "
                         f"(e.g. {unreadable[0][0]}: {unreadable[0][1]}); pass the folder holding them")
    if len(unreadable) < len(bad):
        logger.warning("%d of %d calibration pair images have no detected face: their pairs are left out, as the "
                       "device refuses them", len(bad) - len(unreadable), len(names))
    missing = {p for p, _ in bad}
    keep = [i for i, p in enumerate(pairs) if p.path_a not in missing and p.path_b not in missing]
    readable = [n for n in names if n not in missing]
    row = {n: i for i, n in enumerate(readable)}
    return PairSet(to_model_input(crops, preprocess), np.array([row[pairs[i].path_a] for i in keep]),
                   np.array([row[pairs[i].path_b] for i in keep]), same[keep], source, str(root), folds)


def _crop_all(names: Sequence[str], maker: Callable[[str], np.ndarray]) -> tuple[np.ndarray, list[tuple[str, str]]]:
    from edgeface_runtime import ImageDecodeError

    from edgeface.data import NO_FACE_REASON, NoFaceDetected

    crops, bad = [], []
    for name in names:
        try:
            crops.append(maker(name))
        except NoFaceDetected:  # readable, but the device would refuse it: its pairs are left out
            bad.append((name, NO_FACE_REASON))
        except (ImageDecodeError, OSError, ValueError) as exc:
            bad.append((name, str(exc).splitlines()[0] if str(exc) else type(exc).__name__))
    return (np.stack(crops) if crops else np.zeros((0, 1, 1, 3), np.uint8)), bad
