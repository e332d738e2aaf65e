"""`edgeface adapt`: a thin typer command over :mod:`edgeface.adaptation` (TensorFlow loads inside it).

The settings' flags are :class:`edgeface.adaptation.AdaptConfig`'s fields (``options_command``);
``--config FILE.toml`` reads them from a file (flags win). The data, output and k-shot flags are
this command's own.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import List, Optional

import typer

from ._adapt import AdaptConfig
from ._cli_support import MODEL_OPTION, QUIET, VERBOSE, options_command, pick_model, setup_logging


def _parse_shots(text: Optional[str]) -> Optional[list[int]]:
    if text is None:
        return None
    if not re.fullmatch(r"\s*\d+\s*(,\s*\d+\s*)*", text):
        raise ValueError(f"--kshot takes images per person as a list like 1,3,5; got {text!r}")
    return [int(part) for part in text.split(",")]


@options_command(AdaptConfig, what="adaptation")
def adapt_command(
    model: Optional[Path] = typer.Argument(None, help="Source model.keras (from `edgeface train` or "
                                                      "`edgeface adapt`)."),
    model_option: Optional[Path] = MODEL_OPTION,
    data: Path = typer.Option(..., help="Target-domain folder: one sub-folder of images per person."),
    out: Path = typer.Option(Path("runs/adapt"), help="Output folder (model.keras, adaptation_card.json, kshot.*)."),
    options: AdaptConfig = AdaptConfig(),  # one flag per field, and --config (options_command)
    kshot: Optional[str] = typer.Option(None, help="Also evaluate k-shot adaptation on held-out people, e.g. 1,3,5 "
                                        "(writes kshot.json and kshot.md)."),
    seeds: int = typer.Option(3, help="Splits of the k-shot evaluation (seeds --seed, --seed+1, ...), averaged."),
    pairs: int = typer.Option(600, help="Verification pairs of held-out people per split (at most)."),
    held_out: float = typer.Option(0.5, help="Fraction of the people held out in the k-shot evaluation (without "
                                             "--test-data)."),
    test_data: Optional[Path] = typer.Option(None, help="With --kshot: score on these other target people (one "
                                                        "sub-folder each) and adapt on every person of --data."),
    test_pairs: Optional[Path] = typer.Option(None, help="With --test-data: the pairs to score (LFW format over "
                                                         "--test-data's images; JPEG, PNG or PGM)."),
    calibrate_far: Optional[List[float]] = typer.Option(
        None, help="Calibrate the adapted model at this FAR (repeatable) on target people it is not adapted on: "
                   "--calibration-data, else a quarter of --data's people held back. Without it the model carries "
                   "NO threshold."),
    calibration_data: Optional[Path] = typer.Option(None, help="Target people (one sub-folder each, not in --data) "
                                                               "for --calibrate-far."),
    verbose: bool = VERBOSE,
    quiet: bool = QUIET,
) -> None:
    """Adapt a model to a target domain (camera, lighting, grayscale) from a few images per person."""
    from .cli import no_face_line

    setup_logging(verbose, quiet)
    model = pick_model(model, model_option)
    shots = _parse_shots(kshot)
    if seeds < 1:
        raise ValueError(f"--seeds must be at least 1, got {seeds}")
    from .adaptation import adapt, kshot_evaluation, kshot_markdown, write_kshot_report

    if shots is not None:
        report = kshot_evaluation(model, data, shots, seeds=range(options.seed, options.seed + seeds),
                                  held_out_fraction=held_out, n_pairs=pairs, test_data=test_data,
                                  test_pairs=test_pairs, config=options)
        json_path, md_path = write_kshot_report(report, out)
    elif test_data is not None or test_pairs is not None:
        raise ValueError("--test-data and --test-pairs score a k-shot evaluation: add --kshot (e.g. --kshot 1,3,5)")
    result = adapt(model, data, out, calibrate_far=calibrate_far or None, calibration_data=calibration_data,
                   config=options)
    if shots is not None:
        typer.echo(kshot_markdown(report))
        typer.echo(f"k-shot report: {md_path} and {json_path}")
    line = no_face_line(result.card["data"].get("no_face"))
    if line:
        typer.echo(f"adaptation data: {line}")
    typer.echo(f"adapted model: {result.model_path}")
    typer.echo(f"adaptation card: {result.card_path}")
    calibration = result.card.get("calibration")
    if calibration:
        for item in calibration["thresholds"]:
            typer.echo(f"threshold {item['threshold']:.6f} at FAR {item['far']:g}, calibrated on "
                       f"{calibration['impostor_pairs']} different-person pairs of {calibration['people']} target "
                       f"people not adapted on ({calibration['source']})")
        if calibration.get("warning"):
            typer.echo(f"warning: {calibration['warning']}", err=True)
    if not result.card.get("thresholds"):
        typer.echo(f"WARNING: {result.card['note']}", err=True)
