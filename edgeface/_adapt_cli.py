"""`edgeface adapt`: a thin typer command over :mod:`edgeface.adaptation` (TensorFlow loads inside it)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

import typer

from ._cli_support import MODEL_OPTION, QUIET, VERBOSE, pick_model, setup_logging


def _parse_shots(text: Optional[str]) -> Optional[list[int]]:
    if text is None:
        return None
    if not re.fullmatch(r"\s*\d+\s*(,\s*\d+\s*)*", text):
        raise ValueError(f"--kshot takes images per person as a list like 1,3,5; got {text!r}")
    return [int(part) for part in text.split(",")]


def adapt_command(
    model: Optional[Path] = typer.Argument(None, help="Source model.keras (from `edgeface train` or `edgeface adapt`)."),
    model_option: Optional[Path] = MODEL_OPTION,
    data: Path = typer.Option(..., help="Target-domain folder: one sub-folder of images per person."),
    out: Path = typer.Option(Path("runs/adapt"), help="Output folder (model.keras, adaptation_card.json, kshot.*)."),
    steps: Optional[int] = typer.Option(None, help="Optimisation steps."),
    lr: Optional[float] = typer.Option(None, help="Learning rate (cosine decay)."),
    batch_size: Optional[int] = typer.Option(None, help="Images per step."),
    unfreeze: Optional[str] = typer.Option(None, help="Also train the top N backbone blocks, or 'all' (default 0: "
                                           "the embedding head's dense and batch-norm layers only)."),
    head: Optional[str] = typer.Option(None, help="Margin head: arcface or cosface."),
    scale: Optional[float] = typer.Option(None, help="Margin head scale."),
    margin: Optional[float] = typer.Option(None, help="Margin head margin."),
    anchor_weight: Optional[float] = typer.Option(None, help="Weight of the pull towards the source embeddings "
                                                  "(1 − cosine); 0 disables it."),
    bn_stats: Optional[str] = typer.Option(None, help="Batch-norm statistics: source, head (re-estimate the "
                                           "embedding's on the target images) or target (re-estimate all)."),
    augment: bool = typer.Option(True, "--augment/--no-augment", help="Flip, crop, brightness/contrast jitter."),
    seed: int = typer.Option(0, help="Random seed (with --kshot: the first split's)."),
    kshot: Optional[str] = typer.Option(None, help="Also evaluate k-shot adaptation on held-out people, e.g. 1,3,5 "
                                        "(writes kshot.json and kshot.md)."),
    seeds: int = typer.Option(3, help="Splits of the k-shot evaluation (seeds --seed, --seed+1, ...), averaged."),
    pairs: int = typer.Option(600, help="Verification pairs of held-out people per split (at most)."),
    held_out: float = typer.Option(0.5, help="Fraction of the people held out in the k-shot evaluation."),
    detector: Optional[Path] = typer.Option(None, help="BlazeFace .tflite for models trained with --align."),
    verbose: bool = VERBOSE,
    quiet: bool = QUIET,
) -> None:
    """Adapt a model to a target domain (camera, lighting, grayscale) from a few images per person."""
    setup_logging(verbose, quiet)
    model = pick_model(model, model_option)
    shots = _parse_shots(kshot)
    overrides = {"steps": steps, "lr": lr, "batch_size": batch_size, "unfreeze": unfreeze, "head": head,
                 "scale": scale, "margin": margin, "anchor_weight": anchor_weight, "bn_stats": bn_stats,
                 "seed": seed, "detector": str(detector) if detector else None}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if not augment:
        overrides["augment"] = None
    if seeds < 1:
        raise ValueError(f"--seeds must be at least 1, got {seeds}")
    from .adaptation import adapt, kshot_evaluation, kshot_markdown, write_kshot_report

    if shots is not None:
        report = kshot_evaluation(model, data, shots, seeds=range(seed, seed + seeds), held_out_fraction=held_out,
                                  n_pairs=pairs, **overrides)
        json_path, md_path = write_kshot_report(report, out)
    result = adapt(model, data, out, **overrides)
    if shots is not None:
        typer.echo(kshot_markdown(report))
        typer.echo(f"k-shot report: {md_path} and {json_path}")
    typer.echo(f"adapted model: {result.model_path}")
    typer.echo(f"adaptation card: {result.card_path}")
