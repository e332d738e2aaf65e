"""The lossless flatbuffer compaction every converted file goes through (``_compact``)."""

from __future__ import annotations

import numpy as np
import pytest

from edgeface_converters._compact import compact

SIZE = 24


@pytest.fixture(scope="module")
def int8_file() -> bytes:
    """A thin per-channel int8 network: many channels with few weights each, as in MobileNet v1 0.25."""
    from edgeface.keras import keras, tf

    keras.utils.set_random_seed(0)
    x = inputs = keras.Input((SIZE, SIZE, 3), name="image")
    for filters in (8, 16, 16):
        x = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu")(x)
        x = keras.layers.Conv2D(filters, 1, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(8, name="embedding")(x)
    converter = tf.lite.TFLiteConverter.from_keras_model(keras.Model(inputs, outputs))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    samples = np.random.default_rng(0).uniform(-1, 1, (16, 1, SIZE, SIZE, 3)).astype(np.float32)
    converter.representative_dataset = lambda: ([s] for s in samples)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return bytes(converter.convert())


def _outputs(tflite: bytes, images: np.ndarray) -> np.ndarray:
    from edgeface_runtime import select_backend

    interpreter = select_backend().interpreter_class(model_content=tflite, num_threads=1)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    results = []
    for image in images:
        interpreter.set_tensor(inp["index"], image[None])
        interpreter.invoke()
        results.append(interpreter.get_tensor(out["index"]).copy())
    return np.concatenate(results)


def _model(tflite: bytes):
    from tensorflow.lite.python import schema_py_generated as schema

    return schema.Model.GetRootAs(tflite, 0)


def _tensors(tflite: bytes):
    graph = _model(tflite).Subgraphs(0)
    return graph, [graph.Tensors(i) for i in range(graph.TensorsLength())]


def test_compacted_file_is_smaller_and_computes_bit_identical_outputs(int8_file):
    compacted = compact(int8_file)
    images = np.random.default_rng(1).uniform(-1, 1, (4, SIZE, SIZE, 3)).astype(np.float32)
    assert len(compacted) < 0.9 * len(int8_file)
    np.testing.assert_array_equal(_outputs(compacted, images), _outputs(int8_file, images))


def test_identical_zero_point_vectors_are_stored_once(int8_file):
    def zero_point_vectors(tflite: bytes) -> tuple[int, int, int]:
        positions, lengths, count = set(), set(), 0
        for tensor in _tensors(tflite)[1]:
            quantization = tensor.Quantization()
            if quantization is not None and quantization.ZeroPointLength() > 1:  # per-channel
                assert not quantization.ZeroPointAsNumpy().any()
                count += 1
                lengths.add(quantization.ZeroPointLength())
                positions.add(quantization._tab.Vector(quantization._tab.Offset(10)))  # zero_point: field 3
        return count, len(positions), len(lengths)

    count, distinct, _ = zero_point_vectors(int8_file)
    assert count >= 10 and distinct == count  # the converter writes one vector per tensor
    count_after, distinct_after, lengths = zero_point_vectors(compact(int8_file))
    assert count_after == count
    assert distinct_after == lengths == 3  # all zeros: one vector each of 3, 8 and 16 channels


def test_only_the_input_and_output_tensors_keep_their_names(int8_file):
    graph, tensors = _tensors(compact(int8_file))
    kept = {graph.Inputs(0), graph.Outputs(0)}
    names = {i: t.Name() for i, t in enumerate(tensors)}
    assert all(names[i] for i in kept)
    assert not any(name for i, name in names.items() if i not in kept)
    _, all_named = _tensors(compact(int8_file, keep_tensor_names=True))
    assert all(t.Name() for t in all_named)


def test_weight_buffers_stay_16_byte_aligned(int8_file):
    model = _model(compact(int8_file))
    starts = [model.Buffers(i)._tab.Vector(model.Buffers(i)._tab.Offset(4))
              for i in range(model.BuffersLength()) if model.Buffers(i).DataLength()]
    assert starts and all(start % 16 == 0 for start in starts)


def test_compacting_twice_changes_nothing_more(int8_file):
    once = compact(int8_file)
    assert compact(once) == once
