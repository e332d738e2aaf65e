import json
import zipfile
import io

import pytest

from edgeface_runtime import (MetadataError, ModelError, ModelMetadata, Preprocess, read_metadata, split_model,
                              write_metadata)
from edgeface_runtime._metadata import fingerprint_of, strip_metadata


def test_metadata_round_trip_keeps_every_field(fixtures_dir, tmp_path):
    bare = (fixtures_dir / "tiny_nometa.tflite").read_bytes()
    meta = ModelMetadata(preprocess=Preprocess(input_size=(48, 48), color_order="BGR", mean=(1, 2, 3), std=(4, 5, 6)),
                         embedding_size=16, thresholds={1e-3: 0.5, 1e-2: 0.4}, name="x", extra={"variant": "int8"})
    out = tmp_path / "m.tflite"
    write_metadata(bare, meta, out)
    model, read = split_model(out)
    assert model == bare
    assert read.preprocess == meta.preprocess
    assert read.thresholds == {1e-3: 0.5, 1e-2: 0.4}
    assert read.extra == {"variant": "int8"}
    assert read.fingerprint == fingerprint_of(bare)


def test_metadata_is_readable_with_the_standard_library_alone(fixtures_dir):
    data = (fixtures_dir / "tiny_float32.tflite").read_bytes()
    record = json.loads(zipfile.ZipFile(io.BytesIO(data)).read("edgeface.json"))
    assert record["embedding_size"] == 16 and record["preprocess"]["input_size"] == [48, 48]


def test_rewriting_metadata_replaces_it_instead_of_stacking(fixtures_dir):
    stamped = (fixtures_dir / "tiny_float32.tflite").read_bytes()
    meta = read_metadata(stamped)
    again = write_metadata(stamped, ModelMetadata(meta.preprocess, 16, thresholds={1e-4: 0.7}))
    assert strip_metadata(again) == strip_metadata(stamped)
    assert read_metadata(again).thresholds == {1e-4: 0.7}


def test_model_without_metadata_reads_as_none(fixtures_dir):
    assert read_metadata(fixtures_dir / "tiny_nometa.tflite") is None


def test_modified_model_bytes_are_detected(fixtures_dir):
    data = bytearray((fixtures_dir / "tiny_float32.tflite").read_bytes())
    data[200] ^= 0xFF
    with pytest.raises(MetadataError, match="fingerprint"):
        split_model(bytes(data))


@pytest.mark.parametrize("payload, hint", [(b"", "not a TFLite"), (b"PK\x03\x04" + b"\0" * 40, "Keras"),
                                           (b"hello world, not a model at all", "not a TFLite")])
def test_non_tflite_input_is_refused_with_a_hint(payload, hint):
    with pytest.raises(ModelError, match=hint):
        split_model(payload)


def test_missing_file_is_a_model_error(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        split_model(tmp_path / "absent.tflite")


def test_threshold_lookup_defaults_to_far_1e3_and_refuses_unknown_far(fixtures_dir):
    meta = read_metadata(fixtures_dir / "tiny_float32.tflite")
    assert meta.threshold_for() == (0.6, 1e-3)
    assert meta.threshold_for(1e-2) == (0.45, 1e-2)
    with pytest.raises(MetadataError, match="no threshold calibrated at FAR 1e-05"):
        meta.threshold_for(1e-5)
    with pytest.raises(MetadataError, match="no calibrated thresholds"):
        ModelMetadata(meta.preprocess, 16).threshold_for()


@pytest.mark.parametrize("kwargs", [dict(input_size=(4, 4)), dict(color_order="RGBA"), dict(std=(1, 0, 1)),
                                    dict(mean=(1, 2)), dict(layout="NCHW")])
def test_invalid_preprocess_is_rejected(kwargs):
    with pytest.raises(ValueError):
        Preprocess(**kwargs)


def test_newer_metadata_format_asks_for_an_upgrade(fixtures_dir):
    meta = read_metadata(fixtures_dir / "tiny_float32.tflite").to_dict()
    meta["format_version"] = 99
    with pytest.raises(MetadataError, match="upgrade"):
        ModelMetadata.from_dict(meta)


def test_normalize_is_the_arithmetic_the_embedder_uses():
    import numpy as np

    from edgeface_runtime._metadata import Preprocess

    rgb = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    pre = Preprocess(input_size=(8, 8), color_order="BGR", mean=(1.0, 2.0, 3.0), std=(2.0, 4.0, 8.0))
    out = pre.normalize(rgb)
    assert out.dtype == np.float32
    expected = (rgb[..., ::-1].astype(np.float32) - np.float32([1, 2, 3])) * (1 / np.float32([2, 4, 8]))
    np.testing.assert_array_equal(out, expected)
    scale, shift = pre.scale_and_shift()
    np.testing.assert_allclose(rgb[..., ::-1] * scale + shift, out, rtol=1e-6, atol=1e-6)
