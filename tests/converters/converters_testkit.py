"""Helpers for the converter tests: synthetic identities and a small embedding model to train.

(A uniquely named module, not conftest: several test folders have a conftest.py.)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SIZE = 32
IDENTITIES = 24


def face(identity: int, sample: int, size: int = 40) -> np.ndarray:
    """A uint8 RGB image: identity → smooth colour pattern; sample → shift, brightness and noise."""
    from PIL import Image

    base_rng = np.random.default_rng(identity)
    coarse = base_rng.uniform(30, 225, size=(4, 4, 3)).astype(np.uint8)
    pattern = np.asarray(Image.fromarray(coarse).resize((size + 8, size + 8), Image.Resampling.BICUBIC), np.float32)
    rng = np.random.default_rng(100_000 + 1000 * identity + sample)
    dy, dx = rng.integers(0, 5, size=2)
    image = pattern[dy:dy + size, dx:dx + size] * rng.uniform(0.85, 1.15) + rng.normal(0, 6, (size, size, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def write_faces(root: Path, identities: range, per_identity: int, *, first_sample: int = 0, flat: bool = False,
                ext: str = "png") -> Path:
    from PIL import Image

    for i in identities:
        name = f"Person_{i:02d}"
        folder = root if flat else root / name
        folder.mkdir(parents=True, exist_ok=True)
        for j in range(per_identity):
            file = folder / f"{name}_{j + 1:04d}.{ext}"
            Image.fromarray(face(i, first_sample + j)).save(file, quality=95) if ext == "jpg" else \
                Image.fromarray(face(i, first_sample + j)).save(file)
    return root


def build_tiny(embedding_size: int = 32, size: int = SIZE, prelu: bool = False):
    """``prelu``: PReLU activations (per channel, as SFace has them) instead of ReLU6."""
    from edgeface.keras import keras
    from edgeface.layers import L2Normalize

    layers = keras.layers
    bn = dict(momentum=0.9)  # few training steps: let the moving statistics catch up

    def act(name):
        if prelu:
            return layers.PReLU(shared_axes=[1, 2], alpha_initializer=keras.initializers.RandomUniform(-0.3, 0.8),
                                name=name)
        return layers.ReLU(6.0, name=name)

    inputs = keras.Input((size, size, 3), name="image")
    x = layers.Conv2D(32, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(inputs)
    x = layers.BatchNormalization(name="stem_bn", **bn)(x)
    x = act("stem_relu")(x)
    for i, (filters, stride) in enumerate(((64, 1), (128, 2)), start=1):
        x = layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False, name=f"b{i}_dw")(x)
        x = layers.BatchNormalization(name=f"b{i}_dw_bn", **bn)(x)
        x = act(f"b{i}_dw_relu")(x)
        x = layers.Conv2D(filters, 1, use_bias=False, name=f"b{i}_pw")(x)
        x = layers.BatchNormalization(name=f"b{i}_pw_bn", **bn)(x)
        x = act(f"b{i}_pw_relu")(x)
    x = layers.GlobalAveragePooling2D(name="embedding_pool")(x)
    x = layers.Dense(embedding_size, use_bias=False, name="embedding_dense")(x)
    x = layers.BatchNormalization(name="embedding_bn", **bn)(x)
    outputs = L2Normalize(name="embedding")(x)
    return keras.Model(inputs, outputs, name="tiny_embedder")


def metadata_for(model, **preprocess):
    from edgeface_runtime.metadata import ModelMetadata, Preprocess

    values = dict(input_size=(SIZE, SIZE), alignment="none")
    values.update(preprocess)
    return ModelMetadata(Preprocess(**values), embedding_size=int(model.output_shape[-1]), name="tiny",
                         thresholds={1e-3: 0.5})


def train_tiny(model, data_root: Path, epochs: int = 8) -> None:
    from edgeface.keras import keras
    from edgeface.heads import classification_head
    from edgeface_runtime import center_crop, load_image

    files = sorted(data_root.rglob("*.png"))
    names = sorted({f.parent.name for f in files})
    x = np.stack([center_crop(load_image(f), (SIZE, SIZE)) for f in files]).astype(np.float32)
    x = (x - 127.5) / 127.5
    y = np.array([names.index(f.parent.name) for f in files], np.int32)
    labels = keras.Input((), dtype="int32", name="label")
    head = classification_head("cosface", len(names), scale=16.0, margin=0.1)
    trainer = keras.Model([model.input, labels], head([model.output, labels]))
    trainer.compile(keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    keras.utils.set_random_seed(0)
    trainer.fit([x, y], y, batch_size=32, epochs=epochs, verbose=0, shuffle=True)
