"""The training commands (`edgeface train`, `edgeface evaluate`, ...), joined to the runtime's CLI.

The runtime's `edgeface` finds the ``*_main`` functions below through the ``edgeface.commands``
entry-point group (one entry point per command). Commands are typer commands that only parse
options and call the library; TensorFlow is imported inside them, so `edgeface --help` and
`edgeface train --help` stay fast.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import List, Optional, Sequence

import typer

from ._allocator import relaunch_with_tcmalloc

EXIT_BAD_INPUT = 2
EXIT_WORKER_LOST = 10  # multi-worker training: another worker died (1-9 are the runtime's); --resume continues
EXIT_MISSING_EXTRA = 7  # as the runtime's InterpreterNotFoundError: an ImportError whose message gives the pip command


def _fail(exc: BaseException) -> "typer.Exit":
    message = " ".join(line.strip() for line in str(exc).splitlines() if line.strip()) or type(exc).__name__
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(EXIT_BAD_INPUT)


def _handled_errors() -> tuple[type[BaseException], ...]:
    from edgeface_runtime._errors import EdgefaceError

    return (ValueError, EdgefaceError, FileNotFoundError)


def _parse_size(text: Optional[str]) -> Optional[tuple[int, int]]:
    if text is None:
        return None
    found = re.fullmatch(r"\s*(\d+)\s*(?:[x×,]\s*(\d+))?\s*", text)
    if not found:
        raise ValueError(f"--input-size takes N or HxW (e.g. 112 or 112x96), got {text!r}")
    h = int(found.group(1))
    return h, int(found.group(2) or h)


def _parse_folds(text: str) -> Optional[list[int]]:
    if text.strip().lower() == "all":
        return None
    folds: list[int] = []
    for part in text.split(","):
        found = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+))?\s*", part)
        if not found:
            raise ValueError(f"--folds takes 'all', a range like 6-10 or a list like 1,2,3; got {text!r}")
        lo, hi = int(found.group(1)), int(found.group(2) or found.group(1))
        folds.extend(range(lo, hi + 1))
    return folds


def _parse_options(items: List[str]) -> dict:
    """``KEY=VALUE`` strings → a dict; values that read as JSON (numbers, true/false) are converted."""
    options: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--teacher-option takes KEY=VALUE (e.g. box=blazeface), got {item!r}")
        try:
            options[key.strip()] = json.loads(value)
        except ValueError:
            options[key.strip()] = value
    return options


def _setup_logging(verbose: bool) -> None:
    from edgeface_runtime._console import console_logging

    console_logging("edgeface", logging.INFO if verbose else logging.WARNING, defer_to_root=True)


def train_command(
    config: Optional[Path] = typer.Argument(None, help="TOML file of training options (flags override it)."),
    backbone: Optional[str] = typer.Option(None, help="Backbone name (see `edgeface train --list-backbones`)."),
    weights: Optional[str] = typer.Option(
        None, help="'pretrained' (default: ImageNet for Keras applications, the installed package's file for "
                   "face sources), 'imagenet', 'none', or a weights file (.h5; a face source's own file)."),
    data: Optional[Path] = typer.Option(None, help="Folder with one sub-folder of images per person (with --lfw: the LFW folder)."),
    lfw: bool = typer.Option(False, "--lfw", help="Train on LFW people outside pairs.txt folds 6-10; evaluate on folds 6-10."),
    input_size: Optional[str] = typer.Option(None, help="Input size: N or HxW."),
    embedding_size: Optional[int] = typer.Option(None, help="Embedding dimension."),
    head: Optional[str] = typer.Option(None, help="Training head: softmax, arcface or cosface."),
    embedding_style: Optional[str] = typer.Option(
        None, help="Embedding head: standard (average pooling), gdc (global depthwise conv, MobileFaceNet) or seed."),
    recipe: Optional[str] = typer.Option(None, help="Named recipe (e.g. seed-vgg16, lfw-mobilenet-v1-025)."),
    epochs_frozen: Optional[int] = typer.Option(None, help="Epochs training the head on the frozen backbone."),
    epochs: Optional[int] = typer.Option(None, help="Fine-tuning epochs after the frozen ones."),
    batch_size: Optional[int] = typer.Option(None, help="Global batch size."),
    lr: Optional[float] = typer.Option(None, help="Learning rate (fine-tuning: --lr-finetune, default lr/10)."),
    lr_finetune: Optional[float] = typer.Option(None, help="Learning rate of the fine-tuning stage."),
    unfreeze: Optional[str] = typer.Option(None, help="Fine-tune 'all' backbone layers or the top N blocks."),
    steps_per_epoch: Optional[int] = typer.Option(None, help="Steps per epoch (default: one pass over the data)."),
    val_fraction: Optional[float] = typer.Option(None, help="Fraction of people held out for validation."),
    align: Optional[bool] = typer.Option(None, "--align/--no-align", help="Align faces with the BlazeFace detector."),
    detector: Optional[Path] = typer.Option(None, help="BlazeFace .tflite for --align (default: the runtime's cache)."),
    out: Optional[Path] = typer.Option(None, help="Output folder (model.keras, training_card.json, checkpoints/)."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run in --out."),
    seed: Optional[int] = typer.Option(None, help="Random seed."),
    strategy: Optional[str] = typer.Option(
        None, help="Distribution: none, mirrored or multiworker (one process per machine, each with its own "
                   "TF_CONFIG; see docs/multiworker.md)."),
    teacher: Optional[str] = typer.Option(
        None, help="Distil from a teacher: 'sface' or 'dlib_resnet' (face sources rebuilt in Keras, aligned with "
                   "BlazeFace; the 'sources' extra), 'dlib' (dlib itself, its own alignment; the 'teachers' extra: "
                   "pip install dlib-bin face-recognition-models), a .keras/.tflite embedding model, an .npz of "
                   "precomputed embeddings (image path relative to --data -> vector), or an ensemble 'A+B' (e.g. "
                   "'sface+dlib_resnet': the mean of the members' centred unit vectors)."),
    teacher_option: Optional[List[str]] = typer.Option(
        None, help="Teacher option KEY=VALUE (repeatable), e.g. box=blazeface, detector=FILE, workers=2."),
    distill_loss: Optional[str] = typer.Option(None, help="Distillation loss: cosine (default) or l2."),
    distill_weight: Optional[float] = typer.Option(None, help="Weight of the distillation loss (default 1)."),
    label_weight: Optional[float] = typer.Option(
        None, help="Weight of the identity-label loss (default: 0 with a teacher, so no labels are needed)."),
    center_teacher: Optional[bool] = typer.Option(
        None, "--center-teacher/--no-center-teacher", help="Subtract the training images' mean teacher embedding "
                                                           "before normalising (default on)."),
    teacher_cache: Optional[Path] = typer.Option(None, help="Teacher embedding cache folder (default "
                                                            "$EDGEFACE_CACHE/teachers)."),
    list_backbones: bool = typer.Option(False, "--list-backbones", help="List the backbones and exit."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log each step of the run."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No per-epoch lines."),
) -> None:
    """Train a face-embedding model by transfer learning."""
    if list_backbones:
        from ._backbones import get_backbone_spec
        from .backbones import list_backbones as names

        for name in names():
            spec = get_backbone_spec(name)
            typer.echo(f"{name:20s} {spec.description}")
        return
    _setup_logging(verbose)
    try:
        from ._train import TrainConfig, train

        overrides = {
            "backbone": backbone, "weights": weights, "data": str(data) if data else None,
            "dataset": "lfw" if lfw else None, "input_size": _parse_size(input_size),
            "embedding_size": embedding_size, "embedding_style": embedding_style, "head": head, "recipe": recipe, "epochs_frozen": epochs_frozen,
            "epochs": epochs, "batch_size": batch_size, "lr": lr, "lr_finetune": lr_finetune,
            "unfreeze": unfreeze, "steps_per_epoch": steps_per_epoch, "val_fraction": val_fraction,
            "align": align, "detector": str(detector) if detector else None, "out": str(out) if out else None, "resume": resume or None, "seed": seed,
            "strategy": strategy, "teacher": teacher,
            "teacher_options": _parse_options(teacher_option) if teacher_option else None,
            "distill_loss": distill_loss, "distill_weight": distill_weight, "label_weight": label_weight,
            "center_teacher": center_teacher, "teacher_cache": str(teacher_cache) if teacher_cache else None,
        }
        if config is not None:
            cfg = TrainConfig.from_toml(config, **overrides)
        else:
            cfg = TrainConfig.from_dict({k: v for k, v in overrides.items() if v is not None})
        result = train(cfg, verbose=0 if quiet else 2)
    except _handled_errors() as exc:
        raise _fail(exc) from None
    except ImportError as exc:  # an optional extra (e.g. the dlib teacher) is not installed
        _fail(exc)
        raise typer.Exit(EXIT_MISSING_EXTRA) from None
    except RuntimeError as exc:
        from ._train import WorkerLostError

        if not isinstance(exc, WorkerLostError):
            raise
        _fail(exc)  # the message says what to do; a traceback would bury it
        raise typer.Exit(EXIT_WORKER_LOST) from None
    if not result.chief:  # a multi-worker run: this worker wrote nothing itself
        typer.echo(f"this worker's share is done; the chief writes the model: {result.model_path}")
        return
    typer.echo(f"model: {result.model_path}")
    typer.echo(f"training card: {result.card_path}")
    best = result.metrics.get("best_validation", {})
    if best.get("best") is not None:
        typer.echo(f"validation accuracy (held-out people): {best['best']:.4f} at {best['best_epoch']}")
    distilled = result.metrics.get("distillation")
    if distilled and distilled.get("train_cosine_after") is not None:
        typer.echo(f"cosine to the teacher on the training images: {distilled['train_cosine_before']:.3f} before, "
                   f"{distilled['train_cosine_after']:.3f} after training")
    lfw_report = result.metrics.get("lfw_folds_6_10")
    if lfw_report:
        typer.echo(_summary("LFW folds 6-10", lfw_report))


def _summary(title: str, report: dict) -> str:
    acc = report["accuracy"]
    parts = [f"{title}: accuracy {acc['mean'] * 100:.2f}% ± {acc['std'] * 100:.2f}"]
    for point in report.get("tar_at_far", []):
        limited = " (limited by negatives)" if point.get("limited_by_negatives") else ""
        parts.append(f"TAR@FAR={point['far']:g} {point['tar'] * 100:.2f}%{limited}")
    parts.append(f"EER {report['eer']['eer'] * 100:.2f}%")
    parts.append(f"AUC {report['auc']:.4f}")
    return ", ".join(parts) + f" ({report['num_pairs']} pairs)"


def evaluate_command(
    model: Path = typer.Argument(..., help="A .keras or .tflite model with edgeface metadata."),
    pairs: Path = typer.Option(..., help="LFW-style pairs file (pairs.txt)."),
    images: Path = typer.Option(..., help="Image root the pairs' paths are relative to."),
    folds: str = typer.Option("6-10", help="Folds to evaluate: 'all', a range (6-10) or a list (1,2,3)."),
    calibrate_far: Optional[List[float]] = typer.Option(
        None, help="Calibrate the threshold at this false-accept rate and write it into the model (repeatable)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the full report as JSON here."),
    detector: Optional[Path] = typer.Option(None, help="BlazeFace .tflite for models trained with --align."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress."),
) -> None:
    """Verification accuracy, TAR@FAR and EER of a model on LFW-style pairs."""
    _setup_logging(verbose)
    try:
        from ._evaluate import evaluate

        report = evaluate(model, pairs, images, folds=_parse_folds(folds), calibrate_far=calibrate_far or None,
                          detector=detector)
    except _handled_errors() as exc:
        raise _fail(exc) from None
    typer.echo(_summary(f"{model.name} on {pairs.name} folds {folds}", report))
    for item in report.get("calibrated", []):
        typer.echo(f"wrote threshold {item['threshold']:.6f} at FAR {item['far']:g} into {model}")
    if json_out is not None:
        json_out.write_text(json.dumps(report, indent=1))


# Entry points of the `edgeface.commands` group (pyproject.toml), one per command: the runtime's
# dispatcher calls them with the arguments after the command's name. The command modules are
# imported only by their own command, and none imports TensorFlow before the command runs.


def _run(command, argv: Sequence[str], prog_name: str) -> int:
    from edgeface_converters.cli import run_typer_command

    return run_typer_command(command, argv, prog_name)


def train_main(argv: Sequence[str], prog_name: str = "edgeface train") -> int:
    relaunch_with_tcmalloc("train", argv)
    return _run(train_command, argv, prog_name)


def evaluate_main(argv: Sequence[str], prog_name: str = "edgeface evaluate") -> int:
    return _run(evaluate_command, argv, prog_name)


def report_main(argv: Sequence[str], prog_name: str = "edgeface report") -> int:
    from ._report_cli import report_command

    return _run(report_command, argv, prog_name)


def demo_main(argv: Sequence[str], prog_name: str = "edgeface demo") -> int:
    relaunch_with_tcmalloc("demo", argv)
    from ._demo_cli import demo_command

    return _run(demo_command, argv, prog_name)


def download_main(argv: Sequence[str], prog_name: str = "edgeface download") -> int:
    from ._download_cli import download_command

    return _run(download_command, argv, prog_name)


def adapt_main(argv: Sequence[str], prog_name: str = "edgeface adapt") -> int:
    relaunch_with_tcmalloc("adapt", argv)
    from ._adapt_cli import adapt_command

    return _run(adapt_command, argv, prog_name)
