"""`edgeface convert`: parse options, call :func:`edgeface_converters.convert`, print the table.

Thin on purpose: TensorFlow is imported inside the command, errors become one line on
stderr and exit code 2, and the progress bar lives here (never in the library).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import typer

from ._variants import DEFAULT_PRUNE_BLOCK, DEFAULT_TARGET, TARGETS, VARIANTS

EXIT_BAD_INPUT = 2
EXIT_SOME_FAILED = 1


def _fail(exc: BaseException) -> typer.Exit:
    message = " ".join(line.strip() for line in str(exc).splitlines() if line.strip()) or type(exc).__name__
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(EXIT_BAD_INPUT)


def _setup_logging(verbose: bool) -> None:
    from edgeface_runtime._console import console_logging

    console_logging("edgeface_converters", logging.INFO if verbose else logging.WARNING)


def convert_command(
    model: Path = typer.Argument(..., help="The trained embedding model (model.keras from `edgeface train`)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder: one .tflite per variant + manifest.json."),
    variants: str = typer.Option("all", help=f"Comma-separated variants or 'all': {', '.join(VARIANTS)}."),
    calibration: Path = typer.Option(..., help="Folder of face crops (a few hundred) for int8 calibration and the "
                                               "agreement check."),
    data: Optional[Path] = typer.Option(None, help="Fine-tuning data, one sub-folder per person; without it the "
                                                   "pruned/clustered/QAT variants are skipped."),
    calibration_pairs: Optional[Path] = typer.Option(None, help="LFW-format pairs file: calibrate each variant's "
                                                                 "threshold at FAR 1e-3 on its impostor pairs."),
    pairs_root: Optional[Path] = typer.Option(None, help="Folder holding the pairs' images (default: beside the file)."),
    target: str = typer.Option(DEFAULT_TARGET, help=f"Oldest interpreter the files must load on: {', '.join(TARGETS)}."),
    sparsity: float = typer.Option(0.5, help="Pruning target: fraction of Conv/Dense weights set to zero."),
    prune_block: int = typer.Option(DEFAULT_PRUNE_BLOCK, help="Pruned variants: weights pruned together, consecutive "
                                                              "input channels of one output channel (1: each on its "
                                                              "own). Runs of zeros gzip smaller."),
    clusters: int = typer.Option(16, help="Weight clusters per layer for the clustered variants."),
    io: str = typer.Option("float32", help="Input/output type of the int8 variants: float32, int8 or uint8."),
    finetune_steps: Optional[int] = typer.Option(None, help="Fine-tuning steps per compression step "
                                                            "(default: pruning 1000, clustering and QAT 500)."),
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
                                                       "images show faces (default: the runtime's cached file)."),
    as_json: bool = typer.Option(False, "--json", help="Print the manifest as JSON instead of a table."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log each step."),
) -> None:
    """Convert a trained model into checked .tflite variants (float, int8, pruned, clustered, QAT)."""
    from tqdm import tqdm

    from edgeface_runtime._errors import EdgefaceError

    _setup_logging(verbose)
    try:
        from . import convert, format_table, parse_variants

        chosen = parse_variants(variants)
        bars: list = []

        def progress(event: str, name: str) -> None:
            if not bars:  # first event: every input has been checked, building starts
                bars.append(tqdm(total=len(chosen), unit="variant", disable=as_json, leave=False))
            if event == "start":
                bars[0].set_description(name)
            else:
                bars[0].update(1)

        try:
            manifest = convert(model, out, [v.name for v in chosen], calibration=calibration, data=data,
                               calibration_pairs=calibration_pairs, pairs_root=pairs_root, target=target,
                               sparsity=sparsity, prune_block=prune_block, clusters=clusters, io=io,
                               finetune_steps=finetune_steps,
                               learning_rate=learning_rate, task_weight=task_weight,
                               bias_correction=bias_correction, keep_tensor_names=keep_tensor_names,
                               progress=progress,
                               face_detector=_face_detector(detector))
        finally:
            for bar in bars:
                bar.close()
    except (ValueError, EdgefaceError, FileNotFoundError) as exc:
        raise _fail(exc) from None
    typer.echo(manifest.to_json() if as_json else format_table(manifest))
    if manifest.by_status("failed"):
        raise typer.Exit(EXIT_SOME_FAILED)


def _face_detector(path: Optional[Path]) -> Any:
    if path is None:
        return "auto"
    from edgeface_runtime import FaceDetector

    return FaceDetector.from_path(path)


def run_typer_command(command: Callable[..., Any], argv: Sequence[str], prog_name: str) -> int:
    """Run one typer command function on ``argv`` as ``prog_name``; return its exit code.

    The runtime's ``edgeface`` dispatcher (argparse, no typer on devices) calls each
    ``edgeface.commands`` entry point as ``main(argv, prog_name)``; this makes that call from
    a typer command: its options, help and errors stay typer's.
    """
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command()(command)
    try:  # one command and no callback: typer makes the command itself the program
        typer.main.get_command(app).main(args=list(argv), prog_name=prog_name, standalone_mode=True)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


def main(argv: Sequence[str], prog_name: str = "edgeface convert") -> int:
    """`edgeface convert`, for the runtime's dispatcher (entry point ``convert``)."""
    from edgeface._allocator import relaunch_with_tcmalloc

    relaunch_with_tcmalloc("convert", argv)  # pruning/QAT fine-tuning are training steps
    return run_typer_command(convert_command, argv, prog_name)
