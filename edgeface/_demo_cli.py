"""`edgeface demo`: a thin typer command over :func:`edgeface._demo.run_demo`."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import typer


def demo_command(
    quick: bool = typer.Option(False, "--quick", help="A few epochs and two variants (a few minutes on 2 cores)."),
    data: Optional[Path] = typer.Option(None, "--data", help="LFW folder, or a data home holding lfw/ "
                                        "(default: $EDGEFACE_DATA_HOME)."),
    weights: str = typer.Option("imagenet", "--weights", help="'imagenet' (Keras download) or a local MobileNet "
                                "v1 0.25 no-top .h5 file."),
    detector: Optional[Path] = typer.Option(None, "--detector", help="BlazeFace short-range .tflite (default: "
                                            "the cached official file; see `edgeface download-detector`)."),
    out: Path = typer.Option(Path("runs/demo"), "--out", help="Folder for every artefact."),
    seed: int = typer.Option(0, "--seed"),
    epochs_frozen: Optional[int] = typer.Option(None, "--epochs-frozen", help="Override the frozen-backbone epochs."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Override the fine-tuning epochs."),
) -> None:
    """Train → convert → report → enroll and identify on the device runtime, end to end on LFW."""
    from edgeface_runtime._errors import EdgefaceError

    from ._demo import DemoOptions, format_summary, run_demo

    log = logging.getLogger("edgeface")
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.propagate = False
    log.setLevel(logging.INFO)
    options = DemoOptions(out=out, data=data, weights=weights, detector=detector, quick=quick, seed=seed,
                          epochs_frozen=epochs_frozen, epochs=epochs)
    try:
        result = run_demo(options, progress=typer.echo)
    except (ValueError, EdgefaceError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(format_summary(result))
