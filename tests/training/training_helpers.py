"""Helpers for the training tests: synthetic identities the tiny backbone can separate, a mini LFW."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def synthetic_face(identity: int, sample: int, size: int = 40) -> np.ndarray:
    """An RGB uint8 image: identity → base colour and stripe orientation/frequency; sample → jitter."""
    rng = np.random.default_rng(1000 * identity + sample)
    base = np.random.default_rng(identity).integers(40, 216, size=3)
    yy, xx = np.mgrid[0:size, 0:size] / size
    angle = identity * 0.7
    freq = 2 + identity % 4
    wave = np.sin(2 * np.pi * freq * (xx * np.cos(angle) + yy * np.sin(angle)) + rng.uniform(0, 0.5))
    image = base[None, None, :] + 35 * wave[..., None] + rng.normal(0, 6, size=(size, size, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def make_dataset(root: Path, identities: int = 6, per_identity: int = 8, size: int = 40,
                 formats: tuple[str, ...] = ("png", "jpg")) -> Path:
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    for i in range(identities):
        person = root / f"person_{i:02d}"
        person.mkdir(exist_ok=True)
        for j in range(per_identity):
            fmt = formats[j % len(formats)]
            image = Image.fromarray(synthetic_face(i, j, size))
            if fmt == "pgm":
                image = image.convert("L")
            image.save(person / f"{j:03d}.{fmt}")
    return root


def tiny_config(data: Path, out: Path, **overrides):
    from edgeface.training import TrainConfig

    values = dict(data=str(data), backbone="tiny", weights=None, input_size=(32, 32), embedding_size=16,
                  head="arcface", scale=16.0, margin=0.2, epochs_frozen=0, epochs=2, batch_size=8,
                  steps_per_epoch=3, lr=3e-3, val_fraction=0.34, val_pairs=40, out=str(out), seed=1)
    values.update(overrides)
    return TrainConfig(**values)


def make_lfw(root: Path, people: int = 20, per_person: int = 4, size: int = 40) -> Path:
    """A miniature LFW: lfw-deepfunneled/<Name>/<Name>_000N.jpg and a 10-fold pairs.txt.

    Folds 1-5 use people 0..people/2-1, folds 6-10 the others (identity-disjoint halves, as
    in LFW), each fold 2 matched + 2 mismatched pairs.
    """
    from PIL import Image

    images = root / "lfw-deepfunneled"
    names = [f"Person_{chr(65 + i // 26)}{chr(65 + i % 26)}" for i in range(people)]
    for i, name in enumerate(names):
        (images / name).mkdir(parents=True, exist_ok=True)
        for j in range(per_person):
            Image.fromarray(synthetic_face(i, j, size)).save(images / name / f"{name}_{j + 1:04d}.jpg", quality=95)
    rng = np.random.default_rng(0)
    lines = ["10\t2"]
    half = people // 2
    for fold in range(10):
        pool = names[:half] if fold < 5 else names[half:]
        for _ in range(2):
            name = pool[rng.integers(len(pool))]
            a, b = rng.choice(per_person, 2, replace=False) + 1
            lines.append(f"{name}\t{a}\t{b}")
        for _ in range(2):
            n1, n2 = rng.choice(len(pool), 2, replace=False)
            lines.append(f"{pool[n1]}\t{rng.integers(1, per_person + 1)}\t"
                         f"{pool[n2]}\t{rng.integers(1, per_person + 1)}")
    (root / "pairs.txt").write_text("\n".join(lines) + "\n")
    return root
