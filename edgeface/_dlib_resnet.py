"""dlib's face-recognition ResNet rebuilt as a flat Keras model from its ``.dat`` file.

Why rebuild: tfmot's pruning, clustering and QAT need Keras layers in one flat functional model
(QAT refuses nested models), and dlib itself can neither be fine-tuned from Python nor converted
to TFLite. The file is read here in pure Python/numpy (no dlib import); dlib is needed only for
the reference check in the tests.

The network is dlib's ``anet_type`` from ``examples/dnn_face_recognition_ex.cpp``: a 7x7/2
convolution, 3x3/2 max pooling, 14 residual blocks of two 3x3 convolutions (32, 64, 128, 256,
256 filters; the first block of every stage after the first halves the resolution), global
average pooling and a 128-unit fully connected layer without bias: 29 convolutions, 29 affine
layers, 5,614,592 parameters. dlib's conventions that a naive rebuild gets wrong:

* Stride-2 convolutions and pools have *no* padding (dlib's default padding is ``k/2`` only for
  stride 1), so the branch and the shortcut of a down-sampling block can disagree in size:
  8x8 becomes 3x3 through the 3x3/2 convolution but 4x4 through the 2x2/2 average pool.
* ``add_prev`` adds tensors of different shapes as if the smaller one were zero-padded at the
  end (extra channels, bottom rows, right columns), which is how the shortcut of a block that
  doubles the channels is built: there is no 1x1 projection.
* The affine layers are dlib's BatchNorm folded into a fixed ``gamma * x + beta``.

The output is dlib's raw 128-d descriptor (not unit-norm; it is normalised downstream).
"""

from __future__ import annotations

import builtins
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from edgeface_runtime.metadata import Preprocess

DLIB_RESNET_FILENAME = "dlib_face_recognition_resnet_model_v1.dat"
DLIB_RESNET_SHA256 = "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30"
DLIB_RESNET_LICENSE = "CC0-1.0"
DLIB_RESNET_PROVENANCE = (
    "Davis King's dlib_face_recognition_resnet_model_v1 (dlib, CC0), trained on about 3 million faces of "
    "7,485 people with no LFW identities per its author, as shipped in face-recognition-models 0.3.0; "
    "99.38 % on LFW as published"
)
SOURCES_PIP = "pip install 'edgeface[sources]'  (or: pip install face-recognition-models==0.3.0)"

# dlib's input layer computes (pixel - mean) / 256 on RGB pixels; the file stores these means.
DLIB_PREPROCESS = Preprocess(input_size=(150, 150), color_order="RGB", mean=(122.782, 117.001, 104.298),
                             std=(256.0,) * 3, alignment="dlib")
DLIB_EMBEDDING_SIZE = 128
# Layer names: "dlib_s<stage>_b<block>_<role>" inside the residual blocks (stage 1 nearest the
# input); the stem ("dlib_conv1" ...) and the head ("dlib_gap", "dlib_fc") match no block.
DLIB_BLOCK_PATTERN = r"^dlib_(s\d+_b\d+)_"

# (filters, blocks, whether the first block down-samples) per stage, input to output; dlib's
# alevel4 ... alevel0.
_STAGES = ((32, 3, False), (64, 4, True), (128, 3, True), (256, 3, True), (256, 1, True))
_PARAMETER_COUNT = 5_614_592
# Keras BatchNormalization epsilon for the affine layers; gamma is scaled by sqrt(1 + eps) to
# cancel it (moving variance 1), so the layer computes dlib's gamma * x + beta.
_BN_EPSILON = 1e-3


def find_dlib_resnet_weights(path: str | os.PathLike | None = None) -> str:
    """The dlib ResNet ``.dat`` file: ``path`` if given, else the installed face-recognition-models one."""
    from ._package_files import find_package_file

    return find_package_file("face_recognition_models", f"models/{DLIB_RESNET_FILENAME}",
                             what="dlib ResNet weights", pip=SOURCES_PIP, path=path)


# --------------------------------------------------------------------------- dlib's serialization

class _Stream:
    """dlib's ``serialize()`` encodings read from a buffer (dlib/serialize.h, dlib/cuda/tensor.h).

    Integers: one byte holding the byte count (low nibble, 1-8) and the sign (0x80), then the
    magnitude little-endian. Floats: two integers, mantissa and exponent (``m * 2**e``). Strings:
    an integer length, then the bytes. Bools: the characters '0' or '1'. Tensors: version 2,
    then n, k, nr, nc, then n*k*nr*nc little-endian float32 (raw, not dlib's float encoding).
    """

    def __init__(self, data: bytes, source: str = "dlib stream") -> None:
        self.data = memoryview(data)
        self.pos = 0
        self.source = source

    def error(self, message: str) -> ValueError:
        return ValueError(f"{self.source}: {message} (at byte {self.pos})")

    def take(self, count: int) -> memoryview:
        if count < 0 or self.pos + count > len(self.data):
            raise self.error(f"truncated: needs {count} more bytes, {len(self.data) - self.pos} left")
        chunk = self.data[self.pos:self.pos + count]
        self.pos += count
        return chunk

    def int(self) -> int:
        head = self.take(1)[0]
        size = head & 0x0F
        if size == 0 or size > 8 or head & 0x70:
            self.pos -= 1
            raise self.error(f"not a dlib integer (header byte 0x{head:02x})")
        value = int.from_bytes(self.take(size), "little")
        return -value if head & 0x80 else value

    def float(self) -> float:
        mantissa, exponent = self.int(), self.int()
        try:
            return math.ldexp(float(mantissa), exponent)
        except OverflowError:  # dlib's inf/nan codes (exponent 32000+) or garbage
            raise self.error(f"float out of range ({mantissa} * 2**{exponent})") from None

    def string(self) -> str:
        length = self.int()
        if length > 1024:  # layer names are short; a huge length means we are not reading a name
            raise self.error(f"implausible string length {length}")
        return bytes(self.take(length)).decode("latin-1")

    def bool(self) -> bool:
        char = bytes(self.take(1))
        if char not in (b"0", b"1"):
            self.pos -= 1
            raise self.error(f"not a dlib bool: {char!r}")
        return char == b"1"

    def tensor(self) -> np.ndarray:
        version = self.int()
        if version != 2:
            raise self.error(f"tensor version {version}, expected 2")
        shape = tuple(self.int() for _ in range(4))
        if min(shape) < 0:
            raise self.error(f"negative tensor shape {shape}")
        count = math.prod(shape)
        return np.frombuffer(self.take(4 * count), "<f4").astype(np.float32).reshape(shape)

    def alias(self) -> tuple[builtins.int, builtins.int, builtins.int, builtins.int]:  # int: the method above
        """An ``alias_tensor``: only a shape (a view into the layer's ``params``)."""
        version = self.int()
        if version != 1:
            raise self.error(f"alias_tensor version {version}, expected 1")
        return tuple(self.int() for _ in range(4))  # type: ignore[return-value]


def _read_layer(s: _Stream) -> dict[str, Any]:
    """One layer's ``details`` as dlib serializes them, by their version string."""
    kind = s.string()
    if kind in ("con_4", "con_5", "con_6"):
        params = s.tensor().reshape(-1)
        filters, rows, cols, stride_y, stride_x, pad_y, pad_x = (s.int() for _ in range(7))
        weights_shape, _ = s.alias(), s.alias()  # the bias alias: its size follows from filters and use_bias
        for _ in range(4):  # learning-rate and weight-decay multipliers
            s.float()
        use_bias = s.bool() if kind in ("con_5", "con_6") else True
        if kind == "con_6":
            s.bool()  # use_relu: a fused relu that dlib only sets on inference-time copies
        if (stride_y, pad_y) != (stride_x, pad_x) or rows != cols:
            raise s.error(f"non-square convolution {rows}x{cols}, stride {stride_y},{stride_x}")
        size = math.prod(weights_shape)
        n_bias = filters if use_bias else 0
        if weights_shape[0] != filters or weights_shape[2:] != (rows, cols) or params.size != size + n_bias:
            raise s.error(f"convolution shapes disagree: {filters} filters, weights {weights_shape}, "
                          f"{params.size} parameters")
        bias = params[size:] if use_bias else np.zeros(filters, np.float32)
        return {"type": "conv", "weights": params[:size].reshape(weights_shape), "bias": bias,
                "stride": stride_y, "padding": pad_y}
    if kind in ("affine_", "affine_2"):
        params = s.tensor().reshape(-1)
        gamma_shape, _ = s.alias(), s.alias()
        s.int()  # mode: conv (per channel) or fc
        if kind == "affine_2" and s.bool():
            raise s.error("a disabled affine layer; this is not the network edgeface rebuilds")
        channels = math.prod(gamma_shape)
        if params.size != 2 * channels:
            raise s.error(f"affine layer with {params.size} parameters for {channels} channels")
        return {"type": "affine", "gamma": params[:channels], "beta": params[channels:]}
    if kind in ("relu_", "relu_2"):
        if kind == "relu_2" and s.bool():
            raise s.error("a disabled relu; this is not the network edgeface rebuilds")
        return {"type": "relu"}
    if kind in ("max_pool_2", "avg_pool_2"):
        rows, cols, stride_y, stride_x, pad_y, pad_x = (s.int() for _ in range(6))
        if rows == cols == 0:  # avg_pool_everything
            return {"type": "global_avg_pool"}
        if rows != cols or (stride_y, pad_y) != (stride_x, pad_x):
            raise s.error(f"non-square pooling {rows}x{cols}, stride {stride_y},{stride_x}")
        return {"type": kind[:-2], "size": rows, "stride": stride_y, "padding": pad_y}
    if kind == "add_prev_":
        return {"type": "add_prev"}
    if kind in ("fc_2", "fc_3"):
        outputs, inputs = s.int(), s.int()
        params = s.tensor().reshape(-1)
        weights_shape, _ = s.alias(), s.alias()
        bias_mode = s.int()
        for _ in range(4):
            s.float()
        if kind == "fc_3":
            s.bool()  # use_bias (fc_no_bias has no bias either way)
        if bias_mode != 1 or weights_shape[:2] != (inputs, outputs) or params.size != inputs * outputs:
            raise s.error(f"expected a fully connected layer without bias, got bias mode {bias_mode}, "
                          f"weights {weights_shape}, {params.size} parameters")
        # dlib computes input · W with W stored (inputs, outputs): already Keras' Dense layout.
        return {"type": "fc", "weights": params.reshape(inputs, outputs)}
    raise s.error(f"unsupported dlib layer {kind!r}; this is not the network edgeface rebuilds")


def _read_network(s: _Stream) -> list[dict[str, Any]]:
    """A ``loss_metric`` network in input → output order, tags and skips as "wrapper" entries.

    dlib writes a network outside-in: the loss, then each layer's wrapper version before
    recursing into the layer below it (2: ``add_layer``, 1: ``add_tag_layer`` or
    ``add_skip_layer``, 3: the ``add_layer`` holding the input layer), and each ``add_layer``'s
    details only after its whole subnetwork. So all the wrapper versions come first, then the
    input layer, then the layers' details from the input upwards. Tags and skips carry neither
    details nor their ids: which is which follows from the architecture (see :func:`_plan`).
    """
    if s.int() != 1:
        raise s.error("not a dlib network (add_loss_layer version 1 expected)")
    loss = s.string()
    if loss != "loss_metric_2":
        raise s.error(f"loss layer {loss!r}; dlib's face-recognition ResNet has loss_metric_2")
    s.float(), s.float()  # margin, distance threshold: training-only
    wrappers: list[int] = []
    while True:
        version = s.int()
        if version not in (1, 2, 3) or len(wrappers) > 10_000:
            raise s.error(f"unexpected layer wrapper version {version}")
        wrappers.append(version)
        if version == 3:
            break
    if s.string() != "input_rgb_image_sized":
        raise s.error("the input layer is not input_rgb_image_sized")
    mean = (s.float(), s.float(), s.float())
    rows, cols = s.int(), s.int()
    layers: list[dict[str, Any]] = [{"type": "input", "mean": mean, "size": (rows, cols)}]
    for version in reversed(wrappers):
        if version == 1:
            layers.append({"type": "wrapper"})
            continue
        layers.append(_read_layer(s))
        for _ in range(3):  # setup, gradient-stale and output-disabled flags
            s.bool()
        for _ in range(3):  # gradient and cached-output tensors (empty in a saved model)
            s.tensor()
        if version == 3:
            s.int()  # sample expansion factor
    if s.pos != len(s.data):
        raise s.error(f"{len(s.data) - s.pos} unexpected bytes after the network")
    return layers


def _plan() -> list[dict[str, Any]]:
    """``anet_type`` in input → output order: each layer's type, attributes and Keras name.

    A block is ``tag1 → conv a → affine → relu → conv b → affine → add_prev1 → relu``; a
    down-sampling one ends ``... affine → tag2 → skip1 → avg_pool → add_prev2 → relu`` (the
    shortcut is the block's input, average-pooled, plus the branch tagged 2).
    """
    plan: list[dict[str, Any]] = [
        {"type": "input", "size": (150, 150)},
        {"type": "conv", "filters": 32, "kernel": 7, "stride": 2, "padding": 0, "name": "dlib_conv1"},
        {"type": "affine", "name": "dlib_bn1"},
        {"type": "relu", "name": "dlib_relu1"},
        {"type": "max_pool", "size": 3, "stride": 2, "padding": 0, "name": "dlib_pool1"},
    ]
    for stage, (filters, blocks, down) in enumerate(_STAGES, start=1):
        for block in range(1, blocks + 1):
            prefix = f"dlib_s{stage}_b{block}"
            stride = 2 if down and block == 1 else 1
            plan += [
                {"type": "tag", "id": 1},
                {"type": "conv", "filters": filters, "kernel": 3, "stride": stride,
                 "padding": 0 if stride == 2 else 1, "name": f"{prefix}_conv_a"},
                {"type": "affine", "name": f"{prefix}_bn_a"},
                {"type": "relu", "name": f"{prefix}_relu_a"},
                {"type": "conv", "filters": filters, "kernel": 3, "stride": 1, "padding": 1,
                 "name": f"{prefix}_conv_b"},
                {"type": "affine", "name": f"{prefix}_bn_b"},
            ]
            if stride == 2:
                plan += [{"type": "tag", "id": 2}, {"type": "skip", "id": 1},
                         {"type": "avg_pool", "size": 2, "stride": 2, "padding": 0, "name": f"{prefix}_shortcut_pool"}]
            plan += [{"type": "add_prev", "id": 2 if stride == 2 else 1, "name": prefix},
                     {"type": "relu", "name": f"{prefix}_out"}]
    plan += [{"type": "global_avg_pool", "name": "dlib_gap"},
             {"type": "fc", "units": DLIB_EMBEDDING_SIZE, "name": "dlib_fc"}]
    return plan


def read_dlib_resnet(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Parse dlib's face-recognition ResNet ``.dat`` file; no dlib needed.

    Returns its layers in input → output order as dicts with a ``"type"``, dlib's attributes and
    a Keras ``"name"``, and float32 numpy parameters: conv ``weights`` (N, C, kh, kw) and ``bias``
    (N,), affine ``gamma`` and ``beta`` (C,), fc ``weights`` (inputs, outputs); tags, skips and
    ``add_prev`` carry the tag ``id`` that dlib's types hold but its file does not. Raises
    ValueError when the file is truncated or is not this network.
    """
    source = os.fspath(path)
    try:
        data = Path(source).read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read the dlib ResNet file {source!r}: {exc}") from exc
    return _match_plan(_read_network(_Stream(data, source)), source)


def _match_plan(found: list[dict[str, Any]], source: str) -> list[dict[str, Any]]:
    """Check a parsed network against ``anet_type`` and label it with the plan's names and ids."""
    plan = _plan()
    kinds = [layer["type"] for layer in found]
    expected = ["wrapper" if step["type"] in ("tag", "skip") else step["type"] for step in plan]
    if kinds != expected:
        counts = {k: kinds.count(k) for k in ("conv", "affine", "fc")}
        raise ValueError(f"{source}: not dlib's face-recognition ResNet (anet_type): found {len(kinds)} layers "
                         f"({counts['conv']} convolutions, {counts['affine']} affine, {counts['fc']} fully "
                         f"connected), expected {len(expected)} (29, 29, 1) in its order")
    channels = 3
    layers = []
    for step, layer in zip(plan, found):
        merged = {**layer, **step}  # the plan's names, ids and expected attributes ...
        mismatch: list[str] = [key for key in ("size", "stride", "padding") if key in layer and layer[key] != step[key]]
        if step["type"] == "input" and not np.allclose(layer["mean"], DLIB_PREPROCESS.mean, atol=1e-3):
            mismatch.append("mean")  # DLIB_PREPROCESS hard-codes the means every model of this type is fed
        shape = {"conv": (step.get("filters"), channels, step.get("kernel"), step.get("kernel")),
                 "affine": (channels,), "fc": (channels, step.get("units"))}.get(step["type"])
        key = "gamma" if step["type"] == "affine" else "weights"
        if shape is not None and layer[key].shape != shape:
            mismatch.append(key)
        channels = step.get("filters", channels)
        if mismatch:
            shapes = {k: getattr(layer[k], "shape", layer[k]) for k in mismatch}
            raise ValueError(f"{source}: layer {step.get('name', step['type'])} has {shapes}, which dlib's "
                             f"face-recognition ResNet does not")
        layers.append(merged)  # ... and the file's values
    return layers


def random_dlib_resnet(seed: int = 0) -> list[dict[str, Any]]:
    """The network's layers with random weights (He-normal convolutions, identity affines)."""
    rng = np.random.default_rng(seed)
    layers, channels = [], 3
    for step in _plan():
        layer = dict(step)
        if step["type"] == "input":
            layer["mean"] = DLIB_PREPROCESS.mean
        elif step["type"] == "conv":
            k = step["kernel"]
            layer["weights"] = rng.normal(0, (2.0 / (channels * k * k)) ** 0.5,
                                          (step["filters"], channels, k, k)).astype(np.float32)
            layer["bias"] = np.zeros(step["filters"], np.float32)
            channels = step["filters"]
        elif step["type"] == "affine":
            layer["gamma"], layer["beta"] = np.ones(channels, np.float32), np.zeros(channels, np.float32)
        elif step["type"] == "fc":
            layer["weights"] = rng.normal(0, channels ** -0.5, (channels, step["units"])).astype(np.float32)
        layers.append(layer)
    return layers


def count_parameters(layers: list[dict[str, Any]]) -> int:
    """dlib's parameter count: convolution weights and biases, affine gamma and beta, fc weights."""
    return sum(int(layer[k].size) for layer in layers for k in ("weights", "bias", "gamma", "beta") if k in layer)


# --------------------------------------------------------------------------- Keras model

def build_dlib_resnet(input_tensor: Any, path: str | os.PathLike | list[dict[str, Any]] | None = None) -> Any:
    """dlib's face-recognition ResNet on ``input_tensor`` (150x150x3, preprocessed per ``DLIB_PREPROCESS``).

    A flat functional model (every layer built on ``input_tensor``) of Conv2D, BatchNormalization,
    ReLU, pooling, ZeroPadding2D/Reshape, Add and a bias-free Dense, which tfmot can prune and
    quantize. Output: dlib's raw 128-d descriptor, float32, not normalised. ``path``: the
    ``.dat`` file, "pretrained" (the installed face-recognition-models file), the list from
    :func:`read_dlib_resnet`, or None (random weights: the architecture only).

    The affine layers are BatchNormalization layers holding dlib's ``gamma`` and ``beta`` with
    moving mean 0 and variance 1, so inference computes dlib's ``gamma * x + beta`` and QAT can
    fold them into the convolutions. Fine-tune them in inference mode (frozen, or called with
    ``training=False``): with batch statistics they would normalise instead.
    """
    from ._keras import keras

    if path is None:
        source = random_dlib_resnet()
    elif isinstance(path, list):
        source = path
    else:
        source = read_dlib_resnet(find_dlib_resnet_weights(None if str(path) == "pretrained" else path))
    layers = keras.layers
    x = input_tensor
    tags: dict[int, Any] = {}
    assigned: list[tuple[Any, list[np.ndarray]]] = []
    for spec in source:
        kind, name = spec["type"], spec.get("name", "")
        if kind == "input":
            continue  # the mean subtraction and scaling are DLIB_PREPROCESS, outside the model
        if kind == "tag":
            tags[spec["id"]] = x
        elif kind == "skip":
            x = tags[spec["id"]]
        elif kind == "conv":
            weights = spec["weights"]
            if spec["padding"] and spec["stride"] == 1 and 2 * spec["padding"] + 1 == weights.shape[2]:
                padding = "same"  # stride 1, symmetric k//2 padding: what Keras' "same" does
            elif spec["padding"]:
                x = layers.ZeroPadding2D(spec["padding"], name=f"{name}_pad")(x)
                padding = "valid"
            else:
                padding = "valid"  # dlib's stride-2 default: no padding, the last rows/cols may be unused
            conv = layers.Conv2D(weights.shape[0], weights.shape[2:], strides=spec["stride"], padding=padding,
                                 name=name)
            x = conv(x)
            # dlib, like Keras, cross-correlates: only the layout changes, (N, C, kh, kw) → (kh, kw, C, N).
            assigned.append((conv, [weights.transpose(2, 3, 1, 0), spec["bias"]]))
        elif kind == "affine":
            norm = layers.BatchNormalization(epsilon=_BN_EPSILON, name=name)
            x = norm(x)
            gamma = spec["gamma"] * np.float32(np.sqrt(1.0 + _BN_EPSILON))
            assigned.append((norm, [gamma, spec["beta"], np.zeros_like(gamma), np.ones_like(gamma)]))
        elif kind == "relu":
            x = layers.ReLU(name=name)(x)
        elif kind in ("max_pool", "avg_pool"):
            # Both pools have dlib's stride-2 default padding of 0 (checked by read_dlib_resnet):
            # "valid" pooling has dlib's output size 1 + (n - k) // s; no border semantics to match.
            pool = layers.MaxPooling2D if kind == "max_pool" else layers.AveragePooling2D
            x = pool(spec["size"], strides=spec["stride"], padding="valid", name=name)(x)
        elif kind == "add_prev":
            x = _add_prev(layers, x, tags[spec["id"]], name)
        elif kind == "global_avg_pool":
            x = layers.GlobalAveragePooling2D(name=name)(x)
        elif kind == "fc":
            dense = layers.Dense(spec["weights"].shape[1], use_bias=False, name=name)
            x = dense(x)
            assigned.append((dense, [spec["weights"]]))
        else:
            raise ValueError(f"unknown dlib layer type {kind!r}")
    model = keras.Model(keras.utils.get_source_inputs(input_tensor), x, name="dlib_resnet")
    for layer, values in assigned:
        layer.set_weights([np.asarray(v, np.float32) for v in values])
    return model


def _add_prev(layers: Any, x: Any, prev: Any, name: str) -> Any:
    """dlib's ``add_prev``: the sum, each operand zero-padded at the end of every axis to the larger shape.

    In this network the shortcut can lack channels (the block doubled them) and the branch can
    lack a row and a column (a stride-2 convolution without padding on an even size).
    """
    shape = [max(a, b) for a, b in zip(x.shape[1:], prev.shape[1:])]
    x = _pad_to(layers, x, shape, f"{name}_pad_shortcut")
    prev = _pad_to(layers, prev, shape, f"{name}_pad_branch")
    return layers.Add(name=f"{name}_add")([x, prev])


def _pad_to(layers: Any, x: Any, shape: list[int], name: str) -> Any:
    height, width, channels = (int(v) for v in x.shape[1:])
    if (height, width) != (shape[0], shape[1]):
        x = layers.ZeroPadding2D(((0, shape[0] - height), (0, shape[1] - width)), name=f"{name}_hw")(x)
        height, width = shape[0], shape[1]
    if channels != shape[2]:
        # Channel padding without a Lambda (which QAT and safe loading refuse) or ZeroPadding3D
        # (which QAT does not support): view the map as (h*w, channels, 1), pad its second axis
        # with ZeroPadding2D, view it back. Reshape and ZeroPadding2D are QAT pass-through layers.
        x = layers.Reshape((height * width, channels, 1), name=f"{name}_c_in")(x)
        x = layers.ZeroPadding2D(((0, 0), (0, shape[2] - channels)), name=f"{name}_c")(x)
        x = layers.Reshape((height, width, shape[2]), name=f"{name}_c_out")(x)
    return x
