"""The contract between training and device: metadata carried inside every ``.tflite``.

Format: the TFLite flatbuffer, unchanged, followed by a zip archive holding one member,
``edgeface.json`` (the approach Ultralytics uses). Interpreters ignore bytes after the
flatbuffer, the standard library's ``zipfile`` finds the archive at the end, and the JSON
records ``model_size`` so the reader can cut the flatbuffer back out and check that its
sha256 (the model fingerprint) is the one the metadata was written for.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
import zlib
from dataclasses import asdict, dataclass, field, replace
from os import PathLike
from typing import Any, Mapping, Union

from ._errors import MetadataError, ModelError
from ._version import __version__

FORMAT_VERSION = 1
METADATA_MEMBER = "edgeface.json"
TFLITE_IDENTIFIER = b"TFL3"
COLOR_ORDERS = ("RGB", "BGR")

PathOrBytes = Union[str, PathLike, bytes, bytearray, memoryview]


@dataclass(frozen=True)
class Preprocess:
    """How a face crop becomes the model's input tensor; written once at training time.

    ``input = (pixel - mean) / std`` per channel, on pixels in ``color_order``, at
    ``input_size`` = (height, width). A quantized input is then quantized with the tensor's
    own scale and zero point. ``alignment`` names the template in ``_align`` that crops are
    warped to ("none" means the image is only resized).
    """

    input_size: tuple[int, int] = (112, 112)
    color_order: str = "RGB"
    mean: tuple[float, float, float] = (127.5, 127.5, 127.5)
    std: tuple[float, float, float] = (127.5, 127.5, 127.5)
    layout: str = "NHWC"
    alignment: str = "arcface"

    def __post_init__(self) -> None:
        size = tuple(int(v) for v in self.input_size)
        if len(size) != 2 or min(size) < 8:
            raise ValueError(f"input_size must be (height, width) of at least 8 pixels, got {self.input_size!r}")
        if self.color_order not in COLOR_ORDERS:
            raise ValueError(f"color_order must be one of {COLOR_ORDERS}, got {self.color_order!r}")
        if self.layout != "NHWC":
            raise ValueError(f"only the NHWC layout is supported, got {self.layout!r}")
        mean, std = _triple(self.mean, "mean"), _triple(self.std, "std")
        if min(std) <= 0:
            raise ValueError(f"std must be positive, got {self.std!r}")
        object.__setattr__(self, "input_size", size)
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Preprocess":
        known = {k: data[k] for k in ("input_size", "color_order", "mean", "std", "layout", "alignment") if k in data}
        return cls(**known)

    def scale_and_shift(self) -> tuple[Any, Any]:
        """Per-channel ``(1 / std, -mean / std)`` as float32 arrays: ``input = pixel * scale + shift``."""
        import numpy as np  # here, not at the top: reading metadata needs no numpy

        scale = 1.0 / np.asarray(self.std, np.float32)
        return scale, -np.asarray(self.mean, np.float32) * scale

    def normalize(self, pixels: Any) -> Any:
        """RGB pixels in [0, 255] (..., 3) → the model's float32 input: colour order, then
        ``(pixel - mean) * (1 / std)``. The one definition training, conversion and the device use
        (the runtime's ``Embedder`` looks the same arithmetic up in per-level tables)."""
        import numpy as np

        x = np.asarray(pixels, np.float32)
        if self.color_order == "BGR":
            x = x[..., ::-1]
        return (x - np.asarray(self.mean, np.float32)) * (1.0 / np.asarray(self.std, np.float32))

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["input_size"] = list(self.input_size)
        out["mean"], out["std"] = list(self.mean), list(self.std)
        return out


def _triple(value: Any, name: str) -> tuple[float, float, float]:
    if isinstance(value, (int, float)):
        value = (value,) * 3
    try:
        triple = tuple(float(v) for v in value)
    except TypeError:
        raise ValueError(f"{name} must be a number or three numbers, got {value!r}") from None
    if len(triple) != 3:
        raise ValueError(f"{name} must have three values (one per channel), got {value!r}")
    return triple  # type: ignore[return-value]


@dataclass(frozen=True)
class ModelMetadata:
    """Everything the device needs to run an embedding model correctly.

    ``thresholds`` maps a false-accept rate (e.g. ``1e-3``) to the cosine-similarity
    threshold calibrated for it. ``fingerprint`` is the sha256 of the flatbuffer and is
    filled in by :func:`write_metadata`; galleries store it to refuse a foreign model.
    """

    preprocess: Preprocess
    embedding_size: int
    thresholds: Mapping[float, float] = field(default_factory=dict)
    fingerprint: str = ""
    name: str = ""
    edgeface_version: str = __version__
    format_version: int = FORMAT_VERSION
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if int(self.embedding_size) < 1:
            raise ValueError(f"embedding_size must be positive, got {self.embedding_size!r}")
        object.__setattr__(self, "embedding_size", int(self.embedding_size))
        thresholds = {float(far): float(t) for far, t in dict(self.thresholds).items()}
        for far, threshold in thresholds.items():
            if not 0.0 < far < 1.0 or not -1.0 <= threshold <= 1.0:
                raise ValueError(f"threshold {threshold!r} at FAR {far!r} is out of range "
                                 "(FAR in (0, 1), cosine in [-1, 1])")
        object.__setattr__(self, "thresholds", dict(sorted(thresholds.items())))

    def threshold_for(self, far: float | None = None) -> tuple[float, float]:
        """Return ``(threshold, far)``: at ``far`` exactly, or at 1e-3 (else the strictest) by default."""
        if not self.thresholds:
            raise MetadataError(
                f"model {self.name or self.fingerprint[:12]!r} has no calibrated thresholds; pass an explicit "
                "threshold, or calibrate one with `edgeface evaluate MODEL --pairs ... --calibrate`"
            )
        if far is None:
            far = 1e-3 if 1e-3 in self.thresholds else min(self.thresholds)
        for known, threshold in self.thresholds.items():
            if abs(known - far) <= 1e-12 * max(1.0, far):
                return threshold, known
        raise MetadataError(f"no threshold calibrated at FAR {far:g}; this model has FAR {sorted(self.thresholds)}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version,
            "edgeface_version": self.edgeface_version,
            "name": self.name,
            "fingerprint": self.fingerprint,
            "embedding_size": self.embedding_size,
            "preprocess": self.preprocess.to_dict(),
            "thresholds": [{"far": far, "threshold": t} for far, t in self.thresholds.items()],
            "extra": dict(self.extra),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ModelMetadata":
        try:
            version = int(data.get("format_version", 0))
            if version > FORMAT_VERSION:
                raise MetadataError(
                    f"model metadata format {version} is newer than this edgeface-runtime understands "
                    f"({FORMAT_VERSION}); upgrade with `pip install -U edgeface-runtime`"
                )
            return cls(
                preprocess=Preprocess.from_dict(data["preprocess"]),
                embedding_size=data["embedding_size"],
                thresholds={t["far"]: t["threshold"] for t in data.get("thresholds", [])},
                fingerprint=str(data.get("fingerprint", "")),
                name=str(data.get("name", "")),
                edgeface_version=str(data.get("edgeface_version", "")),
                format_version=version,
                extra=dict(data.get("extra", {})),
            )
        except MetadataError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise MetadataError(f"edgeface metadata is malformed: {exc!r}") from exc


def fingerprint_of(model_bytes: bytes) -> str:
    """The model fingerprint: sha256 (hex) of the bare flatbuffer, as the metadata records it."""
    return hashlib.sha256(model_bytes).hexdigest()


def _read_bytes(source: PathOrBytes) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    try:
        with open(source, "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        raise ModelError(f"model file not found: {source}") from None
    except IsADirectoryError:
        raise ModelError(f"expected a .tflite file, got a directory: {source}") from None
    except OSError as exc:
        raise ModelError(f"cannot read model file {source}: {exc}") from exc


def split_model(source: PathOrBytes) -> tuple[bytes, ModelMetadata | None]:
    """Return ``(flatbuffer bytes, metadata or None)`` for a ``.tflite`` file or its bytes.

    Raises :class:`ModelError` when the data is not a TFLite flatbuffer and
    :class:`MetadataError` when metadata is present but corrupt or does not belong to
    these model bytes.
    """
    data = _read_bytes(source)
    described = source if not isinstance(source, (bytes, bytearray, memoryview)) else f"<{len(data)} bytes>"
    if len(data) < 16 or data[4:8] != TFLITE_IDENTIFIER:
        hint = (" (a Keras file: convert it with `edgeface convert`)"
                if data[:2] == b"PK" or data[:4] == b"\x89HDF" else "")
        raise ModelError(f"{described} is not a TFLite model: the flatbuffer identifier 'TFL3' is missing{hint}")
    payload = _find_metadata_zip(data)
    if payload is None:
        return data, None
    try:
        record = json.loads(payload)
        model_size = int(record["model_size"])
    except (ValueError, KeyError, TypeError) as exc:
        raise MetadataError(f"{described}: edgeface metadata is not valid JSON: {exc}") from exc
    metadata = ModelMetadata.from_dict(record)
    model = data[:model_size]
    if model_size > len(data) or fingerprint_of(model) != metadata.fingerprint:
        raise MetadataError(
            f"{described}: the model bytes do not match the fingerprint in its metadata (the file was modified "
            "or truncated after the metadata was written); re-run `edgeface convert` or re-attach metadata "
            "with edgeface_runtime.write_metadata"
        )
    return model, metadata


def _find_metadata_zip(data: bytes) -> bytes | None:
    # Cheap test first: a zip ends with its end-of-central-directory record.
    if data.rfind(b"PK\x05\x06", max(0, len(data) - 65_536 - 22)) < 0:
        return None
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            if METADATA_MEMBER not in archive.namelist():
                return None
            return archive.read(METADATA_MEMBER)
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError, NotImplementedError, RuntimeError) as exc:
        raise MetadataError(f"the metadata archive appended to the model is corrupt: {exc}") from exc


def read_metadata(source: PathOrBytes) -> ModelMetadata | None:
    """The model's edgeface metadata, or ``None`` when it carries none."""
    return split_model(source)[1]


def write_metadata(source: PathOrBytes, metadata: ModelMetadata, destination: str | PathLike | None = None) -> bytes:
    """Attach ``metadata`` to a TFLite model, replacing any earlier metadata.

    The fingerprint is computed here from the flatbuffer. Returns the new file's bytes and
    writes them to ``destination`` when given (atomically: a temporary name, then rename).
    """
    model = strip_metadata(source)
    stamped = replace(metadata, fingerprint=fingerprint_of(model))
    record = stamped.to_dict()
    record["model_size"] = len(model)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(METADATA_MEMBER, json.dumps(record, indent=1, sort_keys=True))
    out = model + buffer.getvalue()
    if destination is not None:
        atomic_write(destination, out)
    return out


def strip_metadata(source: PathOrBytes) -> bytes:
    """The bare flatbuffer: the model without any edgeface metadata (not checked against it)."""
    data = _read_bytes(source)
    if len(data) < 16 or data[4:8] != TFLITE_IDENTIFIER:
        split_model(data)  # raises the standard "not a TFLite model" error
    payload = _find_metadata_zip(data)
    if payload is None:
        return data
    try:
        return data[: int(json.loads(payload)["model_size"])]
    except (ValueError, KeyError, TypeError) as exc:
        raise MetadataError("cannot separate the model from its corrupt metadata; "
                            "start from the converter's output") from exc


def atomic_write(destination: str | PathLike, data: bytes) -> None:
    """Write ``data`` to ``destination`` so readers see the old file or the whole new one, never a
    part: a temporary file in the same folder, flushed to disk, then renamed over it."""
    import os
    import tempfile

    directory = os.path.dirname(os.path.abspath(destination))
    fd, tmp = tempfile.mkstemp(prefix=".edgeface-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, destination)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
