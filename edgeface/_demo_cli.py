"""`edgeface demo`: a thin typer command over :func:`edgeface._demo.run_demo`."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ._cli_support import QUIET, VERBOSE, setup_logging


def demo_command(
    quick: bool = typer.Option(False, "--quick", help="A few epochs and two variants (a few minutes on 2 cores)."),
    data: Optional[Path] = typer.Option(None, "--data", help="LFW folder, or a data home holding lfw/ "
                                        "(default: $EDGEFACE_DATA_HOME, else the cache, downloaded if missing)."),
    weights: Optional[str] = typer.Option(None, "--weights", help="A local MobileNet v1 0.25 no-top .h5 file, or "
                                          "'imagenet' (Keras' download); default: the sha256-pinned Keras file from "
                                          "the cache, downloaded if missing."),
    detector: Optional[Path] = typer.Option(None, "--detector", help="BlazeFace short-range .tflite (default: "
                                            "the cached official file, downloaded if missing)."),
    download: bool = typer.Option(True, "--download/--no-download", help="Download what is neither given nor "
                                  "cached (LFW ~111 MB, weights, detector; see `edgeface download`)."),
    mirror: Optional[List[str]] = typer.Option(None, "--mirror", help="Base URL or local folder holding the files "
                                               "to download, tried first (repeatable; default $EDGEFACE_MIRRORS)."),
    out: Path = typer.Option(Path("runs/demo"), "--out", help="Folder for every artefact."),
    seed: int = typer.Option(0, "--seed"),
    epochs_frozen: Optional[int] = typer.Option(None, "--epochs-frozen", help="Override the frozen-backbone epochs."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Override the fine-tuning epochs."),
    verbose: bool = VERBOSE,
    quiet: bool = QUIET,
) -> None:
    """Train → convert → report → enroll and identify on the device runtime, end to end on LFW."""
    from ._demo import DemoOptions, format_summary, run_demo
    from ._download_cli import ProgressBars

    # The demo narrates its steps at INFO: shown unless -q (the other commands show them with -v).
    setup_logging(verbose=not quiet)
    options = DemoOptions(out=out, data=data, weights=weights, detector=detector, quick=quick, seed=seed,
                          epochs_frozen=epochs_frozen, epochs=epochs, download=download,
                          mirrors=list(mirror) if mirror else None)
    bars = ProgressBars()

    def say(line: str) -> None:
        bars.close()  # a finished download's bar, before the next line
        typer.echo(line)

    try:
        result = run_demo(options, progress=say, download_progress=bars)
    finally:
        bars.close()
    typer.echo(format_summary(result))
