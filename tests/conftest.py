"""Shared fixtures. TensorFlow-free: the runtime tests run in environments without it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "runtime" / "fixtures"


def _shared_dir(env: str, *parts: str) -> Path | None:
    """A folder of real data: from ``env``, else ``../shared/...`` beside the checkout."""
    if os.environ.get(env):
        return Path(os.environ[env])
    candidate = REPO.parent.joinpath("shared", *parts)
    return candidate if candidate.exists() else None


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def lfw_dir() -> Path:
    """``$EDGEFACE_DATA_HOME/lfw``; the test is skipped when it is not there."""
    home = os.environ.get("EDGEFACE_DATA_HOME")
    if not home:
        pytest.skip("EDGEFACE_DATA_HOME is not set (point it at a folder holding lfw/ to run real-face tests)")
    lfw = Path(home) / "lfw"
    if not (lfw / "lfw-deepfunneled").is_dir():
        pytest.skip(f"LFW not found at {lfw}/lfw-deepfunneled")
    return lfw


@pytest.fixture(scope="session")
def detector_models_dir() -> Path:
    """Folder with the MediaPipe BlazeFace .tflite files (``$EDGEFACE_MODELS_DIR`` or ../shared/models)."""
    found = _shared_dir("EDGEFACE_MODELS_DIR", "models")
    if found is None or not (found / "face_detection_short_range.tflite").exists():
        pytest.skip("BlazeFace models not found: set EDGEFACE_MODELS_DIR to a folder holding "
                    "face_detection_short_range.tflite")
    return found
