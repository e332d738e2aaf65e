"""The model contract in full: the metadata every edgeface ``.tflite`` carries, and how it is stored.

A device needs only :class:`ModelMetadata`, :class:`Preprocess`, :func:`read_metadata`,
:func:`write_metadata` and :func:`split_model`, which :mod:`edgeface_runtime` re-exports. A
producer of models (the training side, a converter) also needs the name of the archive member
the metadata travels under (the same inside ``model.keras``), the fingerprint, and the atomic
write every model file gets.
"""

from ._metadata import (FORMAT_VERSION, METADATA_MEMBER, ModelMetadata, Preprocess, atomic_write, fingerprint_of,
                        read_metadata, split_model, strip_metadata, write_metadata)

__all__ = ["FORMAT_VERSION", "METADATA_MEMBER", "ModelMetadata", "Preprocess", "atomic_write", "fingerprint_of",
           "read_metadata", "split_model", "strip_metadata", "write_metadata"]
