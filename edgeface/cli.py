"""The training commands (`edgeface train`, `evaluate`, `convert`, ...), joined to the runtime's CLI.

The runtime's `edgeface` finds the ``*_main`` functions below through the ``edgeface.commands``
entry-point group (one entry point per command). Commands are typer commands that only parse
options and call the library; TensorFlow is imported inside them, so `edgeface --help` and
`edgeface train --help` stay fast. They follow the one convention of
:mod:`edgeface_runtime.commandline` (model naming, ``--json``/``--out``, ``-v``/``-q``, exit
codes) through ``_cli_support``; errors are not caught here but mapped there.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional, Sequence

import typer

from ._cli_support import JSON, MODEL_OPTION, QUIET, VERBOSE, options_command, pick_model, run, setup_logging
from ._records import parse_folds as _parse_folds
from ._train import TrainConfig


NO_FACE_HELP = ("Images in which the detector finds no face (aligned models): 'skip' leaves them out, as the "
                "device refuses them (default); 'center' centre-crops them, which is only right for images that "
                "already are aligned face crops. Either way the output and the JSON count them.")


def no_face_line(summary: Optional[dict], skipped_pairs: Optional[int] = None) -> str:
    """One line saying how many images had no detected face and what was done with them ('' if none ran)."""
    if not summary:
        return ""
    pairs = f" ({skipped_pairs} pairs left out)" if skipped_pairs and summary["policy"] == "skip" else ""
    return (f"no face detected in {summary['no_face']} of {summary['images']} images: "
            f"{summary['meaning']}{pairs}")


@options_command(TrainConfig, what="training", config_argument=True)
def train_command(
    options: TrainConfig = TrainConfig(),  # one flag per field, and FILE.toml/--config (options_command)
    list_backbones: bool = typer.Option(False, "--list-backbones", help="List the backbones and exit."),
    verbose: bool = VERBOSE,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only results and errors (no per-epoch lines)."),
) -> None:
    """Train a face-embedding model by transfer learning."""
    if list_backbones:
        from ._backbones import get_backbone_spec
        from .backbones import list_backbones as names

        for name in names():
            spec = get_backbone_spec(name)
            typer.echo(f"{name:20s} {spec.description}")
        return
    setup_logging(verbose, quiet)
    from ._train import train

    result = train(options, verbose=0 if quiet else 2)
    if not result.chief:  # a multi-worker run: this worker wrote nothing itself
        typer.echo(f"this worker's share is done; the chief writes the model: {result.model_path}")
        return
    typer.echo(f"model: {result.model_path}")
    typer.echo(f"training card: {result.card_path}")
    line = no_face_line((result.card.get("data") or {}).get("no_face"))
    if line:
        typer.echo(f"training data: {line}")
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
        line = no_face_line(lfw_report.get("no_face"), lfw_report.get("skipped_pairs"))
        if line:
            typer.echo(f"LFW folds 6-10: {line}")


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
    model: Optional[Path] = typer.Argument(None, help="A .keras or .tflite model with edgeface metadata."),
    model_option: Optional[Path] = MODEL_OPTION,
    pairs: Optional[Path] = typer.Option(None, help="LFW-style pairs file (pairs.txt; default: the one the training "
                                                    "card recorded, LFW folds 6-10)."),
    images: Optional[Path] = typer.Option(None, help="Image root the pairs' paths are relative to."),
    folds: str = typer.Option("auto", help="Folds to evaluate: 'auto' (6-10 of LFW's 10-fold pairs.txt, else every "
                                           "fold of the file, as it is), 'all', a range (6-10) or a list (1,2,3)."),
    calibrate_far: Optional[List[float]] = typer.Option(
        None, help="Calibrate the threshold at this false-accept rate and write it into the model (repeatable)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Also write the full report as JSON to this file."),
    as_json: bool = JSON,
    detector: Optional[Path] = typer.Option(None, help="BlazeFace .tflite for models trained with --align."),
    no_face: str = typer.Option("skip", help=NO_FACE_HELP),
    verbose: bool = VERBOSE,
    quiet: bool = QUIET,
) -> None:
    """Verification accuracy, TAR@FAR and EER of a model on LFW-style pairs."""
    setup_logging(verbose, quiet)
    model = pick_model(model, model_option)
    fold_list = _parse_folds(folds)
    if pairs is None and images is None:
        from ._records import recorded_protocol

        protocol = recorded_protocol([model])
        if protocol is None or protocol.pairs is None or protocol.images is None:
            raise ValueError(f"no pairs given and the training card of {model} records no LFW protocol; pass "
                             "--pairs FILE --images DIR (an LFW-style pairs file and the folder of its images)")
        pairs, images, fold_list = protocol.pairs, protocol.images, protocol.folds
    elif pairs is None or images is None:
        raise ValueError("--pairs and --images go together: the pairs file and the folder its paths are relative to")
    from ._evaluate import evaluate

    report = evaluate(model, pairs, images, folds=fold_list, calibrate_far=calibrate_far or None, detector=detector,
                      no_face=no_face)
    if out is not None:
        out.write_text(json.dumps(report, indent=1))
    if as_json:
        typer.echo(json.dumps(report, indent=1))
        return
    evaluated = report.get("evaluated_folds") or []
    contiguous = len(evaluated) > 1 and evaluated == list(range(evaluated[0], evaluated[-1] + 1))
    shown = f"{evaluated[0]}-{evaluated[-1]}" if contiguous else ",".join(str(f) for f in evaluated)
    typer.echo(_summary(f"{model.name} on {pairs.name} folds {shown}", report))
    line = no_face_line(report.get("no_face"), report.get("skipped_pairs"))
    if line:
        typer.echo(line)
    for item in report.get("calibrated", []):
        typer.echo(f"wrote threshold {item['threshold']:.6f} at FAR {item['far']:g} into {model}")


# Entry points of the `edgeface.commands` group (pyproject.toml), one per command: the runtime's
# dispatcher calls them with the arguments after the command's name. The command modules are
# imported only by their own command, and none imports TensorFlow before the command runs.


def train_main(argv: Sequence[str], prog_name: str = "edgeface train") -> int:
    return run(train_command, argv, prog_name, relaunch="train")


def evaluate_main(argv: Sequence[str], prog_name: str = "edgeface evaluate") -> int:
    return run(evaluate_command, argv, prog_name)


def convert_main(argv: Sequence[str], prog_name: str = "edgeface convert") -> int:
    from ._convert_cli import convert_command

    return run(convert_command, argv, prog_name, relaunch="convert")  # pruning/QAT fine-tuning are training steps


def report_main(argv: Sequence[str], prog_name: str = "edgeface report") -> int:
    from ._report_cli import report_command

    return run(report_command, argv, prog_name)


def demo_main(argv: Sequence[str], prog_name: str = "edgeface demo") -> int:
    from ._demo_cli import demo_command

    return run(demo_command, argv, prog_name, relaunch="demo")


def download_main(argv: Sequence[str], prog_name: str = "edgeface download") -> int:
    from ._download_cli import download_command

    return run(download_command, argv, prog_name)


def adapt_main(argv: Sequence[str], prog_name: str = "edgeface adapt") -> int:
    from ._adapt_cli import adapt_command

    return run(adapt_command, argv, prog_name, relaunch="adapt")
