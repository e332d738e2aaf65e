"""The face-verification pipeline a kiosk embeds: decode → detect → align → embed → match."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np

from ._embedder import Embedder
from ._errors import ImageDecodeError, NoFaceError
from ._images import DEFAULT_MAX_PIXELS, _as_image, _load_rgb, image_files
from ._matching import IdentifyResult, VerifyResult, verify_embeddings

if TYPE_CHECKING:
    from ._gallery import Gallery

logger = logging.getLogger(__name__)


@dataclass
class VerifierOptions:
    """Options of :class:`FaceVerifier` (MediaPipe-Tasks style: plain data, validated on use).

    ``model_path`` None is the default model that ships with the package (SFace, 8-bit weights; see
    ``edgeface inspect``). ``detector_path`` None with ``detect=True`` uses the official BlazeFace
    file that ships with the package (short range), else the cache
    (``edgeface_runtime.download_detector()`` or ``edgeface download-detector`` puts it there;
    nothing is downloaded implicitly).

    Which threshold decides, first match wins: ``threshold`` (explicit); the gallery's site
    threshold at ``far`` (default: its 1e-3 one), stored by ``edgeface calibrate`` /
    :meth:`FaceVerifier.calibrate`, unless ``site_threshold=False``; the model's own threshold
    calibrated at ``far`` (default 1e-3). Results name it in ``threshold_source``.
    """

    model_path: str | os.PathLike | None = None
    detector_path: str | os.PathLike | None = None
    detector_variant: str = "short"
    detector_input_size: int | None = None  # None: the model's own (128); 96 is faster, for larger faces
    detect: bool = True
    gallery_path: str | os.PathLike | None = None
    threshold: float | None = None
    far: float | None = None
    site_threshold: bool = True  # use the gallery's site threshold when it has one
    min_face_score: float | None = None
    num_threads: int | None = 1
    interpreter: str | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    preprocess: Any = None  # a Preprocess, only for models without metadata


@dataclass(frozen=True)
class ThresholdChoice:
    """The threshold that decides, where it came from ("site", "model" or "explicit"), and
    for "site" the :class:`~edgeface_runtime._calibration.SiteCalibration` behind it."""

    threshold: float
    far: float | None
    source: str
    calibration: Any = None


@dataclass
class FaceResult:
    face: Any  # a detector Face, or None when detect=False
    embedding: np.ndarray
    identity: IdentifyResult | None = None


@dataclass
class EnrollReport:
    """One person's folder in :meth:`FaceVerifier.enroll_folders`: how many photos it held, how
    many were enrolled, and each photo left out with the reason (``(file name, reason)``)."""

    name: str
    photos: int
    enrolled: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class FrameResult:
    """What one camera frame contained. ``faces`` is empty when no face was found."""

    faces: list[FaceResult] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)

    @property
    def no_face(self) -> bool:
        return not self.faces


class FaceVerifier:
    """Detect, align, embed and match faces with one embedding model (and optionally a gallery)."""

    def __init__(self, options: VerifierOptions) -> None:
        self.options = options
        if options.model_path is None:
            from ._bundled import default_model_path

            options.model_path = default_model_path()
        self.embedder = Embedder.from_path(options.model_path, preprocess=options.preprocess,
                                           num_threads=options.num_threads, interpreter=options.interpreter)
        self.detector = None
        self.gallery = None
        try:
            if options.detect:
                from ._detector import FaceDetector, resolve_detector_path

                path = resolve_detector_path(options.detector_path, options.detector_variant)
                self.detector = FaceDetector.from_path(path, min_score=options.min_face_score,
                                                       num_threads=options.num_threads,
                                                       interpreter=options.interpreter,
                                                       input_size=options.detector_input_size)
            if options.gallery_path is not None:
                from ._gallery import Gallery

                self.gallery = Gallery.open(options.gallery_path, model_fingerprint=self.embedder.fingerprint,
                                            embedding_size=self.embedder.embedding_size)
                self._check_site_calibration()
        except BaseException:
            self.close()
            raise
        self.last_timings_ms: dict[str, float] = {}

    @classmethod
    def from_path(cls, model_path: str | os.PathLike | None = None, **options: Any) -> "FaceVerifier":
        """``model_path`` None: the default model that ships with the package."""
        return cls(VerifierOptions(model_path=model_path, **options))

    # -- thresholds ---------------------------------------------------------------------
    def threshold(self, threshold: float | None = None) -> tuple[float, float | None]:
        """``(threshold, far)`` that decides: explicit (far None), the gallery's site threshold,
        or the model's, calibrated at the configured FAR (see :meth:`threshold_choice`)."""
        choice = self.threshold_choice(threshold)
        return choice.threshold, choice.far

    def threshold_choice(self, threshold: float | None = None) -> ThresholdChoice:
        """Which threshold decides, and why: explicit > site (gallery) > model (see :class:`VerifierOptions`)."""
        if threshold is None:
            threshold = self.options.threshold
        if threshold is not None:
            if not -1.0 <= float(threshold) <= 1.0:
                raise ValueError(f"a cosine threshold lies in [-1, 1], got {threshold!r}")
            return ThresholdChoice(float(threshold), None, "explicit")
        if self.gallery is not None and self.options.site_threshold:
            record = self.gallery.site_calibration(self.options.far)
            if record is not None:
                return ThresholdChoice(record.threshold, record.far, "site", record)
        value, far = self.embedder.metadata.threshold_for(self.options.far)
        return ThresholdChoice(value, far, "model")

    def calibrate(self, far: float = 1e-3, *, save: bool = True):
        """Set the site threshold at ``far`` from the gallery's own different-person template pairs.

        Stores it in the gallery (bound to this model) unless ``save=False``; returns the
        :class:`~edgeface_runtime._calibration.SiteCalibration` (threshold, impostor pairs,
        the lowest FAR they support, a warning when too few, and the FAR the model's own
        threshold gives on these pairs).
        """
        gallery = self._require_gallery()
        return gallery.calibrate(far, model_thresholds=self.embedder.metadata.thresholds, save=save)

    def _check_site_calibration(self) -> None:
        if not self.options.site_threshold or self.options.threshold is not None:
            return
        gallery = self._require_gallery()
        record = gallery.site_calibration(self.options.far)
        if record is None:
            return
        templates = gallery.template_count()
        if templates != record.templates:
            logger.warning("gallery %s changed since its site threshold was calibrated (%d templates then, %d "
                           "now); run `edgeface calibrate` again", gallery.path, record.templates, templates)
        if record.warning:
            logger.warning("the site threshold of %s is weakly backed: %s", gallery.path, record.warning)

    # -- faces --------------------------------------------------------------------------
    def detect(self, image: Any, *, color_order: str = "RGB") -> list:
        """All faces in an image, largest first (requires ``detect=True``)."""
        if self.detector is None:
            raise ValueError("this verifier was created with detect=False; create it with detect=True to detect faces")
        return self.detector.detect(self._load(image, color_order))

    def _load(self, image: Any, color_order: str) -> Any:
        # An RGB PIL image, not an array: the detector and the aligner both work on Pillow's
        # buffer, and each array round trip would copy the whole frame.
        return _as_image(_load_rgb(image, color_order, self.options.max_pixels, as_image=True))

    def _faces(self, image: Any, all_faces: bool, timings: dict[str, float]) -> list[FaceResult]:
        from ._align import _align_image, _center_crop

        size = self.embedder.preprocess.input_size
        t0 = time.perf_counter()
        faces: list[Any]
        if self.detector is None:
            crops, faces = [_center_crop(image, size)], [None]
            t1 = t0
        else:
            faces = self.detector.detect(image)
            if not all_faces:
                faces = faces[:1]
            t1 = time.perf_counter()
            template = self.embedder.preprocess.alignment
            crops = [_align_image(image, f.keypoints, size, template=template) if template != "none"
                     else _center_crop(image.crop(_pixel_box(f.box, image.size)), size)
                     for f in faces]
        t2 = time.perf_counter()
        results = [FaceResult(face, self.embedder.embed(crop)) for face, crop in zip(faces, crops)]
        t3 = time.perf_counter()
        timings.update(detect=(t1 - t0) * 1e3, align=(t2 - t1) * 1e3, embed=(t3 - t2) * 1e3)
        return results

    def embed(self, image: Any, *, color_order: str = "RGB") -> np.ndarray:
        """The embedding of the largest face in one image. Raises :class:`NoFaceError` if there is none."""
        return self._single(image, color_order).embedding

    def _single(self, image: Any, color_order: str) -> FaceResult:
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        loaded = self._load(image, color_order)
        timings["decode"] = (time.perf_counter() - t0) * 1e3
        faces = self._faces(loaded, False, timings)
        self.last_timings_ms = timings
        if not faces:
            raise NoFaceError(f"no face found in {_describe(image)} (minimum detector score "
                              f"{self.detector.min_score if self.detector else 'n/a'}); use a frontal photo. "
                              "detect=False (--no-detect) is only for images that already are aligned face "
                              "crops: on other photos its centre crop is no face the model knows, and strangers "
                              "pass")
        return faces[0]

    def _embedding(self, item: Any, color_order: str) -> np.ndarray:
        if isinstance(item, np.ndarray) and item.ndim == 1:
            if item.shape[0] != self.embedder.embedding_size:
                raise ValueError(f"an embedding of this model has {self.embedder.embedding_size} values, "
                                 f"got {item.shape[0]}")
            return item.astype(np.float32)
        return self.embed(item, color_order=color_order)

    # -- 1:1 and 1:N ----------------------------------------------------------------------
    def verify(self, a: Any, b: Any, *, threshold: float | None = None, color_order: str = "RGB") -> VerifyResult:
        """1:1 — are ``a`` and ``b`` (images or embeddings) the same person?"""
        choice = self.threshold_choice(threshold)
        result = verify_embeddings(self._embedding(a, color_order), self._embedding(b, color_order),
                                   choice.threshold, far=choice.far)
        return replace(result, threshold_source=choice.source)

    def identify(self, probe: Any, *, top_k: int = 1, threshold: float | None = None,
                 color_order: str = "RGB") -> IdentifyResult:
        """1:N — who in the gallery is ``probe`` (an image or an embedding)?"""
        gallery = self._require_gallery()
        choice = self.threshold_choice(threshold)
        result = gallery.identify(self._embedding(probe, color_order), top_k=top_k, threshold=choice.threshold,
                                  far=choice.far)
        return replace(result, threshold_source=choice.source)

    def enroll(self, name: str, images: Iterable[Any] | Any, *, replace: bool = False,
               color_order: str = "RGB") -> int:
        """Enroll one person from one or more images, in one transaction. Returns the template count."""
        gallery = self._require_gallery()
        if isinstance(images, (str, os.PathLike, bytes, np.ndarray)) or not isinstance(images, Iterable):
            images = [images]
        items = list(images)
        if not items:
            raise ValueError(f"no images given to enroll {name!r}")
        embeddings = np.stack([self._embedding(img, color_order) for img in items])
        sources = [_describe(img) for img in items]
        gallery.enroll(name, embeddings, sources=sources, replace=replace)
        return len(items)

    def enroll_folders(self, people_dir: str | os.PathLike, *, replace: bool = True) -> list[EnrollReport]:
        """Enroll each ``people_dir/<name>/`` folder of photos as person ``<name>`` (replacing their
        templates unless ``replace=False``), one transaction per person. Photos without a face or
        that cannot be decoded are skipped and reported, not fatal: a kiosk's enrolment folder is
        whatever people sent. A person with no usable photo is not enrolled (previous templates,
        if any, stay). Each template records the photo it came from."""
        folder = Path(people_dir)
        if not folder.is_dir():
            raise ValueError(f"people folder {folder} does not exist; expected {folder}/<name>/*.jpg")
        person_dirs = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
        if not person_dirs:
            raise ValueError(f"no person folders in {folder}; expected one folder per person: {folder}/<name>/*.jpg")
        gallery = self._require_gallery()
        reports = []
        for person_dir in person_dirs:
            photos = image_files(person_dir)
            report = EnrollReport(person_dir.name, len(photos))
            embeddings, sources = [], []
            for photo in photos:
                try:
                    embeddings.append(self.embed(str(photo)))
                    sources.append(str(photo))
                except NoFaceError:
                    report.skipped.append((photo.name, "no face found"))
                except ImageDecodeError as exc:
                    report.skipped.append((photo.name, f"unreadable: {exc}"))
            if embeddings:
                gallery.enroll(person_dir.name, np.stack(embeddings), sources=sources, replace=replace)
                report.enrolled = len(embeddings)
            reports.append(report)
        return reports

    def _require_gallery(self) -> Gallery:
        if self.gallery is None:
            raise ValueError("no gallery is open: pass gallery_path=... to use enroll and identify")
        return self.gallery

    # -- frame loop -----------------------------------------------------------------------
    def process_frame(self, frame: Any, *, color_order: str = "BGR", all_faces: bool = False,
                      top_k: int = 1) -> FrameResult:
        """One camera frame (BGR by default, as cameras deliver): faces, embeddings and, with a
        gallery, identities. Never raises for "no face": the result is then empty."""
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        image = self._load(frame, color_order)
        timings["decode"] = (time.perf_counter() - t0) * 1e3
        faces = self._faces(image, all_faces, timings)
        if self.gallery is not None and faces:
            choice = self.threshold_choice()
            t1 = time.perf_counter()
            for result in faces:
                identity = self.gallery.identify(result.embedding, top_k=top_k, threshold=choice.threshold,
                                                 far=choice.far)
                result.identity = replace(identity, threshold_source=choice.source)
            timings["match"] = (time.perf_counter() - t1) * 1e3
        self.last_timings_ms = timings
        return FrameResult(faces, timings)

    def close(self) -> None:
        for part in (self.gallery, self.detector, getattr(self, "embedder", None)):
            if part is not None:
                part.close()

    def __enter__(self) -> "FaceVerifier":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _pixel_box(box: Sequence[float], size: tuple[int, int]) -> tuple[int, int, int, int]:
    """The whole pixels a detector box touches, as a Pillow crop box inside the image."""
    width, height = size
    return int(box[0]), int(box[1]), min(width, int(box[2]) + 1), min(height, int(box[3]) + 1)


def _describe(item: Any) -> str:
    if isinstance(item, (str, os.PathLike)):
        return str(item)
    if isinstance(item, np.ndarray):
        return f"<array {item.shape} {item.dtype}>"
    if isinstance(item, (bytes, bytearray)):
        return f"<{len(item)} bytes>"
    return f"<{type(item).__name__}>"
