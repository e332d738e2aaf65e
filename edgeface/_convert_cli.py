"""`edgeface convert`: parse options, call :func:`edgeface_converters.convert`, print the table.

Thin on purpose: TensorFlow is imported inside the command, errors map to exit codes in
``_cli_support.run``, and the progress bar lives here (never in the library). Every input
left out comes from the training card beside the model (:mod:`edgeface._records`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional

import typer
from edgeface_converters import DEFAULT_TARGET, TARGETS, VARIANTS
from edgeface_runtime.commandline import exit_code

from ._cli_support import JSON, MODEL_OPTION, QUIET, VERBOSE, pick_model, setup_logging


def convert_command(
    model: Optional[Path] = typer.Argument(None, help="The trained embedding model (model.keras from "
                                                      "`edgeface train`)."),
    model_option: Optional[Path] = MODEL_OPTION,
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder: one .tflite per variant + "
                                                                 "manifest.json (default: variants/ beside the "
                                                                 "model)."),
    variants: str = typer.Option("auto", help="'auto' (float32, float16, dynamic, int8, and pruned-int8 with "
                                              "fine-tuning data), 'all', or a comma-separated list: "
                                              f"{', '.join(VARIANTS)}."),
    calibration: Optional[Path] = typer.Option(None, help="Folder of face crops (a few hundred) for int8 calibration "
                                                          "and the agreement check (default: the training images, "
                                                          "cropped as in training)."),
    data: Optional[Path] = typer.Option(None, help="Fine-tuning data, one sub-folder per person (default: the training "
                                                   "people); mixed with the calibration crops, distilling the model."),
    calibration_pairs: Optional[Path] = typer.Option(None, help="LFW-format pairs file: calibrate each variant's "
                                                                "threshold at FAR 1e-3 on its impostor pairs (default: "
                                                                "LFW folds 6-10 for a model trained on LFW)."),
    pairs_root: Optional[Path] = typer.Option(None, help="Folder holding the pairs' images (default: beside the "
                                                         "file)."),
    target: str = typer.Option(DEFAULT_TARGET, help="Oldest interpreter the files must load on: "
                                                    f"{', '.join(TARGETS)}."),
    sparsity: float = typer.Option(0.5, help="Pruning target: fraction of Conv/Dense weights set to zero."),
    layer_sparsity: Optional[List[str]] = typer.Option(None, help="PATTERN=FRACTION (repeatable): layers whose name "
                                                               "matches the regular expression get their own pruning "
                                                               "target, e.g. 'sface_fc=0.95' (0 keeps them dense)."),
    prune_block: Optional[int] = typer.Option(None, help="Pruned variants: weights pruned together, consecutive input "
                                                         "channels of one output channel (1: each on its own; default "
                                                         "4 with calibration pairs, else 1). Runs of zeros gzip "
                                                         "smaller."),
    clusters: int = typer.Option(16, help="Weight clusters per layer for the clustered variants."),
    io: str = typer.Option("float32", help="Input/output type of the int8 variants: float32, int8 or uint8."),
    finetune_steps: Optional[int] = typer.Option(None, help="Fine-tuning steps per compression step "
                                                            "(default: pruning 1000, clustering and QAT 1500)."),
    learning_rate: Optional[float] = typer.Option(None, help="Fine-tuning learning rate, Adam (default: pruning "
                                                             "1e-3, clustering and QAT 1e-4)."),
    task_weight: float = typer.Option(0.0, help="Weight of a classification loss beside the distillation towards "
                                                 "the source model's embedding (0: distillation only)."),
    bias_correction: bool = typer.Option(True, "--bias-correction/--no-bias-correction",
                                         help="Before full-int8 conversion, remove the mean error that rounding "
                                              "the weights causes (measured on the calibration crops)."),
    keep_tensor_names: bool = typer.Option(False, "--keep-tensor-names",
                                           help="Keep intermediate tensor names in the files (for Netron; "
                                                "by default only the input and output keep theirs)."),
    detector: Optional[Path] = typer.Option(None, help="BlazeFace .tflite: aligns the fine-tuning data and pairs of "
                                                       "models trained on aligned crops, and checks the calibration "
                                                       "images show faces (default: the training card's, else the "
                                                       "runtime's)."),
    as_json: bool = JSON,
    verbose: bool = VERBOSE,
    quiet: bool = QUIET,
) -> None:
    """Convert a trained model into checked .tflite variants (float, int8, pruned, clustered, QAT).

    `edgeface convert model.keras` needs nothing else: inputs left out come from the training
    card beside the model. Exit code 1 when a variant failed its checks.
    """
    from tqdm import tqdm

    from edgeface_converters import convert, format_table, parse_variants

    setup_logging(verbose, quiet)
    model = pick_model(model, model_option)
    if variants != "auto":
        parse_variants(variants)  # a typo fails before any work
    bars: list = []

    def progress(event: str, name: str) -> None:
        if not bars:  # first event: every input has been checked, building starts
            bars.append(tqdm(unit="variant", disable=as_json or quiet, leave=False))
        if event == "start":
            bars[0].set_description(name)
        else:
            bars[0].update(1)

    try:
        manifest = convert(model, out, variants, calibration=calibration, data=data,
                           calibration_pairs=calibration_pairs, pairs_root=pairs_root, target=target,
                           sparsity=sparsity, layer_sparsity=layer_sparsity, prune_block=prune_block,
                           clusters=clusters, io=io,
                           finetune_steps=finetune_steps, learning_rate=learning_rate, task_weight=task_weight,
                           bias_correction=bias_correction, keep_tensor_names=keep_tensor_names,
                           progress=progress, face_detector=_face_detector(detector))
    finally:
        for bar in bars:
            bar.close()
    typer.echo(manifest.to_json() if as_json else format_table(manifest))
    if manifest.by_status("failed"):
        raise typer.Exit(exit_code("negative"))


def _face_detector(path: Optional[Path]) -> Any:
    if path is None:
        return "auto"
    from edgeface_runtime import FaceDetector

    return FaceDetector.from_path(path)
