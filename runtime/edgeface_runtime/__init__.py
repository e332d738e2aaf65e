"""edgeface-runtime: face verification on small ARM devices, without TensorFlow.

    from edgeface_runtime import FaceVerifier

    with FaceVerifier.from_path("model.tflite", gallery_path="gallery.db") as fv:
        fv.enroll("alice", ["alice1.jpg", "alice2.jpg"])
        print(fv.identify("door_camera.jpg").best)

Names are imported on first use, so ``import edgeface_runtime`` stays cheap on a device.
"""

from __future__ import annotations

import importlib
from typing import Any

from ._version import __version__

_EXPORTS = {
    # pipeline
    "FaceVerifier": "_pipeline", "VerifierOptions": "_pipeline", "FrameResult": "_pipeline", "FaceResult": "_pipeline",
    "ThresholdChoice": "_pipeline", "EnrollReport": "_pipeline", "SiteCalibration": "_calibration",
    "cross_person_scores": "_calibration",
    "Embedder": "_embedder",
    # detection and alignment
    "FaceDetector": "_detector", "Face": "_detector", "DETECTORS": "_detector", "download_detector": "_detector",
    "align_face": "_align", "center_crop": "_align", "estimate_similarity": "_align", "template_points": "_align",
    # images and frame sources
    "load_image": "_images", "image_files": "_images", "Frame": "_frames", "open_frames": "_frames",
    # matching and gallery
    "Gallery": "_gallery", "VerifyResult": "_matching", "IdentifyResult": "_matching", "Match": "_matching",
    "cosine_similarity": "_matching",
    # the contract with the training half
    "Preprocess": "_metadata", "ModelMetadata": "_metadata", "read_metadata": "_metadata",
    "write_metadata": "_metadata", "split_model": "_metadata",
    "check_ops": "_interpreter", "select_backend": "_interpreter", "Engine": "_interpreter",
    "metrics": None,  # the public module edgeface_runtime.metrics
    # errors
    "EdgefaceError": "_errors", "ImageDecodeError": "_errors", "ImageTooLargeError": "_errors",
    "NoFaceError": "_errors", "ModelError": "_errors", "MetadataError": "_errors",
    "UnsupportedOpError": "_errors", "InterpreterError": "_errors", "InterpreterNotFoundError": "_errors",
    "GalleryError": "_errors", "GalleryModelMismatchError": "_errors", "UnknownPersonError": "_errors",
    "DownloadError": "_errors", "FrameSourceError": "_errors",
}

__all__ = ["__version__", *_EXPORTS]


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
