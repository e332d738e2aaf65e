"""Face datasets: discovery, decoding to crops, identity-level splits and the tf.data pipeline.

Decoding goes through the runtime's ``load_image`` and ``center_crop``/``align_face``, so a
training crop is made by the same code as a device crop. Crops are decoded once into
memory (uint8, at the model's input size) when they fit ``cache_bytes``; larger datasets are
decoded in the input pipeline on every epoch. Augmentation runs in TensorFlow on whole
batches, on float pixels in [0, 255] RGB, before the model's own preprocessing
(``(pixel - mean) / std`` in its colour order), which is also applied here.
"""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from edgeface_runtime import IMAGE_SUFFIXES, image_files
from edgeface_runtime.metadata import Preprocess

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = IMAGE_SUFFIXES  # public name (edgeface.data); one list: what the runtime decodes
DEFAULT_MAX_UNREADABLE = 0.05
DEFAULT_CACHE_BYTES = 4 << 30
LFW_IMAGE_DIRS = ("lfw-deepfunneled", "lfw")
# What aligned cropping does with an image in which the detector finds no face. "skip" leaves it
# out, as the device refuses it (`edgeface verify` raises NoFaceError), so a measured accuracy only
# covers images the device would accept; "center" keeps it as a centre crop, which is only a face
# when the image already is a face crop (and was the silent behaviour before issue 21).
NO_FACE_POLICIES = ("skip", "center")
DEFAULT_NO_FACE = "skip"


class NoFaceDetected(Exception):
    """Raised by a :class:`CropMaker` with ``no_face="skip"`` for an image without a detected face.

    Deliberately not a ValueError: callers that skip unreadable images (ValueError, OSError)
    must count these apart, since they are readable and only the device would refuse them.
    """


@dataclass
class FaceDataset:
    """Images grouped by identity. ``paths[i]`` (relative to ``root``) shows ``identities[labels[i]]``."""

    root: str
    identities: list[str]
    paths: list[str]
    labels: np.ndarray
    source: str = "folder"
    # (path, reason): unreadable images, and images without a detected face (reason NO_FACE_REASON)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int32)
        if len(self.paths) != len(self.labels):
            raise ValueError(f"{len(self.paths)} paths but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def num_classes(self) -> int:
        return len(self.identities)

    def counts(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=self.num_classes)

    def by_identity(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {name: [] for name in self.identities}
        for path, label in zip(self.paths, self.labels):
            out[self.identities[label]].append(path)
        return out

    def subset(self, identities: Sequence[str]) -> "FaceDataset":
        """The images of ``identities`` only, relabelled 0..len-1 in the order given."""
        index = {name: i for i, name in enumerate(identities)}
        keep = [i for i, label in enumerate(self.labels) if self.identities[label] in index]
        return FaceDataset(self.root, list(identities), [self.paths[i] for i in keep],
                           np.array([index[self.identities[self.labels[i]]] for i in keep], np.int32),
                           self.source, list(self.skipped))

    def select(self, indices: Sequence[int]) -> "FaceDataset":
        """Only the images at ``indices``; identities left without images are dropped."""
        indices = list(indices)
        present = sorted({int(self.labels[i]) for i in indices})
        remap = {old: new for new, old in enumerate(present)}
        return FaceDataset(self.root, [self.identities[i] for i in present], [self.paths[i] for i in indices],
                           np.array([remap[int(self.labels[i])] for i in indices], np.int32), self.source,
                           list(self.skipped))

    def describe(self) -> dict[str, Any]:
        counts = self.counts()
        return {
            "source": self.source,
            "root": self.root,
            "identities": self.num_classes,
            "images": len(self),
            "images_per_identity": {"min": int(counts.min()) if len(counts) else 0,
                                    "max": int(counts.max()) if len(counts) else 0,
                                    "mean": float(counts.mean()) if len(counts) else 0.0},
            "unreadable": sum(1 for _, reason in self.skipped if reason != NO_FACE_REASON),
            "no_face_skipped": sum(1 for _, reason in self.skipped if reason == NO_FACE_REASON),
        }


def scan_folder(root: str | os.PathLike, *, min_images: int = 1, loose: bool = False) -> FaceDataset:
    """A folder per identity (``root/<name>/<image>``; JPEG, PNG, PGM, ...), sorted by name.

    Files with other extensions are ignored; identities with fewer than ``min_images``
    images are left out. Unreadable images are found (and counted) when decoding.
    ``loose``: images directly in ``root`` are kept too, each its own one-image identity
    (unlabeled data, for training that needs no labels: distillation).
    """
    root_path = Path(root)
    if not root_path.is_dir():
        raise ValueError(f"data folder {str(root)!r} does not exist or is not a folder; expected one sub-folder "
                         "of images per person (root/<name>/<image>.jpg)")
    identities: list[str] = []
    paths: list[str] = []
    labels: list[int] = []
    for person in sorted(p for p in root_path.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = image_files(person)
        if len(files) < max(1, min_images):
            continue
        label = len(identities)
        identities.append(person.name)
        paths.extend(f"{person.name}/{f.name}" for f in files)
        labels.extend([label] * len(files))
    if loose:
        for file in image_files(root_path):
            labels.append(len(identities))
            identities.append(file.name)
            paths.append(file.name)
    if not paths:
        raise ValueError(
            f"no images found in {str(root)!r}: expected one sub-folder of images per person "
            f"(extensions {', '.join(IMAGE_EXTENSIONS)}), with at least {max(1, min_images)} image(s) each"
        )
    return FaceDataset(str(root_path), identities, paths, np.array(labels, np.int32), "folder")


def find_lfw(root: str | os.PathLike | None = None) -> Path:
    """The LFW folder: ``root``, else ``$EDGEFACE_DATA_HOME/lfw``; it must hold pairs.txt and the images."""
    if root is None:
        home = os.environ.get("EDGEFACE_DATA_HOME")
        if not home:
            raise ValueError("no LFW folder given and EDGEFACE_DATA_HOME is not set; pass --data /path/to/lfw "
                             "(holding pairs.txt and lfw-deepfunneled/) or set EDGEFACE_DATA_HOME")
        root = Path(home) / "lfw"
    path = Path(root)
    if not (path / "pairs.txt").is_file() or lfw_image_root(path) is None:
        raise ValueError(f"{path} is not an LFW folder: it needs pairs.txt and lfw-deepfunneled/<Name>/<Name>_0001.jpg")
    return path


def lfw_image_root(lfw: Path) -> Path | None:
    for name in LFW_IMAGE_DIRS:
        if (lfw / name).is_dir():
            return lfw / name
    return None


def load_lfw(root: str | os.PathLike | None = None, *, held_out_folds: Sequence[int] = (6, 7, 8, 9, 10),
             min_images: int = 1) -> tuple[FaceDataset, list]:
    """LFW under the project's evaluation rule.

    Returns ``(train, eval_pairs)``: ``train`` holds only people who appear in none of
    ``held_out_folds`` of pairs.txt; ``eval_pairs`` are the pairs of those folds
    (``edgeface_runtime.metrics.Pair``, paths relative to ``train.root``).
    """
    from edgeface_runtime.metrics import lfw_identities_in_folds, read_pairs

    lfw = find_lfw(root)
    pairs = read_pairs(lfw / "pairs.txt")
    held_out = lfw_identities_in_folds(pairs, held_out_folds)
    everyone = scan_folder(lfw_image_root(lfw), min_images=min_images)  # type: ignore[arg-type]
    train = everyone.subset([name for name in everyone.identities if name not in held_out])
    train.source = "lfw"
    eval_pairs = [p for p in pairs if p.fold in set(held_out_folds)]
    logger.info("LFW: %d people (%d images) outside folds %s for training; %d evaluation pairs",
                train.num_classes, len(train), list(held_out_folds), len(eval_pairs))
    return train, eval_pairs


def split_identities(dataset: FaceDataset, val_fraction: float, seed: int) -> tuple[FaceDataset, FaceDataset | None]:
    """Identity-disjoint ``(train, val)``: ``val_fraction`` of the people with 2+ images (at least 2).

    Returns ``(dataset, None)`` when ``val_fraction`` is 0 or no usable validation set
    (two people, one of them with two images, leaving two people to train on) exists.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    if val_fraction == 0:
        return dataset, None
    counts = dataset.counts()
    rng = np.random.default_rng(seed)
    eligible = [i for i in rng.permutation(dataset.num_classes) if counts[i] >= 2]
    # A fraction of the people with 2+ images: they alone give same-person pairs, and in
    # LFW-like data (most people once) a fraction of everyone would take most of them.
    n_val = min(max(2, int(round(val_fraction * len(eligible)))), len(eligible))
    if n_val < 2 or dataset.num_classes - n_val < 2:
        logger.warning("too few people for a validation split (%d people, %d with 2+ images): training without "
                       "validation, so without early stopping or best-epoch selection",
                       dataset.num_classes, len(eligible))
        return dataset, None
    val_ids = {int(i) for i in eligible[:n_val]}
    train_names = [n for i, n in enumerate(dataset.identities) if i not in val_ids]
    val_names = [n for i, n in enumerate(dataset.identities) if i in val_ids]
    return dataset.subset(train_names), dataset.subset(val_names)


# --------------------------------------------------------------------------- decoding

class CropMaker:
    """Path → uint8 RGB crop at ``input_size``: ``center_crop``, or detection + ``align_face``."""

    def __init__(self, root: str, input_size: Sequence[int], *, align: bool | str = False, detector: Any = None,
                 no_face: str = DEFAULT_NO_FACE):
        """``align``: False or "none" (centre crops), True ("arcface") or the name of an alignment
        template (a ``Preprocess.alignment``, e.g. "dlib"). ``detector``: a runtime ``FaceDetector``,
        the path of a BlazeFace ``.tflite``, or None for the runtime's default (its download cache,
        ``$EDGEFACE_CACHE``). ``no_face`` (aligned crops only): "skip" raises :class:`NoFaceDetected`
        for an image without a detected face, as the device refuses it; "center" centre-crops it.
        Either way ``no_face_count`` counts them and ``no_face_paths`` lists them."""
        if no_face not in NO_FACE_POLICIES:
            raise ValueError(f"no_face must be one of {NO_FACE_POLICIES}, got {no_face!r}")
        self.root = root
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.template = "arcface" if align is True else ("none" if align in (False, None, "none") else str(align))
        self.align = self.template != "none"
        self._detector = detector
        self._lock = threading.Lock()
        self.no_face_policy = no_face
        self.no_face = 0  # images without a detected face (kept as centre crops or skipped, per the policy)
        self.no_face_paths: list[str] = []

    def __call__(self, relative_path: str) -> np.ndarray:
        from edgeface_runtime import align_face, center_crop, load_image

        rgb = load_image(os.path.join(self.root, relative_path))
        if not self.align:
            return center_crop(rgb, self.input_size)
        face = self._largest_face(rgb)
        if face is None:
            with self._lock:
                self.no_face += 1
                self.no_face_paths.append(relative_path)
            if self.no_face_policy == "skip":
                raise NoFaceDetected(f"no face detected in {relative_path}")
            return center_crop(rgb, self.input_size)
        return align_face(rgb, face.keypoints, self.input_size, self.template)

    def _largest_face(self, rgb: np.ndarray):
        from edgeface_runtime import FaceDetector, largest_face

        with self._lock:
            if self._detector is None:
                self._detector = FaceDetector.default()
            elif isinstance(self._detector, (str, os.PathLike)):
                self._detector = FaceDetector.from_path(self._detector)
        return largest_face(self._detector.detect(rgb))


def decode_dataset(dataset: FaceDataset, crop: Callable[[str], np.ndarray], *,
                   max_unreadable: float = DEFAULT_MAX_UNREADABLE, workers: int | None = None,
                   progress: Callable[[int, int], None] | None = None) -> tuple[FaceDataset, np.ndarray]:
    """Decode every image into a crop; skip and count unreadable ones.

    Returns ``(dataset without the unreadable images, crops (N, h, w, 3) uint8)``. Raises
    ValueError when more than ``max_unreadable`` of the images cannot be read.
    """
    from edgeface_runtime import ImageDecodeError

    def one(path: str):
        try:
            return crop(path), None
        except NoFaceDetected:
            return None, NO_FACE_REASON
        except (ImageDecodeError, OSError, ValueError) as exc:
            return None, str(exc).splitlines()[0] if str(exc) else type(exc).__name__

    workers = workers or min(8, os.cpu_count() or 1)
    crops: list[np.ndarray] = []
    keep: list[int] = []
    skipped: list[tuple[str, str]] = []
    no_face: list[tuple[str, str]] = []
    with ThreadPoolExecutor(max_workers=workers) as pool:  # Pillow releases the GIL while decoding
        for i, (array, reason) in enumerate(pool.map(one, dataset.paths, chunksize=16)):
            if array is None:
                (no_face if reason == NO_FACE_REASON else skipped).append((dataset.paths[i], reason or "unreadable"))
            else:
                crops.append(array)
                keep.append(i)
            if progress is not None:
                progress(i + 1, len(dataset))
    check_unreadable(len(skipped), len(dataset), max_unreadable, skipped)
    if skipped:
        logger.warning("skipped %d unreadable image(s) of %d, e.g. %s: %s", len(skipped), len(dataset), *skipped[0])
    if no_face:
        logger.warning("skipped %d of %d image(s) without a detected face, as the device would refuse them "
                       "(e.g. %s)", len(no_face), len(dataset), no_face[0][0])
    kept = dataset.select(keep)
    kept.skipped = list(dataset.skipped) + skipped + no_face
    array = np.stack(crops) if crops else np.zeros((0, 1, 1, 3), np.uint8)
    return kept, array


NO_FACE_REASON = "no face detected"


def no_face_summary(maker: Any, total: int, *, since: int = 0) -> dict[str, Any] | None:
    """What a :class:`CropMaker` did with images without a detected face, for outputs and cards
    (None when it did not align, so no detector ran). ``since``: count only the images it met
    after it had met that many (a maker shared between several sets of images)."""
    if not getattr(maker, "align", False):
        return None
    policy = maker.no_face_policy
    found = list(maker.no_face_paths[since:])
    return {"images": int(total), "no_face": len(found), "policy": policy,
            "meaning": ("left out, as the device refuses them" if policy == "skip"
                        else "centre-cropped and kept (--no-face center)"),
            "examples": found[:10]}


def check_unreadable(bad: int, total: int, max_fraction: float, examples: Sequence[tuple[str, str]] = ()) -> None:
    if total and bad / total > max_fraction:
        shown = "; ".join(f"{p}: {r}" for p, r in list(examples)[:3])
        raise ValueError(
            f"{bad} of {total} images ({bad / total:.1%}) could not be read, more than the allowed "
            f"{max_fraction:.1%} (e.g. {shown}); fix or remove them, or raise max_unreadable"
        )


def scan_readable(dataset: FaceDataset, *, max_unreadable: float = DEFAULT_MAX_UNREADABLE) -> FaceDataset:
    """Header check of every image (no full decode) for datasets too large to cache."""
    from PIL import Image

    keep, skipped = [], []
    for i, path in enumerate(dataset.paths):
        try:
            with Image.open(os.path.join(dataset.root, path)) as img:
                img.verify()
            keep.append(i)
        except Exception as exc:  # Pillow raises many types for corrupt files
            skipped.append((path, str(exc).splitlines()[0] if str(exc) else type(exc).__name__))
    check_unreadable(len(skipped), len(dataset), max_unreadable, skipped)
    kept = dataset.select(keep)
    kept.skipped = list(dataset.skipped) + skipped
    return kept


# --------------------------------------------------------------------------- tf.data

@dataclass(frozen=True)
class Augment:
    """Training augmentation; every field 0/False disables its part."""

    flip: bool = True
    crop_scale: float = 0.85  # random crops keep this fraction of the side or more, then resize back
    shift: float = 0.05       # and move by up to this fraction of the side
    brightness: float = 0.2   # ± fraction of the full 0-255 range
    contrast: float = 0.2     # contrast factor in [1 - c, 1 + c]
    grayscale: float = 0.0    # probability of a grayscale image (e.g. for grayscale target domains)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "Augment":
        data = dict(data or {})
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown augmentation option(s) {sorted(unknown)}; "
                             f"known: {sorted(cls.__dataclass_fields__)}")
        return cls(**data)


def index_stream(labels: np.ndarray, seed: int, *, balanced: bool = False, start_epoch: int = 0,
                 shard: tuple[int, int] = (0, 1)) -> Iterator[int]:
    """Endless sample indices, reshuffled each pass; ``balanced``: uniform over people first.

    ``shard=(i, n)``: worker ``i`` of ``n`` (multi-worker training). Every worker draws the same
    pass order from ``seed`` and keeps every n-th index from position ``i``, so within a pass no
    image reaches two workers. A pass is cut to a multiple of ``n`` (at most ``n - 1`` images, a
    different few each pass) so the workers' passes stay the same length and in step.
    """
    index, count = check_shard(shard)
    labels = np.asarray(labels)
    n = len(labels)
    if n < count:
        raise ValueError(f"{n} training image(s) cannot be shared among {count} workers: each needs at least one; "
                         "add images or start fewer workers")
    members = [np.flatnonzero(labels == c) for c in range(int(labels.max()) + 1)] if balanced else []
    members = [m for m in members if len(m)]
    epoch = start_epoch
    while True:
        rng = np.random.default_rng([seed, epoch])
        if balanced:
            classes = rng.integers(0, len(members), size=n)
            order = np.array([members[c][rng.integers(len(members[c]))] for c in classes])
        else:
            order = rng.permutation(n)
        if count > 1:
            order = order[:n - n % count][index::count]
        yield from (int(i) for i in order)
        epoch += 1


def check_shard(shard: Any) -> tuple[int, int]:
    """``(index, count)`` of one worker's share, validated (the data pipeline's and the teachers')."""
    try:
        index, count = (int(v) for v in shard)
    except (TypeError, ValueError):
        raise ValueError(f"shard must be (index, count), e.g. (0, 4) for the first of four, got {shard!r}") from None
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"shard (index, count) needs 0 <= index < count, got {shard!r}")
    return index, count


def to_model_input(images, preprocess: Preprocess):
    """Float RGB pixels in [0, 255] (tf or numpy, NHWC) → the model's input, exactly as the device does."""
    if isinstance(images, np.ndarray):
        return preprocess.normalize(images)
    from ._keras import tf

    x = tf.cast(images, tf.float32)
    if preprocess.color_order == "BGR":
        x = x[..., ::-1]
    # Preprocess.normalize as one multiply-add in the graph: a pass over the batch costs as much
    # as a small layer on two cores.
    scale, shift = preprocess.scale_and_shift()
    return x * tf.constant(scale) + tf.constant(shift)


def augment_batch(images, augment: Augment, seed: int | None = None):
    """Random flips, crops/zooms, brightness/contrast and grayscale on a uint8 or float batch.

    Brightness and contrast are one per-image affine map, ``c * (x + b - m) + m + b`` with ``m``
    the image's mean, applied as a single multiply-add: every full pass over the batch is paid
    for by the training step on a small CPU.
    """
    from ._keras import tf

    x = images
    batch = tf.shape(x)[0]
    size = tf.shape(x)[1:3]
    rand = lambda *shape: tf.random.uniform(tf.stack([batch, *shape]), seed=seed)  # noqa: E731
    if augment.flip:  # before the cast: a uint8 batch is a quarter of the bytes to move
        x = tf.where(rand(1, 1, 1) < 0.5, tf.reverse(x, axis=[2]), x)
    x = tf.cast(x, tf.float32)
    if augment.crop_scale < 1.0 or augment.shift > 0:
        scale = augment.crop_scale + (1.0 - augment.crop_scale) * rand()
        half = scale / 2.0
        cy = 0.5 + augment.shift * (2.0 * rand() - 1.0)
        cx = 0.5 + augment.shift * (2.0 * rand() - 1.0)
        boxes = tf.stack([cy - half, cx - half, cy + half, cx + half], axis=1)
        x = tf.image.crop_and_resize(x, boxes, tf.range(batch), size, method="bilinear", extrapolation_value=0.0)
    offset = 0.0
    gain = 1.0
    if augment.brightness > 0:
        offset = 255.0 * augment.brightness * (2.0 * rand(1, 1, 1) - 1.0)
    if augment.contrast > 0:
        gain = 1.0 + augment.contrast * (2.0 * rand(1, 1, 1) - 1.0)
        mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True) + offset  # the brightened image's mean
        offset = offset * gain + (1.0 - gain) * mean
    if augment.brightness > 0 or augment.contrast > 0:
        x = x * gain + offset
    if augment.grayscale > 0:
        gray = tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(x))
        x = tf.where(rand(1, 1, 1) < augment.grayscale, gray, x)
    return tf.clip_by_value(x, 0.0, 255.0)


def make_train_dataset(dataset: FaceDataset, *, batch_size: int, preprocess: Preprocess,
                       crops: np.ndarray | None = None, crop: Callable[[str], np.ndarray] | None = None,
                       augment: Augment | None = Augment(), balanced: bool = False, seed: int = 0,
                       start_epoch: int = 0, targets: np.ndarray | None = None, with_labels: bool = True,
                       shard: tuple[int, int] = (0, 1)):
    """An endless ``((image, label), label)`` tf.data pipeline of whole batches.

    ``shard=(i, n)``: this is worker ``i`` of ``n`` and ``batch_size`` its own share of the global
    batch; the workers' images never overlap within a pass (:func:`index_stream`).

    Give ``crops`` (decoded in memory, row ``i`` for ``dataset.paths[i]``) or ``crop``
    (decodes a path; used for datasets too large to cache; an image unreadable at this
    point becomes black rather than stopping training). ``targets`` (distillation: row
    ``i`` is the teacher's target for image ``i``) are gathered with the images; the
    elements are then ``((image, label), (target, label))``, or ``(image, target)``
    without labels (``with_labels=False``).
    """
    from ._keras import tf

    if crops is None and crop is None:
        raise ValueError("give crops (decoded images) or crop (a path → crop function)")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size!r}")
    # Checked here: inside the tf.data generator an error would surface as an opaque one.
    shard = check_shard(shard)
    if len(dataset) < shard[1]:
        raise ValueError(f"{len(dataset)} training image(s) cannot be shared among {shard[1]} workers: each needs "
                         "at least one; add images or start fewer workers")
    h, w = preprocess.input_size
    labels = dataset.labels
    paths = dataset.paths
    if targets is not None and (targets.ndim != 2 or len(targets) != len(labels)):
        raise ValueError(f"targets must have one row per image: got {targets.shape} for {len(labels)} images")
    # Teacher targets are a cached array too, gathered in the graph by the same indices.
    targets_tensor = None if targets is None else tf.constant(np.asarray(targets, np.float32))

    if crops is not None:
        # In memory: gather inside the graph. A numpy_function here would serialise every batch
        # through the GIL next to the generator and cost more than the training step itself.
        crops_tensor = tf.constant(crops)
        labels_tensor = tf.constant(labels, tf.int32)

        @tf.autograph.experimental.do_not_convert
        def load(indices):
            return tf.gather(crops_tensor, indices), tf.gather(labels_tensor, indices), indices
    else:
        def gather(indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            images = np.stack([_safe_crop(crop, paths[i], (h, w)) for i in indices])  # type: ignore[arg-type]
            return images, labels[indices]

        # Plain tensor code: no AutoGraph conversion needed (and its closure check only warns here).
        @tf.autograph.experimental.do_not_convert
        def load(indices):
            images, batch_labels = tf.numpy_function(gather, [indices], [tf.uint8, tf.int32])
            images = tf.ensure_shape(images, [batch_size, h, w, 3])
            batch_labels = tf.ensure_shape(batch_labels, [batch_size])
            return images, batch_labels, indices

    @tf.autograph.experimental.do_not_convert
    def finish(images, batch_labels, indices):
        x = augment_batch(images, augment) if augment is not None else tf.cast(images, tf.float32)
        x = to_model_input(x, preprocess)
        if targets_tensor is None:
            return (x, batch_labels), batch_labels
        batch_targets = tf.gather(targets_tensor, indices)
        if not with_labels:
            return x, batch_targets
        return (x, batch_labels), (batch_targets, batch_labels)

    def index_batches():
        stream = index_stream(labels, seed, balanced=balanced, start_epoch=start_epoch, shard=shard)
        while True:  # one Python call per batch, not per image: the generator holds the GIL
            yield np.fromiter(stream, np.int64, count=batch_size)

    ds = tf.data.Dataset.from_generator(index_batches, output_signature=tf.TensorSpec((batch_size,), tf.int64))
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.map(finish, num_parallel_calls=tf.data.AUTOTUNE)
    options = tf.data.Options()
    # Sharding is done above (index_stream): tf.data cannot shard a generator-fed dataset itself.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def _safe_crop(crop: Callable[[str], np.ndarray], path: str, size: tuple[int, int]) -> np.ndarray:
    try:
        return crop(path)
    except NoFaceDetected:
        # Decoded on every epoch (too large to cache): nothing was detected in advance, so the
        # image cannot be dropped from the epoch any more; a centre crop it is, counted.
        from edgeface_runtime import center_crop, load_image

        return center_crop(load_image(os.path.join(getattr(crop, "root", ""), path)), size)
    except Exception:  # scanned readable but failed to decode: never stop a long run for one image
        logger.warning("could not decode %s during training; using a black image", path, exc_info=True)
        return np.zeros((*size, 3), np.uint8)


def embed_crops(model: Any, crops: np.ndarray, preprocess: Preprocess, *, batch_size: int = 256) -> np.ndarray:
    """L2-normalised embeddings of uint8 crops through a Keras embedding model, in chunks."""
    out = []
    for start in range(0, len(crops), batch_size):
        x = to_model_input(crops[start:start + batch_size], preprocess)
        out.append(np.asarray(model(x, training=False), np.float32))
    if not out:
        return np.zeros((0, int(model.output_shape[-1])), np.float32)
    emb = np.concatenate(out)
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    return emb / np.maximum(norms, 1e-12)
