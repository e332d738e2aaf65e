"""Image input: turn whatever a caller holds into an H×W×3 uint8 RGB array.

:func:`load_image` accepts a path, the bytes of an encoded file, a binary file object, a
``PIL.Image.Image`` or a numpy frame, and always returns a new, writable, C-contiguous
``(H, W, 3)`` uint8 array in RGB order that shares memory with nothing the caller holds.

Decisions, so that every source gives the same pixels for the same picture:

* **Formats.** Only :data:`SUPPORTED_FORMATS` are decoded (JPEG/MPO, PNG, PPM/PGM/PBM,
  BMP, WebP, GIF, TIFF, plus AVIF/HEIF when the installed Pillow has a plugin for them).
  Pillow can open many more, but some rarely-fuzzed plugins and EPS (which runs
  Ghostscript) are attack surface a face-verification device does not need.
  GIF and TIFF give their first frame.
* **Orientation.** The EXIF orientation tag is applied (the table of
  ``ImageOps.exif_transpose``), so a phone photo comes out upright. Unreadable EXIF is
  logged and ignored: it must not cost the pixels.
* **Alpha in files** (RGBA, LA, PA, P or L or RGB with a ``transparency`` entry) is
  composited over black: what a transparent pixel "contains" is arbitrary, black is
  deterministic. Half-transparent pixels are blended, ``round(value * alpha / 255)``.
* **Alpha in numpy frames** (H×W×4, RGBA or BGRA per ``color_order``) is dropped: camera
  formats such as XRGB/BGRX carry padding there, often 0, which compositing would turn
  into an all-black frame.
* **16-bit integer images** ("I;16", "I;16B", "I;16L", ...) are scaled by their bit
  depth, ``round(v / 257)``, mapping 0..65535 onto 0..255 (Pillow's own convert clips at
  255 instead, whitening the picture). Mode "I" (32-bit) is how Pillow delivers 16-bit
  PGM (and, in older versions, 16-bit PNG), so it is treated the same way, values outside
  0..65535 clipped. A ``transparency`` entry on these modes is ignored.
* **Float images** (mode "F") are taken on Pillow's 0..255 scale: rounded, clipped to
  0..255, NaN and -inf → 0, +inf → 255. A 0..1 float image therefore comes out near
  black; scale it yourself first.
* Every other mode (1, L, P, CMYK, YCbCr, HSV, LAB, RGBX, ...) goes through Pillow's
  ``convert("RGB")``.

Image size limit (decompression-bomb guard): images with more than ``max_pixels`` pixels
(default :data:`DEFAULT_MAX_PIXELS`, 40 megapixels, about 120 MB decoded) are refused with
:class:`ImageTooLargeError` after reading only the file header, before any pixel data is
decoded. The limit applies to every kind of source, numpy frames and PIL images included;
pass ``max_pixels=`` a larger number, or None, to lift it. Pillow's global
``PIL.Image.MAX_IMAGE_PIXELS`` is neither relied on nor changed, but Pillow still enforces
it inside ``Image.open`` (error above twice its value); that refusal also surfaces as
:class:`ImageTooLargeError`.
"""

from __future__ import annotations

import importlib
import io
import logging
import numbers
import os
import stat
from pathlib import Path
from typing import IO, List, Optional, Tuple, Union

import numpy as np
from PIL import Image

from ._errors import ImageDecodeError, ImageTooLargeError

__all__ = [
    "COLOR_ORDERS",
    "DEFAULT_MAX_PIXELS",
    "IMAGE_SUFFIXES",
    "SUPPORTED_FORMATS",
    "ImageSource",
    "image_files",
    "load_image",
    "to_pil",
]

logger = logging.getLogger(__name__)

#: Default decompression-bomb guard: 40 megapixels (a 12 MP phone photo is well inside).
DEFAULT_MAX_PIXELS = 40_000_000

#: Pillow format IDs load_image decodes ("JPEG" includes camera MPO files, "PPM" includes
#: PGM and PBM). AVIF and HEIF count only where the installed Pillow has a plugin for them
#: (Pillow >= 11.3 ships AVIF; pillow-heif registers HEIF).
SUPPORTED_FORMATS = ("JPEG", "PNG", "PPM", "BMP", "WEBP", "GIF", "TIFF", "AVIF", "HEIF")

#: File name suffixes of those formats that :func:`image_files` lists (AVIF/HEIF need a plugin).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".pbm", ".bmp", ".webp", ".gif", ".tif", ".tiff",
                  ".avif", ".heic", ".heif")

#: Channel orders accepted for numpy frames ("BGR" is what OpenCV and many cameras give).
COLOR_ORDERS = ("RGB", "BGR")

_Loaded = Union[Image.Image, np.ndarray]  # what _load_rgb gives: an RGB-mode image or a new array

ImageSource = Union[
    str, "os.PathLike[str]", bytes, bytearray, memoryview, IO[bytes], Image.Image, np.ndarray
]

_EXIF_ORIENTATION_TAG = 0x0112
# EXIF orientation → the transpose that makes the picture upright (ImageOps.exif_transpose's
# table). Done by hand because exif_transpose also re-serialises the EXIF block, which can
# fail on malformed tags that we do not need anyway.
_ORIENTATION_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def image_files(folder: "Union[str, os.PathLike[str]]") -> List[Path]:
    """The image files directly in ``folder`` (by suffix, any case), sorted by name; hidden files
    and subfolders are left out. A folder that does not exist is a FileNotFoundError."""
    return sorted(p for p in Path(folder).iterdir()
                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))


def load_image(
    source: ImageSource,
    *,
    color_order: str = "RGB",
    max_pixels: Optional[int] = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """Load an image as a new (H, W, 3) uint8 RGB array, C-contiguous and writable.

    Args:
        source: one of
            * a path (``str`` or ``os.PathLike``) to an image file;
            * ``bytes`` / ``bytearray`` / ``memoryview`` holding an encoded file;
            * a binary file object, read from its current position to the end;
            * a ``PIL.Image.Image`` (its current frame);
            * a numpy uint8 frame: H×W×3 (colour), H×W×4 (colour + alpha or padding,
              dropped), or H×W / H×W×1 (grayscale, copied to three channels).
        color_order: channel order of a numpy frame, "RGB" or "BGR" (OpenCV, most
            cameras). Encoded files and PIL images carry their own order and ignore it.
        max_pixels: refuse images with more than this many pixels (width × height), read
            from the header before decoding; None disables this guard.

    Raises:
        ImageDecodeError: the source is missing, empty, corrupt, truncated, in an
            unsupported format or mode, or a numpy frame of the wrong dtype or shape.
        ImageTooLargeError: the image has more than ``max_pixels`` pixels.
        ValueError: ``color_order`` or ``max_pixels`` is not an accepted value.
        TypeError: ``source`` is none of the kinds above (or a text-mode file).
    """
    return _as_array(_load_rgb(source, color_order, max_pixels, as_image=False))


def _load_rgb(
    source: ImageSource, color_order: str, max_pixels: Optional[int], *, as_image: bool
) -> _Loaded:
    """:func:`load_image` without its final copy: an RGB-mode PIL image or a fresh (H, W, 3) uint8 array.

    The pipeline asks with ``as_image=True`` and hands the PIL image straight to the detector
    and the aligner, which work on Pillow's own buffer: every numpy round trip would copy the
    whole frame. Such an image may be the caller's own PIL image (never modified) or share
    nothing with the caller; an array is always a new copy.
    """
    if color_order not in COLOR_ORDERS:
        raise ValueError(f"color_order must be one of {COLOR_ORDERS}, got {color_order!r}")
    _check_max_pixels_argument(max_pixels)

    if isinstance(source, np.ndarray):
        return _from_array(source, color_order, max_pixels, as_image)
    if isinstance(source, Image.Image):
        return _from_pil(source, _describe_pil(source), max_pixels)
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = source if isinstance(source, bytes) else bytes(source)
        return _decode_bytes(data, f"<{len(data)} bytes>", max_pixels)
    if isinstance(source, (str, os.PathLike)):
        return _load_path(source, max_pixels)
    if hasattr(source, "read"):
        return _load_file_object(source, max_pixels)
    raise TypeError(
        "load_image expects a path, bytes, a binary file object, a PIL image or a numpy "
        f"array, got {type(source).__name__}"
    )


def _as_array(rgb: _Loaded) -> np.ndarray:
    if isinstance(rgb, np.ndarray):
        return rgb  # _load_rgb's arrays are already new copies
    return np.array(rgb, dtype=np.uint8, order="C")  # a copy: asarray would be read-only


def _as_image(rgb: _Loaded) -> Image.Image:
    return rgb if isinstance(rgb, Image.Image) else Image.fromarray(rgb)


def to_pil(rgb: np.ndarray) -> Image.Image:
    """Wrap an (H, W, 3) uint8 RGB array, as :func:`load_image` returns, in a PIL image.

    Useful to save, crop or draw on a frame. The image owns a copy of the pixels.
    """
    is_rgb = isinstance(rgb, np.ndarray) and rgb.dtype == np.uint8 and rgb.ndim == 3
    if not (is_rgb and rgb.shape[2] == 3):
        received = (
            f"array of shape {rgb.shape} and dtype {rgb.dtype}"
            if isinstance(rgb, np.ndarray)
            else type(rgb).__name__
        )
        raise ValueError(
            f"to_pil expects an (H, W, 3) uint8 RGB array, got {received}; "
            "load_image() returns one from any image source"
        )
    return Image.fromarray(np.ascontiguousarray(rgb))


# --- sources ---------------------------------------------------------------------------


def _load_path(path: "Union[str, os.PathLike[str]]", max_pixels: Optional[int]) -> "_Loaded":
    described = repr(os.fsdecode(os.fspath(path)))
    try:
        file = open(path, "rb")
    except FileNotFoundError as exc:
        raise ImageDecodeError(f"{described}: no such file") from exc
    except IsADirectoryError as exc:
        raise ImageDecodeError(f"{described}: is a directory, not an image file") from exc
    except OSError as exc:
        if os.path.isdir(path):  # Windows reports a directory as PermissionError
            raise ImageDecodeError(f"{described}: is a directory, not an image file") from exc
        raise ImageDecodeError(f"{described}: cannot open ({exc.strerror or exc})") from exc
    with file:
        try:
            info = os.fstat(file.fileno())
        except OSError:
            info = None
        # Only regular files have a meaningful size; a pipe or device reports 0.
        if info is not None and stat.S_ISREG(info.st_mode) and info.st_size == 0:
            raise ImageDecodeError(f"{described}: the file is empty (0 bytes), not an image")
        return _decode(file, described, max_pixels)


def _load_file_object(file: IO[bytes], max_pixels: Optional[int]) -> "_Loaded":
    name = getattr(file, "name", None)
    described = f"<file {name!r}>" if isinstance(name, str) else "<file object>"
    if isinstance(file, io.TextIOBase):
        raise TypeError(f"{described} is open in text mode; open image files with mode 'rb'")
    # Read from the current position (Pillow would seek to 0) and into memory, which also
    # handles pipes and sockets that cannot seek. Encoded images are small next to decoded.
    try:
        data = file.read()
    except OSError as exc:
        raise ImageDecodeError(f"{described}: cannot read ({exc})") from exc
    if isinstance(data, str):
        raise TypeError(f"{described} returned text; open image files with mode 'rb'")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"{described}.read() returned {type(data).__name__}, not bytes")
    data = bytes(data)
    return _decode_bytes(data, f"{described} ({len(data)} bytes)", max_pixels)


def _decode_bytes(data: bytes, described: str, max_pixels: Optional[int]) -> "_Loaded":
    if not data:
        raise ImageDecodeError(f"{described}: empty input (0 bytes), not an image")
    return _decode(io.BytesIO(data), described, max_pixels)


def _decode(file: IO[bytes], described: str, max_pixels: Optional[int]) -> "_Loaded":
    # Pillow's always-loaded plugins first: the WebP, TIFF and AVIF plugins (and their codec
    # libraries, about 1 MB resident) are imported only when a file is none of these.
    Image.preinit()
    formats = tuple(name for name in _COMMON_FORMATS if name in Image.OPEN)
    try:
        # Reads the header only; pixel data is decoded by load() in _from_pil.
        try:
            img = Image.open(file, formats=formats)
        except Image.UnidentifiedImageError:
            formats = _available_formats()
            img = Image.open(file, formats=formats)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # The warning arrives as an exception only where warnings are errors.
        raise ImageTooLargeError(_pillow_bomb_message(described, exc)) from exc
    except Image.UnidentifiedImageError as exc:
        raise ImageDecodeError(
            f"{described}: not an image in a supported format ({', '.join(formats)})"
        ) from exc
    except Exception as exc:  # Pillow plugins raise a zoo of types on a corrupt header.
        raise ImageDecodeError(f"{described}: unreadable image header ({_reason(exc)})") from exc
    rgb: Optional[_Loaded] = None
    try:
        rgb = _from_pil(img, described, max_pixels)
        return rgb
    finally:
        if rgb is not img:  # an RGB file comes back as the decoded image itself: keep it open
            img.close()


def _from_pil(img: Image.Image, described: str, max_pixels: Optional[int]) -> _Loaded:
    _check_pixel_count(img.size, described, max_pixels)
    kind = f"{img.format} data" if img.format else "image data"
    try:
        img.load()  # decode now, inside the try, so truncated or corrupt data is caught here
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLargeError(_pillow_bomb_message(described, exc)) from exc
    except Exception as exc:  # OSError, SyntaxError, struct.error, ValueError, MemoryError...
        raise ImageDecodeError(
            f"{described}: corrupt or truncated {kind} ({_reason(exc)})"
        ) from exc
    try:
        rgb = _pil_to_rgb(_apply_exif_orientation(img, described))
    except (ValueError, OSError, MemoryError) as exc:
        raise ImageDecodeError(
            f"{described}: cannot convert a mode {img.mode!r} image to RGB ({_reason(exc)})"
        ) from exc
    logger.debug("loaded %s: %s %s %dx%d", described, img.format, img.mode, *img.size)
    return rgb


def _from_array(
    frame: np.ndarray, color_order: str, max_pixels: Optional[int], as_image: bool
) -> _Loaded:
    described = f"array of shape {frame.shape} and dtype {frame.dtype}"
    if frame.dtype != np.uint8:
        raise ImageDecodeError(
            f"{described}: expected dtype uint8; convert it first, e.g. "
            "np.clip(a, 0, 255).astype(np.uint8) for values on 0..255, "
            "(np.clip(a, 0, 1) * 255).round().astype(np.uint8) for floats on 0..1, "
            "or (a >> 8).astype(np.uint8) for 16-bit"
        )
    if frame.ndim == 3 and frame.shape[2] in (1, 3, 4):
        channels = frame.shape[2]
    elif frame.ndim == 2:
        channels = 1
    else:
        hint = ""
        if frame.ndim == 3 and frame.shape[0] in (1, 3, 4):
            hint = "; a channels-first (C, H, W) array needs a.transpose(1, 2, 0)"
        raise ImageDecodeError(
            f"{described}: expected (H, W, 3) colour, (H, W, 4) colour + alpha, "
            f"or (H, W) / (H, W, 1) grayscale{hint}"
        )
    height, width = frame.shape[:2]
    if height == 0 or width == 0:
        raise ImageDecodeError(f"{described}: the frame has no pixels")
    _check_pixel_count((width, height), described, max_pixels)

    # Always copy: cameras reuse their capture buffers, and the result must not change.
    if channels == 1:
        return np.repeat(frame.reshape(height, width, 1), 3, axis=2)
    if channels == 3 and color_order == "RGB":
        if as_image:
            return Image.fromarray(np.ascontiguousarray(frame))  # Pillow copies RGB into its own buffer
        return np.array(frame, dtype=np.uint8, order="C", copy=True)
    # Reordering channels (and dropping alpha) in numpy is a strided copy, several times slower
    # than Pillow's unpackers, which do it while copying the frame into Pillow's buffer.
    rawmode = color_order + ("X" if channels == 4 else "")
    # frombytes, not frombuffer: frombuffer would share the frame's memory for "RGBX" layouts.
    return Image.frombytes("RGB", (width, height), np.ascontiguousarray(frame), "raw", rawmode, 0, 1)


# --- conversion ------------------------------------------------------------------------


def _apply_exif_orientation(img: Image.Image, described: str) -> Image.Image:
    try:
        orientation = img.getexif().get(_EXIF_ORIENTATION_TAG, 1)
    except Exception as exc:  # malformed EXIF: keep the pixels, lose only the rotation
        logger.warning("%s: ignoring unreadable EXIF data (%s)", described, _reason(exc))
        return img
    method = _ORIENTATION_TRANSPOSE.get(orientation) if isinstance(orientation, int) else None
    return img if method is None else img.transpose(method)


def _pil_to_rgb(img: Image.Image) -> _Loaded:
    """An RGB-mode image (``img`` itself when it already is one) or a new RGB array."""
    mode = img.mode
    if mode.startswith("I"):  # "I", "I;16", "I;16B", "I;16L", "I;16N", ...
        return _gray_to_rgb(_scale_16_bit(np.asarray(img)))
    if mode == "F":
        return _gray_to_rgb(_float_to_uint8(np.asarray(img)))
    if _has_alpha(img):
        return _composite_over_black(img.convert("RGBA"))
    if mode == "RGB":
        return img
    return img.convert("RGB")


def _has_alpha(img: Image.Image) -> bool:
    bands = img.getbands()
    return "A" in bands or "a" in bands or "transparency" in img.info


def _composite_over_black(rgba: Image.Image) -> Image.Image:
    rgb = rgba.convert("RGB")
    alpha = rgba.getchannel("A")
    if alpha.getextrema() == (255, 255):
        return rgb  # fully opaque: nothing to blend
    black = Image.new("RGB", rgba.size)
    black.paste(rgb, mask=alpha)  # Pillow blends with exact rounding: round(v * a / 255)
    return black


def _scale_16_bit(samples: np.ndarray) -> np.ndarray:
    if samples.dtype.kind != "u":
        samples = np.clip(samples, 0, 65535)
    # round(v / 257) in integers: 257 is odd, so there are no ties.
    return ((samples.astype(np.uint32) + 128) // 257).astype(np.uint8)


def _float_to_uint8(samples: np.ndarray) -> np.ndarray:
    finite = np.nan_to_num(samples, nan=0.0, posinf=255.0, neginf=0.0)
    return np.rint(np.clip(finite, 0.0, 255.0)).astype(np.uint8)


def _gray_to_rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[:, :, np.newaxis], 3, axis=2)


# --- helpers ---------------------------------------------------------------------------


# The Pillow plugin behind each supported format. Importing just these registers them;
# Image.init() would import all of Pillow's ~40 plugins (77 modules, about 3 MB resident).
# HEIF has no Pillow plugin: it counts once pillow-heif has registered its own.
_PLUGINS = {
    "JPEG": "JpegImagePlugin", "PNG": "PngImagePlugin", "PPM": "PpmImagePlugin",
    "BMP": "BmpImagePlugin", "WEBP": "WebPImagePlugin", "GIF": "GifImagePlugin",
    "TIFF": "TiffImagePlugin", "AVIF": "AvifImagePlugin",
}
_MISSING_PLUGINS: set = set()
_COMMON_FORMATS = ("JPEG", "PNG", "PPM", "BMP", "GIF")  # registered by Image.preinit(), which Image.open runs


def _available_formats() -> Tuple[str, ...]:
    """SUPPORTED_FORMATS that this Pillow can open (Image.open fails on unknown IDs)."""
    for name in SUPPORTED_FORMATS:
        plugin = _PLUGINS.get(name)
        if name not in Image.OPEN and plugin is not None and plugin not in _MISSING_PLUGINS:
            try:
                importlib.import_module(f"PIL.{plugin}")  # registers itself; a no-op once imported
            except ImportError:  # an older Pillow (AVIF arrived in 11.3) or a missing codec
                _MISSING_PLUGINS.add(plugin)
    return tuple(name for name in SUPPORTED_FORMATS if name in Image.OPEN)


def _check_max_pixels_argument(max_pixels: Optional[int]) -> None:
    if max_pixels is None:
        return
    is_integer = isinstance(max_pixels, numbers.Integral) and not isinstance(max_pixels, bool)
    if not is_integer or max_pixels <= 0:
        raise ValueError(f"max_pixels must be a positive integer or None, got {max_pixels!r}")


def _check_pixel_count(size: Tuple[int, int], described: str, max_pixels: Optional[int]) -> None:
    width, height = size
    pixels = width * height
    if max_pixels is not None and pixels > max_pixels:
        raise ImageTooLargeError(
            f"{described}: {width}x{height} = {pixels:,} pixels exceeds the limit of "
            f"{max_pixels:,} (a guard against decompression bombs); if you trust this "
            f"image, pass load_image(..., max_pixels={pixels}) or max_pixels=None"
        )


def _pillow_bomb_message(described: str, exc: BaseException) -> str:
    return (
        f"{described}: Pillow refuses it as a possible decompression bomb ({exc}). That is "
        f"Pillow's own process-wide limit, PIL.Image.MAX_IMAGE_PIXELS = "
        f"{Image.MAX_IMAGE_PIXELS}, which edgeface_runtime leaves alone; raise it in your "
        "application as well as max_pixels if you trust this image"
    )


def _describe_pil(img: Image.Image) -> str:
    filename = getattr(img, "filename", "")
    origin = f" from {os.fsdecode(filename)!r}" if filename else ""
    return f"<PIL image mode={img.mode} size={img.size[0]}x{img.size[1]}{origin}>"


def _reason(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
