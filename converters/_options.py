"""The options of one conversion: :class:`ConvertOptions`, the one place each option's default and help live.

``edgeface convert``'s flags are derived from the fields that have help (``edgeface.options``);
the others are options of the library and of ``[convert]`` TOML files only.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, List, Mapping, Optional, Sequence

from edgeface.options import OptionsLoading, option

from ._data import CalibrationSet, FineTuneData
from ._variants import DEFAULT_TARGET, IO_TYPES, MIN_COSINE, TARGETS, VARIANTS


@dataclass
class ConvertOptions(OptionsLoading):
    """Everything :func:`edgeface_converters.convert` does with a model, but the model itself.

    Every input left None comes from the training card beside the model (``use_card``). See
    :func:`~edgeface_converters.convert` for what each option changes; ``--help`` and the field
    help below say it in a line each.
    """

    _what: ClassVar[str] = "convert"
    _table: ClassVar[str | None] = "convert"

    out: str | os.PathLike[str] | None = option(
        None, flags=("--out", "-o"), help="Output folder: one .tflite per variant + manifest.json (default: variants/ "
                                          "beside the model).")
    variants: str | Sequence[str] = option(
        "auto", help="'auto' (float32, float16, dynamic, int8, and pruned-int8 + pruned-dynamic with fine-tuning "
                     f"data), 'all', or a comma-separated list: {', '.join(VARIANTS)}.")
    calibration: str | os.PathLike[str] | CalibrationSet | None = option(
        None, cli_type=Path, help="Folder of face crops (a few hundred) for int8 calibration and the agreement check "
                                  "(default: the training images, cropped as in training).")
    data: str | os.PathLike[str] | FineTuneData | None = option(
        None, cli_type=Path, help="Fine-tuning data, one sub-folder per person (default: the training people); mixed "
                                  "with the calibration crops, distilling the model.")
    calibration_pairs: str | os.PathLike[str] | None = option(
        None, help="LFW-format pairs file: calibrate each variant's threshold at FAR 1e-3 on its impostor pairs "
                   "(default: LFW folds 6-10 for a model trained on LFW).")
    pairs_root: str | os.PathLike[str] | None = option(
        None, help="Folder holding the pairs' images (default: beside the file).")
    target: str = option(DEFAULT_TARGET, choices=tuple(TARGETS),
                         help=f"Oldest interpreter the files must load on: {', '.join(TARGETS)}.")
    sparsity: float = option(0.5, help="Pruning target: fraction of Conv/Dense weights set to zero.")
    layer_sparsity: Mapping[str, float] | Sequence[str] | None = option(
        None, cli_type=Optional[List[str]],
        help="PATTERN=FRACTION (repeatable): layers whose name matches the regular expression get their own pruning "
             "target, e.g. 'sface_fc=0.95' (0 keeps them dense).")
    prune_block: int | None = option(
        None, help="Pruned variants: weights pruned together, consecutive input channels of one output channel (1: "
                   "each on its own; default 4 with calibration pairs, else 1). Runs of zeros gzip smaller.")
    clusters: int = option(16, help="Weight clusters per layer for the clustered variants.")
    io: str = option("float32", choices=IO_TYPES,
                     help="Input/output type of the int8 variants: float32, int8 or uint8.")
    finetune_steps: int | None = option(
        None, help="Fine-tuning steps per compression step (default: pruning 1000, clustering and QAT 1500).")
    learning_rate: float | None = option(
        None, help="Fine-tuning learning rate, Adam (default: pruning 1e-3, clustering and QAT 1e-4).")
    task_weight: float = option(0.0, help="Weight of a classification loss beside the distillation towards the source "
                                          "model's embedding (0: distillation only).")
    bias_correction: bool = option(
        True, flags=("--bias-correction/--no-bias-correction",),
        help="Before full-int8 conversion, remove the mean error that rounding the weights causes (measured on the "
             "calibration crops).")
    keep_tensor_names: bool = option(
        False, flags=("--keep-tensor-names",),
        help="Keep intermediate tensor names in the files (for Netron; by default only the input and output keep "
             "theirs).")
    detector: str | os.PathLike[str] | None = option(
        None, help="BlazeFace .tflite: aligns the fine-tuning data and pairs of models trained on aligned crops, and "
                   "checks the calibration images show faces (default: the training card's, else the runtime's).")
    # Library and TOML only (no flag):
    pairs_folds: Sequence[int] | None = None  # only these folds of calibration_pairs
    use_card: bool = True  # fill inputs left None from the training card beside the model
    distill_weight: float = 1.0  # weight of 1 - cosine to the source model's embedding while fine-tuning
    batch_size: int = 32  # fine-tuning batch
    fars: Sequence[float] = (1e-3,)  # the false-accept rates each variant's thresholds are calibrated at
    min_cosine: float = MIN_COSINE  # mean cosine every file must reach against the Keras model it came from
    max_calibration_images: int = 500  # of the training images, when they are the calibration crops
    seed: int | None = 0  # seeds Keras/TF/numpy for reproducible fine-tuning (None: the global state)

    def to_dict(self) -> dict[str, object]:
        """The options as TOML/JSON values (paths as text; a given CalibrationSet/FineTuneData by its class name)."""
        out: dict[str, object] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, os.PathLike):
                value = os.fspath(value)
            elif isinstance(value, (CalibrationSet, FineTuneData)):
                value = type(value).__name__
            elif isinstance(value, tuple):
                value = list(value)
            out[field.name] = value
        return out


@dataclass(frozen=True)
class CompressionOptions:
    """What the compression steps (pruning, clustering) read: typed, instead of a dict read by lambdas."""

    sparsity: float
    prune_block: int
    clusters: int
    layer_sparsity: Mapping[str, float] = dataclasses.field(default_factory=dict)  # pattern -> sparsity
    steps: int = 0  # fine-tuning steps of the step being applied (the pruning schedule's length)
