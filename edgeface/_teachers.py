"""Teachers for distillation: anything that maps a training image to an embedding.

A teacher sees the *original* image (relative path under the data root) and crops it its own
way: a Keras or TFLite edgeface model with the preprocessing and alignment in its metadata,
a registered face source rebuilt in Keras (``"sface"``, ``"dlib_resnet"``: the source's own
preprocessing and alignment template on the runtime's BlazeFace landmarks), dlib itself
(``"dlib"``: dlib's own detector and 5-point alignment), or nothing at all for precomputed
embeddings (``.npz``). ``"A+B"`` (e.g. ``"sface+dlib_resnet"``) is an ensemble: the mean of
its members' centred unit vectors (:class:`EnsembleTeacher`). The student meanwhile trains on
the runtime's crops, so it learns to reproduce the teacher from what the device will see.

Teacher embeddings are cached on disk (:func:`teacher_embeddings`): one ``.npz`` per teacher
fingerprint (model file sha256 + the options that change its output), rows keyed by the image
path and the digest of the image's bytes, so a second run, or a run with another output
folder, embeds nothing again, and an edited image is embedded afresh. An ensemble is not
cached itself (its centring depends on the set embedded): its members are, each under its own
fingerprint.

A large folder can be embedded by several processes or machines at once: ``shard=(i, n)``
makes one of them embed only the images whose stable hash of their path (:func:`shard_of`)
is ``i`` modulo ``n``, into a part file of its own beside the cache file
(``<cache>.part-<i>-of-<n>.npz``: concurrent writers never replace each other's rows). Reading
the cache merges every part file; :func:`merge_teacher_cache` folds them into the one file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, Sequence

import numpy as np
from edgeface_runtime.registry import Registry

logger = logging.getLogger(__name__)

CACHE_FORMAT = "edgeface-teacher-cache/1"
DLIB_PIP = "pip install 'edgeface[teachers]'  (or: pip install dlib-bin face-recognition-models)"

Progress = Callable[[int, int], None]


def _sha256(path: str | os.PathLike) -> str:
    from edgeface_runtime.download import sha256_of

    return sha256_of(path)


def _crop_record(path: str | os.PathLike, preprocess: Any, detector: str | None) -> dict[str, Any]:
    """What decides a model teacher's embeddings: its file, its preprocessing and, when it aligns, the detector."""
    return {"sha256": _sha256(path), **_crop_record_of(preprocess, detector)}


def _crop_record_of(preprocess: Any, detector: str | None) -> dict[str, Any]:
    """The crop half of :func:`_crop_record`: the preprocessing and, when it aligns, the detector."""
    record: dict[str, Any] = {"preprocess": preprocess.to_dict()}
    if preprocess.alignment != "none":
        record["detector_sha256"] = _sha256(detector) if detector else "default"
    return record


def _check_flip(flip: str, kind: str) -> str:
    if flip not in FLIP_MODES:
        raise ValueError(f"{kind} teacher: flip must be one of {', '.join(FLIP_MODES)}, got {flip!r}")
    return flip


def _flip_record(flip: str) -> dict[str, Any]:
    """The flip mode as the fingerprint sees it: absent for "none", so earlier caches stay valid."""
    return {} if flip == "none" else {"flip": flip}


def _fingerprint(record: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


class Teacher:
    """Base class: ``embed(root, paths)`` → (N, dim) float32, a NaN row where an image failed.

    Subclasses set ``kind`` and fill ``self.record`` (what identifies their output: file
    sha256, options, adapter version); the fingerprint is the sha256 of that record.
    """

    kind: ClassVar[str] = ""
    cacheable: ClassVar[bool] = True  # precomputed embeddings need no cache

    def __init__(self, path: str | None = None, record: Mapping[str, Any] | None = None, dim: int | None = None):
        self.path = path
        self.record = {"kind": self.kind, **(record or {})}
        self.dim = dim

    @property
    def fingerprint(self) -> str:
        return _fingerprint(self.record)

    def describe(self) -> dict[str, Any]:
        """What the training card records about the teacher."""
        return {**self.record, "path": self.path, "dim": self.dim, "fingerprint": self.fingerprint}

    def embed(self, root: str, paths: Sequence[str], progress: Progress | None = None) -> np.ndarray:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path or self.kind!r}, fingerprint={self.fingerprint[:12]})"


# --------------------------------------------------------------------------- edgeface models

def _embed_with_crops(root: str, paths: Sequence[str], crop: Callable[[str], np.ndarray], dim: int,
                      embed: Callable[[np.ndarray], np.ndarray], progress: Progress | None,
                      chunk: int = 256, flip: str = "none") -> np.ndarray:
    """Decode crops chunk by chunk (bounded memory) and embed them; NaN rows for unreadable images.

    ``flip="average"`` embeds each crop and its mirror image and keeps the mean."""
    from edgeface_runtime import ImageDecodeError

    if flip == "average":
        embed = _mirror_averaged(embed)

    def one(path: str):
        try:
            return crop(path)
        except (ImageDecodeError, OSError, ValueError):
            return None

    out = np.full((len(paths), dim), np.nan, np.float32)
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for start in range(0, len(paths), chunk):
            crops = list(pool.map(one, paths[start:start + chunk]))
            rows = [i for i, c in enumerate(crops) if c is not None]
            if rows:
                out[[start + i for i in rows]] = embed(np.stack([crops[i] for i in rows]))
            if progress is not None:
                progress(min(start + chunk, len(paths)), len(paths))
    return out


def _mirror_averaged(embed: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    def both(crops: np.ndarray) -> np.ndarray:  # (N, H, W, 3): the width axis mirrors
        return (embed(crops) + embed(np.ascontiguousarray(crops[:, :, ::-1]))) / 2

    return both


def _embed_with_keras(teacher: Any, root: str, paths: Sequence[str], progress: Progress | None) -> np.ndarray:
    """A Keras teacher's embeddings (``teacher.model``, ``.preprocess``, ``.detector``, ``.batch_size``,
    ``.flip``) of images cropped as its preprocessing says."""
    from ._data import CropMaker, embed_crops

    crop = CropMaker(root, teacher.preprocess.input_size, align=teacher.preprocess.alignment,
                     detector=teacher.detector, no_face="center")  # targets, not a measurement
    return _embed_with_crops(root, paths, crop, int(teacher.dim),
                             lambda c: embed_crops(teacher.model, c, teacher.preprocess, batch_size=teacher.batch_size),
                             progress, flip=teacher.flip)


class KerasTeacher(Teacher):
    """A ``.keras`` embedding model with edgeface metadata (e.g. one made by ``edgeface train``)."""

    kind = "keras"

    def __init__(self, path: str | os.PathLike, *, detector: str | None = None, batch_size: int = 128,
                 flip: str = "none"):
        from ._modelio import load_model

        self.flip = _check_flip(flip, "keras")
        self.model, metadata = load_model(path)
        if metadata is None:
            raise ValueError(
                f"teacher {path} carries no edgeface metadata (edgeface.json), so its preprocessing is unknown; "
                "use a model saved by `edgeface train`, or attach it with "
                "edgeface.training.write_keras_metadata(path, ModelMetadata(preprocess=Preprocess(...), ...))")
        self.preprocess = metadata.preprocess
        self.detector = detector
        self.batch_size = batch_size
        super().__init__(str(path), {**_crop_record(path, self.preprocess, detector), **_flip_record(flip)},
                         int(self.model.output_shape[-1]))

    def embed(self, root: str, paths: Sequence[str], progress: Progress | None = None) -> np.ndarray:
        return _embed_with_keras(self, root, paths, progress)


class TFLiteTeacher(Teacher):
    """A ``.tflite`` embedding model with edgeface metadata, run by the TensorFlow-free runtime."""

    kind = "tflite"

    def __init__(self, path: str | os.PathLike, *, detector: str | None = None, num_threads: int | None = None,
                 flip: str = "none"):
        from edgeface_runtime import Embedder

        self.flip = _check_flip(flip, "tflite")
        self.embedder = Embedder.from_path(path, num_threads=num_threads)
        self.preprocess = self.embedder.preprocess
        self.detector = detector
        super().__init__(str(path), {**_crop_record(path, self.preprocess, detector), **_flip_record(flip)},
                         self.embedder.embedding_size)

    def embed(self, root: str, paths: Sequence[str], progress: Progress | None = None) -> np.ndarray:
        from ._data import CropMaker

        crop = CropMaker(root, self.preprocess.input_size, align=self.preprocess.alignment,
                         detector=self.detector, no_face="center")  # targets, not a measurement
        return _embed_with_crops(root, paths, crop, int(self.dim), self.embedder.embed_many,  # type: ignore[arg-type]
                                 progress, flip=self.flip)

    def close(self) -> None:
        self.embedder.close()


# --------------------------------------------------------------------------- face sources

# Bump when the Keras rebuild of a face source changes what it computes from the same file
# (a parser fix, another layer order): the weights' sha256 alone would not tell the cache.
SOURCE_ADAPTER_VERSION = 1


class SourceTeacher(Teacher):
    """A registered face source (``edgeface.backbones``, ``output="embedding"``) as a teacher.

    The source's Keras rebuild embeds crops made with its own preprocessing and alignment
    template (:func:`edgeface.backbones.backbone_preprocess`) from the runtime's BlazeFace
    landmarks (``detector``: a BlazeFace ``.tflite``, default the runtime's), L2-normalised.
    ``weights``: "pretrained" (the file of the package that carries it) or the path of the
    source's own file. The model is built at the first :meth:`embed`, so a run whose
    embeddings are all cached does no TensorFlow work. Subclasses name the source.
    """

    source: ClassVar[str] = ""
    # Known without building the model: the cache needs the width before anything is embedded.
    embedding_size: ClassVar[int] = 0

    def __init__(self, *, weights: str | os.PathLike = "pretrained", detector: str | None = None,
                 batch_size: int = 128, flip: str = "none"):
        from ._backbones import sha256_of
        from .backbones import backbone_preprocess, get_backbone_spec

        if not self.source:
            raise TypeError("SourceTeacher names no source: use SFaceTeacher, DlibResNetTeacher or a subclass "
                            "that sets kind, source and embedding_size")
        spec = get_backbone_spec(self.source)
        if not spec.is_face_source or spec.find_weights is None:
            raise ValueError(f"{self.source!r} is not a face source (a backbone with output='embedding'), "
                             "so it cannot be a teacher on its own; train a model on it and use that file")
        self.flip = _check_flip(flip, self.kind)
        if weights is None or str(weights).lower() in ("none", "imagenet"):
            raise ValueError(f"{self.kind} teacher: weights must be 'pretrained' or the path of the source's own "
                             f"weights file, got {weights!r}; a teacher without its face weights teaches nothing")
        # Resolved now, not at the first embed: the fingerprint is the file's sha256.
        self.weights_file = spec.find_weights(None if str(weights).lower() == "pretrained" else os.fspath(weights))
        self.preprocess = backbone_preprocess(self.source)
        self.detector = detector
        self.batch_size = int(batch_size)
        self._model: Any = None
        record = {"source": self.source, "adapter_version": SOURCE_ADAPTER_VERSION,
                  "sha256": sha256_of(self.weights_file), **_crop_record_of(self.preprocess, detector),
                  **_flip_record(flip)}
        super().__init__(None, record, self.embedding_size)

    @property
    def model(self) -> Any:
        """The Keras rebuild, built on first use."""
        if self._model is None:
            from .backbones import create_backbone

            model = create_backbone(self.source, weights=self.weights_file, input_size=self.preprocess.input_size)
            width = int(model.output_shape[-1])
            if width != self.dim:
                raise ValueError(f"the {self.source} rebuild embeds in {width} dimensions, where its teacher "
                                 f"declares {self.dim}; fix {type(self).__name__}.embedding_size")
            self._model = model
        return self._model

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "weights": self.weights_file, "detector": self.detector}

    def embed(self, root: str, paths: Sequence[str], progress: Progress | None = None) -> np.ndarray:
        return _embed_with_keras(self, root, paths, progress)


class SFaceTeacher(SourceTeacher):
    """SFace (OpenCV Zoo, 112x112, ArcFace alignment): ``pip install 'edgeface[sources]'``."""

    kind = "sface"
    source = "sface"
    embedding_size = 128


class DlibResNetTeacher(SourceTeacher):
    """dlib's face ResNet rebuilt in Keras (150x150, dlib's chip template on BlazeFace landmarks).

    Not the ``"dlib"`` teacher: that one runs dlib itself, with dlib's detector and landmarks."""

    kind = "dlib_resnet"
    source = "dlib_resnet"
    embedding_size = 128


# --------------------------------------------------------------------------- ensembles

class EnsembleTeacher(Teacher):
    """The mean of several teachers' embeddings (spec ``"A+B"``, e.g. ``"sface+dlib_resnet"``).

    Each member's vectors are L2-normalised, centred (minus that member's mean over the
    images embedded in this call, the rows every member embedded), L2-normalised again,
    averaged across the members and L2-normalised. Centring first matters: two face models'
    raw embeddings each share a large common direction, which would otherwise dominate the
    mean. The members must embed in the same number of dimensions (a mean of vectors from
    different spaces is meaningless; a concatenation would be a different target).

    The result depends on the set embedded, so the ensemble is not cached itself
    (``cacheable = False``) and :func:`teacher_embeddings` embeds through the members' own
    caches. Embed the training images in one call: that is the set whose mean is removed,
    as ``center_teacher`` does for a single teacher. A row fails (NaN) where any member failed.
    """

    kind = "ensemble"
    cacheable = False
    CENTRE = "each member's mean over the images embedded in one call"

    def __init__(self, members: Sequence[Teacher]):
        self.members = list(members)
        if len(self.members) < 2:
            raise ValueError(f"an ensemble needs at least two teachers, got {len(self.members)}")
        dims = [m.dim for m in self.members]
        known = {d for d in dims if d is not None}
        if len(known) > 1:
            raise ValueError(_unequal_dims_message(self.members, dims))
        record = {"members": [{"kind": m.kind, "fingerprint": m.fingerprint} for m in self.members],
                  "combine": "mean of centred unit vectors", "centre": self.CENTRE}
        super().__init__(None, record, next(iter(known)) if known else None)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "members": [m.describe() for m in self.members]}

    def embed(self, root: str, paths: Sequence[str], progress: Progress | None = None) -> np.ndarray:
        blocks = [np.asarray(m.embed(root, paths, _member_progress(progress, k, len(self.members))), np.float32)
                  for k, m in enumerate(self.members)]
        return self.combine(blocks)

    def embeddings(self, root: str, paths: Sequence[str], *, cache_dir: str | os.PathLike | None = None,
                   use_cache: bool = True, progress: Progress | None = None) -> TeacherEmbeddings:
        """:func:`teacher_embeddings` for the ensemble: each member through its own cache, then combined."""
        found = [teacher_embeddings(m, root, paths, cache_dir=cache_dir, use_cache=use_cache,
                                    progress=_member_progress(progress, k, len(self.members)))
                 for k, m in enumerate(self.members)]
        vectors = self.combine([f.vectors for f in found])
        # Rows are reused or computed per member; the ensemble's counts are the members' extremes.
        return TeacherEmbeddings(list(paths), vectors, None, min(f.reused for f in found),
                                 max(f.computed for f in found),
                                 members=[{"kind": m.kind, **f.describe()} for m, f in zip(self.members, found)])

    def combine(self, blocks: Sequence[np.ndarray]) -> np.ndarray:
        """The members' (N, D) vectors (NaN rows: failed) → the ensemble's unit vectors."""
        shapes = [np.shape(b) for b in blocks]
        if len(blocks) != len(self.members) or any(len(s) != 2 for s in shapes) or len({s[0] for s in shapes}) != 1:
            raise ValueError(f"expected one (N, D) array per member ({len(self.members)}), got shapes {shapes}")
        if len({s[1] for s in shapes}) != 1:
            raise ValueError(_unequal_dims_message(self.members, [s[1] for s in shapes]))
        n, dim = shapes[0]
        ok = np.all([np.all(np.isfinite(b), axis=1) for b in blocks], axis=0)
        out = np.full((n, dim), np.nan, np.float32)
        if not ok.any():
            return out  # the caller reports images no teacher could embed
        if ok.sum() < 2:
            raise ValueError(f"the ensemble centres each member over the images embedded together, and only "
                             f"{int(ok.sum())} of {n} image(s) were embedded by every member; embed the whole "
                             "training set in one call")
        from ._distill import distill_targets  # the centring a single teacher gets (center_teacher)

        total = np.zeros((int(ok.sum()), dim), np.float64)
        for k, block in enumerate(blocks):
            try:
                total += distill_targets(np.asarray(block)[ok])[0]
            except ValueError as exc:
                raise ValueError(f"ensemble member {self.members[k].kind!r}: {exc}") from None
        out[ok] = _unit(total / len(blocks)).astype(np.float32)
        return out

    def close(self) -> None:
        for member in self.members:
            member.close()


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _unequal_dims_message(members: Sequence[Teacher], dims: Sequence[int | None]) -> str:
    listed = ", ".join(f"{m.kind}{' ' + m.path if m.path else ''}: {d}" for m, d in zip(members, dims))
    return (f"an ensemble averages its members' embeddings, which needs equal dimensions; got {listed}. "
            "Use members of one width (sface and dlib_resnet are both 128-d), or distil from one teacher")


def _member_progress(progress: Progress | None, k: int, count: int) -> Progress | None:
    """Member ``k``'s progress as a share of the ensemble's: member after member."""
    if progress is None:
        return None
    return lambda done, total: progress(k * total + done, count * total)


# --------------------------------------------------------------------------- precomputed

class NpzTeacher(Teacher):
    """Precomputed embeddings: an ``.npz`` mapping image paths (relative to the data root) to vectors.

    Two layouts: arrays ``paths`` (N strings) and ``embeddings`` (N, D) (what the teacher
    cache writes, so a cache file is itself an npz teacher), or one array per image, named
    by its path (``np.savez(f, **{"alice/1.jpg": vector, ...})``).
    """

    kind = "npz"
    cacheable = False

    def __init__(self, path: str | os.PathLike):
        file = Path(path)
        if not file.is_file():
            raise ValueError(f"teacher embeddings file not found: {str(path)!r}")
        try:
            with np.load(file, allow_pickle=False) as npz:
                arrays = {name: npz[name] for name in npz.files}
        except (OSError, ValueError) as exc:
            raise ValueError(f"{file} is not a readable .npz of embeddings: {exc}") from exc
        if "paths" in arrays and "embeddings" in arrays:
            keys = [str(p) for p in arrays["paths"]]
            vectors = np.asarray(arrays["embeddings"])
            if vectors.ndim != 2 or len(keys) != len(vectors):
                raise ValueError(f"{file}: 'embeddings' must be (N, D) with one row per entry of 'paths'; got "
                                 f"{vectors.shape} for {len(keys)} paths")
        else:
            keys = list(arrays)
            shapes = {arrays[k].shape for k in keys}
            if not keys or len(shapes) != 1 or len(next(iter(shapes))) != 1:
                raise ValueError(f"{file}: expected one 1-D vector of the same length per image path (or arrays "
                                 f"'paths' and 'embeddings'); got shapes {sorted(shapes)[:3]}")
            vectors = np.stack([arrays[k] for k in keys])
        if not np.issubdtype(vectors.dtype, np.number) or not np.all(np.isfinite(vectors)):
            raise ValueError(f"{file}: embeddings must be finite numbers")
        self.index: dict[str, int] = {}  # image path (normalised) -> row of vectors
        for i, key in enumerate(keys):
            previous = self.index.setdefault(_norm_key(key), i)
            if previous != i:  # e.g. 'a/1.jpg' and './a/1.jpg': which vector is meant is unknowable
                raise ValueError(f"{file}: image {_norm_key(key)!r} has two embeddings (entries {previous} and {i}, "
                                 f"as {keys[previous]!r} and {key!r}); keep one vector per image")
        self.vectors = vectors.astype(np.float32)
        super().__init__(str(file), {"sha256": _sha256(file)}, int(vectors.shape[1]))

    def embed(self, root: str, paths: Sequence[str], progress: Progress | None = None) -> np.ndarray:
        missing = [p for p in paths if _norm_key(p) not in self.index]
        if missing:
            example = next(iter(self.index), "<none>")
            raise ValueError(
                f"teacher embeddings {self.path} have no vector for {len(missing)} of {len(paths)} training images "
                f"(e.g. {missing[0]!r}; the file has e.g. {example!r}); keys must be image paths relative to the "
                "data folder, like 'person/image.jpg'")
        return self.vectors[[self.index[_norm_key(p)] for p in paths]]


def _norm_key(path: str) -> str:
    key = str(path).replace(os.sep, "/")
    while key.startswith("./"):
        key = key[2:]
    return key


# --------------------------------------------------------------------------- dlib

DLIB_ADAPTER_VERSION = 1
DLIB_BOXES = ("dlib", "blazeface")
# "average": the teacher's target is the mean of its embeddings of the face and of its mirror image.
# The student trains on randomly flipped crops; a mirror-symmetric target is right for both flips,
# where the plain one is the teacher's view of the unflipped face only.
FLIP_MODES = ("none", "average")
# dlib's 5-point predictor expects boxes shaped like its HOG detector's. Measured on 120 LFW
# images: a HOG box is 0.99 BlazeFace widths wide, its centre 0.06 widths higher.
_BLAZEFACE_TO_HOG = {"scale": 0.99, "dx": -0.02, "dy": -0.06}
# Neither detector found a face: a centred box as HOG draws it on LFW-like face crops.
_CENTRE_BOX = {"size": 0.43, "cx": 0.484, "cy": 0.534}


DLIB_MODEL_FILES = {"shape_predictor": "shape_predictor_5_face_landmarks.dat",
                    "recogniser": "dlib_face_recognition_resnet_model_v1.dat"}


def import_dlib() -> tuple[Any, dict[str, str]]:
    """dlib and the paths of its two model files, or ImportError with the pip command."""
    import importlib.util

    try:
        import dlib
    except ImportError as exc:
        raise ImportError(f"the dlib teacher needs dlib ({exc}); install it with: {DLIB_PIP}") from exc
    # Found, not imported: face_recognition_models' __init__ needs pkg_resources, which new setuptools lack.
    spec = importlib.util.find_spec("face_recognition_models")
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    files = ({name: str(Path(folders[0]) / "models" / file) for name, file in DLIB_MODEL_FILES.items()}
             if folders else {})
    if not files or not all(Path(f).is_file() for f in files.values()):
        raise ImportError(f"the dlib teacher needs dlib's model files from the face-recognition-models package, "
                          f"which is not installed; install it with: {DLIB_PIP}")
    return dlib, files


@dataclass
class _DlibModels:
    detector: Any
    shape_predictor: Any
    recogniser: Any
    blazeface: Any = None


def _dlib_load(options: Mapping[str, Any]) -> _DlibModels:
    dlib, files = import_dlib()
    blazeface = None
    if options["detector"]:
        from edgeface_runtime import FaceDetector

        blazeface = FaceDetector.from_path(options["detector"])
    return _DlibModels(dlib.get_frontal_face_detector(), dlib.shape_predictor(files["shape_predictor"]),
                       dlib.face_recognition_model_v1(files["recogniser"]), blazeface)


def _dlib_embed_one(models: _DlibModels, options: Mapping[str, Any], file: str) -> tuple[np.ndarray | None, str]:
    """dlib's own pipeline on the original image: face box → 5 landmarks → 150x150 chip → ResNet."""
    import dlib

    from edgeface_runtime import ImageDecodeError, load_image

    try:
        rgb = load_image(file)
    except (ImageDecodeError, OSError, ValueError):
        return None, "unreadable"
    order = ("blazeface", "dlib") if options["box"] == "blazeface" else ("dlib", "blazeface")
    rect, source = None, "centre"
    for name in order:
        if name == "dlib":
            found = models.detector(rgb, int(options["upsample"]))
            if len(found):
                best = max(found, key=lambda r: r.area())
                rect, source = best, "dlib"
        elif models.blazeface is not None:
            from edgeface_runtime import largest_face

            face = largest_face(models.blazeface.detect(rgb))
            if face is not None:
                rect, source = _hog_like_rect(dlib, face.box), "blazeface"
        if rect is not None:
            break
    if rect is None:
        h, w = rgb.shape[:2]
        side = _CENTRE_BOX["size"] * min(h, w)
        cx, cy = _CENTRE_BOX["cx"] * w, _CENTRE_BOX["cy"] * h
        rect = dlib.rectangle(int(cx - side / 2), int(cy - side / 2), int(cx + side / 2), int(cy + side / 2))
    shape = models.shape_predictor(rgb, rect)
    chip = dlib.get_face_chip(rgb, shape, size=150, padding=0.25)
    vector: np.ndarray = np.asarray(models.recogniser.compute_face_descriptor(chip, int(options["jitter"])), np.float32)
    if options.get("flip") == "average":  # the chip mirrored: dlib's chip template is left-right symmetric
        mirror = np.ascontiguousarray(chip[:, ::-1])
        vector = (vector + np.asarray(models.recogniser.compute_face_descriptor(mirror, int(options["jitter"])),
                                      np.float32)) / 2
    return vector, source


def _hog_like_rect(dlib, box: Sequence[float]):
    x0, y0, x1, y1 = box
    w = x1 - x0
    side = _BLAZEFACE_TO_HOG["scale"] * w
    cx = (x0 + x1) / 2 + _BLAZEFACE_TO_HOG["dx"] * w
    cy = (y0 + y1) / 2 + _BLAZEFACE_TO_HOG["dy"] * w
    return dlib.rectangle(int(round(cx - side / 2)), int(round(cy - side / 2)),
                          int(round(cx + side / 2)), int(round(cy + side / 2)))


def _dlib_worker_main(job_file: str, result_file: str) -> None:
    """Entry point of a worker process: embed the job's files, write vectors and box sources.

    Workers are plain ``python -c`` subprocesses, not multiprocessing: dlib holds the GIL (so
    threads do not help), and multiprocessing's spawn would re-run the caller's main script.
    """
    job = json.loads(Path(job_file).read_text())
    options, files = job["options"], job["files"]
    models = _dlib_load(options)
    vectors = np.full((len(files), 128), np.nan, np.float32)
    sources = []
    progress_file = Path(result_file + ".progress")
    parent = os.getppid()
    for i, file in enumerate(files):
        if os.getppid() != parent:  # the training process died: do not embed on for nobody
            raise SystemExit(1)
        vector, source = _dlib_embed_one(models, options, file)
        if vector is not None:
            vectors[i] = vector
        sources.append(source)
        if (i + 1) % 50 == 0:
            progress_file.write_text(str(i + 1))
    np.savez(result_file, vectors=vectors, sources=np.array(sources, dtype=str))


_WORKER_CODE = ("import sys; from edgeface._teachers import _dlib_worker_main; "
                "_dlib_worker_main(sys.argv[1], sys.argv[2])")


class DlibTeacher(Teacher):
    """dlib's face-recognition ResNet (128-d, LFW 99.38 % by its author) with dlib's own alignment.

    The face box comes from dlib's HOG detector (``box="dlib"``, the reference pipeline) or,
    about 50 ms per image faster, from the runtime's BlazeFace detector (``box="blazeface"``,
    needs ``detector``: a BlazeFace ``.tflite``), with the other as the fallback and a centred
    box when neither finds a face. dlib's 5-point predictor then places the landmarks and
    ``get_face_chip`` makes its 150x150 chip. ``workers`` processes share the images (default:
    all cores); ``jitter`` > 0 averages dlib's randomly jittered copies (slower).
    """

    kind = "dlib"

    def __init__(self, *, box: str = "dlib", detector: str | os.PathLike | None = None, upsample: int = 1,
                 jitter: int = 0, workers: int | None = None, flip: str = "none"):
        dlib, files = import_dlib()
        if box not in DLIB_BOXES:
            raise ValueError(f"dlib teacher: box must be one of {', '.join(DLIB_BOXES)}, got {box!r}")
        detector_path = None
        if box == "blazeface" or detector is not None:
            from edgeface_runtime import resolve_detector_path

            detector_path = str(resolve_detector_path(detector))
            if not Path(detector_path).is_file():
                raise ValueError(f"dlib teacher: BlazeFace detector file not found: {detector_path!r}")
        if int(upsample) < 0 or int(jitter) < 0:
            raise ValueError(f"dlib teacher: upsample and jitter must be >= 0, got {upsample!r}, {jitter!r}")
        self.options = {"box": box, "detector": detector_path, "upsample": int(upsample), "jitter": int(jitter),
                        "flip": _check_flip(flip, "dlib")}
        self.workers = max(1, int(workers or os.cpu_count() or 1))
        record = {"adapter_version": DLIB_ADAPTER_VERSION, "dlib": getattr(dlib, "__version__", "?"),
                  "chip": {"size": 150, "padding": 0.25},
                  **{k: v for k, v in self.options.items() if k not in ("detector", "flip")}, **_flip_record(flip),
                  "sha256": {name: _sha256(p) for name, p in files.items()}}
        if detector_path:
            record["detector_sha256"] = _sha256(detector_path)
        self.box_sources: dict[str, int] = {}
        super().__init__(None, record, 128)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "detector": self.options["detector"], "box_sources": dict(self.box_sources)}

    def embed(self, root: str, paths: Sequence[str], progress: Progress | None = None) -> np.ndarray:
        files = [os.path.join(root, p) for p in paths]
        out = np.full((len(paths), 128), np.nan, np.float32)
        if self.workers == 1 or len(files) < 8 * self.workers:  # a worker takes a second or two to start
            models = _dlib_load(self.options)
            for i, file in enumerate(files):
                vector, source = _dlib_embed_one(models, self.options, file)
                if vector is not None:
                    out[i] = vector
                self._count(source)
                if progress is not None and ((i + 1) % 50 == 0 or i + 1 == len(files)):
                    progress(i + 1, len(files))
            return out
        self._embed_in_workers(files, out, progress)
        return out

    def _count(self, source: str) -> None:
        self.box_sources[source] = self.box_sources.get(source, 0) + 1

    def _embed_in_workers(self, files: list[str], out: np.ndarray, progress: Progress | None) -> None:
        import subprocess
        import sys
        import tempfile
        import time

        shards = [s for s in np.array_split(np.arange(len(files)), self.workers) if len(s)]
        env = dict(os.environ)  # the workers import edgeface from wherever this process did
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        with tempfile.TemporaryDirectory(prefix="edgeface-dlib-") as tmp:
            jobs = []
            for k, shard in enumerate(shards):
                job, result, log = (os.path.join(tmp, f"{name}{k}.{ext}") for name, ext in
                                    (("job", "json"), ("result", "npz"), ("log", "txt")))
                Path(job).write_text(json.dumps({"options": self.options, "files": [files[i] for i in shard]}))
                with open(log, "wb") as err:
                    proc = subprocess.Popen([sys.executable, "-c", _WORKER_CODE, job, result], env=env,
                                            stdout=subprocess.DEVNULL, stderr=err)
                jobs.append((shard, result, log, proc))
            try:
                while any(proc.poll() is None for *_, proc in jobs):
                    time.sleep(1.0)
                    if progress is not None:
                        progress(sum(_progress_of(result, len(shard), proc) for shard, result, _, proc in jobs),
                                 len(files))
            finally:
                for *_, proc in jobs:
                    if proc.poll() is None:
                        proc.kill()
                        proc.wait()
            for shard, result, log, proc in jobs:
                if proc.returncode != 0 or not os.path.isfile(result):
                    tail = Path(log).read_text(errors="replace").strip().splitlines()[-3:]
                    raise RuntimeError(f"a dlib teacher worker failed (exit {proc.returncode}): {' | '.join(tail)}")
                with np.load(result) as npz:
                    out[shard] = npz["vectors"]
                    for source in npz["sources"]:
                        self._count(str(source))


def _progress_of(result: str, size: int, proc) -> int:
    if proc.poll() is not None:
        return size
    try:
        return int(Path(result + ".progress").read_text())
    except (OSError, ValueError):
        return 0


# --------------------------------------------------------------------------- registry

@dataclass(frozen=True)
class TeacherKind:
    """A kind of teacher a spec can name. ``factory(path, **options)`` builds one, or
    ``factory(**options)`` when ``pathless`` (its model files come with its package); a path
    ending in ``suffix`` names this kind without ``KIND:``."""

    name: str
    factory: Callable[..., Teacher]
    pathless: bool = False
    suffix: str = ""


TEACHERS: Registry[TeacherKind] = Registry("teacher kind", [
    TeacherKind("keras", KerasTeacher, suffix=".keras"),
    TeacherKind("tflite", TFLiteTeacher, suffix=".tflite"),
    TeacherKind("npz", NpzTeacher, suffix=".npz"),
    TeacherKind("dlib", DlibTeacher, pathless=True),
    TeacherKind("sface", SFaceTeacher, pathless=True),
    TeacherKind("dlib_resnet", DlibResNetTeacher, pathless=True),
])
ENSEMBLE_SEPARATOR = "+"


def register_teacher(kind: str, factory: Callable[..., Teacher], *, pathless: bool = False, suffix: str = "",
                     overwrite: bool = False) -> None:
    """Add a teacher kind: ``factory(path, **options)`` (or ``factory(**options)`` when ``pathless``);
    ``suffix`` (e.g. ``".onnx"``) lets a bare path of that kind name it. ``overwrite`` replaces a kind."""
    if not kind or ":" in kind or ENSEMBLE_SEPARATOR in kind or "." in kind:
        raise ValueError(f"a teacher kind is a non-empty name without ':', '+' or '.', got {kind!r}")
    if suffix and not (suffix.startswith(".") and len(suffix) > 1):
        raise ValueError(f"suffix is a file suffix such as '.onnx', got {suffix!r}")
    TEACHERS.register(TeacherKind(kind, factory, pathless, suffix.lower()), overwrite=overwrite)


def parse_teacher_spec(spec: str) -> tuple[str, str | None]:
    """``"dlib"``, ``"sface"``, ``"dlib_resnet"``, ``"KIND:PATH"`` or a path whose suffix names the
    kind → ``(kind, path)``; ``"A+B"`` → ``("ensemble", "A+B")`` once every member parses
    (:func:`parse_ensemble_spec`)."""
    text = str(spec).strip()
    if text in TEACHERS and (TEACHERS[text].pathless or not Path(text).exists()):
        return text, None
    if ENSEMBLE_SEPARATOR in text and not Path(text).exists():  # an existing file named "a+b.keras" is one teacher
        parse_ensemble_spec(text)
        return "ensemble", text
    kind, sep, rest = text.partition(":")
    if sep and kind in TEACHERS and len(kind) > 1:  # len > 1: not a Windows drive letter
        return kind, rest or None
    suffix = Path(text).suffix.lower()
    by_suffix = {k.suffix: k.name for k in TEACHERS.values() if k.suffix}
    if suffix in by_suffix:
        return by_suffix[suffix], text
    pathless = sorted(k.name for k in TEACHERS.values() if k.pathless)
    suffixes = sorted(by_suffix)
    files = f"{', '.join(suffixes[:-1])} or {suffixes[-1]}" if len(suffixes) > 1 else "".join(suffixes)
    close = TEACHERS.closest(text.partition(":")[0], 1)
    guess = f" (did you mean {close[0]!r}?)" if close and not Path(text).suffix else ""
    raise ValueError(f"cannot tell which teacher {spec!r} is{guess}: give {', '.join(repr(k) for k in pathless)}, "
                     f"a {files} file, KIND:PATH with KIND one of {', '.join(sorted(TEACHERS))}, "
                     "or teachers joined by '+' (an ensemble, e.g. 'sface+dlib_resnet')")


def parse_ensemble_spec(spec: str) -> list[tuple[str, str | None]]:
    """``"A+B[+...]"`` → each member's ``(kind, path)`` (:func:`parse_teacher_spec`, no nesting)."""
    members = [part.strip() for part in str(spec).split(ENSEMBLE_SEPARATOR)]
    if len(members) < 2 or not all(members):
        raise ValueError(f"ensemble teacher {spec!r}: give two or more teachers joined by '+', "
                         "e.g. 'sface+dlib_resnet', with nothing empty between the '+'")
    parsed = []
    for member in members:
        try:
            parsed.append(parse_teacher_spec(member))
        except ValueError as exc:
            raise ValueError(f"ensemble teacher {spec!r}: member {member!r}: {exc}") from None
    repeated = sorted({m for m in members if members.count(m) > 1})
    if repeated:
        raise ValueError(f"ensemble teacher {spec!r} names {', '.join(repeated)} more than once; "
                         "averaging a teacher with itself changes nothing, list each once")
    return parsed


def load_teacher(spec: str | Teacher, **options: Any) -> Teacher:
    """A teacher from a spec string (see :func:`parse_teacher_spec`) and its options.

    Specs: ``"sface"`` and ``"dlib_resnet"`` (face sources rebuilt in Keras, aligned by the
    runtime's BlazeFace with the source's own template; ``pip install 'edgeface[sources]'``),
    ``"dlib"`` (dlib itself with its own detector and alignment; ``pip install
    'edgeface[teachers]'``), a ``.keras`` / ``.tflite`` edgeface model, an ``.npz`` of
    precomputed embeddings, ``KIND:PATH``, or members joined by ``+`` (an
    :class:`EnsembleTeacher`, e.g. ``"sface+dlib_resnet"``).

    Options: ``detector`` (BlazeFace ``.tflite``; for aligning models and face sources, and
    dlib's ``box="blazeface"``), ``flip`` (``"average"``: the mean of the face's and its
    mirror image's embeddings, a target right for both flips of the student's crop; not for
    precomputed ``.npz`` embeddings), ``batch_size`` (Keras models and face sources), a face
    source's ``weights`` ("pretrained" or its own file), dlib's ``box``, ``upsample``,
    ``jitter``, ``workers``. An ensemble passes each option to every member that takes it
    (one no member takes is an error); ``KIND.OPTION`` (e.g. ``dlib_resnet.weights=FILE``)
    goes to the members of that kind only.
    """
    if isinstance(spec, Teacher):
        return spec
    kind, path = parse_teacher_spec(spec)
    if kind == "ensemble":
        return _load_ensemble(str(path), options)
    entry = TEACHERS[kind]
    factory = entry.factory
    accepted = _accepted_options(kind)
    if accepted is not None:
        unknown = sorted(set(options) - accepted)
        if unknown:
            raise ValueError(f"teacher {kind!r} does not take option(s) {unknown}; "
                             f"it takes {sorted(accepted) or 'none'}")
    if entry.pathless:
        if path:
            raise ValueError(f"the {kind} teacher takes no path (got {path!r}); its model files come with its package")
        return factory(**options)
    if not path:
        raise ValueError(f"teacher {spec!r}: give the model file, e.g. {kind}:/path/to/model")
    if not Path(path).is_file():
        raise ValueError(f"teacher model file not found: {path!r}")
    return factory(path, **options)


def _load_ensemble(spec: str, options: Mapping[str, Any]) -> EnsembleTeacher:
    members = parse_ensemble_spec(spec)
    kinds = {kind for kind, _ in members}
    shared = {k: v for k, v in options.items() if "." not in k}
    targeted: dict[str, dict[str, Any]] = {}
    for key, value in options.items():
        if "." in key:
            kind, _, name = key.partition(".")
            if kind not in kinds:
                raise ValueError(f"ensemble teacher {spec!r}: option {key!r} is for a {kind!r} member, and the "
                                 f"members are {', '.join(sorted(kinds))}; write KIND.OPTION with one of those")
            targeted.setdefault(kind, {})[name] = value
    unused = set(shared)
    for kind, _ in members:
        accepted = _accepted_options(kind)
        unused -= set(shared) if accepted is None else accepted
    if unused:
        raise ValueError(f"ensemble teacher {spec!r}: no member takes option(s) {sorted(unused)}")
    loaded: list[Teacher] = []
    try:
        for kind, path in members:
            accepted = _accepted_options(kind)
            mine = {k: v for k, v in shared.items() if accepted is None or k in accepted}
            mine.update(targeted.get(kind, {}))  # its own value wins over the shared one
            loaded.append(load_teacher(f"{kind}:{path}" if path else kind, **mine))
        return EnsembleTeacher(loaded)
    except BaseException:
        for teacher in loaded:
            teacher.close()
        raise


def _accepted_options(kind: str) -> set[str] | None:
    import inspect

    try:
        params = inspect.signature(TEACHERS[kind].factory).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind == p.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params if p.kind == p.KEYWORD_ONLY}


# --------------------------------------------------------------------------- the cache

def default_teacher_cache() -> Path:
    """``$EDGEFACE_CACHE/teachers`` (default ``~/.cache/edgeface/teachers``)."""
    from edgeface_runtime.download import default_cache_dir

    return default_cache_dir() / "teachers"


def cache_file(teacher: Teacher, cache_dir: str | os.PathLike | None = None) -> Path:
    folder = Path(cache_dir) if cache_dir is not None else default_teacher_cache()
    return folder / f"{teacher.kind}-{teacher.fingerprint[:20]}.npz"


def shard_of(path: str, count: int) -> int:
    """The shard (0..count-1) of an image path relative to the data root: a hash of the path, so
    the same on every machine and run (Python's ``hash`` is salted per process)."""
    digest = hashlib.sha1(_norm_key(path).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % int(count)


def _part_file(file: Path, shard: tuple[int, int]) -> Path:
    return file.with_name(f"{file.stem}.part-{shard[0]}-of-{shard[1]}.npz")


def _part_files(file: Path) -> list[Path]:
    return sorted(file.parent.glob(f"{file.stem}.part-*-of-*.npz"))


def _digest(file: str) -> str:
    try:
        with open(file, "rb") as fh:
            return hashlib.blake2b(fh.read(), digest_size=16).hexdigest()
    except OSError:
        return ""


@dataclass
class TeacherEmbeddings:
    """Raw teacher vectors for ``paths`` (NaN rows: the teacher could not embed the image)."""

    paths: list[str]
    vectors: np.ndarray
    cache_file: Path | None
    reused: int
    computed: int
    members: list[dict[str, Any]] | None = None  # an ensemble's: each member's cache use

    @property
    def ok(self) -> np.ndarray:
        return np.all(np.isfinite(self.vectors), axis=1)

    def describe(self) -> dict[str, Any]:
        described: dict[str, Any] = {"cache_file": str(self.cache_file) if self.cache_file else None,
                                     "reused": self.reused, "computed": self.computed,
                                     "failed": int((~self.ok).sum())}
        if self.members is not None:
            described["members"] = self.members
        return described


def teacher_embeddings(teacher: Teacher, root: str, paths: Sequence[str], *,
                       cache_dir: str | os.PathLike | None = None, use_cache: bool = True,
                       progress: Progress | None = None, shard: tuple[int, int] | None = None) -> TeacherEmbeddings:
    """The teacher's vectors for ``paths`` (relative to ``root``), reusing and extending the cache.

    A cached row is reused when the image's path and the digest of its bytes both match;
    only the rest reach the teacher. Failed images are not cached (they are retried). An
    :class:`EnsembleTeacher` goes through its members' caches and combines over ``paths``.

    ``shard=(i, n)``: only the paths of shard ``i`` of ``n`` (:func:`shard_of`) are embedded and
    returned, and new rows go to this shard's own part file, so ``n`` processes or machines
    sharing the cache folder embed a large folder together; a later call without ``shard`` reads
    all their rows. An ensemble's shard is its members' shards (it is combined only over the
    whole set).
    """
    paths = list(paths)
    if shard is not None:
        from ._data import check_shard

        index, count = check_shard(shard)
        if isinstance(teacher, EnsembleTeacher):
            raise ValueError("an ensemble teacher is centred over the whole set, so it cannot embed a shard; "
                             "shard each member (teacher.members) instead, then embed the whole set")
        paths = [p for p in paths if shard_of(p, count) == index]
    if isinstance(teacher, EnsembleTeacher):
        return teacher.embeddings(root, paths, cache_dir=cache_dir, use_cache=use_cache, progress=progress)
    if not (use_cache and teacher.cacheable):
        vectors = np.asarray(teacher.embed(root, paths, progress), np.float32)
        return TeacherEmbeddings(paths, vectors, None, 0, len(paths))
    file = cache_file(teacher, cache_dir)
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        digests = list(pool.map(_digest, [os.path.join(root, p) for p in paths]))
    cached = _read_cache(file, teacher)
    for part in _part_files(file):
        cached.update(_read_cache(part, teacher))
    if teacher.dim is None:  # the width of the cached rows; every built-in teacher knows it
        raise TypeError(f"{teacher!r} states no embedding size (dim); a teacher whose embeddings are cached needs one")
    vectors = np.full((len(paths), int(teacher.dim)), np.nan, np.float32)
    todo: list[int] = []
    for i, (path, digest) in enumerate(zip(paths, digests)):
        row = cached.get((_norm_key(path), digest))
        if row is None or row.shape != (vectors.shape[1],):
            todo.append(i)
        else:
            vectors[i] = row
    reused = len(paths) - len(todo)
    if todo:
        logger.info("teacher %s: embedding %d image(s) (%d reused from %s)", teacher.kind, len(todo), reused, file)
        fresh = np.asarray(teacher.embed(root, [paths[i] for i in todo], progress), np.float32)
        vectors[todo] = fresh
        for i, row in zip(todo, fresh):
            if np.all(np.isfinite(row)) and digests[i]:
                cached[(_norm_key(paths[i]), digests[i])] = row
        if shard is None:
            _write_cache(file, teacher, cached)
        else:  # this shard's rows only, in its own file: the other shards write theirs at the same time
            mine = {(_norm_key(p), d) for p, d in zip(paths, digests)}
            file = _part_file(file, (index, count))
            _write_cache(file, teacher, {k: v for k, v in cached.items() if k in mine})
    else:
        logger.info("teacher %s: all %d embeddings reused from %s", teacher.kind, len(paths), file)
    return TeacherEmbeddings(paths, vectors, file, reused, len(todo))


def merge_teacher_cache(teacher: Teacher, cache_dir: str | os.PathLike | None = None) -> Path | None:
    """Fold the part files of sharded runs (``teacher_embeddings(shard=...)``) into the teacher's
    one cache file and delete them; returns the cache file (None when there was nothing).

    Run it once every shard has finished: a part file still being written is left for later."""
    file = cache_file(teacher, cache_dir)
    parts = _part_files(file)
    rows = _read_cache(file, teacher)
    for part in parts:
        rows.update(_read_cache(part, teacher))
    if not rows:
        return None
    _write_cache(file, teacher, rows)
    for part in parts:
        part.unlink(missing_ok=True)
    return file


def _read_cache(file: Path, teacher: Teacher) -> dict[tuple[str, str], np.ndarray]:
    if not file.is_file():
        return {}
    try:
        with np.load(file, allow_pickle=False) as npz:
            if str(npz["fingerprint"]) != teacher.fingerprint:
                logger.warning("teacher cache %s belongs to another teacher: ignoring it", file)
                return {}
            paths, digests, vectors = npz["paths"], npz["digests"], npz["embeddings"]
    except (OSError, ValueError, KeyError) as exc:  # damaged or foreign file: recompute, then replace it
        logger.warning("teacher cache %s is unreadable (%s): recomputing", file, exc)
        return {}
    return {(str(p), str(d)): v for p, d, v in zip(paths, digests, vectors)}


def _write_cache(file: Path, teacher: Teacher, rows: Mapping[tuple[str, str], np.ndarray]) -> None:
    import tempfile

    if not rows:  # nothing embedded (e.g. the teacher failed on every image): the caller reports that
        return
    file.parent.mkdir(parents=True, exist_ok=True)
    keys = sorted(rows)
    fd, tmp = tempfile.mkstemp(prefix=f".{file.stem}-", suffix=".npz", dir=file.parent)
    os.close(fd)
    try:
        np.savez(tmp, format=np.array(CACHE_FORMAT), fingerprint=np.array(teacher.fingerprint),
                 teacher=np.array(json.dumps(teacher.record, sort_keys=True)),
                 paths=np.array([k[0] for k in keys], dtype=str), digests=np.array([k[1] for k in keys], dtype=str),
                 embeddings=np.stack([rows[k] for k in keys]).astype(np.float32))
        os.replace(tmp, file)  # atomic: a concurrent run reads the old or the new file, never half of one
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
