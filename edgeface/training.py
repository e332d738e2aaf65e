"""Training: configuration, the two-stage transfer-learning run, and model files.

>>> from edgeface.training import TrainConfig, train, load_model
>>> result = train(TrainConfig(data="faces/", backbone="mobilenet_v2_050", out="runs/demo"))
>>> model, metadata = load_model(result.model_path)

``train`` writes ``model.keras`` (the embedding model, with the device metadata inside as
``edgeface.json``) and ``training_card.json`` (data, split, weights and their sha256,
hyper-parameters, metrics, wall time) into ``config.out``.
"""

from __future__ import annotations

from ._modelio import load_model, read_keras_metadata, save_model, write_keras_metadata
from ._train import RECIPES, TrainConfig, TrainResult, WorkerLostError, train

__all__ = [
    "RECIPES",
    "TrainConfig",
    "TrainResult",
    "WorkerLostError",
    "load_model",
    "read_keras_metadata",
    "save_model",
    "train",
    "write_keras_metadata",
]
