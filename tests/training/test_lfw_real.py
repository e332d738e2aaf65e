from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest


def _lfw_root() -> Path:
    home = os.environ.get("EDGEFACE_DATA_HOME")
    if not home:
        pytest.skip("EDGEFACE_DATA_HOME is not set (point it at the folder holding lfw/)")
    root = Path(home) / "lfw"
    if not (root / "pairs.txt").is_file() or not (root / "lfw-deepfunneled").is_dir():
        pytest.skip(f"{root} lacks pairs.txt or lfw-deepfunneled/")
    return root.resolve()  # absolute: the test links images from a temporary folder


@pytest.mark.slow
@pytest.mark.lfw
def test_a_few_steps_on_a_real_lfw_subset(tmp_path):
    from edgeface.data import load_lfw
    from edgeface.training import TrainConfig, load_model, train
    from edgeface.data import to_model_input
    from edgeface_runtime import center_crop, load_image

    root = _lfw_root()
    full, pairs = load_lfw(root)
    # A subset: the first 40 people with 3+ images, linked into a folder-per-identity tree.
    people = [name for name, paths in full.by_identity().items() if len(paths) >= 3][:40]
    subset = tmp_path / "subset"
    for name in people:
        (subset / name).mkdir(parents=True)
        for path in full.by_identity()[name]:
            os.symlink(Path(full.root) / path, subset / path)
    config = TrainConfig(data=str(subset), backbone="mobilenet_v2_035", weights=None, input_size=(64, 64),
                         embedding_size=32, epochs_frozen=0, epochs=1, steps_per_epoch=3, batch_size=16,
                         val_fraction=0.2, out=str(tmp_path / "run"))
    result = train(config)
    model, metadata = load_model(result.model_path)
    assert metadata.embedding_size == 32 and metadata.preprocess.input_size == (64, 64)
    assert metadata.extra["backbone"] == "mobilenet_v2_035"
    crop = center_crop(load_image(Path(full.root) / full.paths[0]), (64, 64))
    emb = model.predict(to_model_input(crop[None], metadata.preprocess), verbose=0)[0]
    assert emb.shape == (32,) and abs(np.linalg.norm(emb) - 1) < 1e-4
    held_out = {p.path_a.split("/")[0] for p in pairs}
    assert held_out.isdisjoint(people)
