"""Face detection with MediaPipe's BlazeFace models (short- and full-range), numpy only.

The pipeline follows MediaPipe's ``face_detection.pbtxt`` graph: letterbox the frame into the
model's square input (aspect ratio kept, black borders), scale pixels to [-1, 1], decode the
box and keypoint regressors against SSD anchors, sigmoid the scores, merge overlapping
candidates with MediaPipe's *weighted* non-maximum suppression, and map the result back
through the letterbox to image pixels.

Coordinates of a :class:`Face` are continuous image coordinates: ``x`` runs from 0 (left edge
of the first pixel column) to ``width`` (right edge of the last), so the centre of pixel
column ``i`` is ``i + 0.5``.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np
from PIL import Image

from ._errors import InterpreterError, ModelError
from ._interpreter import Engine
from .registry import Registry

logger = logging.getLogger(__name__)

KEYPOINT_NAMES = (
    "right_eye", "left_eye", "nose_tip", "mouth_center", "right_ear_tragion", "left_ear_tragion",
)
"""Order of :attr:`Face.keypoints`. "Right" is the subject's right: image-left in a non-mirrored photo."""


@dataclass(frozen=True)
class AnchorOptions:
    """MediaPipe ``SsdAnchorsCalculatorOptions`` (only the fields these models use)."""

    num_layers: int
    strides: tuple[int, ...]
    min_scale: float = 0.1484375
    max_scale: float = 0.75
    anchor_offset_x: float = 0.5
    anchor_offset_y: float = 0.5
    aspect_ratios: tuple[float, ...] = (1.0,)
    fixed_anchor_size: bool = True
    interpolated_scale_aspect_ratio: float = 1.0


@dataclass(frozen=True)
class DecodeOptions:
    """MediaPipe ``TensorsToDetectionsCalculatorOptions`` plus the NMS threshold of the graph."""

    num_boxes: int
    x_scale: float
    y_scale: float
    w_scale: float
    h_scale: float
    min_score_thresh: float
    num_keypoints: int = 6
    score_clipping_thresh: float = 100.0
    min_suppression_threshold: float = 0.3  # IoU above which candidates are merged (WEIGHTED NMS)


@dataclass(frozen=True)
class DetectorSpec:
    """One BlazeFace variant: where to get it and how to decode it."""

    name: str
    filename: str
    input_size: tuple[int, int]  # (height, width) of the model input
    anchors: AnchorOptions
    decode: DecodeOptions
    sha256: str
    size: int  # bytes: a download is cut off beyond it
    url: str
    description: str


# Options from mediapipe/modules/face_detection/face_detection_{short,full}_range.pbtxt and the
# shared face_detection.pbtxt they instantiate; checksums from ../shared/README.md.
DETECTORS: Registry[DetectorSpec] = Registry("detector variant", [
    DetectorSpec(
        name="short",
        filename="face_detection_short_range.tflite",
        input_size=(128, 128),
        anchors=AnchorOptions(num_layers=4, strides=(8, 16, 16, 16), interpolated_scale_aspect_ratio=1.0),
        decode=DecodeOptions(num_boxes=896, x_scale=128.0, y_scale=128.0, w_scale=128.0, h_scale=128.0,
                             min_score_thresh=0.5),
        sha256="3bc182eb9f33925d9e58b5c8d59308a760f4adea8f282370e428c51212c26633",
        size=229_032,
        url="https://storage.googleapis.com/mediapipe-assets/face_detection_short_range.tflite",
        description="faces within about 2 m of the camera (kiosks, doors)",
    ),
    DetectorSpec(
        name="full",
        filename="face_detection_full_range.tflite",
        input_size=(192, 192),
        anchors=AnchorOptions(num_layers=1, strides=(4,), interpolated_scale_aspect_ratio=0.0),
        decode=DecodeOptions(num_boxes=2304, x_scale=192.0, y_scale=192.0, w_scale=192.0, h_scale=192.0,
                             min_score_thresh=0.6),
        sha256="99bf9494d84f50acc6617d89873f71bf6635a841ea699c17cb3377f9507cfec3",
        size=1_083_984,
        url="https://storage.googleapis.com/mediapipe-assets/face_detection_full_range.tflite",
        description="faces up to about 5 m from the camera",
    ),
])


@dataclass(frozen=True, eq=False)  # eq=False: comparing/hashing a numpy field would raise
class Face:
    """One detected face, in image pixel coordinates (see the module docstring)."""

    box: tuple[float, float, float, float]  # (x0, y0, x1, y1), clipped to the image
    score: float
    keypoints: np.ndarray  # (6, 2) x, y in KEYPOINT_NAMES order; not clipped (ears may lie outside)

    @property
    def area(self) -> float:
        x0, y0, x1, y1 = self.box
        return max(0.0, x1 - x0) * max(0.0, y1 - y0)

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]


# ---------------------------------------------------------------------------------------------
# Anchors


def _anchor_scale(min_scale: float, max_scale: float, index: int, count: int) -> float:
    if count == 1:
        return (min_scale + max_scale) * 0.5
    return min_scale + (max_scale - min_scale) * index / (count - 1.0)


def generate_anchors(options: AnchorOptions, input_size: tuple[int, int]) -> np.ndarray:
    """SSD anchors as MediaPipe's SsdAnchorsCalculator makes them: ``(N, 4)`` float32 of
    ``(x_center, y_center, width, height)``, normalised to the model input.

    Consecutive layers with the same stride share one feature map; each cell of that map gets
    one anchor per (layer, aspect ratio), plus one interpolated-scale anchor per layer when
    ``interpolated_scale_aspect_ratio > 0``, in that order (the model's output order).
    """
    height, width = input_size
    strides = options.strides
    if options.num_layers != len(strides):
        raise ValueError(f"num_layers ({options.num_layers}) must equal the number of strides ({len(strides)})")
    blocks = []
    layer = 0
    while layer < len(strides):
        sizes = []  # (w, h) of every anchor in one cell of this feature map
        last = layer
        while last < len(strides) and strides[last] == strides[layer]:
            scale = _anchor_scale(options.min_scale, options.max_scale, last, len(strides))
            for ratio in options.aspect_ratios:
                sizes.append((scale * math.sqrt(ratio), scale / math.sqrt(ratio)))
            if options.interpolated_scale_aspect_ratio > 0.0:
                next_scale = 1.0 if last == len(strides) - 1 else _anchor_scale(
                    options.min_scale, options.max_scale, last + 1, len(strides))
                ratio = options.interpolated_scale_aspect_ratio
                mean_scale = math.sqrt(scale * next_scale)
                sizes.append((mean_scale * math.sqrt(ratio), mean_scale / math.sqrt(ratio)))
            last += 1
        stride = strides[layer]
        rows, cols = math.ceil(height / stride), math.ceil(width / stride)
        ys, xs = np.meshgrid((np.arange(rows) + options.anchor_offset_y) / rows,
                             (np.arange(cols) + options.anchor_offset_x) / cols, indexing="ij")
        centres = np.repeat(np.stack([xs.ravel(), ys.ravel()], axis=1), len(sizes), axis=0)
        wh = np.ones((len(centres), 2)) if options.fixed_anchor_size else np.tile(np.array(sizes), (rows * cols, 1))
        blocks.append(np.concatenate([centres, wh], axis=1))
        layer = last
    return np.concatenate(blocks, axis=0).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Decoding and NMS (all in normalised model-input coordinates)


def _logit_floor(min_score: float, clip: float) -> Optional[float]:
    """A raw score below which no candidate can reach ``min_score``; None: score them all.

    The sigmoid is monotonic, so candidates are picked on the raw logits and only those few
    are scored (clipped, in float64, as before). One unit of margin below the threshold's
    logit keeps every candidate that rounding could still carry over the threshold."""
    if not 1e-12 < min_score < 1.0 - 1e-12:
        return None
    floor = math.log(min_score) - math.log1p(-min_score) - 1.0
    return floor if -clip < floor < clip else None


@functools.lru_cache(maxsize=16)
def _pair_transform(options: DecodeOptions) -> tuple[np.ndarray, np.ndarray]:
    """``(divisors, shifts)`` for a regressor row's (x, y) pairs: box centre, box size, keypoints.

    Each pair is divided by its scale and multiplied by the anchor's size; all but the size
    then move by the anchor's centre (shift 1, the size's 0)."""
    pairs = options.num_keypoints + 2
    divisors = np.tile([options.x_scale, options.y_scale], (pairs, 1)).astype(np.float64)
    divisors[1] = options.w_scale, options.h_scale
    shifts = np.ones((pairs, 1))
    shifts[1] = 0.0
    divisors.setflags(write=False)
    shifts.setflags(write=False)
    return divisors, shifts


def decode_detections(regressors: np.ndarray, raw_scores: np.ndarray, anchors: np.ndarray,
                      options: DecodeOptions, min_score: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Turn raw model outputs into candidate detections above ``min_score``.

    Returns ``boxes (M, 4)`` as normalised (xmin, ymin, xmax, ymax), ``keypoints (M, K, 2)`` and
    ``scores (M,)``. The regressors are (x, y, w, h, then K keypoint x, y) in input pixels,
    relative to the anchor centre (MediaPipe's ``reverse_output_order: true`` layout).
    Few array operations, on the few candidates: this runs once per frame.
    """
    regressors = regressors.reshape(-1, regressors.shape[-1])
    logits = raw_scores.reshape(-1)
    clip = options.score_clipping_thresh
    floor = _logit_floor(min_score, clip)
    keep = np.arange(logits.size) if floor is None else np.flatnonzero(logits >= floor)
    # float64: exp(100) (the clipping bound) overflows float32.
    scores = 1.0 / (1.0 + np.exp(-np.minimum(np.maximum(logits[keep].astype(np.float64), -clip), clip)))
    passed = scores >= min_score
    keep, scores = keep[passed], scores[passed]
    divisors, shifts = _pair_transform(options)
    anchor = anchors[keep].astype(np.float64)
    pairs = regressors[keep, :2 * len(shifts)].astype(np.float64).reshape(-1, len(shifts), 2)
    pairs /= divisors
    pairs *= anchor[:, None, 2:4]
    pairs += anchor[:, None, 0:2] * shifts
    centre, half = pairs[:, 0], pairs[:, 1] / 2
    boxes = np.concatenate([centre - half, centre + half], axis=1)
    valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])  # MediaPipe drops inverted boxes
    return boxes[valid], pairs[valid, 2:], scores[valid]


def _iou_matrix(boxes: np.ndarray) -> np.ndarray:
    """IoU of every pair of (xmin, ymin, xmax, ymax) boxes (0 where they do not overlap)."""
    low = np.maximum(boxes[:, None, :2], boxes[None, :, :2])
    high = np.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
    sides = np.maximum(high - low, 0.0)
    inter = sides[..., 0] * sides[..., 1]
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area[:, None] + area[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def weighted_nms(boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray,
                 iou_threshold: float = 0.3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MediaPipe's WEIGHTED non-maximum suppression.

    Repeatedly takes the best-scoring remaining candidate, gathers every remaining candidate
    whose IoU with it exceeds ``iou_threshold`` (itself included), and replaces the cluster by
    the score-weighted mean of its boxes and keypoints, keeping the best score. The IoUs are
    computed once for all pairs (a few dozen candidates at most); the loop runs once per face.
    """
    count = len(scores)
    if count == 0:
        return np.zeros((0, 4)), np.zeros((0,) + keypoints.shape[1:]), np.zeros((0,))
    order = np.argsort(-scores, kind="stable")
    scores = scores[order]
    # Boxes and keypoints side by side, so one product averages both.
    values = np.concatenate([boxes[order], keypoints[order].reshape(count, -1)], axis=1)
    overlapping = _iou_matrix(values[:, :4]) > iou_threshold
    overlapping.flat[:: count + 1] = True  # the diagonal: a degenerate (zero-area) best box still forms its own cluster
    remaining = np.ones(count, dtype=bool)
    merged, best_scores = [], []
    for best in range(count):
        if not remaining[best]:
            continue
        cluster = overlapping[best] & remaining
        remaining &= ~cluster
        weights = scores[cluster]
        merged.append(weights @ values[cluster] / weights.sum())
        best_scores.append(scores[best])
    rows = np.array(merged)
    return rows[:, :4], rows[:, 4:].reshape((len(rows),) + keypoints.shape[1:]), np.array(best_scores)


# ---------------------------------------------------------------------------------------------
# The detector

_REDUCING_GAP = 1.0
# Block averaging alone serves when its image fills at least this share of what a resize would.
_REDUCE_ONLY_MIN_FILL = 0.95
# A detector run below its own input size has chosen speed: there 85 % will do, so a 250x250
# LFW photo becomes 84x84 (3x3 blocks) at 96 instead of a 0.2 ms bilinear resize to 96x96. On
# LFW folds 6-10 (3,000 pairs, the distilled int8 model): 91.4 % against 91.8 % with the resize
# and 91.6 % at 128, the same within the folds' noise.
_REDUCE_ONLY_MIN_FILL_FAST = 0.85
# A resized input must keep whole cells on the coarsest anchor grid (stride 16).
_INPUT_SIZE_STEP = 16
_INPUT_SIZE_RANGE = (64, 512)


def _check_input_size(input_size: object) -> int:
    if isinstance(input_size, bool) or not isinstance(input_size, (int, np.integer)):
        raise ValueError(f"input_size must be an int (pixels per side), got {input_size!r}")
    low, high = _INPUT_SIZE_RANGE
    if not low <= input_size <= high or input_size % _INPUT_SIZE_STEP:
        raise ValueError(f"input_size must be a multiple of {_INPUT_SIZE_STEP} between {low} and {high}, "
                         f"got {input_size}; 96 is fast for close faces, 160-192 finds smaller ones")
    return int(input_size)


class FaceDetector:
    """Detects faces in RGB frames with a BlazeFace ``.tflite`` model.

    Build it with :meth:`from_path` (a local file) or :meth:`default` (the official file,
    downloaded once into the cache). Anchors are computed once here; :meth:`detect` is
    vectorised and safe to call from several threads (the engine serialises inference).

    ``input_size`` runs the short-range model at another square size (a multiple of 16; the
    network is fully convolutional, anchors and decoding follow the size). The network needs a
    face about 12 px wide in its input, so the size trades speed for the smallest face found:
    96 halves the inference but needs faces about a sixth of the frame wide (128: a ninth);
    192 costs 2.2x and finds faces a twelfth wide (see the README).
    """

    def __init__(self, model: bytes, variant: Optional[str] = None, *, min_score: Optional[float] = None,
                 num_threads: Optional[int] = 1, interpreter: Optional[str] = None,
                 description: str = "face detector", input_size: Optional[int] = None) -> None:
        if input_size is not None:
            input_size = _check_input_size(input_size)
        self._engine = Engine(model, num_threads=num_threads, interpreter=interpreter, description=description)
        try:
            self._setup(variant, min_score, description, input_size)
        except Exception:
            self._engine.close()
            raise

    def _setup(self, variant: Optional[str], min_score: Optional[float], description: str,
               resized: Optional[int]) -> None:
        inputs, outputs = self._engine.input_details, self._engine.output_details
        if len(inputs) != 1 or len(inputs[0]["shape"]) != 4 or inputs[0]["shape"][3] != 3:
            raise ModelError(f"{description} is not a BlazeFace model: expected one NHWC RGB input, "
                             f"got {[tuple(d['shape']) for d in inputs]}")
        if inputs[0]["dtype"] != np.float32:
            raise ModelError(f"{description}: only float32-input BlazeFace models are supported, "
                             f"got {np.dtype(inputs[0]['dtype']).name}")
        input_size = (int(inputs[0]["shape"][1]), int(inputs[0]["shape"][2]))
        if variant is None:
            matches = [name for name, spec in DETECTORS.items() if spec.input_size == input_size]
            if not matches:
                raise ModelError(f"{description} has input size {input_size}, which matches no known BlazeFace "
                                 f"variant {({n: s.input_size for n, s in DETECTORS.items()})}; pass variant=")
            variant = matches[0]
        spec = DETECTORS[variant]  # an unknown name: a ValueError naming the closest and the choices
        if spec.input_size != input_size:
            raise ModelError(f"{description} takes {input_size[0]}x{input_size[1]} input, but the {variant!r} "
                             f"detector takes {spec.input_size[0]}x{spec.input_size[1]}; pass the matching variant")
        self.spec = spec
        self._decode = spec.decode
        if resized is not None and (resized, resized) != input_size:
            self._resize(resized, description)
            input_size, outputs = (resized, resized), self._engine.output_details
        self.input_size = input_size
        self._min_fill = _REDUCE_ONLY_MIN_FILL_FAST if input_size < spec.input_size else _REDUCE_ONLY_MIN_FILL
        self.min_score = spec.decode.min_score_thresh if min_score is None else float(min_score)
        if not 0.0 < self.min_score < 1.0:
            raise ValueError(f"min_score must be in (0, 1), got {min_score!r}")
        self.anchors = generate_anchors(spec.anchors, input_size)
        if input_size != spec.input_size:
            # Regressors are in input pixels: decode them against the size the model now sees.
            height, width = input_size
            self._decode = dataclasses.replace(spec.decode, num_boxes=len(self.anchors), x_scale=float(width),
                                               y_scale=float(height), w_scale=float(width), h_scale=float(height))
        # Which output is which: by shape (the files name and order them differently).
        coords = 4 + 2 * spec.decode.num_keypoints
        by_width = {int(d["shape"][-1]): d["index"] for d in outputs}
        counts = {int(np.prod(d["shape"][:-1])) for d in outputs}
        if len(outputs) != 2 or set(by_width) != {coords, 1} or counts != {len(self.anchors)}:
            raise ModelError(
                f"{description} outputs {[tuple(d['shape']) for d in outputs]}; the {variant!r} BlazeFace detector "
                f"should output regressors (1, {len(self.anchors)}, {coords}) and scores (1, {len(self.anchors)}, 1)")
        order = [d["index"] for d in outputs]
        self._regressor_slot, self._score_slot = order.index(by_width[coords]), order.index(by_width[1])

    @classmethod
    def from_path(cls, path: Union[str, PathLike], variant: Optional[str] = None, *,
                  min_score: Optional[float] = None, num_threads: Optional[int] = 1,
                  interpreter: Optional[str] = None, input_size: Optional[int] = None) -> "FaceDetector":
        """Load a BlazeFace ``.tflite``; ``variant`` ("short"/"full") is inferred from its input size when None."""
        path = Path(path)
        try:
            model = path.read_bytes()
        except FileNotFoundError:
            raise ModelError(f"face detector file not found: {path}; pass the path of face_detection_short_range"
                             ".tflite or face_detection_full_range.tflite, or use FaceDetector.default()") from None
        except OSError as exc:
            raise ModelError(f"cannot read face detector {path}: {exc}") from exc
        return cls(model, variant, min_score=min_score, num_threads=num_threads, interpreter=interpreter,
                   description=f"face detector {path.name}", input_size=input_size)

    @classmethod
    def default(cls, variant: str = "short", *, min_score: Optional[float] = None,
                num_threads: Optional[int] = 1, interpreter: Optional[str] = None,
                input_size: Optional[int] = None) -> "FaceDetector":
        """The official MediaPipe model for ``variant``: bundled with the package, else from the cache
        or downloaded (checksum-verified)."""
        from ._bundled import bundled_detector
        from ._download import default_detector_path

        return cls.from_path(bundled_detector(variant) or default_detector_path(variant), variant, min_score=min_score,
                             num_threads=num_threads, interpreter=interpreter, input_size=input_size)

    @property
    def variant(self) -> str:
        return self.spec.name

    def _resize(self, size: int, description: str) -> None:
        try:
            self._engine.resize_input((1, size, size, 3))
        except InterpreterError as exc:
            native = self.spec.input_size[0]
            raise ValueError(
                f"{description} cannot run at {size}x{size}: its graph has fixed-size layers (the full-range "
                f"BlazeFace does); leave input_size unset to use its own {native}x{native}, or use the short-range "
                f"model, which takes any multiple of {_INPUT_SIZE_STEP} ({exc})") from exc

    def _letterbox(self, image: Image.Image) -> tuple[np.ndarray, tuple[float, float, float, float]]:
        """The model input, and (scale_x, scale_y, pad_x, pad_y) mapping image to input pixels."""
        width, height = image.size
        in_h, in_w = self.input_size
        scale = min(in_w / width, in_h / height)
        factor = math.ceil(1.0 / scale)
        if factor >= 2 and scale * factor <= 1.0 / self._min_fill:
            # Whole k×k blocks averaged and nothing else when that fills (nearly) as much of the
            # input as a resize would: a 250×250 LFW photo becomes 125×125 instead of 128×128 and
            # the face 2 % smaller, for a tenth of the CPU of Pillow's antialiased bilinear resize
            # (five taps per axis at scale 0.51). Pillow rounds partial blocks up.
            image = image.reduce(factor)
            new_w, new_h = image.size
            scale_x = scale_y = 1.0 / factor
        else:
            new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
            if (new_w, new_h) != (width, height):
                # Pillow's bilinear resize widens its filter with the scale (antialiasing): ten taps
                # per output pixel and axis for a 640x480 frame. reducing_gap=1 first averages whole
                # k×k blocks (k = the integer part of the scale; area averaging, like OpenCV's
                # INTER_AREA), then resizes bilinearly by the remaining factor (< 2): about 3x faster
                # on frames, and no worse: on 509 LFW faces pasted into 640x480 frames the eyes land
                # as close to where they are found in the photo alone (mean error 8.21 px against
                # 8.23 px).
                image = image.resize((new_w, new_h), Image.Resampling.BILINEAR, reducing_gap=_REDUCING_GAP)
            scale_x, scale_y = new_w / width, new_h / height
        pad_x, pad_y = (in_w - new_w) // 2, (in_h - new_h) // 2
        # Black border (-1 after scaling): MediaPipe's BORDER_ZERO pads pixels before normalising.
        # A fresh buffer per call keeps detect() safe to call from several threads.
        tensor = np.empty((1, in_h, in_w, 3), dtype=np.float32)
        if new_h < in_h:
            tensor[0, :pad_y] = -1.0
            tensor[0, pad_y + new_h:] = -1.0
        if new_w < in_w:
            tensor[0, :, :pad_x] = -1.0
            tensor[0, :, pad_x + new_w:] = -1.0
        # Scaled to [-1, 1] straight into the tensor: x * (2/255) - 1 in float32, no temporaries.
        region = tensor[0, pad_y:pad_y + new_h, pad_x:pad_x + new_w]
        np.multiply(np.asarray(image), np.float32(2.0 / 255.0), out=region, dtype=np.float32)
        region -= np.float32(1.0)
        return tensor, (scale_x, scale_y, float(pad_x), float(pad_y))

    def detect(self, image: Union[np.ndarray, Image.Image]) -> list[Face]:
        """Faces in an ``H×W×3`` uint8 RGB array or an RGB PIL image, largest first (empty list when there are none)."""
        if isinstance(image, Image.Image):
            if image.mode != "RGB":
                raise ValueError(f"detect() takes an RGB image, got a PIL image in mode {image.mode!r}; "
                                 "convert it with image.convert('RGB')")
            width, height = image.size
        else:
            if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                got = (f"shape {image.shape}, dtype {image.dtype}" if isinstance(image, np.ndarray)
                       else type(image).__name__)
                raise ValueError(f"detect() takes an H×W×3 uint8 RGB array, got {got}; convert with "
                                 "np.asarray(PIL.Image.open(path).convert('RGB'))")
            height, width = image.shape[:2]
        if height == 0 or width == 0:
            raise ValueError(f"detect() got an empty image of size {width}x{height}")
        if isinstance(image, np.ndarray):
            image = Image.fromarray(np.ascontiguousarray(image))
        tensor, (scale_x, scale_y, pad_x, pad_y) = self._letterbox(image)
        outputs = self._engine.run(tensor)
        boxes, keypoints, scores = decode_detections(
            outputs[self._regressor_slot], outputs[self._score_slot], self.anchors, self._decode, self.min_score)
        boxes, keypoints, scores = weighted_nms(boxes, keypoints, scores, self._decode.min_suppression_threshold)
        # Normalised model input -> input pixels -> image pixels (undo the letterbox).
        in_h, in_w = self.input_size
        to_image = np.array([in_w / scale_x, in_h / scale_y])
        offset = np.array([pad_x / scale_x, pad_y / scale_y])
        boxes = (boxes.reshape(-1, 2, 2) * to_image - offset).reshape(-1, 4)
        keypoints = keypoints * to_image - offset
        boxes = np.minimum(np.maximum(boxes, 0.0), [width, height, width, height])
        faces = []
        for box, points, score in zip(boxes, keypoints, scores):
            if box[2] <= box[0] or box[3] <= box[1]:
                continue  # lay entirely in the letterbox border
            points = points.astype(np.float32)
            points.setflags(write=False)
            x0, y0, x1, y1 = (float(v) for v in box)
            faces.append(Face(box=(x0, y0, x1, y1), score=float(score), keypoints=points))
        faces.sort(key=lambda face: face.area, reverse=True)
        return faces

    def close(self) -> None:
        self._engine.close()

    def __enter__(self) -> "FaceDetector":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"FaceDetector(variant={self.variant!r}, input_size={self.input_size}, min_score={self.min_score})"


def download_detector(variant: str = "short", *,
                      progress: Optional[Callable[[int, Optional[int]], None]] = None) -> Path:
    """Fetch the official file for ``variant`` into the cache (a no-op when already there); its path.

    The one place, with :meth:`FaceDetector.default`, that may use the network.
    """
    from ._download import default_detector_path

    return default_detector_path(variant, progress=progress)


def resolve_detector_path(path: Union[str, PathLike, None] = None, variant: str = "short") -> Path:
    """``path`` itself, or with None the official ``variant`` file: the copy inside the package
    (the short-range model ships with edgeface-runtime), else the cache (no download).

    Raises :class:`ModelError` saying how to fetch it when it is neither bundled nor cached.
    """
    if path is not None:
        return Path(path)
    spec = DETECTORS[variant]
    from ._bundled import bundled_detector
    from ._download import default_cache_dir, find_cached

    bundled = bundled_detector(variant)
    if bundled is not None:
        return bundled
    cached = find_cached(spec.filename, spec.sha256)
    if cached is None:
        raise ModelError(
            f"no face detector given, and the official {variant!r} model ({spec.filename}) is not in the cache "
            f"{default_cache_dir()}; fetch it once with `edgeface download-detector --variant {variant}` or "
            f"edgeface_runtime.download_detector({variant!r}) (needs network), or pass a detector path")
    return cached


def largest_face(faces: Sequence[Face]) -> Optional[Face]:
    """The face with the largest box, or None."""
    return max(faces, key=lambda face: face.area, default=None)
