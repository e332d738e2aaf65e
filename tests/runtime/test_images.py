"""Tests for edgeface_runtime._images: image input without TensorFlow (numpy, Pillow, stdlib).

Every image is synthesised here, in memory or under tmp_path.
"""

from __future__ import annotations

import io
import random
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, features

from edgeface_runtime._errors import ImageDecodeError, ImageTooLargeError
from edgeface_runtime._images import DEFAULT_MAX_PIXELS, load_image, to_pil

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)
HAS_WEBP = features.check("webp")
needs_webp = pytest.mark.skipif(not HAS_WEBP, reason="Pillow built without WebP")


def quadrants(width: int = 32, height: int = 16) -> np.ndarray:
    """Top-left red, top-right green, bottom-left blue, bottom-right white."""
    img = np.zeros((height, width, 3), np.uint8)
    h, w = height // 2, width // 2
    img[:h, :w], img[:h, w:], img[h:, :w], img[h:, w:] = RED, GREEN, BLUE, WHITE
    return img


def quadrant_colours(rgb: np.ndarray) -> tuple:
    """The colour at the centre of each quadrant: top-left, top-right, bottom-left, bottom-right."""
    height, width = rgb.shape[:2]
    ys, xs = (height // 4, 3 * height // 4), (width // 4, 3 * width // 4)
    return tuple(tuple(int(v) for v in rgb[y, x]) for y in ys for x in xs)


def noise_rgb(width: int = 24, height: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def encode(img: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, fmt, **params)
    return buffer.getvalue()


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload)
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def png_claiming_size(width: int, height: int) -> bytes:
    """A ~60-byte PNG whose header declares width×height RGB pixels; its data covers one row."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = zlib.compress(b"\x00" + b"\x00" * 3)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", data)
        + png_chunk(b"IEND", b"")
    )


def assert_rgb_image(result: np.ndarray, height: int, width: int) -> None:
    assert isinstance(result, np.ndarray)
    assert result.dtype == np.uint8
    assert result.shape == (height, width, 3)
    assert result.flags.c_contiguous and result.flags.writeable


# --- formats and sources -----------------------------------------------------------------


LOSSLESS_FORMATS = [
    ("PNG", {}),
    ("BMP", {}),
    ("PPM", {}),
    ("TIFF", {}),
    pytest.param("WEBP", {"lossless": True}, marks=needs_webp),
]


@pytest.mark.parametrize("fmt, params", LOSSLESS_FORMATS)
def test_lossless_format_round_trip_is_exact(tmp_path, fmt, params):
    original = noise_rgb()
    path = tmp_path / f"noise.{fmt.lower()}"
    Image.fromarray(original).save(path, fmt, **params)
    result = load_image(path)
    assert_rgb_image(result, *original.shape[:2])
    np.testing.assert_array_equal(result, original)


def test_jpeg_round_trip_is_close(tmp_path):
    path = tmp_path / "quadrants.jpg"
    Image.fromarray(quadrants()).save(path, quality=95)
    result = load_image(path)
    assert_rgb_image(result, 16, 32)
    expected = quadrant_colours(quadrants())
    np.testing.assert_allclose(quadrant_colours(result), expected, atol=12)


def test_gif_gives_its_first_frame(tmp_path):
    path = tmp_path / "two.gif"
    first = Image.fromarray(quadrants())
    second = Image.new("RGB", first.size, BLUE)
    first.save(path, save_all=True, append_images=[second], duration=100)
    assert quadrant_colours(load_image(path)) == (RED, GREEN, BLUE, WHITE)


def test_pgm_grayscale_file_gives_three_equal_channels(tmp_path):
    gray = np.arange(48, dtype=np.uint8).reshape(6, 8) * 5
    path = tmp_path / "gray.pgm"
    Image.fromarray(gray).save(path)
    result = load_image(path)
    assert_rgb_image(result, 6, 8)
    for channel in range(3):
        np.testing.assert_array_equal(result[..., channel], gray)


@pytest.mark.parametrize(
    "wrap",
    [
        pytest.param(lambda path: str(path), id="str"),
        pytest.param(lambda path: path, id="pathlib"),
        pytest.param(lambda path: path.read_bytes(), id="bytes"),
        pytest.param(lambda path: bytearray(path.read_bytes()), id="bytearray"),
        pytest.param(lambda path: memoryview(path.read_bytes()), id="memoryview"),
        pytest.param(lambda path: io.BytesIO(path.read_bytes()), id="BytesIO"),
        pytest.param(lambda path: Image.open(path), id="PIL"),
    ],
)
def test_every_kind_of_source_gives_the_same_pixels(tmp_path, wrap):
    original = noise_rgb(seed=3)
    path = tmp_path / "noise.png"
    Image.fromarray(original).save(path)
    np.testing.assert_array_equal(load_image(wrap(path)), original)


def test_open_binary_file_is_read_from_its_current_position(tmp_path):
    original = noise_rgb(seed=4)
    path = tmp_path / "prefixed.bin"
    path.write_bytes(b"HEADER" + encode(Image.fromarray(original), "PNG"))
    with open(path, "rb") as file:
        file.read(6)
        np.testing.assert_array_equal(load_image(file), original)
        assert not file.closed  # the caller's file stays the caller's


def test_result_never_aliases_a_pil_image():
    img = Image.fromarray(noise_rgb(seed=5))
    first = load_image(img)
    first[:] = 0
    np.testing.assert_array_equal(load_image(img), noise_rgb(seed=5))


# --- modes ---------------------------------------------------------------------------------


def row(mode: str, values) -> Image.Image:
    """A 1-row image of the given mode with one pixel per value."""
    img = Image.new(mode, (len(values), 1))
    for x, value in enumerate(values):
        img.putpixel((x, 0), value)
    return img


def first_row(rgb: np.ndarray) -> list:
    return [tuple(int(v) for v in pixel) for pixel in rgb[0]]


def gray(*values) -> list:
    return [(v, v, v) for v in values]


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "PPM", "TIFF", None])
def test_mode_1_maps_to_black_and_white(fmt):
    img = row("1", [0, 1, 0])
    source = img if fmt is None else encode(img, fmt)
    assert first_row(load_image(source)) == gray(0, 255, 0)


def test_mode_l():
    assert first_row(load_image(encode(row("L", [0, 77, 255]), "PNG"))) == gray(0, 77, 255)


def test_mode_la_is_composited_over_black():
    img = row("LA", [(200, 255), (200, 128), (200, 0)])
    # 200 * 128 / 255 = 100.4 -> 100
    assert first_row(load_image(encode(img, "PNG"))) == gray(200, 100, 0)


@pytest.mark.parametrize("fmt", ["PNG", None, pytest.param("WEBP", marks=needs_webp)])
def test_mode_rgba_is_composited_over_black(fmt):
    img = row("RGBA", [(200, 100, 50, 255), (200, 100, 50, 128), (200, 100, 50, 0)])
    params = {"lossless": True, "exact": True} if fmt == "WEBP" else {}
    source = img if fmt is None else encode(img, fmt, **params)
    assert first_row(load_image(source)) == [(200, 100, 50), (100, 50, 25), (0, 0, 0)]


def palette_row(indices) -> Image.Image:
    img = row("P", indices)
    img.putpalette([*RED, *GREEN, *BLUE] + [0] * (253 * 3))
    return img


@pytest.mark.parametrize("fmt", ["PNG", "GIF", "BMP", "TIFF", None])
def test_mode_p_maps_through_the_palette(fmt):
    img = palette_row([0, 1, 2, 1])
    source = img if fmt is None else encode(img, fmt)
    assert first_row(load_image(source)) == [RED, GREEN, BLUE, GREEN]


@pytest.mark.parametrize("fmt", ["PNG", "GIF", None])
def test_mode_p_transparent_index_becomes_black(fmt):
    img = palette_row([0, 1, 2])
    if fmt is None:
        img.info["transparency"] = 1
        source = img
    else:
        source = encode(img, fmt, transparency=1)
    assert first_row(load_image(source)) == [RED, (0, 0, 0), BLUE]


def test_rgb_png_with_a_transparent_colour_makes_it_black():
    img = row("RGB", [(10, 20, 30), (40, 50, 60)])
    data = encode(img, "PNG", transparency=(10, 20, 30))
    assert first_row(load_image(data)) == [(0, 0, 0), (40, 50, 60)]


def test_mode_cmyk_uses_pillows_conversion():
    img = row("CMYK", [(255, 0, 0, 0), (0, 0, 0, 255), (0, 0, 0, 0), (100, 0, 0, 100)])
    result = first_row(load_image(img))
    assert result[:3] == [(0, 255, 255), (0, 0, 0), WHITE]
    assert result == first_row(np.asarray(img.convert("RGB")))


def test_cmyk_jpeg_decodes_to_rgb(tmp_path):
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (16, 16), (255, 0, 0, 0)).save(path, quality=95)
    np.testing.assert_allclose(load_image(path)[8, 8], (0, 255, 255), atol=6)


SIXTEEN_BIT = np.array([[0, 257 * 100, 65535, 1000, 128, 129]], dtype=np.uint16)
SIXTEEN_BIT_AS_8 = gray(0, 100, 255, 4, 0, 1)  # round(v / 257)


@pytest.mark.parametrize("fmt", ["PNG", "TIFF", None])
def test_16_bit_gray_is_scaled_not_clipped(fmt):
    img = Image.fromarray(SIXTEEN_BIT)
    assert img.mode == "I;16"
    source = img if fmt is None else encode(img, fmt)
    assert first_row(load_image(source)) == SIXTEEN_BIT_AS_8


def test_16_bit_big_endian_mode():
    img = Image.frombytes("I;16B", (6, 1), SIXTEEN_BIT.astype(">u2").tobytes())
    assert first_row(load_image(img)) == SIXTEEN_BIT_AS_8


def test_16_bit_pgm_file():
    data = b"P5\n6 1\n65535\n" + SIXTEEN_BIT.astype(">u2").tobytes()
    assert first_row(load_image(data)) == SIXTEEN_BIT_AS_8


def test_12_bit_pgm_file_uses_its_full_range():
    data = b"P5\n2 1\n4095\n" + np.array([4095, 0], ">u2").tobytes()
    assert first_row(load_image(data)) == gray(255, 0)


def test_mode_i_is_taken_as_16_bit_and_clipped():
    img = Image.fromarray(np.array([[-5, 0, 25700, 65535, 70000]], dtype=np.int32))
    assert img.mode == "I"
    assert first_row(load_image(img)) == gray(0, 0, 100, 255, 255)


def test_mode_f_is_rounded_and_clipped_on_0_to_255():
    values = [-5.0, 12.4, 12.6, 300.0, float("nan"), float("inf"), float("-inf")]
    img = Image.fromarray(np.array([values], dtype=np.float32))
    assert img.mode == "F"
    assert first_row(load_image(img)) == gray(0, 12, 13, 255, 0, 255, 0)


@pytest.mark.parametrize("mode", ["YCbCr", "HSV", "LAB", "RGBX"])
def test_other_colour_modes_use_pillows_convert(mode):
    img = Image.fromarray(noise_rgb(8, 4, seed=7)).convert(mode)
    np.testing.assert_array_equal(load_image(img), np.asarray(img.convert("RGB")))


# --- EXIF orientation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "orientation, expected",
    [
        (1, (RED, GREEN, BLUE, WHITE)),
        (3, (WHITE, BLUE, GREEN, RED)),  # rotated 180°
        (6, (BLUE, RED, WHITE, GREEN)),  # rotate 90° clockwise to display
        (8, (GREEN, WHITE, RED, BLUE)),  # rotate 90° counter-clockwise to display
    ],
)
@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_exif_orientation_is_applied(tmp_path, fmt, orientation, expected):
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"oriented.{fmt.lower()}"
    Image.fromarray(quadrants(32, 16)).save(path, fmt, exif=exif)
    result = load_image(path)
    rotated = orientation in (6, 8)
    assert result.shape == ((32, 16, 3) if rotated else (16, 32, 3))
    np.testing.assert_allclose(quadrant_colours(result), expected, atol=12)


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow warns "Corrupt EXIF data"
def test_unreadable_exif_keeps_the_pixels():
    garbage_exif = b"Exif\x00\x00MM\x00*garbage"
    data = encode(Image.fromarray(quadrants()), "JPEG", quality=95, exif=garbage_exif)
    expected = (RED, GREEN, BLUE, WHITE)
    np.testing.assert_allclose(quadrant_colours(load_image(data)), expected, atol=12)


# --- numpy frames ------------------------------------------------------------------------------


def test_bgr_frame_is_flipped_to_rgb():
    rgb = noise_rgb(seed=8)
    bgr = rgb[..., ::-1].copy()
    result = load_image(bgr, color_order="BGR")
    assert_rgb_image(result, *rgb.shape[:2])
    np.testing.assert_array_equal(result, rgb)


def test_rgb_frame_is_copied_not_aliased():
    frame = noise_rgb(seed=9)
    result = load_image(frame)
    np.testing.assert_array_equal(result, frame)
    frame[:] = 0  # a camera reusing its buffer must not change what we returned
    assert result.any()


@pytest.mark.parametrize("color_order, frame_order", [("RGB", [0, 1, 2]), ("BGR", [2, 1, 0])])
def test_four_channel_frame_drops_alpha(color_order, frame_order):
    rgb = noise_rgb(seed=10)
    padding = np.zeros(rgb.shape[:2] + (1,), np.uint8)  # XRGB-style padding, not real alpha
    frame = np.concatenate([rgb[..., frame_order], padding], axis=2)
    np.testing.assert_array_equal(load_image(frame, color_order=color_order), rgb)


@pytest.mark.parametrize("shape", [(6, 8), (6, 8, 1)])
@pytest.mark.parametrize("color_order", ["RGB", "BGR"])
def test_grayscale_frame_gives_three_equal_channels(shape, color_order):
    gray_frame = np.arange(48, dtype=np.uint8).reshape(shape)
    result = load_image(gray_frame, color_order=color_order)
    assert_rgb_image(result, 6, 8)
    for channel in range(3):
        np.testing.assert_array_equal(result[..., channel], gray_frame.reshape(6, 8))


def test_non_contiguous_frame_is_accepted():
    frame = noise_rgb(48, 32, seed=11)[::2, ::2]
    result = load_image(frame)
    assert result.flags.c_contiguous
    np.testing.assert_array_equal(result, frame)


@pytest.mark.parametrize(
    "frame, expected_words",
    [
        (np.zeros((4, 4, 3), np.float32), ["float32", "uint8", "astype"]),
        (np.zeros((4, 4, 3), np.uint16), ["uint16", "uint8"]),
        (np.zeros((4, 4, 3), bool), ["bool", "uint8"]),
        (np.zeros((4, 4, 2), np.uint8), ["(4, 4, 2)", "(H, W, 3)"]),
        (np.zeros((3, 8, 6), np.uint8), ["(3, 8, 6)", "transpose(1, 2, 0)"]),
        (np.zeros((2, 4, 4, 3), np.uint8), ["(2, 4, 4, 3)"]),
        (np.zeros((8,), np.uint8), ["(8,)"]),
        (np.zeros((0, 4, 3), np.uint8), ["(0, 4, 3)", "no pixels"]),
        (np.zeros((4, 0), np.uint8), ["(4, 0)", "no pixels"]),
    ],
)
def test_bad_frames_say_what_they_got(frame, expected_words):
    with pytest.raises(ImageDecodeError) as caught:
        load_image(frame)
    assert isinstance(caught.value, ValueError)
    for word in expected_words:
        assert word in str(caught.value)


# --- arguments -----------------------------------------------------------------------------------


@pytest.mark.parametrize("color_order", ["bgr", "RGBA", "", None])
def test_bad_color_order_is_rejected_naming_the_allowed_ones(color_order):
    with pytest.raises(ValueError, match="'RGB', 'BGR'"):
        load_image(noise_rgb(), color_order=color_order)


@pytest.mark.parametrize("max_pixels", [0, -1, True, 1.5, "big"])
def test_bad_max_pixels_is_rejected(max_pixels):
    with pytest.raises(ValueError, match="max_pixels"):
        load_image(noise_rgb(), max_pixels=max_pixels)


@pytest.mark.parametrize("source", [None, 42, [[0, 0, 0]], {"path": "x.png"}])
def test_unsupported_source_type_is_a_type_error(source):
    with pytest.raises(TypeError, match="expects a path"):
        load_image(source)


def test_text_mode_file_is_a_type_error(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("hello")
    with open(path) as file, pytest.raises(TypeError, match="'rb'"):
        load_image(file)


# --- decompression-bomb guard ------------------------------------------------------------------


def test_header_over_the_limit_is_refused_before_decoding():
    bomb = png_claiming_size(7000, 7000)  # 49 MP declared, one row of data present
    with pytest.raises(ImageTooLargeError) as caught:
        load_image(bomb)
    message = str(caught.value)
    assert f"<{len(bomb)} bytes>" in message
    assert "7000x7000" in message and "49,000,000" in message
    assert f"{DEFAULT_MAX_PIXELS:,}" in message and "max_pixels=" in message


def test_raising_the_limit_reaches_the_decoder():
    # Same file, limit raised: now the (truncated) pixel data is decoded and fails, which
    # shows the size check ran before any decoding above.
    with pytest.raises(ImageDecodeError) as caught:
        load_image(png_claiming_size(7000, 7000), max_pixels=50_000_000)
    assert not isinstance(caught.value, ImageTooLargeError)


def test_jpeg_with_huge_declared_size_is_refused():
    data = bytearray(encode(Image.fromarray(quadrants()), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", 9000, 9000)  # height, width
    with pytest.raises(ImageTooLargeError, match="9000x9000"):
        load_image(bytes(data))


def test_pillows_own_limit_also_gives_image_too_large_and_is_left_alone():
    limit_before = Image.MAX_IMAGE_PIXELS
    with pytest.raises(ImageTooLargeError, match="decompression bomb"):
        load_image(png_claiming_size(50000, 50000), max_pixels=None)
    assert Image.MAX_IMAGE_PIXELS == limit_before


def test_small_limit_applies_to_files_pil_images_and_frames(tmp_path):
    frame = noise_rgb(20, 10)
    path = tmp_path / "small.png"
    Image.fromarray(frame).save(path)
    for source in (path, Image.fromarray(frame), frame):
        with pytest.raises(ImageTooLargeError, match="20x10 = 200 pixels"):
            load_image(source, max_pixels=199)
        np.testing.assert_array_equal(load_image(source, max_pixels=200), frame)
        np.testing.assert_array_equal(load_image(source, max_pixels=None), frame)


# --- unreadable input ----------------------------------------------------------------------------


def test_missing_file_says_no_such_file(tmp_path):
    path = tmp_path / "absent.jpg"
    with pytest.raises(ImageDecodeError, match="absent.jpg.*no such file"):
        load_image(path)


def test_directory_is_refused(tmp_path):
    with pytest.raises(ImageDecodeError, match="is a directory"):
        load_image(tmp_path)


def test_zero_byte_file_and_empty_bytes_are_refused(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(ImageDecodeError, match="empty.png.*empty"):
        load_image(path)
    with pytest.raises(ImageDecodeError, match=r"<0 bytes>.*empty"):
        load_image(b"")
    with pytest.raises(ImageDecodeError, match="empty"):
        load_image(io.BytesIO())


@pytest.mark.parametrize(
    "data", [b"hello, this is not an image\n", bytes(range(256)), b"\x89PNG\r\n\x1a\n"]
)
def test_non_image_bytes_are_refused(tmp_path, data):
    with pytest.raises(ImageDecodeError, match=rf"<{len(data)} bytes>"):
        load_image(data)
    path = tmp_path / "not-an-image.jpg"
    path.write_bytes(data)
    with pytest.raises(ImageDecodeError, match="not-an-image.jpg"):
        load_image(path)


def test_unsupported_format_is_refused_naming_the_supported_ones():
    ico = encode(Image.fromarray(noise_rgb(16, 16)), "ICO")
    with pytest.raises(ImageDecodeError, match="supported format.*JPEG.*PNG"):
        load_image(ico)


@pytest.mark.parametrize(
    "fmt", ["JPEG", "PNG", "BMP", "PPM", "TIFF", pytest.param("WEBP", marks=needs_webp)]
)
def test_truncated_file_is_refused(tmp_path, fmt):
    data = encode(Image.fromarray(noise_rgb(64, 48, seed=12)), fmt)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(ImageDecodeError, match="cut."):
        load_image(path)


def test_closed_pil_image_is_refused(tmp_path):
    path = tmp_path / "lazy.png"
    Image.fromarray(noise_rgb()).save(path)
    with Image.open(path) as img:
        pass  # closed before its pixels were read
    with pytest.raises(ImageDecodeError, match="PIL image"):
        load_image(img)


# --- to_pil ---------------------------------------------------------------------------------------


def test_to_pil_round_trips():
    rgb = noise_rgb(seed=13)
    img = to_pil(rgb)
    assert img.mode == "RGB" and img.size == (24, 16)
    np.testing.assert_array_equal(load_image(img), rgb)


@pytest.mark.parametrize(
    "bad", [np.zeros((4, 4), np.uint8), np.zeros((4, 4, 3), np.float32), "x.png"]
)
def test_to_pil_rejects_anything_but_rgb_uint8(bad):
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        to_pil(bad)


# --- fuzz ----------------------------------------------------------------------------------------

FUZZ_CASES_PER_SEED = 40
# A fuzzed header can declare a large image; a low limit keeps such cases from allocating
# and decoding megapixels, so the whole fuzz run stays well under a second or two.
FUZZ_MAX_PIXELS = 1_000_000


def fuzz_seed_files() -> dict:
    rgb = Image.fromarray(noise_rgb(24, 16, seed=14))
    seeds = {
        "JPEG": encode(rgb, "JPEG", quality=90, exif=Image.Exif()),
        "PNG": encode(rgb, "PNG"),
        "PGM": encode(rgb.convert("L"), "PPM"),
        "BMP": encode(rgb, "BMP"),
        "GIF": encode(rgb.convert("P"), "GIF"),
        "TIFF": encode(rgb, "TIFF"),
    }
    if HAS_WEBP:
        seeds["WEBP"] = encode(rgb, "WEBP", quality=80)
    return seeds


def mutate(data: bytes, rng: random.Random) -> tuple:
    """One random corruption of data, and a description to reproduce it."""
    operation = rng.choice(["truncate", "flip", "flip_header", "insert", "delete", "splice"])
    out = bytearray(data)
    if operation == "truncate":
        cut = rng.randrange(len(out))
        return bytes(out[:cut]), f"truncate at {cut}"
    if operation in ("flip", "flip_header"):
        span = min(len(out), 64) if operation == "flip_header" else len(out)
        offsets = [rng.randrange(span) for _ in range(rng.randint(1, 8))]
        for offset in offsets:
            out[offset] ^= rng.randint(1, 255)
        return bytes(out), f"{operation} at {offsets}"
    if operation == "insert":
        offset = rng.randrange(len(out) + 1)
        chunk = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 64)))
        return bytes(out[:offset] + chunk + out[offset:]), f"insert {len(chunk)} bytes at {offset}"
    if operation == "delete":
        start = rng.randrange(len(out))
        end = min(len(out), start + rng.randint(1, 64))
        return bytes(out[:start] + out[end:]), f"delete {start}:{end}"
    cut = rng.randrange(len(out))
    tail = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 256)))
    return bytes(out[:cut]) + tail, f"splice random tail at {cut}"


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow warns about many corrupt files
def test_fuzzed_files_decode_or_raise_image_decode_error_only(tmp_path):
    rng = random.Random(20240611)
    cases = [(b"", "zero bytes")]
    cases += [
        (bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 512))), f"random bytes #{i}")
        for i in range(10)
    ]
    for name, seed in fuzz_seed_files().items():
        assert load_image(seed).shape == (16, 24, 3)  # every seed is valid before mutation
        for i in range(FUZZ_CASES_PER_SEED):
            data, how = mutate(seed, rng)
            cases.append((data, f"{name} #{i}: {how}"))
    assert len(cases) >= 200

    unexpected = []
    for index, (data, how) in enumerate(cases):
        if index % 2:  # half through the path route, half through bytes
            source = tmp_path / f"fuzz-{index}"
            source.write_bytes(data)
        else:
            source = data
        try:
            result = load_image(source, max_pixels=FUZZ_MAX_PIXELS)
        except ImageDecodeError:
            continue
        except Exception as exc:  # noqa: BLE001 - the point is to catch anything else
            unexpected.append(f"{how}: {type(exc).__name__}: {exc}")
            continue
        if not (
            isinstance(result, np.ndarray)
            and result.dtype == np.uint8
            and result.ndim == 3
            and result.shape[2] == 3
            and result.shape[0] * result.shape[1] > 0
        ):
            shape = getattr(result, "shape", "")
            unexpected.append(f"{how}: returned {type(result).__name__} {shape}")
    assert not unexpected, "\n".join(unexpected)
