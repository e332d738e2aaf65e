"""Checks every output passes before it is declared done, all through the TF-free runtime.

* ops: every (operator, version) exists in the target interpreter (``check_ops``);
* load + run: the runtime's ``Engine`` (ai-edge-litert) loads it and embeds held-out crops;
* agreement: cosine between its embeddings and the Keras model's on the same crops;
* sparsity: zeros actually present in the file's weight tensors.
"""

from __future__ import annotations

import gzip
from typing import Any

import numpy as np

_WEIGHT_TYPES = {0: np.float32, 1: np.float16, 3: np.uint8, 9: np.int8}  # TFLite TensorType -> numpy


def engine(model: bytes, description: str) -> Any:
    from edgeface_runtime import Engine

    return Engine(model, num_threads=1, description=description)


def embed(runner: Any, x: np.ndarray) -> np.ndarray:
    """Unit-length embeddings of preprocessed float crops, quantizing I/O as a device does."""
    (inp,), (out,) = runner.input_details, runner.output_details
    rows = []
    for i in range(len(x)):
        sample = x[i:i + 1]
        if inp["dtype"] != np.float32:
            scale, zero = inp["quantization"]
            info = np.iinfo(inp["dtype"])
            sample = np.clip(np.round(sample / scale + zero), info.min, info.max).astype(inp["dtype"])
        value = runner.run(sample)[0].astype(np.float32)
        if out["dtype"] != np.float32:
            scale, zero = out["quantization"]
            value = (value - zero) * scale
        rows.append(value.reshape(-1))
    emb = np.stack(rows)
    return emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)


def keras_embed(model: Any, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
    parts = [np.asarray(model(x[i:i + batch_size], training=False), np.float32) for i in range(0, len(x), batch_size)]
    emb = np.concatenate(parts)
    return emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)


def agreement(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    cos = np.sum(a * b, axis=1)
    return {"mean": round(float(cos.mean()), 5), "min": round(float(cos.min()), 5), "n": int(len(cos))}


def io_types(runner: Any) -> dict[str, str]:
    return {"input": np.dtype(runner.input_details[0]["dtype"]).name,
            "output": np.dtype(runner.output_details[0]["dtype"]).name}


def ops(model: bytes) -> list[str]:
    from edgeface_runtime import operator_codes

    return sorted({f"{op.name}/v{op.version}" for op in operator_codes(model)})


def gzip_size(data: bytes) -> int:
    return len(gzip.compress(data, compresslevel=9, mtime=0))


def weight_tensors(model: bytes) -> list[tuple[str, np.ndarray, Any]]:
    """``(name, values, zero point)`` of every constant tensor of rank >= 2 in a TFLite flatbuffer.

    Those are the Conv/Depthwise/FullyConnected kernels (float16 ones before their DEQUANTIZE);
    biases and shape constants are rank 1. Values are raw (quantized ones not dequantized).
    """
    from tensorflow.lite.python import schema_py_generated as schema

    parsed = schema.ModelT.InitFromPackedBuf(model, 0)
    out = []
    seen: set[int] = set()
    for graph in parsed.subgraphs or []:
        for tensor in graph.tensors or []:
            dtype = _WEIGHT_TYPES.get(tensor.type)
            shape = [int(d) for d in tensor.shape] if tensor.shape is not None else []
            if dtype is None or len(shape) < 2 or tensor.buffer in seen:
                continue
            data = parsed.buffers[tensor.buffer].data
            if data is None or len(data) == 0:
                continue
            seen.add(tensor.buffer)
            values = np.frombuffer(np.asarray(data, np.uint8).tobytes(), dtype=dtype).reshape(shape)
            name = tensor.name.decode() if isinstance(tensor.name, bytes) else (tensor.name or "")  # compacted: None
            out.append((name, values, _zero_point(tensor, shape)))
    return out


def weight_sparsity(model: bytes) -> float:
    """Fraction of the kernels' values that are zero (at the zero point, when quantized)."""
    zeros = total = 0
    for _, values, zero in weight_tensors(model):
        zeros += int(np.count_nonzero(values == zero))
        total += values.size
    return zeros / total if total else 0.0


def _zero_point(tensor: Any, shape: list[int]) -> Any:
    q = tensor.quantization
    points = None if q is None or q.zeroPoint is None else np.asarray(q.zeroPoint)
    if points is None or points.size == 0 or not points.any():
        return 0
    if points.size == 1:
        return points.item()
    axis_shape = [1] * len(shape)
    axis_shape[q.quantizedDimension] = points.size
    return points.reshape(axis_shape)
