"""Face datasets for training: folder-per-identity and LFW (under the project's evaluation rule).

>>> from edgeface.data import scan_folder, load_lfw, split_identities
>>> people = scan_folder("faces/")                 # faces/<name>/<image>.jpg|png|pgm
>>> train, eval_pairs = load_lfw("/data/lfw")      # people outside pairs.txt folds 6-10; pairs of 6-10
>>> train, val = split_identities(train, 0.1, seed=0)
>>> lfw = fetch_lfw()                               # no copy of LFW? download, verify, cache it
>>> trained_on = training_data("runs/demo/model.keras")  # the people a model trained on, from its card

Crops are made with the runtime's own ``center_crop`` (or ``align_face``), so training and
device crops match; ``decode_dataset`` skips unreadable images, counts them, and fails
above a stated fraction (5 % by default).
"""

from __future__ import annotations

from ._data import (
    DEFAULT_MAX_UNREADABLE,
    IMAGE_EXTENSIONS,
    Augment,
    NO_FACE_POLICIES,
    NO_FACE_REASON,
    CropMaker,
    NoFaceDetected,
    FaceDataset,
    augment_batch,
    decode_dataset,
    embed_crops,
    find_lfw,
    load_lfw,
    make_train_dataset,
    scan_folder,
    split_identities,
    to_model_input,
)
from ._datasets import cached_lfw, fetch_lfw, fetch_weights, resolve_lfw
from ._records import TrainingData, training_data

__all__ = [
    "Augment",
    "CropMaker",
    "NO_FACE_POLICIES",
    "NO_FACE_REASON",
    "NoFaceDetected",
    "DEFAULT_MAX_UNREADABLE",
    "FaceDataset",
    "IMAGE_EXTENSIONS",
    "TrainingData",
    "augment_batch",
    "cached_lfw",
    "decode_dataset",
    "embed_crops",
    "fetch_lfw",
    "fetch_weights",
    "find_lfw",
    "load_lfw",
    "make_train_dataset",
    "resolve_lfw",
    "scan_folder",
    "split_identities",
    "to_model_input",
    "training_data",
]
