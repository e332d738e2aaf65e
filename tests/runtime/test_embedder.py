import numpy as np
import pytest

from edgeface_runtime import Embedder, MetadataError, ModelError, Preprocess


def crop(seed=0, size=48):
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def test_embeddings_are_unit_length(fixtures_dir):
    with Embedder.from_path(fixtures_dir / "tiny_float32.tflite") as embedder:
        e = embedder.embed(crop())
    assert e.shape == (16,) and e.dtype == np.float32
    assert abs(np.linalg.norm(e) - 1) < 1e-5


def test_quantized_io_model_agrees_with_float_model(fixtures_dir):
    with Embedder.from_path(fixtures_dir / "tiny_float32.tflite") as f, \
            Embedder.from_path(fixtures_dir / "tiny_uint8_io.tflite") as q:
        cosines = [float(f.embed(crop(s)) @ q.embed(crop(s))) for s in range(8)]
    assert min(cosines) > 0.9, cosines


def test_model_without_metadata_needs_explicit_preprocessing(fixtures_dir):
    with pytest.raises(MetadataError, match="preprocess="):
        Embedder.from_path(fixtures_dir / "tiny_nometa.tflite")
    with Embedder.from_path(fixtures_dir / "tiny_nometa.tflite", preprocess=Preprocess(input_size=(48, 48))) as e:
        assert e.embedding_size == 16 and e.embed(crop()).shape == (16,)


def test_model_whose_output_is_not_an_embedding_is_refused(fixtures_dir):
    with pytest.raises(ModelError, match="embedding output"):
        Embedder.from_path(fixtures_dir / "feature_map.tflite")


def test_metadata_for_another_input_size_is_refused(fixtures_dir):
    with pytest.raises(ModelError, match="metadata says 64x64"):
        Embedder.from_path(fixtures_dir / "tiny_nometa.tflite", preprocess=Preprocess(input_size=(64, 64)))


def test_bgr_models_get_their_channels_swapped(fixtures_dir):
    rgb = Embedder.from_path(fixtures_dir / "tiny_nometa.tflite", preprocess=Preprocess(input_size=(48, 48)))
    bgr = Embedder.from_path(fixtures_dir / "tiny_nometa.tflite",
                             preprocess=Preprocess(input_size=(48, 48), color_order="BGR"))
    image = crop()
    np.testing.assert_allclose(rgb.embed(image[..., ::-1].copy()), bgr.embed(image), atol=1e-6)


def test_wrong_crop_shape_is_a_value_error(fixtures_dir):
    with Embedder.from_path(fixtures_dir / "tiny_float32.tflite") as embedder:
        with pytest.raises(ValueError, match="expected an RGB uint8 crop"):
            embedder.embed(crop(size=50))
