"""What a run left beside its output says about its inputs, for the commands' defaults.

``edgeface train`` writes ``training_card.json`` beside ``model.keras``; ``edgeface convert``
writes ``manifest.json`` into its folder. From them ``edgeface convert model.keras`` finds the
faces the model trained on (its calibration crops and fine-tuning data), and ``edgeface
report DIR`` the verification protocol, so neither needs more than one argument.

Paths in a card are as the user typed them, often relative to where training ran; they are
tried as written, then relative to the card's folder. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

logger = logging.getLogger(__name__)

CARD_NAME = "training_card.json"
MANIFEST_NAME = "manifest.json"
LFW_EVAL_FOLDS = (6, 7, 8, 9, 10)  # the project's evaluation rule: LFW training never sees these people


def parse_folds(text: str) -> str | list[int] | None:
    """'all' → None, 'auto' → 'auto' (6-10 of a 10-fold LFW file, else all of the file's folds), else folds."""
    if text.strip().lower() == "all":
        return None
    if text.strip().lower() == "auto":
        return "auto"
    folds: list[int] = []
    for part in text.split(","):
        found = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+))?\s*", part)
        if not found:
            raise ValueError(f"--folds takes 'auto', 'all', a range like 6-10 or a list like 1,2,3; got {text!r}")
        lo, hi = int(found.group(1)), int(found.group(2) or found.group(1))
        folds.extend(range(lo, hi + 1))
    return folds


@dataclass
class Protocol:
    """A verification protocol as ``build_report`` takes it: an LFW-format pairs file and its
    images, or (``dataset``) pairs generated from some people of a folder-per-person dataset."""

    pairs: Path | None
    images: Path | None
    folds: list[int] | None  # 1-based folds of ``pairs``; None: all
    origin: str  # where it was read, for the output
    dataset: Path | None = None
    people: list[str] | None = None  # of ``dataset``: the people training held out

    def describe(self) -> str:
        if self.dataset is not None:
            return (f"pairs generated from the {len(self.people or [])} validation people of {self.dataset} "
                    f"(from {self.origin})")
        folds = "all folds" if self.folds is None else f"folds {_span(self.folds)}"
        return f"{self.pairs} ({folds}, images {self.images}; from {self.origin})"

    def report_arguments(self) -> dict[str, Any]:
        """The keyword arguments of ``build_report`` that select this protocol."""
        if self.dataset is not None:
            return {"dataset": self.dataset, "people": self.people}
        return {"pairs": self.pairs, "images": self.images, "folds": self.folds}


@dataclass
class TrainingData:
    """The faces a model trained on, as its training card records them."""

    dataset: Any  # an edgeface.data.FaceDataset of the training people only
    detector: Path | None  # the BlazeFace file training aligned with (None: the runtime's default)
    card: Path
    protocol: Protocol | None  # how training measured the model, when it was LFW's folds 6-10
    notes: list[str] = field(default_factory=list)
    validation: Any = None  # a FaceDataset of the people training held out (folder data with val_fraction > 0)


def card_beside(model: str | os.PathLike) -> Path | None:
    """The training card of ``model`` (a ``model.keras`` or its folder), if there is one."""
    path = Path(model)
    card = (path if path.is_dir() else path.parent) / CARD_NAME
    return card if card.is_file() else None


def read_json(path: Path, what: str) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{what} {path} cannot be read ({exc}); fix or remove it") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{what} {path} does not hold a JSON object")
    return data


def recorded_path(value: Any, base: Path) -> Path | None:
    """A path from a card: as written (absolute or relative to the working folder), else relative to ``base``."""
    if not value:
        return None
    path = Path(str(value))
    for candidate in (path, base / path):
        if candidate.exists():
            return candidate
    return None


def training_data(model: str | os.PathLike) -> TrainingData | None:
    """The training people of ``model`` from its card (None when there is no card)."""
    from ._data import load_lfw, scan_folder

    card_path = card_beside(model)
    if card_path is None:
        return None
    card = read_json(card_path, "training card")
    hyper = card.get("hyperparameters") or {}
    base = card_path.parent
    notes: list[str] = []
    detector = recorded_path(hyper.get("detector"), base)
    if hyper.get("detector") and detector is None:
        notes.append(f"the detector the card names ({hyper['detector']}) is gone; using the runtime's default")
    root = _data_root(card, card_path)
    if root is None:
        return None
    protocol = _card_protocol(card, card_path, root)
    if hyper.get("dataset") == "lfw":
        train, _ = load_lfw(root, held_out_folds=LFW_EVAL_FOLDS)
        return TrainingData(train, detector, card_path, protocol, notes)
    everyone = scan_folder(root, min_images=1)
    data = card.get("data") or {}
    names = (data.get("train") or {}).get("identity_names")
    known = [n for n in (names or []) if n in set(everyone.identities)]
    train = everyone.subset(known) if known else everyone
    if names and len(known) < len(names):
        notes.append(f"{len(names) - len(known)} of the card's {len(names)} training people are no longer in {root}")
    held = [n for n in (protocol.people if protocol is not None else []) or [] if n in set(everyone.identities)]
    validation = everyone.subset(held) if len(held) >= 2 else None
    return TrainingData(train, detector, card_path, protocol if validation is not None else None, notes, validation)


def _data_root(card: dict, card_path: Path) -> Path | None:
    """The folder a card's training data is in (for LFW: the LFW folder); None when the model was
    trained from a dataset object in Python and the card names no folder to go back to."""
    from ._data import find_lfw

    hyper = card.get("hyperparameters") or {}
    if not hyper.get("data") and hyper.get("dataset") != "lfw":
        return None
    root = recorded_path(hyper.get("data"), card_path.parent)
    if hyper.get("dataset") == "lfw":
        try:
            return find_lfw(root)
        except ValueError as exc:
            raise ValueError(f"{card_path} records LFW training data at {hyper.get('data')!r}, which is not there "
                             f"({exc}); set EDGEFACE_DATA_HOME or pass the inputs explicitly") from None
    if root is None:
        raise ValueError(f"{card_path} records training data at {hyper.get('data')!r}, which is not there; pass the "
                         "inputs explicitly (e.g. --calibration DIR and --data DIR)")
    return root


def _card_protocol(card: dict, card_path: Path, root: Path) -> Protocol | None:
    """How a card's model is measured, read from the card alone (no image folder is scanned):
    LFW folds 6-10 for LFW training, else the people held out for validation (two or more)."""
    from ._data import lfw_image_root

    origin = f"training card {card_path}"
    if (card.get("hyperparameters") or {}).get("dataset") == "lfw":
        return Protocol(root / "pairs.txt", lfw_image_root(root), list(LFW_EVAL_FOLDS), origin)
    held = ((card.get("data") or {}).get("validation") or {}).get("identity_names") or []
    return Protocol(None, None, None, origin, root, list(held)) if len(held) >= 2 else None


def recorded_protocol(models: Sequence[str | os.PathLike]) -> Protocol | None:
    """The protocol a convert folder's manifest calibrated on, else the one a training card measured on."""
    for item in models:
        path = Path(item)
        manifest = path / MANIFEST_NAME if path.is_dir() else None
        if manifest is not None and manifest.is_file():
            pairs = read_json(manifest, "manifest").get("pairs") or {}
            file, images = recorded_path(pairs.get("file"), path), recorded_path(pairs.get("images"), path)
            if file is not None and images is not None:
                folds = pairs.get("folds")
                return Protocol(file, images, list(folds) if folds else None, f"manifest {manifest}")
    for item in models:
        path = Path(item)
        candidates = [path] if path.suffix == ".keras" or (path / CARD_NAME).is_file() else []
        if path.is_dir() and (path / MANIFEST_NAME).is_file():  # a convert folder: the model it names
            source = read_json(path / MANIFEST_NAME, "manifest").get("source") or {}
            found = recorded_path(source.get("path"), path)
            candidates += [found] if found is not None else []
        for candidate in candidates:
            card = card_beside(candidate)
            if card is None:
                continue
            content = read_json(card, "training card")
            root = _data_root(content, card)
            protocol = _card_protocol(content, card, root) if root is not None else None
            if protocol is not None:
                return protocol
    return None


def _span(folds: Sequence[int]) -> str:
    folds = sorted(folds)
    if folds == list(range(folds[0], folds[-1] + 1)) and len(folds) > 2:
        return f"{folds[0]}-{folds[-1]}"
    return ",".join(map(str, folds))
