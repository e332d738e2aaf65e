"""The source model: load it, check it is an embedding model, flatten it, copy it.

tfmot needs a flat tf-keras (Keras 2) functional model: QAT refuses models nested in models,
and pruning/clustering through ``clone_model`` would treat a nested backbone as one opaque
layer. A nested model is flattened here by rewriting its config (each inner layer becomes a
layer of the outer model) and the result is checked to compute the same function.
"""

from __future__ import annotations

import copy
import logging
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from edgeface_runtime.metadata import ModelMetadata

logger = logging.getLogger(__name__)

_NESTED = ("Functional", "Model", "Sequential")


def load_source(path: str | os.PathLike, metadata: ModelMetadata | None = None) -> tuple[Any, ModelMetadata]:
    """``(tf-keras model, metadata)`` from an edgeface ``model.keras``; ValueError says what is wrong.

    ``metadata`` overrides the ``edgeface.json`` inside the file (needed for plain Keras files).
    """
    file = Path(path)
    if not file.exists():
        raise ValueError(f"model file not found: {str(path)!r}")
    if file.is_dir():
        raise ValueError(f"expected a .keras file, got a directory: {str(path)!r} (SavedModel folders are not "
                         "supported: load the model in tf_keras and save it with edgeface.save_model)")
    if file.suffix == ".tflite":
        raise ValueError(f"{file} is already a TFLite model; convert the .keras model it came from")
    if not zipfile.is_zipfile(file):
        raise ValueError(f"{file} is not a Keras file (.keras is a zip archive; got {_sniff(file)}); "
                         "pass the model.keras written by `edgeface train` or edgeface.save_model")
    from edgeface.training import load_model  # checks Keras 3 files and registers edgeface's layers

    model, stored = load_model(file)
    metadata = metadata or stored
    if metadata is None:
        raise ValueError(f"{file} carries no edgeface metadata (no edgeface.json member), so its preprocessing is "
                         "unknown; save it with edgeface.save_model(model, path, metadata) or pass metadata=")
    check_embedding_model(model, metadata, str(file))
    return model, metadata


def _sniff(file: Path) -> str:
    with open(file, "rb") as fh:
        head = fh.read(8)
    if head.startswith(b"\x89HDF"):
        return "an HDF5 file: re-save it as .keras with tf_keras"
    if head[4:8] == b"TFL3":
        return "a TFLite flatbuffer"
    return f"{os.path.getsize(file)} bytes starting {head[:4]!r}"


def check_embedding_model(model: Any, metadata: ModelMetadata, described: str = "the model") -> None:
    """ValueError unless ``model`` maps one image batch to unit-length embeddings matching ``metadata``."""
    from edgeface.layers import L2Normalize

    if len(model.inputs) != 1:
        raise ValueError(f"{described} takes {len(model.inputs)} inputs ({[t.name for t in model.inputs]}); convert "
                         "the embedding model (image → embedding), not the training model (image, label → logits)")
    if len(model.outputs) != 1:
        raise ValueError(f"{described} has {len(model.outputs)} outputs; an embedding model has one")
    shape = tuple(model.input_shape)
    if len(shape) != 4 or shape[-1] != 3:
        raise ValueError(f"{described} takes input of shape {shape}; expected (batch, height, width, 3) images")
    out_shape = tuple(model.output_shape)
    last = model.layers[-1]
    if len(out_shape) != 2 or not isinstance(last, L2Normalize):
        raise ValueError(
            f"{described} is not an embedding model: its output is {type(last).__name__} {last.name!r} with shape "
            f"{out_shape}, expected an L2Normalize layer giving (batch, embedding_size); a classifier or a "
            "feature map cannot be used for verification (save the embedding model: FaceModels.embedding)")
    expected = tuple(metadata.preprocess.input_size)
    if None not in shape[1:3] and tuple(shape[1:3]) != expected:
        raise ValueError(f"{described} takes {shape[1]}×{shape[2]} images but its metadata says input_size "
                         f"{expected[0]}×{expected[1]}; fix the metadata (preprocess.input_size) or the model")
    if out_shape[1] is not None and int(out_shape[1]) != metadata.embedding_size:
        raise ValueError(f"{described} gives {out_shape[1]}-d embeddings but its metadata says embedding_size "
                         f"{metadata.embedding_size}")


def is_nested(model: Any) -> bool:
    from edgeface.keras import keras

    return any(isinstance(layer, keras.Model) for layer in model.layers)


def flatten(model: Any) -> Any:
    """The same model with every nested model's layers inlined (returns ``model`` when already flat).

    Raises ValueError for what cannot be inlined safely: a nested model called more than
    once, layer names that collide, or a rebuilt model that computes something else.
    """
    from edgeface.keras import keras

    if not is_nested(model):
        return model
    config = _flatten_config(model.get_config(), model.name)
    try:
        flat = keras.Model.from_config(config)
    except Exception as exc:  # noqa: BLE001 - any failure means "cannot flatten"; say so clearly
        raise ValueError(f"cannot flatten the nested model {model.name!r} ({exc}); build the backbone flat on the "
                         "input tensor (e.g. MobileNetV2(input_tensor=x, ...)) for pruning, clustering and "
                         "QAT") from exc
    sources = _layers_by_name(model)
    for layer in flat.layers:
        if layer.weights:
            layer.set_weights(sources[layer.name].get_weights())
    probe = np.random.default_rng(0).normal(size=(2, *model.input_shape[1:])).astype(np.float32)
    if not np.allclose(model(probe, training=False), flat(probe, training=False), atol=1e-4):
        raise ValueError(f"flattening the nested model {model.name!r} changed its output; build the backbone flat "
                         "on the input tensor for pruning, clustering and QAT")
    logger.info("flattened nested model %r: %d layers -> %d", model.name, len(model.layers), len(flat.layers))
    return flat


def _layers_by_name(model: Any) -> dict[str, Any]:
    from edgeface.keras import keras

    out: dict[str, Any] = {}
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            out.update(_layers_by_name(layer))
        else:
            out[layer.name] = layer
    return out


def _flatten_config(config: dict, name: str) -> dict:
    """Rewrite a functional config so nested Functional/Sequential layers become plain layers."""
    config = copy.deepcopy(config)
    taken = {layer["name"] for layer in config["layers"] if layer["class_name"] not in _NESTED}
    refs: dict[tuple[str, int], list] = {}  # (layer, tensor index) -> [name, node, tensor] it now is
    out_layers = []

    def resolve(ref: list) -> list:
        return refs.get((ref[0], ref[2]), ref)

    for layer in config["layers"]:
        kind = layer["class_name"]
        inbound = layer.get("inbound_nodes") or []
        if kind not in _NESTED:
            layer["inbound_nodes"] = [[[*resolve(r[:3]), *r[3:]] for r in node] for node in inbound]
            out_layers.append(layer)
            continue
        if len(inbound) != 1:
            raise ValueError(f"{name!r} calls its nested model {layer['name']!r} {len(inbound)} times; a shared "
                             "nested model cannot be flattened; build the model flat")
        # Call kwargs of the nested model itself (e.g. training=False) have no layer to go to once
        # inlined; the inner layers keep their own. Inference is unchanged, and fine-tuning
        # freezes BatchNorm anyway.
        args = [resolve(r[:3]) for r in inbound[0]]
        inner = layer["config"]
        if kind == "Sequential":
            inner = _sequential_as_functional(inner)
        inner = _flatten_config(inner, layer["name"])
        local: dict[str, list] = {}
        for (in_name, _, _), arg in zip(inner["input_layers"], args):
            local[in_name] = arg
        for sub in inner["layers"]:
            if sub["class_name"] == "InputLayer":
                continue
            if sub["name"] in taken:
                raise ValueError(f"cannot flatten {name!r}: layer name {sub['name']!r} exists both inside the nested "
                                 f"model {layer['name']!r} and outside it; give the layers unique names")
            taken.add(sub["name"])
            sub["inbound_nodes"] = [[[*(local.get(r[0], r[:3])), *r[3:]] for r in node]
                                    for node in sub.get("inbound_nodes") or []]
            out_layers.append(sub)
        for t, (o_name, _, o_tensor) in enumerate(inner["output_layers"]):
            refs[(layer["name"], t)] = local.get(o_name, [o_name, 0, o_tensor])
    config["layers"] = out_layers
    config["output_layers"] = [resolve(r) for r in config["output_layers"]]
    return config


def _sequential_as_functional(config: dict) -> dict:
    layers = copy.deepcopy(config["layers"])
    if layers and layers[0]["class_name"] == "InputLayer":
        first = layers.pop(0)
        input_name = first["config"]["name"]
    else:
        input_name = f"{config['name']}_input"
        first = {"class_name": "InputLayer", "config": {"name": input_name}}
    out = [{"class_name": "InputLayer", "name": input_name, "config": first["config"], "inbound_nodes": []}]
    previous = input_name
    for layer in layers:
        layer_name = layer["config"]["name"]
        out.append({**layer, "name": layer_name, "inbound_nodes": [[[previous, 0, 0, {}]]]})
        previous = layer_name
    return {"name": config["name"], "layers": out, "input_layers": [[input_name, 0, 0]],
            "output_layers": [[previous, 0, 0]]}


def fold_dense_batchnorm(model: Any) -> Any:
    """The same function with each ``Dense`` → ``BatchNormalization`` pair (the embedding head's) merged.

    QAT quantizes a Dense kernel per tensor, and the converter cannot fold the following BN's
    per-channel scale into it afterwards: the final FULLY_CONNECTED stayed float32 in every
    QAT file. With BN frozen during fine-tuning the two are one affine map, so the merged
    Dense (with bias) is exact, and pruning, clustering and QAT all see the kernel that ships.
    """
    from edgeface.keras import keras

    config = copy.deepcopy(model.get_config())
    entries = {layer["name"]: layer for layer in config["layers"]}
    uses: dict[str, int] = {}
    for layer in config["layers"]:
        for node in layer.get("inbound_nodes") or []:
            for ref in node:
                uses[ref[0]] = uses.get(ref[0], 0) + 1
    outputs = {ref[0] for ref in config["output_layers"]}
    pairs = {}  # bn name -> dense name
    for layer in config["layers"]:
        nodes = layer.get("inbound_nodes") or []
        if layer["class_name"] != "BatchNormalization" or len(nodes) != 1 or len(nodes[0]) != 1:
            continue
        dense = entries.get(nodes[0][0][0])
        if (dense is not None and dense["class_name"] == "Dense" and dense["config"].get("activation") == "linear"
                and uses.get(dense["name"]) == 1 and dense["name"] not in outputs
                and layer["config"].get("axis") in (-1, [-1], 1, [1])):
            pairs[layer["name"]] = dense["name"]
    if not pairs:
        return model
    rename = {bn: dense for bn, dense in pairs.items()}
    kept = []
    for layer in config["layers"]:
        if layer["name"] in pairs:
            continue
        if layer["name"] in pairs.values():
            layer["config"]["use_bias"] = True
        layer["inbound_nodes"] = [[[rename.get(r[0], r[0]), *r[1:]] for r in node]
                                  for node in layer.get("inbound_nodes") or []]
        kept.append(layer)
    config["layers"] = kept
    config["output_layers"] = [[rename.get(r[0], r[0]), *r[1:]] for r in config["output_layers"]]
    folded = keras.Model.from_config(config)
    for layer in folded.layers:
        if layer.weights and layer.name not in pairs.values():
            layer.set_weights(model.get_layer(layer.name).get_weights())
    for bn_name, dense_name in pairs.items():
        bn, dense = model.get_layer(bn_name), model.get_layer(dense_name)
        kernel = dense.kernel.numpy()
        bias = dense.bias.numpy() if dense.use_bias else np.zeros(kernel.shape[1], np.float32)
        gamma = bn.gamma.numpy() if bn.scale else 1.0
        beta = bn.beta.numpy() if bn.center else 0.0
        scale = gamma / np.sqrt(bn.moving_variance.numpy() + bn.epsilon)
        folded.get_layer(dense_name).set_weights([kernel * scale, (bias - bn.moving_mean.numpy()) * scale + beta])
    probe = np.random.default_rng(0).normal(size=(4, *model.input_shape[1:])).astype(np.float32)
    before, after = np.asarray(model(probe, training=False)), np.asarray(folded(probe, training=False))
    if np.min(np.sum(before * after, axis=1)
              / (np.linalg.norm(before, axis=1) * np.linalg.norm(after, axis=1))) < 0.9999:
        logger.warning("folding BatchNorm into Dense changed the output; keeping the layers separate")
        return model
    logger.info("folded %s into %s", ", ".join(pairs), ", ".join(pairs.values()))
    return folded


def copy_model(model: Any, *, freeze_batchnorm: bool = True, dropout: bool = False) -> Any:
    """An independent copy (new layers, copied weights): tfmot wrappers share or mutate their input.

    ``freeze_batchnorm``: fine-tuning keeps BatchNorm in inference mode with its trained
    statistics; small fine-tuning batches would otherwise replace them and move every embedding.
    ``dropout``: False sets every Dropout rate to 0. Fine-tuning matches the source model's
    inference-mode embedding; with dropout on, the student is trained on noisy features the
    teacher never sees (a no-op for the exported model, whose dropout is off anyway).
    """
    from edgeface.keras import keras

    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    for layer in clone.layers:
        if freeze_batchnorm and isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
        if not dropout and isinstance(layer, keras.layers.Dropout):
            layer.rate = 0.0  # read when the layer is called (and by get_config for tfmot's clones)
    return clone


def input_size(model: Any, metadata: ModelMetadata) -> tuple[int, int]:
    h, w = model.input_shape[1:3]
    return (int(h), int(w)) if h and w else tuple(metadata.preprocess.input_size)  # type: ignore[return-value]


def kernel_sparsity(model: Any) -> float:
    """Fraction of exact zeros in the Conv/Dense kernels of a Keras model (wrappers stripped)."""
    total = zeros = 0
    for weight in model.weights:
        if "kernel" in weight.name and len(weight.shape) >= 2:
            value = weight.numpy()
            total += value.size
            zeros += int(np.count_nonzero(value == 0))
    return zeros / total if total else 0.0
