"""The exceptions edgeface_runtime raises on purpose.

Every one of them derives from :class:`EdgefaceError`, so an application can catch the
family, and from the builtin that describes the failure (``ValueError`` for bad input,
``RuntimeError`` for engine failures, ``ImportError`` for a missing interpreter), so code
written against builtins keeps working. Every command maps each class to an exit code through
the one table in :mod:`edgeface_runtime.commandline`.
"""

from __future__ import annotations


class EdgefaceError(Exception):
    """Base class of every error edgeface_runtime raises on purpose."""

    @property
    def exit_code(self) -> int:
        """This error's row of :data:`edgeface_runtime.commandline.EXIT_CODES`."""
        from .commandline import exit_code_for

        return exit_code_for(self) or 1


class ImageDecodeError(EdgefaceError, ValueError):
    """A file or buffer is not a decodable image (empty, truncated, corrupt, unsupported)."""


class ImageTooLargeError(ImageDecodeError):
    """An image has more pixels than the configured limit (decompression-bomb guard)."""


class NoFaceError(EdgefaceError, ValueError):
    """The detector found no face in an image given to a single-image API."""


class ModelError(EdgefaceError, ValueError):
    """A model file is missing, not a TFLite flatbuffer, or not an embedding model."""


class MetadataError(ModelError):
    """A model carries no edgeface metadata, or metadata that cannot be read or trusted."""


class UnsupportedOpError(EdgefaceError, RuntimeError):
    """The chosen interpreter cannot run an operator (or operator version) the model uses."""


class InterpreterError(EdgefaceError, RuntimeError):
    """The TFLite interpreter failed while loading or running a model."""


class InterpreterNotFoundError(EdgefaceError, ImportError):
    """No TFLite interpreter package is installed."""


class GalleryError(EdgefaceError, ValueError):
    """A gallery file is corrupt, locked, or used in a way it does not allow."""


class GalleryModelMismatchError(GalleryError):
    """A gallery was enrolled with a different model than the one in use."""


class UnknownPersonError(GalleryError, KeyError):
    """A person named in a gallery operation is not enrolled."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable.
        return str(self.args[0]) if self.args else ""


class DownloadError(EdgefaceError, RuntimeError):
    """A download failed or produced a file whose checksum does not match."""


class FrameSourceError(EdgefaceError, OSError):
    """A frame source (camera, video file, folder) cannot be opened or stopped delivering frames."""
