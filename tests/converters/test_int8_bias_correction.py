"""Full-int8 fidelity on models whose activations are large with a small spread.

The failure seen on ArcFace-fine-tuned MobileNets, reproduced small: a layer reading ReLU6
activations with a large mean (here the stem's BatchNorm shifted to 4 ± 0.25) and a
BatchNorm fitted to the narrow statistics behind it. Rounding its weights to int8 then moves
each channel's output by a near-constant that the folded BatchNorm magnifies; without the
bias correction the int8 file fails the 0.98 agreement gate.
"""

from __future__ import annotations

import numpy as np
import pytest

from converters_testkit import SIZE, build_tiny, metadata_for

pytestmark = pytest.mark.slow


def _crops(folder) -> np.ndarray:
    from edgeface_runtime import center_crop, load_image

    files = sorted(folder.rglob("*.png"))
    return (np.stack([center_crop(load_image(f), (SIZE, SIZE)) for f in files]).astype(np.float32) - 127.5) / 127.5


def _mean_heavy_model(x: np.ndarray, gamma: float = 0.25, beta: float = 4.0):
    """The tiny network with the stem's ReLU6 output at ``beta ± gamma`` and every BatchNorm's
    statistics set to what the data gives (as fine-tuning on a narrow domain leaves them)."""
    from edgeface.keras import keras

    keras.utils.set_random_seed(0)
    model = build_tiny()
    stem = model.get_layer("stem_bn")
    stem.gamma.assign(np.full(stem.gamma.shape, gamma, np.float32))
    stem.beta.assign(np.full(stem.beta.shape, beta, np.float32))
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            values = keras.Model(model.inputs, layer.input)(x, training=False).numpy()
            values = values.reshape(-1, values.shape[-1])
            layer.moving_mean.assign(values.mean(axis=0))
            layer.moving_variance.assign(values.var(axis=0))
    return model


@pytest.fixture(scope="module")
def mean_heavy(faces_dir, tmp_path_factory):
    from edgeface.training import save_model

    model = _mean_heavy_model(_crops(faces_dir / "data"))
    path = tmp_path_factory.mktemp("mean_heavy") / "model.keras"
    save_model(model, path, metadata_for(model))
    return model, path


def test_int8_of_mean_heavy_activations_passes_the_gate_only_with_bias_correction(mean_heavy, faces_dir, tmp_path):
    from edgeface_converters import convert

    _, path = mean_heavy
    options = dict(calibration=faces_dir / "calibration", face_detector=None)
    plain = convert(path, tmp_path / "plain", "int8", bias_correction=False, **options)["int8"]
    corrected = convert(path, tmp_path / "corrected", "int8", **options)["int8"]
    assert plain.status == "failed" and plain.fidelity["mean"] < 0.98, plain.fidelity
    assert corrected.ok and corrected.fidelity["mean"] >= 0.99, corrected.fidelity
    # stem, 2 × (depthwise, pointwise), embedding Dense: all have a folded BatchNorm to correct.
    assert corrected.bias_correction == {"layers": 6, "skipped": []}
    assert plain.bias_correction is None


def test_bias_correction_rounds_weights_as_the_converter_does_and_leaves_the_model_alone(mean_heavy, faces_dir):
    """The correction is only right if its int8 rounding is the converter's: compare with the file."""
    from tensorflow.lite.python import schema_py_generated as schema

    from edgeface_converters import _bias_correction, _ptq

    model, _ = mean_heavy
    samples = _crops(faces_dir / "calibration")
    before = [w.copy() for w in model.get_weights()]
    corrected, summary = _bias_correction.bias_corrected(model, samples)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    assert summary["layers"] == 6 and corrected is not model

    with _ptq.exported(corrected, (SIZE, SIZE)) as saved:
        tflite = _ptq.convert(saved, "int8", representative=samples)
    parsed = schema.ModelT.InitFromPackedBuf(tflite, 0)
    files = {}
    for tensor in parsed.subgraphs[0].tensors:
        data = parsed.buffers[tensor.buffer].data
        if tensor.type == 9 and len(tensor.shape) >= 2 and data is not None and len(data):
            values = np.frombuffer(np.asarray(data, np.uint8).tobytes(), np.int8).reshape(tensor.shape)
            scale = np.asarray(tensor.quantization.scale).reshape(
                [-1 if d == tensor.quantization.quantizedDimension else 1 for d in range(values.ndim)])
            files[tensor.name.decode()] = values * scale

    targets, _ = _bias_correction._targets(corrected)
    assert len(targets) == 6
    for target in targets:
        layer = target.layer
        kind = _bias_correction._kind(layer)
        kernel = _bias_correction._kernel(layer).numpy()
        rounded = kernel + _bias_correction.quantization_error(kernel, target.fold, kind)
        if kind == "depthwise":  # Keras (h, w, in, multiplier) -> TFLite (1, h, w, channels)
            expected = (rounded * target.fold.reshape(1, 1, *kernel.shape[2:])).reshape(1, *kernel.shape[:2], -1)
        elif kind == "conv":  # (h, w, in, out) -> (out, h, w, in)
            expected = np.transpose(rounded * target.fold, (3, 0, 1, 2))
        else:  # (in, out) -> (out, in)
            expected = (rounded * target.fold).T
        # The converter names a folded Dense kernel after the BatchNorm's multiply.
        (name,) = ([n for n in files if f"/{layer.name}/" in n]
                   or [n for n in files if f"/{target.batchnorm.name}/" in n])
        np.testing.assert_allclose(files[name], expected, rtol=0, atol=1e-5 * np.abs(expected).max(),
                                   err_msg=f"{layer.name}: the converter rounded its kernel differently")
