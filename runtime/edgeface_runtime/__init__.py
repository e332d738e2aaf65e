"""edgeface-runtime: face verification on small ARM devices, without TensorFlow.

    from edgeface_runtime import FaceVerifier

    with FaceVerifier.from_path("model.tflite", gallery_path="gallery.db") as fv:
        fv.enroll("alice", ["alice1.jpg", "alice2.jpg"])
        print(fv.identify("door_camera.jpg").best)

Names are imported on first use, so ``import edgeface_runtime`` stays cheap on a device.

The public API is what this module exports and its public modules: :mod:`edgeface_runtime.metrics`
(verification metrics), :mod:`edgeface_runtime.metadata` (the model contract in full),
:mod:`edgeface_runtime.download` (verified downloads and the cache), :mod:`edgeface_runtime.bench`
(latency) and :mod:`edgeface_runtime.commandline` (the convention of every ``edgeface`` command).
Modules whose names start with ``_`` are private: they may change in any release.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__

_EXPORTS = {
    # pipeline
    "FaceVerifier": "_pipeline", "VerifierOptions": "_pipeline", "FrameResult": "_pipeline", "FaceResult": "_pipeline",
    "ThresholdChoice": "_pipeline", "EnrollReport": "_pipeline", "SiteCalibration": "_calibration",
    "cross_person_scores": "_calibration",
    "Embedder": "_embedder",
    # detection and alignment
    "FaceDetector": "_detector", "Face": "_detector", "DETECTORS": "_detector", "download_detector": "_detector",
    "resolve_detector_path": "_detector", "largest_face": "_detector",
    "align_face": "_align", "center_crop": "_align", "estimate_similarity": "_align", "template_points": "_align",
    # images and frame sources
    "load_image": "_images", "image_files": "_images", "IMAGE_SUFFIXES": "_images",
    "Frame": "_frames", "open_frames": "_frames",
    # matching and gallery
    "Gallery": "_gallery", "VerifyResult": "_matching", "IdentifyResult": "_matching", "Match": "_matching",
    "cosine_similarity": "_matching",
    # the contract with the training half
    "Preprocess": "_metadata", "ModelMetadata": "_metadata", "read_metadata": "_metadata",
    "write_metadata": "_metadata", "split_model": "_metadata",
    "check_ops": "_interpreter", "select_backend": "_interpreter", "Engine": "_interpreter",
    "operator_codes": "_flatbuffer", "OperatorCode": "_flatbuffer", "bundled_path": "_bundled",
    # the public modules edgeface_runtime.<name>
    "metrics": None, "metadata": None, "download": None, "bench": None, "registry": None,
    # errors
    "EdgefaceError": "_errors", "ImageDecodeError": "_errors", "ImageTooLargeError": "_errors",
    "NoFaceError": "_errors", "ModelError": "_errors", "MetadataError": "_errors",
    "UnsupportedOpError": "_errors", "InterpreterError": "_errors", "InterpreterNotFoundError": "_errors",
    "GalleryError": "_errors", "GalleryModelMismatchError": "_errors", "UnknownPersonError": "_errors",
    "DownloadError": "_errors", "FrameSourceError": "_errors",
}

__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:  # what type checkers see (``X as X``: re-exported); at run time __getattr__ imports on first use
    from . import (bench as bench, download as download, metadata as metadata, metrics as metrics,
                   registry as registry)
    from ._align import (align_face as align_face, center_crop as center_crop,
                         estimate_similarity as estimate_similarity, template_points as template_points)
    from ._bundled import bundled_path as bundled_path
    from ._calibration import SiteCalibration as SiteCalibration, cross_person_scores as cross_person_scores
    from ._detector import (DETECTORS as DETECTORS, Face as Face, FaceDetector as FaceDetector,
                            download_detector as download_detector, largest_face as largest_face,
                            resolve_detector_path as resolve_detector_path)
    from ._embedder import Embedder as Embedder
    from ._errors import (DownloadError as DownloadError, EdgefaceError as EdgefaceError, GalleryError as GalleryError,
                          GalleryModelMismatchError as GalleryModelMismatchError, ImageDecodeError as ImageDecodeError,
                          ImageTooLargeError as ImageTooLargeError, InterpreterError as InterpreterError,
                          InterpreterNotFoundError as InterpreterNotFoundError, MetadataError as MetadataError,
                          FrameSourceError as FrameSourceError, ModelError as ModelError, NoFaceError as NoFaceError,
                          UnknownPersonError as UnknownPersonError, UnsupportedOpError as UnsupportedOpError)
    from ._flatbuffer import OperatorCode as OperatorCode, operator_codes as operator_codes
    from ._frames import Frame as Frame, open_frames as open_frames
    from ._gallery import Gallery as Gallery
    from ._images import IMAGE_SUFFIXES as IMAGE_SUFFIXES, image_files as image_files, load_image as load_image
    from ._interpreter import Engine as Engine, check_ops as check_ops, select_backend as select_backend
    from ._matching import (IdentifyResult as IdentifyResult, Match as Match, VerifyResult as VerifyResult,
                            cosine_similarity as cosine_similarity)
    from ._metadata import (ModelMetadata as ModelMetadata, Preprocess as Preprocess, read_metadata as read_metadata,
                            split_model as split_model, write_metadata as write_metadata)
    from ._pipeline import (EnrollReport as EnrollReport, FaceResult as FaceResult, FaceVerifier as FaceVerifier,
                            FrameResult as FrameResult, ThresholdChoice as ThresholdChoice,
                            VerifierOptions as VerifierOptions)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'edgeface_runtime' has no attribute {name!r}")
    module = _EXPORTS[name]
    value = importlib.import_module(f".{module or name}", __name__)
    if module is not None:
        value = getattr(value, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
