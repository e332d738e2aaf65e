"""Alignment: similarity estimation, warping, templates, crops (numpy + Pillow only).

Real-face alignment (detector keypoints on LFW) is checked in test_detector.py, which already
holds the detector and LFW fixtures.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgeface_runtime._align import (
    TEMPLATES,
    align_face,
    alignment_matrix,
    center_crop,
    estimate_similarity,
    template_points,
    warp_affine,
)


def similarity(angle_deg: float, scale: float, tx: float, ty: float) -> np.ndarray:
    a = math.radians(angle_deg)
    return np.array([[scale * math.cos(a), -scale * math.sin(a), tx],
                     [scale * math.sin(a), scale * math.cos(a), ty]])


def apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:, :2].T + matrix[:, 2]


@pytest.mark.parametrize("angle, scale, tx, ty",
                         [(0, 1, 0, 0), (17, 0.4, -30, 12.5), (-135, 2.3, 100, -7), (180, 1, 3, 3)])
@pytest.mark.parametrize("count", [2, 4, 9])
def test_similarity_is_recovered_exactly(angle, scale, tx, ty, count):
    rng = np.random.default_rng(count)
    src = rng.uniform(-50, 250, size=(count, 2))
    truth = similarity(angle, scale, tx, ty)
    estimated = estimate_similarity(src, apply(truth, src))
    np.testing.assert_allclose(estimated, truth, atol=1e-9)


def test_similarity_is_least_squares_and_never_reflects():
    # Mirror-image points: the best similarity cannot reflect, so its linear part keeps det > 0.
    src = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 5.0], [7.0, 9.0]])
    dst = src * [-1.0, 1.0]
    matrix = estimate_similarity(src, dst)
    assert np.linalg.det(matrix[:, :2]) > 0
    # Noisy points: the estimate matches the known transform to within the noise.
    rng = np.random.default_rng(0)
    truth = similarity(30, 1.5, 4, -2)
    noisy = apply(truth, src) + rng.normal(0, 0.01, size=src.shape)
    np.testing.assert_allclose(estimate_similarity(src, noisy), truth, atol=0.05)


@pytest.mark.parametrize("src, dst, message", [
    (np.ones((4, 2)), np.random.default_rng(0).random((4, 2)), "distinct"),
    (np.random.default_rng(0).random((4, 2)), np.full((4, 2), 3.0), "distinct"),
    (np.array([[1.0, 2.0]]), np.array([[3.0, 4.0]]), "at least 2"),
    (np.array([[1.0, np.nan], [2.0, 3.0]]), np.array([[1.0, 2.0], [2.0, 3.0]]), "NaN"),
    (np.zeros((3, 2)), np.zeros((4, 2)), "matching shape"),
    (np.zeros((3, 3)), np.zeros((3, 3)), "matching shape"),
])
def test_degenerate_similarity_input_is_rejected(src, dst, message):
    with pytest.raises(ValueError, match=message):
        estimate_similarity(src, dst)


def marker_image(height=60, width=80, row=12, col=30):
    image = np.zeros((height, width, 3), dtype=np.uint8)
    image[row, col] = (255, 128, 64)
    return image


def test_warp_moves_a_marker_pixel_where_the_matrix_says():
    image = marker_image()
    # Integer translation and a 90° rotation: the marker lands exactly on one pixel.
    for matrix in (similarity(0, 1, 7, -5), similarity(90, 1, 50, 0)):
        out = warp_affine(image, matrix, (70, 90))
        x, y = apply(matrix, np.array([[30.0, 12.0]]))[0]
        assert out.shape == (70, 90, 3) and out.dtype == np.uint8
        np.testing.assert_array_equal(out[int(round(y)), int(round(x))], (255, 128, 64))
        assert np.count_nonzero(out.any(axis=2)) == 1
    # A general similarity: the brightest output pixel is the one nearest to the mapped marker.
    matrix = similarity(33, 1.7, 5.3, 9.1)
    out = warp_affine(image, matrix, (100, 100))
    x, y = apply(matrix, np.array([[30.0, 12.0]]))[0]
    row, col = np.unravel_index(np.argmax(out[..., 0]), out.shape[:2])
    assert abs(col - x) <= 1.0 and abs(row - y) <= 1.0


def test_warp_identity_and_bad_arguments():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, size=(20, 30, 3), dtype=np.uint8)
    np.testing.assert_array_equal(warp_affine(image, similarity(0, 1, 0, 0), (20, 30)), image)
    with pytest.raises(ValueError, match="2x3"):
        warp_affine(image, np.eye(3), (10, 10))
    with pytest.raises(ValueError, match="singular"):
        warp_affine(image, np.zeros((2, 3)), (10, 10))
    with pytest.raises(ValueError, match="uint8 RGB"):
        warp_affine(image.astype(np.float32), similarity(0, 1, 0, 0), (10, 10))
    with pytest.raises(ValueError, match="height, width"):
        warp_affine(image, similarity(0, 1, 0, 0), (10, 0))


def test_template_scaling():
    base = TEMPLATES["arcface"].points
    assert base.shape == (4, 2)
    np.testing.assert_allclose(base[3], [(41.5493 + 70.7299) / 2, (92.3655 + 92.2041) / 2])  # mouth centre
    np.testing.assert_allclose(template_points("arcface", (112, 112)), base)
    # Square sizes scale the crop, edges included: pixel-centre coordinates map as (p + 0.5) * s - 0.5.
    np.testing.assert_allclose(template_points("arcface", (224, 224)), (base + 0.5) * 2 - 0.5)
    np.testing.assert_allclose(template_points("arcface", (56, 56)), (base + 0.5) * 0.5 - 0.5)
    # Non-square: uniform scale by height, centred in the width (112x96 = the 112x112 template 8 px left).
    np.testing.assert_allclose(template_points("arcface", (112, 96)), base - [8.0, 0.0])
    wide = template_points("arcface", (112, 160))
    np.testing.assert_allclose(wide, base + [24.0, 0.0])
    with pytest.raises(ValueError, match="unknown alignment template"):
        template_points("no-such-template", (112, 112))
    with pytest.raises(ValueError, match="height, width"):
        template_points("arcface", (112,))


def test_align_face_puts_keypoints_on_the_template():
    # Markers where a known similarity sends the template; aligning must bring each back onto it.
    size = (112, 112)
    target = template_points("arcface", size)
    image_points = np.round(apply(similarity(-20, 2.2, 140.0, 60.0), target))
    # Detector keypoints are continuous coordinates (pixel centres at +0.5); six of them.
    keypoints = np.vstack([image_points + 0.5, [[0.0, 0.0], [1.0, 1.0]]])
    np.testing.assert_allclose(apply(alignment_matrix(keypoints, size), image_points), target, atol=0.3)
    for (x, y), (tx, ty) in zip(image_points, target):
        image = np.zeros((400, 420, 3), dtype=np.uint8)
        image[int(y) - 2:int(y) + 3, int(x) - 2:int(x) + 3] = 255  # a 5x5 marker centred on the point
        aligned = align_face(image, keypoints, size)
        assert aligned.shape == (112, 112, 3) and aligned.dtype == np.uint8
        weight = aligned[..., 0].astype(np.float64)
        rows, cols = np.indices(weight.shape)
        centroid = ((cols * weight).sum() / weight.sum(), (rows * weight).sum() / weight.sum())
        assert abs(centroid[0] - tx) < 0.5 and abs(centroid[1] - ty) < 0.5, (centroid, (tx, ty))


@pytest.mark.parametrize("size", [(112, 112), (112, 96), (64, 64)])
def test_alignment_matrix_is_the_weighted_fit_to_the_template(size):
    # The pipeline's cached template and weights give exactly the public least-squares fit.
    keypoints = np.random.default_rng(1).uniform(20, 200, (6, 2))
    want = estimate_similarity(keypoints[:4] - 0.5, template_points("arcface", size), TEMPLATES["arcface"].weights)
    np.testing.assert_array_equal(alignment_matrix(keypoints, size), want)


def test_align_face_errors_and_none_template():
    image = np.zeros((50, 50, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="BlazeFace order"):
        align_face(image, np.zeros((3, 2)), (112, 112))
    with pytest.raises(ValueError, match="distinct"):
        align_face(image, np.zeros((6, 2)), (112, 112))
    with pytest.raises(ValueError, match="unknown alignment template"):
        align_face(image, np.random.default_rng(0).random((6, 2)) * 50, (112, 112), template="mtcnn")
    with pytest.raises(ValueError, match="finite"):
        align_face(image, np.full((6, 2), np.nan), (112, 112))
    out = align_face(image, np.zeros((6, 2)), (64, 48), template="none")
    assert out.shape == (64, 48, 3)


def test_center_crop():
    image = np.zeros((100, 200, 3), dtype=np.uint8)
    image[:, 50:150] = 200  # the centred square is bright, the sides dark
    square = center_crop(image, (32, 32))
    assert square.shape == (32, 32, 3)
    assert square.min() == 200
    tall = center_crop(image, (40, 20))  # 1:2 crop from the middle: 50 wide, 100 high
    assert tall.shape == (40, 20, 3) and tall.min() == 200
    portrait = np.zeros((300, 100, 3), dtype=np.uint8)
    portrait[100:200] = 90
    assert center_crop(portrait, (16, 16)).min() == 90
    with pytest.raises(ValueError, match="uint8 RGB"):
        center_crop(np.zeros((10, 10), dtype=np.uint8), (8, 8))


def test_weighted_fit_with_zero_weights_matches_the_weighted_points_exactly():
    from edgeface_runtime._align import estimate_similarity

    src = np.array([[10.0, 10.0], [30.0, 12.0], [20.0, 25.0], [21.0, 35.0]])
    dst = np.array([[38.0, 51.0], [73.0, 51.0], [50.0, 80.0], [60.0, 90.0]])
    matrix = estimate_similarity(src, dst, weights=[1, 1, 0, 0])
    moved = src[:2] @ matrix[:, :2].T + matrix[:, 2]
    np.testing.assert_allclose(moved, dst[:2], atol=1e-9)
    with pytest.raises(ValueError, match="weights"):
        estimate_similarity(src, dst, weights=[1, -1, 0, 0])
