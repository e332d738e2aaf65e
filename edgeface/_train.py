"""Transfer learning of a face-embedding model: configuration, the two-stage loop, outputs.

Stage 1 trains the head on a frozen backbone (``trainable=False``, so its BatchNorm layers
run on their moving statistics); stage 2 unfreezes the top blocks (or all) at a lower
learning rate. After every epoch the embedding model is scored on held-out *people*
(k-fold accuracy on verification pairs): that picks the best epoch and drives early
stopping. Each epoch is checkpointed so ``resume=True`` continues an interrupted run.

Outputs in ``out``: ``model.keras`` (the embedding model only, metadata inside, written
atomically), ``training_card.json`` and ``checkpoints/``.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import logging
import platform
import re
import time
import warnings
from dataclasses import InitVar, asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, List, Mapping, Optional, Sequence

import numpy as np

from edgeface_runtime.metadata import ModelMetadata

from ._choices import DATASETS, EMBEDDING_STYLES, HEADS, OPTIMIZERS, SCHEDULES, STRATEGIES
from ._modelio import atomic_write_text
from ._options import OptionsLoading, checked, option
from ._records import CARD_NAME

if TYPE_CHECKING:  # imported where used: both build Keras models
    from ._distill import DistillModels
    from ._heads import FaceModels

logger = logging.getLogger(__name__)

MODEL_NAME = "model.keras"

# Defaults for a face-recognition source (sface, dlib_resnet), applied like a recipe to options not
# set: its own weights, aligned crops at its fixed input size, an adaptation layer that starts as the
# identity (so training starts from the source's own embedding), BatchNorm on the source's statistics
# and a small learning rate: the source already separates faces far better than 7,000 LFW photos could
# teach it, so the target data should nudge it, not retrain it.
FACE_SOURCE_DEFAULTS: dict[str, Any] = {
    "weights": "pretrained", "align": True, "embedding_style": "adapter", "freeze_bn": True,
    "lr": 1e-3, "lr_finetune": 1e-5, "unfreeze": 1, "dropout": 0.0,
}

# Named recipes: values that replace the defaults (anything set explicitly still wins).
RECIPES: dict[str, dict[str, Any]] = {
    # The seed project's model: VGG16 + GAP + Dense(1024, relu) + softmax, Adam, cross-entropy.
    "seed-vgg16": {
        "backbone": "vgg16", "weights": "imagenet", "input_size": (224, 224), "embedding_size": 1024,
        "embedding_style": "seed", "head": "softmax", "optimizer": "adam", "weight_decay": 0.0,
        "lr": 1e-4, "schedule": "constant", "dropout": 0.0,
    },
    # The benchmark: MobileNet v1 0.25 at 112x112, 128-d, ArcFace, LFW outside folds 6-10, every
    # training person (no validation split: the folds are the test), crops aligned by the runtime's
    # detector as on the device; flips, photometric jitter and a little scale/shift jitter (about
    # BlazeFace's alignment noise; most people have one photo, so this is their only variation).
    "lfw-mobilenet-v1-025": {
        "backbone": "mobilenet_v1_025", "dataset": "lfw", "input_size": (112, 112), "embedding_size": 128,
        "head": "arcface", "epochs_frozen": 3, "epochs": 57, "batch_size": 64, "lr": 1e-3, "lr_finetune": 1e-3,
        "optimizer": "adam", "weight_decay": 0.0, "scale": 32.0, "margin": 0.35, "patience": None,
        "val_fraction": 0.0, "align": True, "augment": {"crop_scale": 0.92, "shift": 0.03},
    },
    # A student under 300 kB as int8: SFace's convolutions at 0.24 of their channels, starting from
    # SFace's filters, distilled from SFace (no labels) on LFW outside folds 6-10, GDC head, one rate
    # throughout, flips and shifts of up to 4 pixels; 24 epochs of LFW's 6,922 faces are about as many
    # steps as the 8 epochs over 21,383 faces measured (docs/face-sources.md, "A student cut from SFace").
    "lfw-sface-slim": {
        "backbone": "sface_slim", "dataset": "lfw", "input_size": (112, 112), "embedding_size": 128,
        "embedding_style": "gdc", "dropout": 0.0, "teacher": "sface", "label_weight": 0.0,
        "epochs_frozen": 0, "epochs": 24, "batch_size": 64, "lr": 2e-3, "lr_finetune": 2e-3, "optimizer": "adam",
        "weight_decay": 0.0, "patience": None, "val_fraction": 0.0, "align": True,
        "augment": {"crop_scale": 1.0, "shift": 0.036, "brightness": 0.0, "contrast": 0.0},
    },
}


def _parse_size(text: str) -> tuple[int, int]:
    """``--input-size``: N or HxW."""
    found = re.fullmatch(r"\s*(\d+)\s*(?:[x×,]\s*(\d+))?\s*", text)
    if not found:
        raise ValueError(f"--input-size takes N or HxW (e.g. 112 or 112x96), got {text!r}")
    h = int(found.group(1))
    return h, int(found.group(2) or h)


def _parse_options(items: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings → a dict; values that read as JSON (numbers, true/false) are converted."""
    options: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--teacher-option takes KEY=VALUE (e.g. box=blazeface), got {item!r}")
        try:
            options[key.strip()] = json.loads(value)
        except ValueError:
            options[key.strip()] = value
    return options


def _lfw_flag(on: bool) -> str:
    return "lfw" if on else "folder"


# Training's flags show no default: a recipe, a face source or the TOML file decides the value of
# every option the command line leaves out, so a printed default would mislead.
_flag = functools.partial(option, show_default=False)


@dataclass
class TrainConfig(OptionsLoading):
    """Everything a training run needs; loadable from TOML (:meth:`from_toml`).

    ``epochs_frozen`` epochs train the head on the frozen backbone, then ``epochs`` more
    fine-tune with ``unfreeze`` ("all" or the number of top blocks) at ``lr_finetune``
    (default ``lr / 10`` after a frozen stage, else ``lr``). ``align`` crops faces with the
    runtime's BlazeFace detector (``detector``: its ``.tflite``; default: the runtime's
    cache) and ``align_face``; otherwise crops are ``center_crop``s (roughly aligned data
    such as deep-funneled LFW). With ``align``, ``no_face`` says what happens to an image in
    which the detector finds no face: "skip" (default) leaves it out, as the device refuses it;
    "center" keeps it as a centre crop. The card's ``no_face`` counts them either way.
    ``recipe`` names an entry of ``RECIPES`` whose values replace the defaults of the fields
    you do not set.

    Several machines: ``strategy="multiworker"``, one process per machine, each with its own
    ``TF_CONFIG`` (docs/multiworker.md). ``batch_size`` is then the global batch, split evenly over
    the workers; each trains on its own shard of every pass over the images and embeds its own
    shard for a teacher. Only the chief (task "chief", else "worker" 0) writes ``out``; the others
    write to a scratch folder they delete. ``resume`` reads ``out/checkpoints`` on every worker.

    Distillation: ``teacher`` (``"dlib"``, a ``.keras``/``.tflite`` embedding model or an
    ``.npz`` of precomputed embeddings; see :func:`edgeface.teachers.load_teacher`, options in
    ``teacher_options``) makes the student learn the teacher's embedding of each training
    image with ``distill_loss`` ("cosine" or "l2") at ``distill_weight``, plus the margin head
    on identity labels at ``label_weight`` (default 0 with a teacher: then no labels are
    needed, and images directly in ``data`` are used too). ``center_teacher`` subtracts the
    training images' mean teacher embedding before normalising. Teacher embeddings are cached
    in ``teacher_cache`` (default ``$EDGEFACE_CACHE/teachers``).
    """

    # data
    data: str | None = _flag(None, cli_type=Path, help="Folder with one sub-folder of images per person (with --lfw: "
                                                       "the LFW folder).")
    dataset: str = _flag("folder", flags=("--lfw",), cli_name="lfw", cli_type=bool, cli_default=False,
                         parse=_lfw_flag, help="Train on LFW people outside pairs.txt folds 6-10; evaluate on folds "
                                               "6-10.")
    val_fraction: float = _flag(0.1, help="Fraction of people held out for validation.")
    val_pairs: int = 600
    min_images: int = 1
    max_unreadable: float = 0.05
    align: bool = _flag(False, flags=("--align/--no-align",), help="Align faces with the BlazeFace detector.")
    detector: str | None = _flag(None, cli_type=Path,
                                 help="BlazeFace .tflite for --align (default: the runtime's cache).")
    no_face: str = _flag("skip", help=(  # aligned crops: images without a detected face are left out or centre-cropped
        "Images in which the detector finds no face (with --align): 'skip' leaves them out, as the device refuses "
        "them (default); 'center' centre-crops them, which is only right for images that already are aligned face "
        "crops. Either way the output and the JSON count them."))
    cache_bytes: int = 4 << 30
    balanced: bool = False
    augment: dict = field(default_factory=dict)
    # model
    backbone: str = _flag("mobilenet_v2_050", help="Backbone name (see `edgeface train --list-backbones`).")
    weights: str | None = _flag(  # ImageNet for Keras applications, the source's file for face models
        "pretrained", help="'pretrained' (default: ImageNet for Keras applications, the installed package's file for "
                           "face sources and sface_slim), 'imagenet', 'none', or a weights file (.h5; for those "
                           "built from a face model, that model's own file).")
    input_size: tuple[int, int] = _flag((112, 112), cli_type=str, parse=_parse_size, help="Input size: N or HxW.")
    embedding_size: int = _flag(128, help="Embedding dimension.")
    embedding_style: str = _flag("standard", help="Embedding head: standard (average pooling), gdc (global depthwise "
                                                  "conv, MobileFaceNet) or seed.")
    dropout: float = 0.2
    head: str = _flag("arcface", help="Training head: softmax, arcface or cosface.")
    scale: float | None = None
    margin: float | None = None
    recipe: str | None = _flag(None, help="Named recipe (e.g. seed-vgg16, lfw-mobilenet-v1-025).")
    # distillation
    teacher: str | None = _flag(
        None, help="Distil from a teacher: 'sface' or 'dlib_resnet' (face sources rebuilt in Keras, aligned with "
                   "BlazeFace; the 'sources' extra), 'dlib' (dlib itself, its own alignment; the 'teachers' extra: pip "
                   "install dlib-bin face-recognition-models), a .keras/.tflite embedding model, an .npz of "
                   "precomputed embeddings (image path relative to --data -> vector), or an ensemble 'A+B' (e.g. "
                   "'sface+dlib_resnet': the mean of the members' centred unit vectors).")
    teacher_options: dict = _flag(
        default_factory=dict, flags=("--teacher-option",), cli_name="teacher_option", cli_type=Optional[List[str]],
        parse=_parse_options, help="Teacher option KEY=VALUE (repeatable), e.g. box=blazeface, detector=FILE, "
                                   "workers=2.")
    distill_loss: str = _flag("cosine", help="Distillation loss: cosine (default) or l2.")
    distill_weight: float = _flag(1.0, help="Weight of the distillation loss (default 1).")
    label_weight: float | None = _flag(  # None: 0 with a teacher, 1 without
        None, help="Weight of the identity-label loss (default: 0 with a teacher, so no labels are needed).")
    center_teacher: bool = _flag(True, flags=("--center-teacher/--no-center-teacher",),
                                 help="Subtract the training images' mean teacher embedding before normalising "
                                      "(default on).")
    teacher_cache: str | None = _flag(None, cli_type=Path, help="Teacher embedding cache folder (default "
                                                                "$EDGEFACE_CACHE/teachers).")
    # optimisation
    epochs_frozen: int = _flag(3, help="Epochs training the head on the frozen backbone.")
    epochs: int = _flag(20, help="Fine-tuning epochs after the frozen ones.")
    batch_size: int = _flag(64, help="Global batch size.")
    lr: float = _flag(1e-3, help="Learning rate (fine-tuning: --lr-finetune, default lr/10).")
    lr_finetune: float | None = _flag(None, help="Learning rate of the fine-tuning stage.")
    optimizer: str = "adamw"
    weight_decay: float = 1e-2
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    unfreeze: Any = _flag("all", cli_type=str, help="Fine-tune 'all' backbone layers or the top N blocks.")
    freeze_bn: bool = False
    patience: int | None = 10
    steps_per_epoch: int | None = _flag(None, help="Steps per epoch (default: one pass over the data).")
    # run
    out: str = _flag("runs/edgeface", cli_type=Path,
                     help="Output folder (model.keras, training_card.json, checkpoints/).")
    name: str = ""
    resume: bool = _flag(False, flags=("--resume",), cli_default=False,
                         help="Continue an interrupted run in --out.")
    seed: int = _flag(0, help="Random seed.")
    strategy: str = _flag("none", help="Distribution: none, mirrored or multiworker (one process per machine, each "
                                       "with its own TF_CONFIG; see docs/multiworker.md).")

    # Names of the options the caller set (from_dict / the CLI pass them): a recipe never replaces
    # those, even when they equal the default (``--no-align`` with an aligned recipe). Without it,
    # options still at their default value count as unset.
    given: InitVar[Sequence[str] | None] = None

    _what: ClassVar[str] = "training"
    _table: ClassVar[str | None] = "train"

    def __post_init__(self, given: Sequence[str] | None = None) -> None:
        if self.recipe is not None:
            if self.recipe not in RECIPES:
                raise ValueError(f"unknown recipe {self.recipe!r}; {_closest(self.recipe, RECIPES)}")
            self._fill_unset(RECIPES[self.recipe], given)
        self._apply_face_source_defaults(given)
        self.input_size = _size(self.input_size)
        if isinstance(self.weights, str) and self.weights.lower() in ("none", ""):
            self.weights = None
        if isinstance(self.unfreeze, str) and self.unfreeze.isdigit():
            self.unfreeze = int(self.unfreeze)
        if isinstance(self.teacher, str) and self.teacher.strip().lower() in ("", "none"):
            self.teacher = None

    def _fill_unset(self, values: Mapping[str, Any], given: Sequence[str] | None) -> None:
        """Set each of ``values`` the caller did not set: not in ``given`` or, without it, still at its default."""
        defaults: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.default is not dataclasses.MISSING:
                defaults[f.name] = f.default
            elif f.default_factory is not dataclasses.MISSING:
                defaults[f.name] = f.default_factory()
        for key, value in values.items():
            unset = key not in given if given is not None else _same(getattr(self, key), defaults.get(key))
            if unset:
                setattr(self, key, value)

    def _apply_face_source_defaults(self, given: Sequence[str] | None) -> None:
        from ._backbones import get_backbone_spec

        try:
            spec = get_backbone_spec(self.backbone)
        except ValueError:
            return  # validate() names the unknown backbone
        if spec.is_face_source:
            values = {"input_size": spec.default_input_size, **FACE_SOURCE_DEFAULTS}
        elif spec.reads_face_weights:  # a body cut from a face source (sface_slim): its file, its crops
            values = {"input_size": spec.default_input_size, "weights": "pretrained", "align": True}
        else:
            return
        recipe = RECIPES.get(self.recipe or "", {})  # a recipe's values win over these defaults
        self._fill_unset({k: v for k, v in values.items() if k not in recipe}, given)

    @property
    def distilling(self) -> bool:
        return self.teacher is not None

    @property
    def label_loss_weight(self) -> float:
        """The weight of the identity-label loss: ``label_weight``, defaulting to 0 with a teacher, else 1."""
        if self.label_weight is not None:
            return float(self.label_weight)
        return 0.0 if self.distilling else 1.0

    # ---------------------------------------------------------------- loading
    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TrainConfig":
        """Options from a mapping (top-level keys or a ``train`` table): unknown keys and wrong types are
        ValueErrors; every key given counts as set, so a recipe does not replace it."""
        data = dict(data["train"]) if isinstance(data.get("train"), Mapping) else dict(data)
        if "input_size" in data:  # one number (input_size = 112) is a square
            data["input_size"] = _size(data["input_size"])
        values = checked(cls, data, cls._what)
        return cls(**values, given=tuple(values))

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["input_size"] = list(self.input_size)
        return out

    # ---------------------------------------------------------------- checks
    def validate(self) -> None:
        from ._backbones import get_backbone_spec

        spec = get_backbone_spec(self.backbone)
        if min(self.input_size) < spec.min_input_size:
            raise ValueError(f"backbone {self.backbone!r} needs input_size of at least {spec.min_input_size}, "
                             f"got {self.input_size}")
        _choice("head", self.head, HEADS)
        _choice("strategy", self.strategy, STRATEGIES)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("schedule", self.schedule, SCHEDULES)
        _choice("dataset", self.dataset, DATASETS)
        _choice("embedding_style", self.embedding_style, EMBEDDING_STYLES)
        _choice("no_face", self.no_face, ("skip", "center"))
        if self.dataset == "folder" and not self.data:
            raise ValueError("no training data: set data to a folder with one sub-folder of images per person "
                             "(--data DIR), or use LFW (--lfw)")
        for name in ("epochs_frozen", "epochs"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if self.epochs_frozen + self.epochs < 1 and not spec.is_face_source:
            # (A face source with 0 epochs is the source itself, packaged as an edgeface model.)
            raise ValueError("nothing to train: epochs_frozen + epochs must be at least 1")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {self.batch_size!r}")
        for name in ("lr", "lr_finetune"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be positive, got {value!r}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if not (self.unfreeze == "all" or (isinstance(self.unfreeze, int) and self.unfreeze >= 0)):
            raise ValueError(f"unfreeze must be 'all' or a number of top blocks >= 0, got {self.unfreeze!r}")
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be positive, got {self.steps_per_epoch!r}")
        if self.patience is not None and self.patience < 1:
            raise ValueError(f"patience must be positive (or None to disable early stopping), got {self.patience!r}")
        if self.embedding_size < 2:
            raise ValueError(f"embedding_size must be at least 2, got {self.embedding_size!r}")
        from ._data import Augment

        Augment.from_dict(self.augment)
        self._validate_distillation()

    def _validate_distillation(self) -> None:
        from ._distill import DISTILL_LOSSES

        if not isinstance(self.teacher_options, Mapping):
            raise ValueError(f"teacher_options must be a table of options, got {self.teacher_options!r}")
        for name in ("distill_weight", "label_weight"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and np.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        if not self.distilling:
            if self.label_weight is not None and self.label_weight <= 0:
                raise ValueError(f"label_weight={self.label_weight!r} without a teacher leaves nothing to learn; "
                                 "give a teacher (--teacher) or a positive label_weight")
            return
        _choice("distill_loss", self.distill_loss, DISTILL_LOSSES)
        if self.distill_weight <= 0 and self.label_loss_weight <= 0:
            raise ValueError("distill_weight and label_weight are both 0: nothing to learn; set one of them above 0")
        if self.embedding_style == "seed" and self.distill_loss == "l2":
            raise ValueError("distill_loss='l2' regresses the embedding before normalisation, which the seed "
                             "embedding style clips with a ReLU; use distill_loss='cosine'")


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return list(a) == list(b)
    return a == b


def _size(value: Any) -> tuple[int, int]:
    if isinstance(value, (int, np.integer)):
        return int(value), int(value)
    try:
        h, w = (int(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"input_size must be (height, width) or one number, got {value!r}") from None
    return h, w


def _choice(name: str, value: Any, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def _closest(word: str, options: Any) -> str:
    close = difflib.get_close_matches(str(word), list(options), n=1)
    return f"did you mean {close[0]!r}?" if close else f"known: {', '.join(sorted(options))}"


@dataclass
class TrainResult:
    out_dir: Path
    model_path: Path
    card_path: Path
    metrics: dict[str, Any]
    history: list[dict[str, Any]]
    card: dict[str, Any]
    # False on the other workers of a multi-worker run: only the chief writes model_path and card_path.
    chief: bool = True


# --------------------------------------------------------------------------- the run

@dataclass
class _Data:
    train: Any
    train_crops: np.ndarray | None
    crop: Any
    val: Any
    val_crops: np.ndarray | None
    val_pairs: list
    eval_pairs: list
    eval_root: str | None
    describe: dict[str, Any]


def _load_data(config: TrainConfig, preprocess) -> _Data:
    from edgeface_runtime.metrics import generate_pairs

    from ._data import (NO_FACE_REASON, CropMaker, decode_dataset, load_lfw, no_face_summary, scan_folder,
                        scan_readable, split_identities)

    eval_pairs: list = []
    if config.dataset == "lfw":
        full, eval_pairs = load_lfw(config.data, min_images=config.min_images)
    else:
        # Without a label loss nothing needs identities: loose images in the folder count too.
        full = scan_folder(config.data, min_images=config.min_images,  # type: ignore[arg-type]
                           loose=config.distilling and config.label_loss_weight == 0)
    crop = CropMaker(full.root, config.input_size, align=preprocess.alignment, detector=config.detector,
                     no_face=config.no_face)
    if full.num_classes < 2 and not (config.distilling and config.label_loss_weight == 0 and len(full) >= 2):
        raise ValueError(f"{full.root} holds {full.num_classes} person; training a face model needs at least 2 "
                         "people (one sub-folder per person)")
    train, val = split_identities(full, config.val_fraction, config.seed)

    val_crops, val_pairs = None, []
    if val is not None:
        val, val_crops = decode_dataset(val, crop, max_unreadable=config.max_unreadable)
        half = min(config.val_pairs // 2, int(sum(c * (c - 1) // 2 for c in val.counts())))
        folds = max(1, min(5, half))
        if half >= 1 and val.num_classes >= 2:
            with warnings.catch_warnings():  # small validation sets share people across folds: expected
                warnings.simplefilter("ignore", RuntimeWarning)
                val_pairs = generate_pairs(val.by_identity(), 2 * max(half, folds), config.seed, folds=folds)
        else:
            val = None

    h, w = config.input_size
    if len(train) * h * w * 3 <= config.cache_bytes:
        train, train_crops = decode_dataset(train, crop, max_unreadable=config.max_unreadable)
    else:
        logger.info("%d images do not fit cache_bytes=%d: decoding them on every epoch", len(train), config.cache_bytes)
        train, train_crops = scan_readable(train, max_unreadable=config.max_unreadable), None
    if train.num_classes < 2 and config.label_loss_weight > 0:
        no_face = (f"; {crop.no_face} image(s) had no detected face and were left out (if they already are aligned "
                   "face crops, pass --no-face center, or train without --align)") if crop.no_face else ""
        raise ValueError(f"only {train.num_classes} person left to train on after the validation split and "
                         f"unreadable images; add people or lower val_fraction{no_face}")
    describe = {
        **full.describe(),
        "train": {**train.describe(), "identity_names": train.identities},
        "validation": None if val is None else {**val.describe(), "identity_names": val.identities,
                                                "pairs": len(val_pairs)},
        "unreadable_files": [{"path": p, "reason": r} for p, r in train.skipped
                             if r != NO_FACE_REASON][:100],
        "crop": "align_face (BlazeFace keypoints, arcface template)" if config.align else "center_crop",
    }
    if crop.align:
        describe["no_face_detected"] = crop.no_face
        describe["no_face"] = no_face_summary(crop, len(full))
        if train_crops is None and config.no_face == "skip":
            describe["no_face"]["meaning"] = ("validation images without a face left out; training images are "
                                              "decoded on every epoch (too many to cache), so those without a face "
                                              "are centre-cropped there")
    if eval_pairs:
        describe["evaluation"] = {"pairs_file": "pairs.txt", "folds": [6, 7, 8, 9, 10], "pairs": len(eval_pairs)}
    return _Data(train, train_crops, crop, val, val_crops, val_pairs, eval_pairs,
                 full.root if eval_pairs else None, describe)


def _make_strategy(name: str):
    from ._keras import tf

    if name == "none":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        # All GPUs; without GPUs, all logical CPU devices (one unless configured: used by tests).
        devices = [d.name for d in tf.config.list_logical_devices("GPU")] or \
                  [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    return tf.distribute.MultiWorkerMirroredStrategy()


@dataclass(frozen=True)
class _Worker:
    """This process's place in a multi-worker run; a run on one machine is worker 0 of 1, the chief."""

    index: int = 0      # the input pipeline this worker feeds: the chief first, then the workers
    count: int = 1
    chief: bool = True
    task: str = "worker 0"


def _worker_of(strategy, name: str) -> _Worker:
    """Read this worker's place from a MultiWorkerMirroredStrategy's cluster (TF_CONFIG)."""
    if name != "multiworker":
        return _Worker()
    resolver = strategy.cluster_resolver
    cluster = resolver.cluster_spec().as_dict() if resolver is not None else {}
    chiefs, workers = len(cluster.get("chief", [])), len(cluster.get("worker", []))
    if chiefs + workers <= 1:  # no TF_CONFIG (or a cluster of one): a plain single-machine run
        return _Worker()
    task_type, task_id = resolver.task_type, int(resolver.task_id or 0)
    if task_type not in ("chief", "worker"):
        raise ValueError(f"TF_CONFIG names this task {task_type!r} {task_id}; multi-worker training runs only "
                         "'chief' and 'worker' tasks (one per machine)")
    # The same order as TensorFlow's input pipeline ids: the chief, then the workers by index.
    index = 0 if task_type == "chief" else chiefs + task_id
    chief = task_type == "chief" or (chiefs == 0 and task_id == 0)
    return _Worker(index, chiefs + workers, chief, f"{task_type} {task_id}")


def _agreement(strategy, worker: _Worker):
    """A function averaging a dict of floats over all workers (identity on one worker).

    Every worker must take the same early-stopping and best-epoch decisions, or one leaves a
    collective the others still wait in; the same numbers on every worker guarantee that even
    where two machines' floating point differs in the last bit.
    """
    if worker.count == 1:
        return lambda values: values
    from ._keras import tf

    def agree(values: dict[str, float]) -> dict[str, float]:
        keys = sorted(values)
        local = tf.constant([float(values[k]) for k in keys], tf.float64)
        mean = strategy.reduce(tf.distribute.ReduceOp.MEAN, strategy.run(lambda: tf.identity(local)), axis=None)
        return dict(zip(keys, (float(v) for v in mean.numpy())))

    return agree


def _check_same_data(data: _Data, worker: _Worker, agree) -> None:
    """Fail on every worker at once when they did not load the same training images.

    Workers pick their images by index into their own copy of the list: a machine with another
    data folder (a missing file, another copy) would silently train on the wrong shard.
    """
    import hashlib

    listing = json.dumps([data.train.paths, data.train.labels.tolist(),
                          None if data.val is None else data.val.paths]).encode()
    # 20 bits, so the squares stay exact in float64: the values agree iff their variance is 0.
    value = float(int.from_bytes(hashlib.sha256(listing).digest()[:3], "big") >> 4)
    mean = agree({"value": value, "square": value * value})
    if mean["square"] != mean["value"] ** 2:
        raise ValueError(f"the {worker.count} workers loaded different training data ({worker.task}: "
                         f"{len(data.train)} training images in {data.train.root}); every machine needs the same "
                         "data folder (the same files at the same relative paths) and the same options")


def _is_lost_worker(exc: BaseException) -> bool:
    """Whether ``exc`` is how TensorFlow reports a peer that died or became unreachable."""
    from ._keras import tf

    return isinstance(exc, (tf.errors.UnavailableError, tf.errors.CancelledError, tf.errors.AbortedError,
                            tf.errors.DeadlineExceededError))


class WorkerLostError(RuntimeError):
    """A multi-worker run stopped because another worker died or became unreachable; no model was written."""

    exit_code_name = "worker_lost"  # its own row of edgeface_runtime.commandline.EXIT_CODES: restart with --resume


def _lost_worker_error(exc: BaseException, worker: _Worker, out: Path) -> WorkerLostError:
    resumable = (out / "checkpoints" / "state.json").is_file()
    import re

    # TensorFlow's message leads with the op's internal name; the next line names the lost task.
    text = re.sub(r"\{\{function_node[^}]*\}\}\s*", "", str(exc)).strip()
    first = " ".join(text.splitlines()[:2]) or type(exc).__name__
    then = (f"the last finished epoch is checkpointed in {out / 'checkpoints'}: start every worker again with "
            "the same options and --resume" if resumable else
            "no epoch had finished, so there is nothing to resume: start every worker again")
    return WorkerLostError(f"multi-worker training stopped on {worker.task}: another worker died or became "
                        f"unreachable ({type(exc).__name__}: {first[:400]}). This run wrote no "
                           f"{out / MODEL_NAME}; {then}")


def _schedule(config: TrainConfig, lr: float, epochs: int, steps_per_epoch: int):
    from ._keras import keras

    steps = epochs * steps_per_epoch
    warmup = min(steps - 1, int(round(config.warmup_epochs * steps_per_epoch)))
    if config.schedule == "cosine":
        if warmup > 0:
            return keras.optimizers.schedules.CosineDecay(lr * 0.01, max(1, steps - warmup), alpha=0.01,
                                                          warmup_target=lr, warmup_steps=warmup)
        return keras.optimizers.schedules.CosineDecay(lr, max(1, steps), alpha=0.01)
    if config.schedule == "step":
        return keras.optimizers.schedules.PiecewiseConstantDecay(
            [max(1, steps // 2), max(2, (3 * steps) // 4)], [lr, lr * 0.1, lr * 0.01])
    return lr


def _optimizer(config: TrainConfig, schedule):
    from ._keras import keras

    if config.optimizer == "adamw":
        opt = keras.optimizers.AdamW(learning_rate=schedule, weight_decay=config.weight_decay)
        # Decay weights, not normalisation parameters or biases.
        opt.exclude_from_weight_decay(var_names=["gamma", "beta", "bias", "moving_"])
        return opt
    if config.optimizer == "adam":
        return keras.optimizers.Adam(learning_rate=schedule)
    return keras.optimizers.SGD(learning_rate=schedule, momentum=0.9, nesterov=True,
                                weight_decay=config.weight_decay or None)


def _set_trainable(backbone, stage: str, config: TrainConfig) -> int:
    """Freeze or unfreeze backbone layers for a stage; return the number of trainable backbone layers."""
    from ._backbones import top_block_layers
    from ._keras import keras

    layers = [layer for layer in backbone.model.layers if not isinstance(layer, keras.layers.InputLayer)]
    if stage == "frozen":
        chosen: list = []
    elif config.unfreeze == "all":
        chosen = layers
    else:
        chosen = top_block_layers(backbone.spec, layers, int(config.unfreeze))
    chosen_ids = {id(layer) for layer in chosen}
    for layer in layers:
        train_it = id(layer) in chosen_ids
        if train_it and config.freeze_bn and isinstance(layer, keras.layers.BatchNormalization):
            train_it = False
        layer.trainable = train_it
    return sum(1 for layer in layers if layer.trainable and layer.weights)


class _Tracker:
    """Per-epoch bookkeeping: validation score, best weights, early stopping, checkpoints."""

    def __init__(self, out: Path, models, preprocess, data: _Data, config: TrainConfig, state: dict, *,
                 work: Path | None = None, agree=lambda values: values):
        """``work``: where this process writes its checkpoints (``out``, or a scratch folder on the
        other workers of a multi-worker run); a resumed run reads them from ``out``. ``agree``
        makes the validation numbers the same on every worker (:func:`_agreement`)."""
        self.out, self.models, self.preprocess, self.data, self.config = out, models, preprocess, data, config
        self.state = state
        self.agree = agree
        self.started = time.monotonic()
        self.prior_seconds = float(state.get("elapsed_seconds", 0.0))
        self.resume_dir = out / "checkpoints"
        self.ckpt_dir = (work or out) / "checkpoints"
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)

    @property
    def best_path(self) -> Path:
        return self.ckpt_dir / "best.weights.h5"

    def validate(self) -> dict[str, float] | None:
        if self.data.val is None or self.data.val_crops is None or not self.data.val_pairs:
            return None
        from edgeface_runtime.metrics import kfold_accuracy, roc_auc

        from ._data import embed_crops

        emb = embed_crops(self.models.embedding, self.data.val_crops, self.preprocess)
        index = {p: i for i, p in enumerate(self.data.val.paths)}
        pairs = [p for p in self.data.val_pairs if p.path_a in index and p.path_b in index]
        scores = np.sum(emb[[index[p.path_a] for p in pairs]] * emb[[index[p.path_b] for p in pairs]], axis=1)
        labels = np.array([p.same for p in pairs])
        folds = np.array([p.fold for p in pairs])
        kfold = kfold_accuracy(scores, labels, folds if len(np.unique(folds)) > 1 else 2)
        return {"val_accuracy": kfold.mean, "val_accuracy_std": kfold.std, "val_auc": roc_auc(scores, labels)}

    def end_epoch(self, stage_index: int, stage: str, epoch: int, logs: Mapping[str, Any], checkpoint,
                  seconds: float) -> bool:
        """Record the epoch; return True to stop the stage early."""
        row = {"stage": stage, "epoch": epoch + 1, "seconds": round(seconds, 2),
               **{k: float(v) for k, v in (logs or {}).items()}}
        val = self.validate()
        if val is not None:
            val = self.agree(val)
        stop = False
        if val is not None:
            row.update(val)
            # Ties go to the later epoch: same accuracy after more training usually generalises better.
            if val["val_accuracy"] >= self.state.get("best", -1.0):
                self.state.update(best=val["val_accuracy"], best_epoch={"stage": stage, "epoch": epoch + 1}, wait=0)
                self.models.embedding.save_weights(self.best_path)
            else:
                self.state["wait"] = self.state.get("wait", 0) + 1
                stop = self.config.patience is not None and self.state["wait"] >= self.config.patience
        self.state["history"].append(row)
        # Wall time across interruptions: what earlier attempts spent plus this one so far.
        self.state.update(stage_index=stage_index, epoch=epoch + 1,
                          elapsed_seconds=self.prior_seconds + time.monotonic() - self.started)
        checkpoint.write(str(self.ckpt_dir / "ckpt"))
        atomic_write_text(self.ckpt_dir / "state.json", json.dumps(self.state, indent=1, default=_json_default))
        logger.info("%s epoch %d: %s", stage, epoch + 1,
                    ", ".join(f"{k}={v:.4g}" for k, v in row.items() if isinstance(v, float)))
        if stop:
            logger.info("no validation improvement in %d epochs: ending the %s stage", self.config.patience, stage)
            self.state["wait"] = 0
        return stop


def _resume_state(out: Path, config: TrainConfig, fingerprint: dict) -> dict | None:
    path = out / "checkpoints" / "state.json"
    if not config.resume:
        return None
    if not path.is_file():
        raise ValueError(f"nothing to resume in {out}: no checkpoints/state.json; run without --resume to start")
    state = json.loads(path.read_text())
    if state.get("fingerprint") != fingerprint:
        changed = sorted(k for k in fingerprint if state.get("fingerprint", {}).get(k) != fingerprint[k])
        raise ValueError(f"cannot resume {out}: the run was started with different {', '.join(changed)}; "
                         "use the same settings or another --out")
    return state


def train(config: TrainConfig, *, verbose: int = 0, callbacks: Sequence[Any] = ()) -> TrainResult:
    """Train an embedding model as ``config`` says; write ``model.keras`` and the training card.

    ``verbose`` is passed to Keras' ``fit`` (0 silent, 1 progress bar, 2 one line per
    epoch); library users get progress through ``logging`` instead.
    """
    config.validate()
    started = time.monotonic()
    from ._keras import keras, tune_allocator_for_training

    tune_allocator_for_training()
    # First TensorFlow work of the run: MultiWorkerMirroredStrategy must precede every other op.
    strategy = _make_strategy(config.strategy)
    worker = _worker_of(strategy, config.strategy)
    replicas = int(strategy.num_replicas_in_sync)
    if worker.count > 1 and config.batch_size % replicas:
        raise ValueError(f"batch_size {config.batch_size} is the global batch and must split evenly over the "
                         f"{replicas} replicas of the {worker.count} workers; use a multiple of {replicas}")
    keras.mixed_precision.set_global_policy("float32")
    keras.utils.set_random_seed(config.seed)
    out = Path(config.out)
    if worker.chief:
        out.mkdir(parents=True, exist_ok=True)
        work = out
    else:
        import tempfile

        # The standard Keras multi-worker pattern: every worker saves (saving reads variables through
        # collectives the chief waits in), the others into a scratch folder deleted at the end.
        work = Path(tempfile.mkdtemp(prefix=f"edgeface-{worker.task.replace(' ', '')}-"))
    try:
        return _train(config, strategy, worker, out, work, started, verbose, callbacks)
    except Exception as exc:
        if worker.count > 1 and _is_lost_worker(exc):
            raise _lost_worker_error(exc, worker, out) from exc
        raise
    finally:
        if work != out:
            import shutil

            shutil.rmtree(work, ignore_errors=True)


def _train(config: TrainConfig, strategy, worker: _Worker, out: Path, work: Path, started: float, verbose: int,
           callbacks: Sequence[Any]) -> TrainResult:
    from ._backbones import build_backbone
    from ._heads import build_face_models
    from ._keras import keras, tf
    from ._modelio import save_model

    from ._backbones import get_backbone_spec

    spec = get_backbone_spec(config.backbone)
    # A source trained on its own alignment (dlib's chip) keeps that template; others use ArcFace's.
    template = spec.preprocess.alignment if spec.preprocess.alignment != "none" else "arcface"
    preprocess = dataclasses.replace(spec.preprocess_for(config.input_size),
                                     alignment=template if config.align else "none")
    if config.resume and not (out / "checkpoints" / "state.json").is_file():
        where = ("; every worker reads the checkpoint from --out, so put it on a folder all workers share "
                 "(or copy the chief's checkpoints/ there)" if worker.count > 1 else "")
        raise ValueError(f"nothing to resume in {out}: no checkpoints/state.json; run without --resume to "
                         f"start{where}")
    if config.resume and not worker.chief and (out / "checkpoints" / "best.weights.h5").is_file():
        import shutil

        # The best epoch so far may predate this attempt: the final model starts from it on every worker.
        (work / "checkpoints").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(out / "checkpoints" / "best.weights.h5", work / "checkpoints" / "best.weights.h5")
    data = _load_data(config, preprocess)
    if worker.count > 1:
        _check_same_data(data, worker, _agreement(strategy, worker))
    distill = _prepare_distillation(config, data, strategy, worker) if config.distilling else None
    if worker.count > 1 and distill is not None:  # images the teacher failed on are dropped: the same ones everywhere?
        _check_same_data(data, worker, _agreement(strategy, worker))
    fingerprint = {"backbone": config.backbone, "input_size": list(config.input_size), "head": config.head,
                   "embedding_size": config.embedding_size, "embedding_style": config.embedding_style,
                   "identities": data.train.num_classes, "epochs_frozen": config.epochs_frozen,
                   "epochs": config.epochs, "batch_size": config.batch_size}
    if distill is not None:
        fingerprint["distillation"] = {"teacher": distill.teacher["fingerprint"], "loss": config.distill_loss,
                                       "distill_weight": config.distill_weight,
                                       "label_weight": config.label_loss_weight, "center": config.center_teacher}
    state = _resume_state(out, config, fingerprint) or {"fingerprint": fingerprint, "history": [], "stage_index": 0,
                                                        "epoch": 0, "wait": 0}

    with strategy.scope():
        backbone = build_backbone(config.backbone, weights=config.weights, input_size=config.input_size)
        head_options: dict[str, Any] = dict(embedding_size=config.embedding_size, dropout=config.dropout,
                                            head=config.head, style=config.embedding_style, scale=config.scale,
                                            margin=config.margin, name=config.name or "edgeface")
        models: FaceModels | DistillModels
        uses_labels = True  # whether a distillation model's training step reads the labels too
        if distill is None:
            models = build_face_models(backbone.model.input, backbone.model.output,
                                       num_classes=data.train.num_classes, **head_options)
        else:
            from ._distill import build_distill_models

            student = build_distill_models(backbone.model.input, backbone.model.output,
                                           teacher_dim=distill.targets.shape[1], loss=config.distill_loss,
                                           num_classes=data.train.num_classes if config.label_loss_weight > 0 else None,
                                           **head_options)
            distill.describe["projection"] = student.projection
            distill.describe["train_cosine_before"] = _student_cosine(student, data, distill, preprocess)
            models, uses_labels = student, student.uses_labels
    if config.weights is None and config.epochs_frozen:
        logger.warning("epochs_frozen=%d with a randomly initialised backbone trains the head on random features",
                       config.epochs_frozen)
    tracker = _Tracker(out, models, preprocess, data, config, state, work=work, agree=_agreement(strategy, worker))
    tracker.started = started  # this attempt's clock starts with the run, data loading included
    if config.resume and state["history"]:  # the weights as of the last finished epoch
        with strategy.scope():
            tf.train.Checkpoint(model=models.training).read(str(tracker.resume_dir / "ckpt")).expect_partial()

    steps = config.steps_per_epoch or max(1, len(data.train) // config.batch_size)
    stages = [s for s in (("frozen", config.epochs_frozen, config.lr),
                          ("finetune", config.epochs, _finetune_lr(config))) if s[1] > 0]
    done_epochs = sum(1 for _ in state["history"])
    for index, (stage, epochs, lr) in enumerate(stages):
        if index < state["stage_index"] or (index == state["stage_index"] and state["epoch"] >= epochs):
            continue
        first_epoch = state["epoch"] if index == state["stage_index"] else 0
        with strategy.scope():
            n_trainable = _set_trainable(backbone, stage, config)
            optimizer = _optimizer(config, _schedule(config, lr, epochs, steps))
            if distill is None:
                models.training.compile(optimizer=optimizer,
                                        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                                        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
            else:
                from ._distill import compile_arguments

                models.training.compile(optimizer=optimizer, **compile_arguments(
                    config.distill_loss, config.distill_weight, config.label_loss_weight, uses_labels))
            checkpoint = tf.train.Checkpoint(model=models.training, optimizer=optimizer)
            if config.resume and first_epoch > 0:  # mid-stage: the optimizer state too (incl. the schedule's step)
                optimizer.build(models.training.trainable_variables)
                checkpoint.read(str(tracker.resume_dir / "ckpt")).expect_partial()
                logger.info("resumed %s at stage %s epoch %d", out, stage, first_epoch)
        state.update(stage_index=index, epoch=first_epoch, wait=state.get("wait", 0) if first_epoch else 0)
        logger.info("stage %s: %d epochs of %d steps, lr %g, %d trainable backbone layers",
                    stage, epochs, steps, lr, n_trainable)
        dataset = _dataset(config, data, preprocess, start_epoch=done_epochs, distill=distill, strategy=strategy,
                           worker=worker)
        epoch_callback = _epoch_callback(tracker, index, stage, checkpoint)
        models.training.fit(dataset, epochs=epochs, initial_epoch=first_epoch, steps_per_epoch=steps,
                            callbacks=[epoch_callback, *callbacks], verbose=verbose)
        done_epochs += epochs - first_epoch
        state.update(stage_index=index + 1, epoch=0)

    if tracker.best_path.is_file() and data.val is not None:
        models.embedding.load_weights(tracker.best_path)
    metrics: dict[str, Any] = {"best_validation": {k: state.get(k) for k in ("best", "best_epoch")}}
    if distill is not None:
        distill.describe["train_cosine_after"] = _student_cosine(models, data, distill, preprocess)
        metrics["distillation"] = {k: distill.describe[k] for k in ("train_cosine_before", "train_cosine_after")}
        logger.info("student vs teacher target on the training images (cosine): %s before, %s after",
                    *(distill.describe[k] for k in ("train_cosine_before", "train_cosine_after")))
    if data.eval_pairs and data.eval_root is not None:  # (set together)
        from ._data import embed_crops
        from ._evaluate import score_pairs

        report, _, _ = score_pairs(data.eval_pairs, data.eval_root,
                                   lambda c: embed_crops(models.embedding, c, preprocess),
                                   preprocess, max_unreadable=config.max_unreadable, crop=data.crop)
        metrics["lfw_folds_6_10"] = report
        logger.info("LFW folds 6-10: accuracy %.4f ± %.4f", report["accuracy"]["mean"], report["accuracy"]["std"])

    seconds = tracker.prior_seconds + time.monotonic() - started
    card = _card(config, data, backbone, preprocess, state, metrics, seconds, steps)
    card["environment"]["strategy"] = {"name": config.strategy, "replicas": int(strategy.num_replicas_in_sync),
                                       "workers": worker.count}
    extra: dict[str, Any] = {"backbone": config.backbone, "head": config.head, "training_card": CARD_NAME,
             "weights": backbone.weights_record(), "dataset": config.dataset}
    if backbone.spec.compression_learning_rate is not None:  # edgeface convert's fine-tuning rate (BackboneSpec)
        extra["compression_learning_rate"] = backbone.spec.compression_learning_rate
    if not stages:  # a face source packaged as it is: nothing was learned from config.dataset
        extra.update(head=None, dataset=None,
                     training_data=f"none beyond the source model's own; {config.dataset} used only to evaluate")
    else:
        extra["training_data"] = (f"{config.dataset} ({data.train.num_classes} people, {len(data.train)} images)"
                                  + (" on top of the source model's own" if backbone.spec.reads_face_weights else ""))
    if distill is not None:
        card["distillation"] = distill.describe
        extra["teacher"] = {k: distill.teacher.get(k) for k in ("kind", "fingerprint")}
    metadata = ModelMetadata(preprocess=preprocess, embedding_size=config.embedding_size, name=config.name or out.name,
                             extra=extra)
    # Every worker saves (see train()); only the chief's copy is the output, written atomically.
    saved = save_model(models.embedding, work / MODEL_NAME, metadata)
    card_path = out / CARD_NAME
    if worker.chief:
        atomic_write_text(card_path, json.dumps(card, indent=1, default=_json_default))
    return TrainResult(out, out / MODEL_NAME if not worker.chief else saved, card_path, metrics, state["history"],
                       card, chief=worker.chief)


def _finetune_lr(config: TrainConfig) -> float:
    if config.lr_finetune is not None:
        return config.lr_finetune
    # After a frozen stage, fine-tune gently; a single stage (e.g. from random init) uses lr itself.
    return config.lr / 10.0 if config.epochs_frozen > 0 else config.lr


def _dataset(config: TrainConfig, data: _Data, preprocess, start_epoch: int, distill: "_Distillation | None" = None,
             strategy=None, worker: _Worker = _Worker()):
    from ._data import Augment, make_train_dataset

    def build(batch_size: int, shard: tuple[int, int] = (0, 1)):
        return make_train_dataset(data.train, batch_size=batch_size, preprocess=preprocess,
                                  crops=data.train_crops, crop=None if data.train_crops is not None else data.crop,
                                  augment=Augment.from_dict(config.augment), balanced=config.balanced,
                                  seed=config.seed, start_epoch=start_epoch,
                                  targets=None if distill is None else distill.targets,
                                  with_labels=distill is None or config.label_loss_weight > 0, shard=shard)

    if worker.count == 1:
        return build(config.batch_size)  # the strategy splits each global batch over its replicas
    # Several workers: each feeds its replicas their share of the global batch from its own shard
    # of every pass, so no image is trained on twice per pass.
    if len(data.train) < worker.count:
        raise ValueError(f"{len(data.train)} training image(s) cannot be shared among {worker.count} workers: "
                         "each needs at least one; add images or start fewer workers")
    return strategy.distribute_datasets_from_function(
        lambda context: build(context.get_per_replica_batch_size(config.batch_size),
                              (context.input_pipeline_id, context.num_input_pipelines)))


@dataclass
class _Distillation:
    teacher: dict[str, Any]      # the teacher's description (kind, path, sha256, fingerprint, ...)
    targets: np.ndarray          # (N, D): row i is the target of data.train.paths[i]
    describe: dict[str, Any]     # what the training card records


def _prepare_distillation(config: TrainConfig, data: _Data, strategy=None,
                          worker: _Worker = _Worker()) -> _Distillation:
    """Embed the training images with the teacher (cached), drop the ones it failed on, make the targets.

    With several workers each first embeds its own shard of the images into the cache, then all
    wait for each other and read the whole set from it: with the cache folder shared (``teacher_cache``
    on a network folder) every image is embedded once; without, each worker embeds what it finds
    missing, which is slower but gives the same targets.
    """
    from ._distill import distill_targets
    from ._teachers import EnsembleTeacher, load_teacher, teacher_embeddings

    teacher = load_teacher(config.teacher, **dict(config.teacher_options))  # type: ignore[arg-type]
    try:
        if worker.count > 1:
            members = teacher.members if isinstance(teacher, EnsembleTeacher) else [teacher]
            for member in (m for m in members if m.cacheable):
                logger.info("teacher %s: embedding shard %d of %d", member.kind, worker.index + 1, worker.count)
                teacher_embeddings(member, data.train.root, data.train.paths, cache_dir=config.teacher_cache,
                                   shard=(worker.index, worker.count))
            _agreement(strategy, worker)({"barrier": 1.0})  # every shard is in the cache past this line
        logger.info("teacher %r: embedding %d training images (cached in %s)", config.teacher, len(data.train),
                    config.teacher_cache or "the default teacher cache")
        found = teacher_embeddings(teacher, data.train.root, data.train.paths, cache_dir=config.teacher_cache)
        described = teacher.describe()
    finally:
        teacher.close()
    ok = found.ok
    if not ok.any():
        raise ValueError(f"the teacher {config.teacher!r} could not embed any of the {len(ok)} training images")
    if not ok.all():
        failed = [p for p, good in zip(data.train.paths, ok) if not good]
        logger.warning("the teacher could not embed %d of %d training images (e.g. %s): training without them",
                       len(failed), len(ok), failed[0])
        keep = np.flatnonzero(ok)
        data.train = data.train.select(keep)
        if data.train_crops is not None:
            data.train_crops = data.train_crops[keep]
    targets, mean = distill_targets(found.vectors[ok], center=config.center_teacher)
    unit = found.vectors[ok] / np.linalg.norm(found.vectors[ok], axis=1, keepdims=True)
    describe = {
        "teacher": described, "spec": config.teacher, "options": dict(config.teacher_options),
        "loss": config.distill_loss, "distill_weight": config.distill_weight, "label_weight": config.label_loss_weight,
        "center": {"enabled": config.center_teacher, "computed_on": f"{len(targets)} training images",
                   "mean_norm": None if mean is None else float(np.linalg.norm(mean)),
                   "mean": None if mean is None else [round(float(v), 7) for v in mean]},
        "teacher_mean_cosine_between_images": float(_mean_pairwise_cosine(unit)),
        "cache": found.describe(), "images": len(targets), "teacher_failed": int((~ok).sum()),
    }
    return _Distillation(described, targets, describe)


def _mean_pairwise_cosine(unit: np.ndarray) -> float:
    """Mean cosine between different images' unit vectors, from the sum vector (O(N·D))."""
    n = len(unit)
    if n < 2:
        return float("nan")
    total = unit.sum(axis=0)
    return float((total @ total - n) / (n * (n - 1)))


def _student_cosine(models, data: _Data, distill: _Distillation, preprocess) -> float | None:
    """Mean cosine of the student's output to its targets on the (cached) training crops."""
    if data.train_crops is None:
        return None
    from ._distill import student_cosine

    return round(student_cosine(models.student, data.train_crops, distill.targets, preprocess), 5)


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, (Path, tuple)):
        return str(value) if isinstance(value, Path) else list(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def _card(config: TrainConfig, data: _Data, backbone, preprocess, state: dict, metrics: dict, seconds: float,
          steps: int) -> dict[str, Any]:
    from edgeface_runtime import __version__ as runtime_version

    from ._keras import keras, tf

    return {
        "format": "edgeface-training-card/1",
        "name": config.name or Path(config.out).name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "data": data.describe,
        "backbone": {"name": config.backbone, "description": backbone.spec.description,
                     "input_size": list(config.input_size), "weights": backbone.weights_record()},
        "head": {"embedding_size": config.embedding_size, "style": config.embedding_style, "training_head": config.head,
                 "scale": config.scale, "margin": config.margin},
        "preprocess": preprocess.to_dict(),
        "hyperparameters": {**config.to_dict(), "steps_per_epoch": steps},
        "metrics": metrics,
        "history": state["history"],
        "wall_time_seconds": round(seconds, 1),
        "environment": {"python": platform.python_version(), "tensorflow": tf.__version__,
                        "tf_keras": keras.__version__, "edgeface_runtime": runtime_version,
                        "devices": [d.name for d in tf.config.list_logical_devices()]},
    }


def _epoch_callback(tracker: _Tracker, stage_index: int, stage: str, checkpoint):
    """A Keras callback reporting each epoch to ``tracker`` (built here: Keras loads lazily)."""
    from ._keras import keras

    class EpochCallback(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self._t0 = time.monotonic()

        def on_epoch_end(self, epoch, logs=None):
            seconds = time.monotonic() - getattr(self, "_t0", time.monotonic())
            if tracker.end_epoch(stage_index, stage, epoch, logs or {}, checkpoint, seconds):
                self.model.stop_training = True

    return EpochCallback()
