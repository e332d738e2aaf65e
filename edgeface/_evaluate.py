"""Verification of a trained model on LFW-style pairs, for ``.keras`` and ``.tflite`` alike.

Both paths crop with the runtime's code (``center_crop``, or detection + ``align_face`` when
the model's metadata names a template; an image without a detected face is left out with its
pairs, as the device refuses it, unless ``no_face="center"``, and counted either way), and
score pairs by cosine similarity of the L2-normalised embeddings; a ``.tflite`` model runs
through the runtime's ``Embedder``, i.e. exactly as on the device.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from edgeface_runtime.metadata import ModelMetadata, Preprocess

from ._data import (DEFAULT_MAX_UNREADABLE, DEFAULT_NO_FACE, NO_FACE_REASON, CropMaker, NoFaceDetected,
                    check_unreadable, no_face_summary)

logger = logging.getLogger(__name__)

DEFAULT_FARS = (1e-2, 1e-3)


def _decode_pair_images(pairs: Sequence[Any], image_root: str, crop: Callable[[str], np.ndarray],
                        max_unreadable: float) -> tuple[dict[str, np.ndarray], list[tuple[str, str]]]:
    from concurrent.futures import ThreadPoolExecutor

    from edgeface_runtime import ImageDecodeError

    unique = sorted({p.path_a for p in pairs} | {p.path_b for p in pairs})

    def one(path: str):
        try:
            return crop(path), None
        except NoFaceDetected:
            return None, NO_FACE_REASON
        except (ImageDecodeError, OSError, ValueError) as exc:
            return None, str(exc).splitlines()[0] if str(exc) else type(exc).__name__

    crops: dict[str, np.ndarray] = {}
    skipped: list[tuple[str, str]] = []  # (image, why), unreadable
    no_face: list[tuple[str, str]] = []
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for path, (array, reason) in zip(unique, pool.map(one, unique, chunksize=16)):
            if array is None:
                (no_face if reason == NO_FACE_REASON else skipped).append((path, reason or "unreadable"))
            else:
                crops[path] = array
    check_unreadable(len(skipped), len(unique), max_unreadable, skipped)
    if skipped:
        logger.warning("%d of %d pair images could not be read; their pairs are left out", len(skipped), len(unique))
    if no_face:
        logger.warning("%d of %d pair images have no detected face; their pairs are left out, as the device "
                       "would refuse them (pass no_face='center' to centre-crop them instead)", len(no_face),
                       len(unique))
    return crops, skipped + no_face


def pair_scores(pairs: Sequence[Any], paths: Sequence[str], embeddings: np.ndarray
                ) -> tuple[list, np.ndarray, np.ndarray, np.ndarray]:
    """Cosine scores of the pairs whose both images were embedded (row ``i`` of ``embeddings``
    is ``paths[i]``): ``(usable pairs, scores, same-person labels, fold ids)``.

    Scores are float32, as a device compares them, so thresholds are exact in the device's type.
    """
    index = {p: i for i, p in enumerate(paths)}
    usable = [p for p in pairs if p.path_a in index and p.path_b in index]
    a = embeddings[[index[p.path_a] for p in usable]]
    b = embeddings[[index[p.path_b] for p in usable]]
    scores = np.sum(a * b, axis=1).astype(np.float32)
    return usable, scores, np.array([p.same for p in usable], bool), np.array([p.fold for p in usable])


def score_pairs(pairs: Sequence[Any], image_root: str, embed: Callable[[np.ndarray], np.ndarray],
                preprocess: Preprocess, *, folds: Iterable[int] | None = None, fars: Sequence[float] = DEFAULT_FARS,
                max_unreadable: float = DEFAULT_MAX_UNREADABLE, crop: Callable[[str], np.ndarray] | None = None,
                no_face: str = DEFAULT_NO_FACE) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """Embed the pairs' images (``embed``: (N, h, w, 3) uint8 crops → (N, D) unit vectors).

    Returns ``(verification_report, scores, labels)`` over the pairs whose images could be read
    and, for aligned models, had a detected face (``no_face="skip"``, as the device) — or all
    readable ones with ``no_face="center"``. The report counts both: ``skipped_images``,
    ``skipped_pairs`` and ``no_face`` (images without a face, the policy and examples).
    """
    from edgeface_runtime.metrics import verification_report

    if folds is not None:
        wanted = {int(f) for f in folds}
        pairs = [p for p in pairs if p.fold in wanted]
    if not pairs:
        raise ValueError(f"no pairs to evaluate (folds {sorted(wanted) if folds is not None else 'all'})")
    crop = crop or CropMaker(image_root, preprocess.input_size, align=preprocess.alignment, no_face=no_face)
    # The crop maker may be shared (train crops its training images with it too): count only these.
    no_face_before = len(getattr(crop, "no_face_paths", []))
    crops, skipped = _decode_pair_images(pairs, image_root, crop, max_unreadable)
    paths = sorted(crops)
    usable, scores, labels, fold_ids = pair_scores(pairs, paths, embed(np.stack([crops[p] for p in paths])))
    n_folds = len(np.unique(fold_ids))
    report = verification_report(scores, labels, folds=fold_ids if n_folds > 1 else 10, fars=fars)
    report["skipped_images"] = len(skipped)
    report["skipped_pairs"] = len(pairs) - len(usable)
    unique = len({p.path_a for p in pairs} | {p.path_b for p in pairs})
    report["no_face"] = no_face_summary(crop, unique, since=no_face_before)
    return report, scores, labels


AUTO_FOLDS = "auto"


def _select_folds(pairs: Sequence[Any], folds: Iterable[int] | str | None, source: str
                  ) -> tuple[list, list[int] | None]:
    """The pairs of ``folds`` (1-based; None: all). ``"auto"``: folds 6-10 of a 10-fold file
    (LFW's pairs.txt, the project's evaluation rule), else every fold the file has, as it is
    (e.g. a file that holds only LFW's folds 6-10, or pairs over another dataset)."""
    present = sorted({p.fold for p in pairs})
    if isinstance(folds, str):
        if folds != AUTO_FOLDS:
            raise ValueError(f"folds must be 'auto', None (all) or fold numbers, got {folds!r}")
        folds = (6, 7, 8, 9, 10) if present == list(range(1, 11)) else None
    if folds is None:
        return list(pairs), None
    wanted = sorted({int(f) for f in folds})
    missing = [f for f in wanted if f not in present]
    if missing:
        raise ValueError(f"{source} has folds {present[0]}-{present[-1]}, not {missing}; pass folds that exist "
                         "(e.g. --folds all for a one-fold View 1 file)")
    return [p for p in pairs if p.fold in set(wanted)], wanted


def evaluate(
    model_path: str | os.PathLike,
    pairs_path: str | os.PathLike,
    image_root: str | os.PathLike,
    folds: Iterable[int] | str | None = AUTO_FOLDS,
    calibrate_far: float | Sequence[float] | None = None,
    *,
    fars: Sequence[float] = DEFAULT_FARS,
    batch_size: int = 256,
    num_threads: int | None = None,
    max_unreadable: float = DEFAULT_MAX_UNREADABLE,
    detector: str | os.PathLike | None = None,
    no_face: str = DEFAULT_NO_FACE,
) -> dict[str, Any]:
    """Verification report of a ``.keras`` or ``.tflite`` model on an LFW-style pairs file.

    ``folds`` (1-based; None: all; "auto": 6-10 of a 10-fold LFW pairs.txt, else all the
    file's folds, as they are) picks the pairs; the pairs' images may be JPEG, PNG, PGM, ...
    (see ``read_pairs``); accuracy is cross-validated across them
    (the project's rule: folds 6-10). With ``calibrate_far`` the threshold at that false-
    accept rate (one or several) is computed on these pairs' impostor scores and written
    into the model's metadata (``.tflite``: ``write_metadata``; ``.keras``: its
    ``edgeface.json``), replacing thresholds at the same FAR. A model whose metadata names
    an alignment template gets detected and aligned crops (``detector``: a BlazeFace
    ``.tflite``; default: the runtime's cached one); ``no_face`` says what happens to an image
    in which it finds no face: "skip" (default) leaves its pairs out, as the device refuses
    it; "center" centre-crops it. The report's ``no_face`` counts them either way.
    """
    from edgeface_runtime.metrics import calibrate_threshold, read_pairs

    model_file = Path(model_path)
    if not model_file.is_file():
        raise ValueError(f"model file not found: {str(model_path)!r}")
    root = Path(image_root)
    if not root.is_dir():
        raise ValueError(f"image folder not found: {str(image_root)!r}")
    pairs_file = Path(pairs_path)
    if not pairs_file.is_file():
        raise ValueError(f"pairs file not found: {str(pairs_path)!r}")
    pairs, chosen = _select_folds(read_pairs(pairs_file, image_root=root), folds, str(pairs_file))
    fars_to_calibrate = _fars(calibrate_far)

    if model_file.suffix == ".tflite":
        metadata, embed, close = _tflite_embedder(model_file, num_threads)
    else:
        metadata, embed, close = _keras_embedder(model_file, batch_size)
    try:
        crop = CropMaker(str(root), metadata.preprocess.input_size, align=metadata.preprocess.alignment,
                         detector=detector, no_face=no_face)
        report, scores, labels = score_pairs(pairs, str(root), embed, metadata.preprocess, fars=fars,
                                             max_unreadable=max_unreadable, crop=crop)
    finally:
        close()
    report.update({"model": str(model_file), "pairs": str(pairs_file), "images": str(root),
                   "evaluated_folds": chosen if chosen is not None else sorted({p.fold for p in pairs})})
    if fars_to_calibrate:
        negatives = scores[~labels]
        thresholds = {far: float(calibrate_threshold(negatives, far)) for far in fars_to_calibrate}
        updated = ModelMetadata(**{**_metadata_fields(metadata), "thresholds": {**metadata.thresholds, **thresholds}})
        _write_thresholds(model_file, updated)
        report["calibrated"] = [{"far": far, "threshold": t, "negatives": int(negatives.size)}
                                for far, t in thresholds.items()]
        logger.info("wrote thresholds %s into %s", thresholds, model_file)
    return report


def _fars(value: float | Sequence[float] | None) -> list[float]:
    if value is None:
        return []
    values = [value] if isinstance(value, (int, float)) else list(value)
    out = []
    for far in values:
        far = float(far)
        if not 0.0 < far < 1.0:
            raise ValueError(f"calibrate_far must be a false-accept rate in (0, 1), e.g. 1e-3; got {far!r}")
        out.append(far)
    return out


def _metadata_fields(metadata: ModelMetadata) -> dict[str, Any]:
    return {name: getattr(metadata, name) for name in metadata.__dataclass_fields__}


def _keras_embedder(path: Path, batch_size: int):
    from ._data import embed_crops
    from ._modelio import load_model

    model, metadata = load_model(path)
    if metadata is None:
        raise ValueError(f"{path} carries no edgeface metadata (edgeface.json), so its preprocessing is unknown; "
                         "evaluate a model saved by `edgeface train`")
    return metadata, lambda crops: embed_crops(model, crops, metadata.preprocess, batch_size=batch_size), lambda: None


def _tflite_embedder(path: Path, num_threads: int | None):
    from edgeface_runtime import Embedder

    embedder = Embedder.from_path(path, num_threads=num_threads)
    return embedder.metadata, embedder.embed_many, embedder.close


def _write_thresholds(path: Path, metadata: ModelMetadata) -> None:
    if path.suffix == ".tflite":
        from edgeface_runtime.metadata import write_metadata

        write_metadata(path, metadata, destination=path)
    else:
        from ._modelio import write_keras_metadata

        write_keras_metadata(path, metadata)
