"""Face alignment shared by training and the device, so both make identical crops.

Convention: points and matrices here use *pixel-index* coordinates, as OpenCV and the ArcFace
template do: the centre of pixel ``(row i, column j)`` is ``(x=j, y=i)``. The detector reports
continuous coordinates (pixel centres at ``+0.5``); :func:`align_face` converts.

Templates are defined on a 112×112 crop. For another ``(height, width)`` the template is scaled
*uniformly* by ``height / 112`` (a similarity transform cannot map a face onto an anisotropically
stretched template) and centred horizontally, so extra width is margin and less width crops the
sides. That reproduces the usual 112×96 template (the 112×112 one shifted 8 px left).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .registry import Registry

ARCFACE_TEMPLATE_SIZE = (112, 112)

# The ArcFace (insightface) 5-point template at 112×112: eyes, nose tip, mouth corners, in
# image-left to image-right order (the subject's right eye first).
_ARCFACE_5 = np.array([
    [38.2946, 51.6963],  # eye on the image left (subject's right)
    [73.5318, 51.5014],  # eye on the image right (subject's left)
    [56.0252, 71.7366],  # nose tip
    [41.5493, 92.3655],  # mouth corner, image left
    [70.7299, 92.2041],  # mouth corner, image right
])

ALIGNMENT_KEYPOINTS = (0, 1, 2, 3)  # BlazeFace indices used for alignment, in template row order


@dataclass(frozen=True, eq=False)  # eq=False: comparing numpy fields would raise
class AlignmentTemplate:
    """Where the four alignment keypoints (right eye, left eye, nose tip, mouth centre: BlazeFace's
    first four, in image-left to image-right order) go in a 112×112 crop, and how much each
    point's fit counts (see :func:`estimate_similarity`)."""

    name: str
    points: np.ndarray  # (4, 2) x, y in pixel-index coordinates at 112x112
    weights: np.ndarray  # (4,) non-negative
    description: str = ""

    def __post_init__(self) -> None:
        for array in (self.points, self.weights):
            array.setflags(write=False)


# BlazeFace gives a mouth centre, not corners: the ArcFace points use the corners' mean.
_ARCFACE_4 = np.vstack([_ARCFACE_5[:3], _ARCFACE_5[3:].mean(axis=0, keepdims=True)])

# Eye-anchored fit ("arcface", "dlib"): the eyes carry almost all the weight, nose and mouth only
# steady it. Measured on 500 LFW faces (short-range BlazeFace, 112x112): equal weights put 46 % of
# faces' eyes within 2 px of the template (median 2.1 px: yaw moves the nose against the eyes);
# these weights put 99.2 % within 2 px (median 0.4 px), at the cost of nose/mouth residuals (median
# 3.8 -> 5.9 px). Device and training crops both come from this code, so they agree either way.
TEMPLATES: Registry[AlignmentTemplate] = Registry("alignment template", [
    AlignmentTemplate("arcface", _ARCFACE_4.copy(), np.array([1.0, 1.0, 0.05, 0.05]),
                      "the ArcFace (insightface) template, fitted on the eyes"),
    # The same points fit with equal weights: the least-squares similarity insightface's own
    # alignment uses, which is what models trained on ArcFace-aligned data (SFace) saw. Measured
    # with an SFace int8 file on LFW (BlazeFace short range, 3,000 pairs per half): eye-anchored
    # [1, 1, 0.05, 0.05] against equal weights, folds 6-10: 99.10 against 99.33 % (TAR at FAR 1e-3
    # 98.27 against 98.60 %); folds 1-5: 99.17 against 98.97 % (TAR 97.67 against 98.00 %).
    # Accuracy: no difference beyond noise; TAR at 1e-3, the door's measure, higher on both halves.
    AlignmentTemplate("arcface4", _ARCFACE_4.copy(), np.array([1.0, 1.0, 1.0, 1.0]),
                      "the ArcFace template, all four points weighted alike (insightface's fit)"),
    # dlib's face chip (dlib.get_face_chip(..., size=150, padding=0.25), the input of its
    # face-recognition ResNet) as BlazeFace sees it, scaled 150 -> 112. dlib places its chip by
    # its own 5 landmarks (eye corners, base of the nose), so this was measured, not derived:
    # on the first images of 300 LFW people (every 16th name), dlib's HOG detector + 5-point
    # predictor gave each chip's transform (get_face_chip_details), and BlazeFace's keypoints
    # on the same image were mapped into the chip; 297 faces kept (3 where the detectors found
    # different faces dropped), median per point. Spread (median absolute deviation, chip px at
    # 150): eyes 1.5-1.9, nose tip 5.7 in x / 4.0 in y (yaw), mouth 1.9 / 2.7. With dlib's own
    # transform, warp_affine reproduces dlib's chip exactly (mean |difference| 0 on 50 faces).
    # Weights chosen on those 297 faces by how far a BlazeFace fit moves a grid over the chip's
    # central 100x100 px from where dlib's own transform puts it (median RMS, chip px at 150):
    # 3.2 px with these weights, 3.6 with the arcface ones, 4.3 with equal weights.
    AlignmentTemplate("dlib", np.array([
        [33.6332, 34.1230],  # eye on the image left (subject's right)
        [75.5842, 34.3133],  # eye on the image right (subject's left)
        [54.1795, 58.7431],  # nose tip
        [54.1097, 80.2899],  # mouth centre
    ]), np.array([1.0, 1.0, 0.15, 0.15]), "dlib's face chip, as BlazeFace's keypoints land on it"),
], hint="(or alignment='none' for a plain centre crop)")


def template_points(name: str = "arcface", input_size: tuple[int, int] = ARCFACE_TEMPLATE_SIZE) -> np.ndarray:
    """The template ``name`` for a crop of ``input_size = (height, width)``, as ``(4, 2)`` x, y.

    Scaled uniformly by ``height / 112`` about pixel-index coordinates and centred in the width
    (see the module docstring).
    """
    template = TEMPLATES[name]  # an unknown name: a ValueError naming the closest and the choices
    height, width = _size(input_size)
    ref_h, ref_w = ARCFACE_TEMPLATE_SIZE
    scale = height / ref_h
    # Scale continuous coordinates (index + 0.5) so the crop's edges, not pixel centres, scale.
    points = (template.points + 0.5) * scale - 0.5
    points[:, 0] += (width - ref_w * scale) / 2.0
    return points


def estimate_similarity(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) taking ``src`` onto ``dst``.

    Umeyama's method without reflection. ``src`` and ``dst`` are ``(N, 2)`` with N >= 2. Returns
    the ``2×3`` matrix ``M`` with ``dst ≈ M @ [x, y, 1]``; ``weights`` (N, non-negative) weigh
    each pair's squared error. Raises ValueError for NaN/inf,
    mismatched shapes, or fewer than two distinct points on either side.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.ndim != 2 or src.shape[1] != 2 or src.shape != dst.shape:
        raise ValueError(f"src and dst must both be (N, 2) arrays of matching shape, got {src.shape} and {dst.shape}")
    if src.shape[0] < 2:
        raise ValueError(f"a similarity transform needs at least 2 point pairs, got {src.shape[0]}")
    if not (np.isfinite(src).all() and np.isfinite(dst).all()):
        raise ValueError("src and dst must be finite; got NaN or inf (a failed detection?)")
    w = np.ones(src.shape[0]) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (src.shape[0],) or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"weights must be {src.shape[0]} non-negative numbers, got {weights!r}")
    return _fit_similarity(src, dst, w / w.sum())


def _fit_similarity(src: np.ndarray, dst: np.ndarray, w: np.ndarray) -> np.ndarray:
    """:func:`estimate_similarity` on checked float64 points, with weights that sum to 1."""
    src_mean, dst_mean = (w[:, None] * src).sum(axis=0), (w[:, None] * dst).sum(axis=0)
    src_centred, dst_centred = src - src_mean, dst - dst_mean
    src_var = float((w * (src_centred ** 2).sum(axis=1)).sum())
    dst_var = float((w * (dst_centred ** 2).sum(axis=1)).sum())
    # Relative tolerance: points within ~1e-6 of the spread of coordinates count as identical.
    tiny = 1e-12 * max(1.0, float(np.abs(src).max()), float(np.abs(dst).max())) ** 2
    if src_var <= tiny or dst_var <= tiny:
        raise ValueError("src and dst need at least 2 distinct points each; all points coincide")
    # In 2-D, Umeyama's rotation-only solution (SVD of the covariance, reflection ruled out) has
    # a closed form: scale * rotation = [[a, -b], [b, a]] with a and b the weighted dot and cross
    # products of the centred points over src_var. Same result, without a LAPACK call per face.
    sx, sy = src_centred[:, 0], src_centred[:, 1]
    dx, dy = dst_centred[:, 0], dst_centred[:, 1]
    a = float((w * (sx * dx + sy * dy)).sum()) / src_var
    b = float((w * (sx * dy - sy * dx)).sum()) / src_var
    linear = np.array([[a, -b], [b, a]])
    translation = dst_mean - linear @ src_mean
    return np.hstack([linear, translation[:, None]])


def warp_affine(rgb: np.ndarray, matrix: np.ndarray, output_size: tuple[int, int]) -> np.ndarray:
    """Warp ``rgb`` by the ``2×3`` source-to-destination ``matrix`` into ``output_size = (h, w)``.

    Bilinear, black outside the source. Pixel-index coordinates (see the module docstring).
    """
    return _warp(Image.fromarray(_rgb(rgb)), matrix, output_size)


def _warp(image: Image.Image, matrix: np.ndarray, output_size: tuple[int, int]) -> np.ndarray:
    """:func:`warp_affine` on an RGB PIL image. Pillow computes only the output pixels, so the
    cost does not depend on the source's size; what made aligning a camera frame slow was
    copying the whole frame into Pillow first, which the pipeline avoids by passing its image."""
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.shape != (2, 3) or not np.isfinite(matrix).all():
        raise ValueError(f"matrix must be a finite 2x3 affine matrix, got shape {matrix.shape}")
    height, width = _size(output_size)
    linear = matrix[:, :2]
    det = linear[0, 0] * linear[1, 1] - linear[0, 1] * linear[1, 0]
    if abs(det) < 1e-12:
        raise ValueError("matrix is singular (zero scale); it cannot be inverted for warping")
    # Invert the affine map (output pixel -> source pixel), then shift the index-space inverse
    # into Pillow's convention, which maps each output pixel's continuous centre (index + 0.5)
    # to continuous source coordinates: x_src + 0.5 = A (x_out + 0.5 - 0.5) + b + 0.5.
    inverse = np.array([[linear[1, 1], -linear[0, 1]], [-linear[1, 0], linear[0, 0]]]) / det
    offset = -inverse @ matrix[:, 2] + 0.5 - inverse.sum(axis=1) * 0.5
    coefficients = (inverse[0, 0], inverse[0, 1], offset[0], inverse[1, 0], inverse[1, 1], offset[1])
    warped = image.transform((width, height), Image.Transform.AFFINE, coefficients,
                             resample=Image.Resampling.BILINEAR, fillcolor=(0, 0, 0))
    return np.asarray(warped)


def alignment_matrix(keypoints: np.ndarray, input_size: tuple[int, int], template: str = "arcface") -> np.ndarray:
    """The ``2×3`` matrix taking detector keypoints (continuous image coordinates, BlazeFace order)
    to the template at ``input_size``, in pixel-index coordinates."""
    keypoints = np.asarray(keypoints, dtype=np.float64)
    if keypoints.ndim != 2 or keypoints.shape[1] != 2 or keypoints.shape[0] < len(ALIGNMENT_KEYPOINTS):
        raise ValueError(f"keypoints must be (6, 2) in BlazeFace order (right eye, left eye, nose tip, mouth "
                         f"centre, ...), got shape {keypoints.shape}")
    src = keypoints[list(ALIGNMENT_KEYPOINTS)] - 0.5  # continuous -> pixel-index coordinates
    if not np.isfinite(src).all():
        raise ValueError("keypoints must be finite; got NaN or inf (a failed detection?)")
    dst, weights = _template_target(template, _size(input_size))
    return _fit_similarity(src, dst, weights)


@functools.lru_cache(maxsize=32)
def _template_target(template: str, input_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The template's points at ``input_size`` and its normalised weights, computed once per face
    size rather than once per face."""
    dst = template_points(template, input_size)
    weights = TEMPLATES[template].weights / TEMPLATES[template].weights.sum()
    dst.setflags(write=False)
    weights.setflags(write=False)
    return dst, weights


def align_face(rgb: np.ndarray, keypoints: np.ndarray, input_size: tuple[int, int],
               template: str = "arcface") -> np.ndarray:
    """Crop of ``input_size = (h, w)`` with the face's eyes, nose and mouth on the template.

    ``keypoints`` are a :class:`~edgeface_runtime._detector.Face`'s (6×2, continuous image
    coordinates); ``template="none"`` falls back to :func:`center_crop`.
    """
    if template == "none":
        return center_crop(rgb, input_size)
    return warp_affine(rgb, alignment_matrix(keypoints, input_size, template), input_size)


def _align_image(image: Image.Image, keypoints: np.ndarray, input_size: tuple[int, int],
                 template: str = "arcface") -> np.ndarray:
    """:func:`align_face` on an RGB PIL image (the pipeline's)."""
    if template == "none":
        return _center_crop(image, input_size)
    return _warp(image, alignment_matrix(keypoints, input_size, template), input_size)


def center_crop(rgb: np.ndarray, input_size: tuple[int, int]) -> np.ndarray:
    """The largest centred crop with ``input_size``'s aspect ratio, resized to ``input_size = (h, w)``.

    For images that already are face crops (``alignment="none"``); a square size gives a centre square.
    """
    return _center_crop(Image.fromarray(_rgb(rgb)), input_size)


def _center_crop(image: Image.Image, input_size: tuple[int, int]) -> np.ndarray:
    height, width = _size(input_size)
    src_w, src_h = image.size
    crop_w = min(src_w, max(1, round(src_h * width / height)))
    crop_h = min(src_h, max(1, round(crop_w * height / width)))
    left, top = (src_w - crop_w) // 2, (src_h - crop_h) // 2
    # Crop first: resize(box=...) would blend in pixels from outside the box at its edges.
    resized = image.crop((left, top, left + crop_w, top + crop_h)).resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(resized)


def _rgb(rgb: np.ndarray) -> np.ndarray:
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        got = f"shape {rgb.shape}, dtype {rgb.dtype}" if isinstance(rgb, np.ndarray) else type(rgb).__name__
        raise ValueError(f"expected an H×W×3 uint8 RGB array, got {got}; convert with "
                         "np.asarray(PIL.Image.open(path).convert('RGB'))")
    if rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ValueError(f"expected a non-empty image, got shape {rgb.shape}")
    return np.ascontiguousarray(rgb)


def _size(size: tuple[int, int]) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ValueError(f"size must be (height, width), got {size!r}") from None
    if height < 1 or width < 1:
        raise ValueError(f"size must be positive (height, width), got {size!r}")
    return height, width
