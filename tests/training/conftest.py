"""Fixtures for the training tests (helpers live in training_helpers.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from training_helpers import make_dataset, make_lfw  # noqa: E402


@pytest.fixture
def synthetic_data(tmp_path: Path) -> Path:
    return make_dataset(tmp_path / "faces")


@pytest.fixture(scope="session")
def mini_lfw(tmp_path_factory) -> Path:
    return make_lfw(tmp_path_factory.mktemp("lfw"))
