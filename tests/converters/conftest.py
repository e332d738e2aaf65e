"""Fixtures for the converter tests: synthetic identities and a small trained embedding model.

A randomly initialised model is no test of int8 fidelity (its pre-normalisation embeddings
are ~1e-4 long), so the tiny model here (Conv/BN/ReLU/DepthwiseConv/GAP/Dense/BN/L2Normalize,
32×32) is trained for a few epochs to tell synthetic identities apart first.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[2]


def _import_converters() -> None:
    # The root pyproject maps edgeface_converters -> converters/; until the editable install
    # is refreshed, load the folder under that name.
    try:
        import edgeface_converters

        if hasattr(edgeface_converters, "VARIANTS"):
            return
    except ImportError:
        pass
    sys.modules.pop("edgeface_converters", None)
    spec = importlib.util.spec_from_file_location("edgeface_converters", REPO / "converters" / "__init__.py",
                                                  submodule_search_locations=[str(REPO / "converters")])
    module = importlib.util.module_from_spec(spec)
    sys.modules["edgeface_converters"] = module
    spec.loader.exec_module(module)


_import_converters()

from converters_testkit import IDENTITIES, build_tiny, metadata_for, train_tiny, write_faces  # noqa: E402


@pytest.fixture(scope="session")
def faces_dir(tmp_path_factory) -> Path:
    """``data/`` (one folder per person, for fine-tuning), ``calibration/`` (flat), ``lfw/`` (pairs)."""
    root = tmp_path_factory.mktemp("faces")
    write_faces(root / "data", range(IDENTITIES), 12)
    write_faces(root / "calibration", range(IDENTITIES), 5, first_sample=100, flat=True)
    lfw = root / "lfw"
    write_faces(lfw / "lfw-deepfunneled", range(IDENTITIES), 4, first_sample=200, ext="jpg")
    lines = ["60"]
    rng = np.random.default_rng(0)
    for k in range(60):
        i = k % IDENTITIES
        a, b = rng.choice(4, 2, replace=False) + 1
        lines.append(f"Person_{i:02d}\t{a}\t{b}")
    for k in range(60):
        i, j = rng.choice(IDENTITIES, 2, replace=False)
        lines.append(f"Person_{i:02d}\t{rng.integers(1, 5)}\tPerson_{j:02d}\t{rng.integers(1, 5)}")
    (lfw / "pairs.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="session")
def tiny_model_path(faces_dir, tmp_path_factory) -> Path:
    from edgeface.keras import keras
    from edgeface.training import save_model

    keras.utils.set_random_seed(0)
    model = build_tiny()
    train_tiny(model, faces_dir / "data")
    path = tmp_path_factory.mktemp("model") / "model.keras"
    save_model(model, path, metadata_for(model))
    return path
