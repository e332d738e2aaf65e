"""BlazeFace detection: anchors, decoding, weighted NMS, and the real models on LFW.

Model files come from ``$EDGEFACE_MODELS_DIR`` or ``../shared/models`` beside the checkout;
LFW from ``$EDGEFACE_DATA_HOME/lfw/lfw-deepfunneled``. Tests needing either skip without it.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgeface_runtime._align import alignment_matrix, template_points
from edgeface_runtime._detector import (
    DETECTORS,
    KEYPOINT_NAMES,
    AnchorOptions,
    Face,
    FaceDetector,
    decode_detections,
    generate_anchors,
    weighted_nms,
)
from edgeface_runtime._errors import ModelError

logger = logging.getLogger(__name__)

LFW_STEP = 26  # every 26th of the 13,233 sorted LFW paths: 509 images
FULL_RANGE_STEP = 100  # 133 images


def models_dir() -> Path:
    configured = os.environ.get("EDGEFACE_MODELS_DIR")
    return Path(configured) if configured else Path(__file__).resolve().parents[2].parent / "shared" / "models"


def model_path(variant: str) -> Path:
    path = models_dir() / DETECTORS[variant].filename
    if not path.is_file():
        pytest.skip(f"detector model {path} not found; set EDGEFACE_MODELS_DIR to the folder holding "
                    f"{DETECTORS[variant].filename}")
    return path


@pytest.fixture(scope="module")
def short_detector():
    with FaceDetector.from_path(model_path("short")) as detector:
        yield detector


@pytest.fixture(scope="module")
def full_detector():
    with FaceDetector.from_path(model_path("full")) as detector:
        yield detector


@pytest.fixture(scope="module")
def lfw_paths() -> list[Path]:
    home = os.environ.get("EDGEFACE_DATA_HOME")
    if not home:
        pytest.skip("EDGEFACE_DATA_HOME is not set; point it at the folder holding lfw/lfw-deepfunneled")
    root = Path(home) / "lfw" / "lfw-deepfunneled"
    paths = sorted(root.glob("*/*.jpg"))
    if not paths:
        pytest.skip(f"no LFW images under {root}")
    return paths


def load_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


# ---------------------------------------------------------------------------------------------
# Anchors


def test_anchor_counts_and_layout():
    short = generate_anchors(DETECTORS["short"].anchors, (128, 128))
    full = generate_anchors(DETECTORS["full"].anchors, (192, 192))
    assert short.shape == (896, 4) and full.shape == (2304, 4)
    for anchors in (short, full):
        assert anchors.dtype == np.float32
        assert np.all((anchors[:, :2] > 0) & (anchors[:, :2] < 1))
        np.testing.assert_array_equal(anchors[:, 2:], 1.0)  # fixed_anchor_size
    # Short range: 16x16 cells x 2 anchors (stride 8), then 8x8 cells x 6 (three stride-16 layers).
    first, second = short[:512], short[512:]
    np.testing.assert_allclose(first[0, :2], [0.5 / 16, 0.5 / 16])
    np.testing.assert_array_equal(first[0::2], first[1::2])  # two anchors share each cell
    np.testing.assert_allclose(first[2, :2], [1.5 / 16, 0.5 / 16])  # x runs fastest, then y
    np.testing.assert_allclose(first[32, :2], [0.5 / 16, 1.5 / 16])
    assert len(np.unique(second[:, :2], axis=0)) == 64
    np.testing.assert_allclose(second[:6, :2], [[0.5 / 8, 0.5 / 8]] * 6)
    np.testing.assert_allclose(second[-1, :2], [7.5 / 8, 7.5 / 8])
    # Full range: one anchor per cell of a 48x48 map.
    assert len(np.unique(full[:, :2], axis=0)) == 2304
    np.testing.assert_allclose(full[[0, 1, 48, -1], :2],
                               [[0.5 / 48, 0.5 / 48], [1.5 / 48, 0.5 / 48], [0.5 / 48, 1.5 / 48], [47.5 / 48] * 2])


def test_anchor_sizes_when_not_fixed():
    options = AnchorOptions(num_layers=2, strides=(8, 16), min_scale=0.2, max_scale=0.6,
                            aspect_ratios=(1.0, 4.0), fixed_anchor_size=False, interpolated_scale_aspect_ratio=1.0)
    anchors = generate_anchors(options, (64, 64))
    assert anchors.shape == (8 * 8 * 3 + 4 * 4 * 3, 4)
    # Layer 0: scale 0.2 at ratios 1 and 4 (w = s*sqrt(r), h = s/sqrt(r)), then sqrt(0.2*0.6) interpolated.
    np.testing.assert_allclose(anchors[:3, 2:], [[0.2, 0.2], [0.4, 0.1], [np.sqrt(0.12)] * 2], rtol=1e-6)
    # Last layer interpolates towards scale 1.
    np.testing.assert_allclose(anchors[-1, 2:], [np.sqrt(0.6)] * 2, rtol=1e-6)
    with pytest.raises(ValueError, match="num_layers"):
        generate_anchors(AnchorOptions(num_layers=3, strides=(8, 16)), (64, 64))


# ---------------------------------------------------------------------------------------------
# Decoding and NMS


def test_decode_offsets_scores_and_filtering():
    options = DETECTORS["short"].decode
    anchors = np.array([[0.25, 0.5, 1.0, 1.0], [0.75, 0.75, 1.0, 1.0], [0.5, 0.5, 1.0, 1.0]], dtype=np.float32)
    raw = np.zeros((1, 3, 16), dtype=np.float32)
    raw[0, 0, :4] = [12.8, -6.4, 32.0, 64.0]  # centre +0.1, -0.05; size 0.25 x 0.5 of the input
    raw[0, 0, 4:] = np.arange(12) * 1.28  # keypoint k: (+0.02 * 2k, +0.02 * (2k + 1)) from the anchor centre
    raw[0, 1, :4] = [0.0, 0.0, 10.0, 10.0]
    raw[0, 2, :4] = [0.0, 0.0, -5.0, 10.0]  # inverted width: dropped even though it scores high
    logits = np.array([[[2.0], [-1.0], [1e6]]], dtype=np.float32)  # 1e6: clipped to 100, no overflow
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        boxes, keypoints, scores = decode_detections(raw, logits, anchors, options, min_score=0.5)
    assert boxes.shape == (1, 4) and keypoints.shape == (1, 6, 2) and scores.shape == (1,)
    np.testing.assert_allclose(scores, [1 / (1 + np.exp(-2.0))])
    np.testing.assert_allclose(boxes[0], [0.35 - 0.125, 0.45 - 0.25, 0.35 + 0.125, 0.45 + 0.25], atol=1e-6)
    expected_kp = np.array([0.25, 0.5]) + 0.01 * np.arange(12).reshape(6, 2)
    np.testing.assert_allclose(keypoints[0], expected_kp, atol=1e-6)
    # A lower threshold admits the second anchor (sigmoid(-1) = 0.27).
    boxes, _, scores = decode_detections(raw, logits, anchors, options, min_score=0.2)
    assert len(scores) == 2


@pytest.mark.parametrize("min_score", [1e-300, 1e-13, 0.01, 0.5, 0.75, 0.999, 1 - 1e-13])
def test_decode_picks_on_logits_exactly_the_candidates_scoring_would(min_score):
    # The logit pre-filter must neither lose a candidate nor admit one: compare with scoring all.
    options = DETECTORS["short"].decode
    rng = np.random.default_rng(3)
    anchors = np.column_stack([rng.uniform(0, 1, (200, 2)), np.ones((200, 2))]).astype(np.float32)
    raw = rng.normal(0, 8, (1, 200, 16)).astype(np.float32)
    raw[0, :, 2:4] = np.abs(raw[0, :, 2:4]) + 1  # positive sizes: no box dropped as inverted
    logits = rng.normal(0, 12, (1, 200, 1)).astype(np.float32)
    logits[0, :5, 0] = [np.log(min_score / (1 - min_score)) if 0 < min_score < 1 else 0, 1e6, -1e6, 36.0, -36.0]
    _, _, scores = decode_detections(raw, logits, anchors, options, min_score=min_score)
    clipped = np.clip(logits.reshape(-1).astype(np.float64), -100, 100)
    everything = 1.0 / (1.0 + np.exp(-clipped))
    np.testing.assert_array_equal(scores, everything[everything >= min_score])


def reference_weighted_nms(boxes, keypoints, scores, iou_threshold):
    """MediaPipe's WEIGHTED NMS written out candidate by candidate, pairwise IoU included."""
    def iou(a, b):
        w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
        return w * h / union if union > 0 else 0.0

    remaining = sorted(range(len(scores)), key=lambda i: -scores[i])
    out = []
    while remaining:
        best = remaining[0]
        cluster = [i for i in remaining if i == best or iou(boxes[best], boxes[i]) > iou_threshold]
        weights = np.array([scores[i] for i in cluster]) / sum(scores[i] for i in cluster)
        out.append((weights @ boxes[cluster], np.tensordot(weights, keypoints[cluster], axes=1), scores[best]))
        remaining = [i for i in remaining if i not in cluster]
    return out


@pytest.mark.parametrize("seed", range(6))
def test_weighted_nms_equals_the_candidate_by_candidate_algorithm(seed):
    # Chains of overlapping boxes make the order of clustering matter.
    rng = np.random.default_rng(seed)
    count = int(rng.integers(1, 30))
    corners = rng.uniform(0, 0.7, (count, 2))
    boxes = np.hstack([corners, corners + rng.uniform(0.05, 0.3, (count, 2))])
    keypoints = rng.uniform(0, 1, (count, 6, 2))
    scores = rng.uniform(0.5, 1.0, count)
    got_boxes, got_keypoints, got_scores = weighted_nms(boxes, keypoints, scores, iou_threshold=0.3)
    want = reference_weighted_nms(boxes, keypoints, scores, 0.3)
    assert len(got_scores) == len(want)
    for i, (box, points, score) in enumerate(want):
        np.testing.assert_allclose(got_boxes[i], box, rtol=0, atol=1e-12)
        np.testing.assert_allclose(got_keypoints[i], points, rtol=0, atol=1e-12)
        assert got_scores[i] == score


def test_weighted_nms_merges_clusters_by_score():
    boxes = np.array([
        [0.10, 0.10, 0.50, 0.50],  # A, best
        [0.12, 0.12, 0.52, 0.52],  # overlaps A heavily (IoU ~0.82)
        [0.60, 0.60, 0.90, 0.90],  # separate face
        [0.30, 0.30, 0.70, 0.70],  # IoU with A = 0.04/0.28 ~ 0.14 < 0.3: kept apart
    ])
    keypoints = np.stack([np.tile(b[:2], (6, 1)) for b in boxes])
    scores = np.array([0.9, 0.6, 0.8, 0.7])
    out_boxes, out_kp, out_scores = weighted_nms(boxes, keypoints, scores, iou_threshold=0.3)
    np.testing.assert_allclose(out_scores, [0.9, 0.8, 0.7])  # best score of each cluster, in score order
    merged = (0.9 * boxes[0] + 0.6 * boxes[1]) / 1.5
    np.testing.assert_allclose(out_boxes[0], merged)
    np.testing.assert_allclose(out_kp[0], np.tile(merged[:2], (6, 1)))
    np.testing.assert_allclose(out_boxes[1:], boxes[[2, 3]])
    # Order of the input does not matter.
    perm = [3, 1, 2, 0]
    again = weighted_nms(boxes[perm], keypoints[perm], scores[perm], iou_threshold=0.3)
    np.testing.assert_allclose(again[0], out_boxes)
    # Nothing in, nothing out.
    empty = weighted_nms(np.zeros((0, 4)), np.zeros((0, 6, 2)), np.zeros(0))
    assert [a.shape for a in empty] == [(0, 4), (0, 6, 2), (0,)]


def test_face_dataclass():
    face = Face(box=(10.0, 20.0, 50.0, 100.0), score=0.9, keypoints=np.zeros((6, 2), dtype=np.float32))
    assert face.area == 40.0 * 80.0 and face.width == 40.0 and face.height == 80.0
    with pytest.raises(AttributeError):
        face.score = 0.1  # type: ignore[misc]
    assert face == face and len({face}) == 1  # hashable despite the array field
    assert len(KEYPOINT_NAMES) == 6 and KEYPOINT_NAMES[0] == "right_eye"


# ---------------------------------------------------------------------------------------------
# The real models


@pytest.mark.parametrize("variant", ["short", "full"])
def test_loads_and_infers_variant_from_input_size(variant):
    with FaceDetector.from_path(model_path(variant)) as detector:
        assert detector.variant == variant
        assert detector.input_size == DETECTORS[variant].input_size
        assert len(detector.anchors) == DETECTORS[variant].decode.num_boxes
        assert detector.min_score == DETECTORS[variant].decode.min_score_thresh
    other = "full" if variant == "short" else "short"
    with pytest.raises(ModelError, match="matching variant"):
        FaceDetector.from_path(model_path(variant), other)


def test_bad_arguments(short_detector, tmp_path):
    with pytest.raises(ValueError, match="unknown detector variant"):
        FaceDetector.from_path(model_path("short"), "tiny")
    with pytest.raises(ValueError, match="min_score"):
        FaceDetector.from_path(model_path("short"), min_score=1.5)
    with pytest.raises(ModelError, match="not found"):
        FaceDetector.from_path(tmp_path / "missing.tflite")
    with pytest.raises(ValueError, match="uint8 RGB"):
        short_detector.detect(np.zeros((48, 64, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="uint8 RGB"):
        short_detector.detect(np.zeros((48, 64), dtype=np.uint8))
    with pytest.raises(ValueError, match="empty"):
        short_detector.detect(np.zeros((0, 64, 3), dtype=np.uint8))


@pytest.mark.parametrize("variant", ["short", "full"])
@pytest.mark.parametrize("shape, fill", [((480, 640, 3), 0), ((300, 200, 3), 128), ((1, 1, 3), 255)])
def test_blank_image_has_no_face(variant, shape, fill):
    with FaceDetector.from_path(model_path(variant)) as detector:
        assert detector.detect(np.full(shape, fill, dtype=np.uint8)) == []


def test_resized_short_range_detector_decodes_against_its_own_grid():
    # 96x96: 12x12 cells x 2 anchors (stride 8) + 6x6 x 6 (stride 16) = 504, and the model's
    # outputs follow; a blank frame still has no face.
    with FaceDetector.from_path(model_path("short"), input_size=96) as detector:
        assert detector.input_size == (96, 96)
        assert len(detector.anchors) == 12 * 12 * 2 + 6 * 6 * 6
        assert detector._engine.input_details[0]["shape"].tolist() == [1, 96, 96, 3]
        assert {int(d["shape"][1]) for d in detector._engine.output_details} == {504}
        assert detector.detect(np.zeros((480, 640, 3), dtype=np.uint8)) == []
    with FaceDetector.from_path(model_path("short"), input_size=128) as native:
        assert len(native.anchors) == 896 and native._decode is DETECTORS["short"].decode


@pytest.mark.parametrize("size", [100, 48, 1024, True, 96.0, "96"])
def test_detector_input_size_must_be_a_multiple_of_16_in_range(size):
    with pytest.raises(ValueError, match="input_size"):
        FaceDetector.from_path(model_path("short"), input_size=size)


def test_full_range_detector_cannot_be_resized():
    with pytest.raises(ValueError, match="fixed-size layers"):
        FaceDetector.from_path(model_path("full"), input_size=96)


def test_closed_detector_refuses_to_run():
    detector = FaceDetector.from_path(model_path("short"))
    detector.close()
    with pytest.raises(RuntimeError, match="closed"):
        detector.detect(np.zeros((64, 64, 3), dtype=np.uint8))


# ---------------------------------------------------------------------------------------------
# LFW


@pytest.fixture(scope="module")
def lfw_short_detections(lfw_paths, short_detector):
    """(path, image size, faces) for a deterministic sample of LFW, with the short-range model."""
    started = time.perf_counter()
    results = []
    for path in lfw_paths[::LFW_STEP]:
        rgb = load_rgb(path)
        results.append((path, rgb.shape[:2], short_detector.detect(rgb)))
    logger.info("short-range detector on %d LFW images: %.1f s", len(results), time.perf_counter() - started)
    return results


@pytest.mark.lfw
def test_short_range_finds_the_centred_face_on_lfw(lfw_short_detections):
    # LFW centres the named person; a larger face at the border occasionally wins "largest".
    # Measured (every 26th image, 509): 509 found, 506 with the image centre in the box; eyes,
    # nose and mouth always inside the box; ear tragions outside it in 38 (up to ~8 % of the box width).
    good, failures = 0, []
    for path, (height, width), faces in lfw_short_detections:
        if not faces:
            failures.append((path.name, "no face"))
            continue
        x0, y0, x1, y1 = faces[0].box
        points = faces[0].keypoints
        margin = 0.15 * (x1 - x0)
        centre_inside = x0 <= width / 2 <= x1 and y0 <= height / 2 <= y1
        core_inside = np.all((points[:4] >= [x0, y0]) & (points[:4] <= [x1, y1]))
        ears_near = np.all((points[4:] >= [x0 - margin, y0 - margin]) & (points[4:] <= [x1 + margin, y1 + margin]))
        if centre_inside and core_inside and ears_near:
            good += 1
        else:
            failures.append((path.name, faces[0].box))
    rate = good / len(lfw_short_detections)
    logger.info("short range on LFW: %d/%d good (%.2f %%); failures %s", good, len(lfw_short_detections),
                100 * rate, failures)
    assert len(lfw_short_detections) >= 500
    assert rate >= 0.99, failures


@pytest.mark.lfw
def test_keypoint_order_is_subject_right_first(lfw_short_detections):
    # "Right eye" is the subject's right: image-left in these non-mirrored photos.
    faces = [faces[0] for _, _, faces in lfw_short_detections if faces]
    left_first = np.mean([f.keypoints[0, 0] < f.keypoints[1, 0] for f in faces])
    ears = np.mean([f.keypoints[4, 0] < f.keypoints[5, 0] for f in faces])
    eyes_above_mouth = np.mean([f.keypoints[:2, 1].max() < f.keypoints[3, 1] for f in faces])
    assert left_first >= 0.99 and ears >= 0.99 and eyes_above_mouth >= 0.99


@pytest.mark.lfw
def test_alignment_on_lfw_faces(lfw_short_detections):
    """Detected eyes after alignment lie within 2 px of the template's eyes (112x112).

    With the eye-anchored weights (see _align.TEMPLATES), measured on 500 LFW faces:
    99.2 % within 2 px, median 0.4 px. (An equal-weight 4-point fit gave 46 %, median 2.1 px.)
    """
    target = template_points("arcface", (112, 112))[:2]
    errors, residuals = [], []
    for _, _, faces in lfw_short_detections:
        if not faces:
            continue
        eyes = faces[0].keypoints[:2].astype(np.float64) - 0.5  # continuous -> pixel-index coordinates
        matrix = alignment_matrix(faces[0].keypoints, (112, 112))
        moved = eyes @ matrix[:, :2].T + matrix[:, 2]
        residuals.append(moved - target)
        errors.append(np.linalg.norm(moved - target, axis=1).max())
    errors = np.array(errors)
    percentiles = np.percentile(errors, [50, 90, 95, 99, 100])
    logger.info("eye error after alignment (px) p50/p90/p95/p99/max: %s; within 2 px: %.1f %%",
                np.round(percentiles, 2), 100 * np.mean(errors <= 2.0))
    assert np.mean(errors <= 2.0) >= 0.99
    assert np.all(np.abs(np.mean(residuals, axis=0)) < 1.5)  # no systematic offset


@pytest.mark.lfw
@pytest.mark.parametrize("input_size", [96, 80])
def test_smaller_short_range_inputs_find_the_same_faces_on_lfw(lfw_paths, lfw_short_detections, input_size):
    # At 96x96 a 250x250 photo is averaged in 3x3 blocks (84x84): the model sees the face at
    # 37 px instead of 55; at 80 it is averaged and resized to 80x80 (35 px). Measured on the
    # 509: 506 centred at both, as at 128; the farther eye lies 3.0 px (median; p90 5.2) at 96
    # and 3.2 px (p90 5.6) at 80 from where the 128x128 run puts it, with eyes ~45 px apart
    # (64 gives 4.7 / 8.2 px and fails). LFW folds 6-10 verification with the runtime pipeline
    # did not move beyond the folds' noise at 96 or 80 (see the README).
    displacement, centred = [], 0
    with FaceDetector.from_path(model_path("short"), input_size=input_size) as fast:
        for path, (height, width), faces in lfw_short_detections:
            found = fast.detect(load_rgb(path))
            if not found or not faces:
                continue
            x0, y0, x1, y1 = found[0].box
            centred += x0 <= width / 2 <= x1 and y0 <= height / 2 <= y1
            displacement.append(np.linalg.norm(found[0].keypoints[:2] - faces[0].keypoints[:2], axis=1).max())
    logger.info("%d vs 128 on LFW: %d centred of %d; worse eye displacement p50/p90 %s px", input_size, centred,
                len(lfw_short_detections), np.round(np.percentile(displacement, [50, 90]), 2))
    assert centred >= 0.99 * len(lfw_short_detections)
    assert np.median(displacement) < 4.0 and np.percentile(displacement, 90) < 7.0


@pytest.mark.lfw
def test_a_larger_input_size_finds_smaller_faces(lfw_paths):
    # LFW photos shrunk to 110 px (faces ~47 px wide) in a 640x480 frame: the network needs a
    # face ~12 px wide in its input, which 128 gives only for the larger ones and 192 for most.
    # Measured on these 40: 128 finds 5, 160 finds 22, 192 finds 36.
    rng = np.random.default_rng(0)
    frames = []
    for path in lfw_paths[::331][:40]:
        small = np.asarray(Image.fromarray(load_rgb(path)).resize((110, 110), Image.Resampling.BILINEAR))
        frame = rng.integers(40, 90, (480, 640, 3), dtype=np.uint8)
        y, x = rng.integers(0, 480 - 110), rng.integers(0, 640 - 110)
        frame[y:y + 110, x:x + 110] = small
        frames.append((frame, (x + 55, y + 55)))
    found = {}
    for size in (128, 160, 192):
        with FaceDetector.from_path(model_path("short"), input_size=size) as detector:
            found[size] = sum(any(f.box[0] <= cx <= f.box[2] and f.box[1] <= cy <= f.box[3]
                                  for f in detector.detect(frame))
                              for frame, (cx, cy) in frames)
    logger.info("small faces found by input size: %s of %d", found, len(frames))
    assert found[128] + 10 <= found[160] and found[160] < found[192] and found[192] >= 0.85 * len(frames)


@pytest.mark.lfw
def test_full_range_finds_most_lfw_faces(lfw_paths, full_detector):
    # Measured: 98.8 % of every 5th image (2,647); scores sit lower than short range's on these
    # close-up faces (median 0.81 against a 0.6 threshold).
    sample = lfw_paths[::FULL_RANGE_STEP]
    found = 0
    for path in sample:
        rgb = load_rgb(path)
        faces = full_detector.detect(rgb)
        if faces:
            x0, y0, x1, y1 = faces[0].box
            found += x0 <= rgb.shape[1] / 2 <= x1 and y0 <= rgb.shape[0] / 2 <= y1
    assert found / len(sample) >= 0.9, f"{found}/{len(sample)}"


@pytest.mark.lfw
@pytest.mark.parametrize("canvas, offset", [((480, 640), (200, 140)), ((640, 400), (60, 200))])
def test_letterbox_equals_explicit_padding(lfw_paths, short_detector, canvas, offset):
    # A non-square frame and the same frame padded to a square by hand give the model the same
    # input, so the detections must agree once the padding offset is taken off. (Sizes chosen so
    # the resized frame is a whole number of pixels; otherwise rounding shifts it < 0.5 input px.)
    rgb = load_rgb(lfw_paths[0])
    frame = np.zeros(canvas + (3,), dtype=np.uint8)
    dx, dy = offset
    frame[dy:dy + rgb.shape[0], dx:dx + rgb.shape[1]] = rgb
    side = max(canvas)
    pad_y, pad_x = (side - canvas[0]) // 2, (side - canvas[1]) // 2
    square = np.zeros((side, side, 3), dtype=np.uint8)
    square[pad_y:pad_y + canvas[0], pad_x:pad_x + canvas[1]] = frame
    in_frame, in_square = short_detector.detect(frame), short_detector.detect(square)
    assert len(in_frame) == len(in_square) == 1
    tolerance = 0.02 * in_square[0].width
    np.testing.assert_allclose(np.array(in_frame[0].box) + [pad_x, pad_y] * 2, in_square[0].box, atol=tolerance)
    np.testing.assert_allclose(in_frame[0].keypoints + [pad_x, pad_y], in_square[0].keypoints, atol=tolerance)
    assert abs(in_frame[0].score - in_square[0].score) < 0.02


@pytest.mark.lfw
@pytest.mark.parametrize("canvas, offset", [((480, 640), (140, 200)), ((600, 360), (40, 300))])
def test_pasted_face_is_found_where_it_was_pasted(lfw_paths, short_detector, canvas, offset):
    # The face is smaller in the model input once pasted into a big frame, so the decoded
    # geometry differs a little; eyes, nose and mouth still land within 10 % of the face width.
    rgb = load_rgb(lfw_paths[0])
    alone = short_detector.detect(rgb)[0]
    frame = np.zeros(canvas + (3,), dtype=np.uint8)
    dx, dy = offset
    frame[dy:dy + rgb.shape[0], dx:dx + rgb.shape[1]] = rgb
    faces = short_detector.detect(frame)
    assert faces, "face lost after letterboxing"
    tolerance = 0.1 * alone.width
    np.testing.assert_allclose(np.array(faces[0].box) - [dx, dy, dx, dy], alone.box, atol=tolerance)
    np.testing.assert_allclose(faces[0].keypoints[:4] - [dx, dy], alone.keypoints[:4], atol=tolerance)
