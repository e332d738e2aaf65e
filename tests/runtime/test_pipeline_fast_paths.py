"""The pipeline's shortcuts give what the public building blocks give.

``FaceVerifier`` keeps frames as Pillow images (no numpy round trips), swaps BGR in Pillow's
unpacker, letterboxes large frames with a block-average first step, and normalises crops
through lookup tables or in place. Each shortcut is checked here against the plain computation.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from edgeface_runtime import Embedder, FaceVerifier, Preprocess, align_face, center_crop, load_image
from edgeface_runtime._detector import FaceDetector


def crop(seed: int = 0, size: int = 48) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def reference_input(embedder: Embedder, pixels: np.ndarray) -> np.ndarray:
    """The model input computed per pixel, the plain way (the runtime looks most inputs up in
    tables and normalises float ones with a single mean and std in place)."""
    pre = embedder.preprocess
    if pre.color_order == "BGR":
        pixels = pixels[..., ::-1]
    x = (pixels.astype(np.float32) - np.asarray(pre.mean, np.float32)) * (1.0 / np.asarray(pre.std, np.float32))
    dtype = np.dtype(embedder.engine.input_details[0]["dtype"])
    if dtype != np.float32:
        scale, zero_point = embedder.engine.input_details[0]["quantization"]
        info = np.iinfo(dtype)
        x = np.clip(np.round(x / scale + zero_point), info.min, info.max).astype(dtype)
    return x[None]


@pytest.mark.parametrize("model, preprocess", [
    ("tiny_float32.tflite", None),
    ("tiny_uint8_io.tflite", None),  # quantized input: the table holds uint8 values
    ("tiny_nometa.tflite", Preprocess(input_size=(48, 48), mean=(120.0, 110.5, 100.0), std=(60.0, 64.0, 70.0))),
    ("tiny_nometa.tflite", Preprocess(input_size=(48, 48), mean=(0.0, 10.0, 20.0), std=(255.0, 1.0, 2.0),
                                      color_order="BGR")),
])
def test_embedder_input_is_exactly_the_per_pixel_arithmetic(fixtures_dir, model, preprocess):
    with Embedder.from_path(fixtures_dir / model, preprocess=preprocess) as embedder:
        for seed in range(3):
            image = crop(seed)
            got = embedder.to_input(image)
            want = reference_input(embedder, image)
            assert got.dtype == want.dtype and got.shape == want.shape
            np.testing.assert_array_equal(got, want)


def smooth_frame(height: int = 480, width: int = 640, seed: int = 0) -> np.ndarray:
    """Camera-like content: coarse random blobs, bilinearly enlarged (no single-pixel detail)."""
    coarse = np.random.default_rng(seed).integers(0, 256, (height // 16, width // 16, 3), dtype=np.uint8)
    return np.array(Image.fromarray(coarse).resize((width, height), Image.Resampling.BILINEAR))


def letterbox(detector_path, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The image part of the detector input in grey levels, and the padding around it."""
    with FaceDetector.from_path(detector_path) as detector:
        tensor, (scale_x, scale_y, pad_x, pad_y) = detector._letterbox(Image.fromarray(frame))
    new_h, new_w = round(frame.shape[0] * scale_y), round(frame.shape[1] * scale_x)
    inside = np.zeros(tensor.shape[1:3], bool)
    inside[int(pad_y):int(pad_y) + new_h, int(pad_x):int(pad_x) + new_w] = True
    levels = (tensor[0] + 1.0) * 127.5
    return levels[int(pad_y):int(pad_y) + new_h, int(pad_x):int(pad_x) + new_w], tensor[0][~inside]


def test_letterbox_of_an_lfw_photo_averages_2x2_blocks(detector_models_dir):
    frame = smooth_frame(250, 250)  # LFW size: scale 0.512; 2x2 blocks fill 125 of the 128 pixels
    levels, padding = letterbox(detector_models_dir / "face_detection_short_range.tflite", frame)
    blocks = frame[:250, :250].reshape(125, 2, 125, 2, 3).astype(np.float64).mean(axis=(1, 3))
    assert levels.shape == (125, 125, 3)
    assert np.abs(levels - blocks).max() < 1.0  # Pillow rounds the mean to a whole level
    assert padding.size == (128 * 128 - 125 * 125) * 3 and np.all(padding == -1.0)


def test_letterbox_at_input_size_96_averages_3x3_blocks_of_an_lfw_photo(detector_models_dir):
    frame = smooth_frame(250, 250)  # 3x3 blocks fill 84 of 96 pixels (87.5 %): no resize
    with FaceDetector.from_path(detector_models_dir / "face_detection_short_range.tflite", input_size=96) as detector:
        tensor, (scale_x, _, pad_x, pad_y) = detector._letterbox(Image.fromarray(frame))
    assert tensor.shape == (1, 96, 96, 3) and scale_x == pytest.approx(1 / 3) and pad_x == pad_y == 6.0
    blocks = frame[:249, :249].reshape(83, 3, 83, 3, 3).astype(np.float64).mean(axis=(1, 3))
    levels = (tensor[0, 6:89, 6:89] + 1.0) * 127.5  # the 84th row and column average a partial block
    assert np.abs(levels - blocks).max() < 1.0


def test_letterbox_resizes_when_whole_blocks_would_shrink_the_face(detector_models_dir):
    frame = smooth_frame(200, 200)  # 2x2 blocks would fill only 100 of 128 pixels: bilinear instead
    levels, padding = letterbox(detector_models_dir / "face_detection_short_range.tflite", frame)
    exact = np.asarray(Image.fromarray(frame).resize((128, 128), Image.Resampling.BILINEAR), np.float32)
    np.testing.assert_allclose(levels, exact, atol=1e-3)
    assert padding.size == 0


def test_letterbox_of_a_camera_frame_averages_whole_blocks(detector_models_dir):
    frame = smooth_frame(480, 640)  # scale 1/5: each input pixel is the mean of a 5x5 block
    levels, padding = letterbox(detector_models_dir / "face_detection_short_range.tflite", frame)
    blocks = frame.reshape(96, 5, 128, 5, 3).astype(np.float64).mean(axis=(1, 3))
    assert levels.shape == (96, 128, 3)
    assert np.abs(levels - blocks).max() < 1.0  # Pillow rounds the mean to a whole level
    assert np.all(padding == -1.0)  # black bars (-1 after scaling), as MediaPipe pads before normalising
    # Against Pillow's full bilinear filter (ten taps per axis): close, not equal.
    exact = np.asarray(Image.fromarray(frame).resize((128, 96), Image.Resampling.BILINEAR), np.float32)
    assert np.abs(levels - exact).mean() < 1.0


@pytest.fixture(scope="module")
def lfw_face(lfw_dir) -> np.ndarray:
    return load_image(sorted((lfw_dir / "lfw-deepfunneled").glob("*/*.jpg"))[0])


@pytest.fixture(scope="module")
def frame_with_face(lfw_face) -> np.ndarray:
    frame = smooth_frame()
    frame[120:120 + lfw_face.shape[0], 200:200 + lfw_face.shape[1]] = lfw_face
    return frame


@pytest.mark.lfw
def test_detector_finds_the_same_faces_in_an_array_and_a_pil_image(detector_models_dir, frame_with_face):
    with FaceDetector.from_path(detector_models_dir / "face_detection_short_range.tflite") as detector:
        from_array = detector.detect(frame_with_face)
        from_image = detector.detect(Image.fromarray(frame_with_face))
        with pytest.raises(ValueError, match="mode 'L'"):
            detector.detect(Image.fromarray(frame_with_face).convert("L"))
    assert len(from_array) == len(from_image) >= 1
    for a, b in zip(from_array, from_image):
        assert a.box == b.box and a.score == b.score
        np.testing.assert_array_equal(a.keypoints, b.keypoints)


@pytest.mark.lfw
@pytest.mark.parametrize("alignment", ["arcface", "none"])
def test_every_frame_form_gives_the_embedding_of_the_public_building_blocks(
        fixtures_dir, detector_models_dir, frame_with_face, alignment):
    detector_path = detector_models_dir / "face_detection_short_range.tflite"
    preprocess = Preprocess(input_size=(48, 48), alignment=alignment)
    with FaceVerifier.from_path(fixtures_dir / "tiny_nometa.tflite", detector_path=detector_path,
                                preprocess=preprocess) as verifier:
        bgr = np.ascontiguousarray(frame_with_face[..., ::-1])
        bgrx = np.concatenate([bgr, np.zeros(bgr.shape[:2] + (1,), np.uint8)], axis=2)
        results = [verifier.process_frame(frame_with_face, color_order="RGB"),
                   verifier.process_frame(bgr, color_order="BGR"),
                   verifier.process_frame(bgrx, color_order="BGR"),
                   verifier.process_frame(Image.fromarray(frame_with_face))]
        # The same steps through the public array functions.
        face = verifier.detector.detect(frame_with_face)[0]
        if alignment == "none":
            x0, y0, x1, y1 = (int(v) for v in face.box)
            crop_ = center_crop(frame_with_face[y0:y1 + 1, x0:x1 + 1], (48, 48))
        else:
            crop_ = align_face(frame_with_face, face.keypoints, (48, 48))
        expected = verifier.embedder.embed(crop_)
    for result in results:
        assert len(result.faces) == 1
        np.testing.assert_array_equal(result.faces[0].embedding, expected)
    np.testing.assert_array_equal(bgr[..., ::-1], frame_with_face)  # the caller's frame is left alone
