"""`edgeface report`: the typer command over :func:`edgeface.report.build_report`.

Entry point ``edgeface.cli:report_main``; the progress bar lives here, not in the library.
`edgeface report DIR` needs nothing else: the protocol defaults to the one the convert
folder's manifest calibrated on, else the one the training card measured on (``_records``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional

import typer

from ._cli_support import JSON, QUIET, VERBOSE, pick_models, setup_logging


class _Bars:
    """``progress(stage, done, total)`` → one tqdm bar per stage, closed when the stage changes."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.stage: Optional[str] = None
        self.bar: Any = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        if stage != self.stage:
            self.close()
            self.stage = stage
            self.bar = tqdm(total=total, desc=stage, unit="", leave=False, dynamic_ncols=True)
        self.bar.total = total
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.bar, self.stage = None, None


def report_command(
    models: Optional[List[Path]] = typer.Argument(None, help="model.keras (or its train folder), `edgeface convert` "
                                                             "output folders (several are compared) and/or .tflite "
                                                             "files."),
    model_option: Optional[List[Path]] = typer.Option(None, "--model", "-m", help="The same, as an option "
                                                                                  "(repeatable)."),
    pairs: Optional[Path] = typer.Option(None, help="LFW-style pairs file (pairs.txt); needs --images (default: the "
                                                    "pairs the manifest or training card recorded)."),
    images: Optional[Path] = typer.Option(None, help="Image root the pairs' paths are relative to."),
    folds: str = typer.Option("auto", help="Folds of --pairs to report: 'auto' (6-10 of LFW's 10-fold pairs.txt, "
                                           "else every fold of the file), 'all', a range (6-10) or a list (1,2,3)."),
    dataset: Optional[Path] = typer.Option(None, help="Instead of --pairs: one sub-folder per person; pairs are "
                                                      "generated reproducibly."),
    n_pairs: int = typer.Option(1000, "--n-pairs", help="Pairs to generate from --dataset (half same person)."),
    seed: int = typer.Option(0, help="Seed of the generated pairs."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder for report.md, report.html and report.json "
                                                                 "(default: report/ beside the first model or "
                                                                 "folder)."),
    latency_runs: int = typer.Option(50, "--latency-runs", help="Timed embeddings per variant and thread count "
                                                                 "(0: skip timing)."),
    tolerance: float = typer.Option(0.5, help="Recommend the smallest variant within this many accuracy points "
                                              "of the best."),
    allow_overlap: bool = typer.Option(False, "--allow-overlap", help="Report even when evaluation people were "
                                                                      "in the training data (optimistic)."),
    detector: Optional[Path] = typer.Option(None, help="BlazeFace .tflite for models with aligned crops."),
    no_face: str = typer.Option("skip", help="Images in which the detector finds no face (aligned models): 'skip' "
                                             "leaves them and their pairs out, as the device refuses them "
                                             "(default); 'center' centre-crops them. Counted in the report."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
    as_json: bool = JSON,
    verbose: bool = VERBOSE,
    quiet: bool = QUIET,
) -> None:
    """Compare a model and its converted variants: accuracy, size, speed; Markdown, HTML and JSON."""
    from .cli import _parse_folds

    setup_logging(verbose, quiet)
    chosen = pick_models(models, model_option)
    fold_list = _parse_folds(folds)
    recorded: dict
    if pairs is None and images is None and dataset is None:
        from ._records import recorded_protocol

        protocol = recorded_protocol(chosen)
        if protocol is None:
            raise ValueError("no verification protocol given and none recorded: no manifest names a calibration pairs "
                             "file and no training card records LFW or people held out for validation; pass "
                             "--pairs FILE --images DIR, or --dataset DIR (one sub-folder per person)")
        recorded = protocol.report_arguments()
        if not quiet:
            typer.echo(f"protocol: {protocol.describe()}", err=True)
    else:
        recorded = {"pairs": pairs, "images": images, "dataset": dataset, "folds": fold_list}
    if out is None:
        first = chosen[0]
        out = (first if first.is_dir() else first.parent) / "report"
    bars = _Bars(progress and not (quiet or as_json))
    try:
        from ._report import build_report

        report = build_report(chosen, **recorded, n_pairs=n_pairs, seed=seed, out_dir=out, latency_runs=latency_runs,
                              tolerance=tolerance, allow_overlap=allow_overlap, detector=detector, progress=bars,
                              no_face=no_face)
    finally:
        bars.close()
    if as_json:
        typer.echo((out / "report.json").read_text())
        return
    typer.echo(f"Recommendation: {report.recommendation['text']}.")
    for note in report.notes:
        if note.startswith("no face found"):
            typer.echo(f"note: {note}")
    for name in ("report.md", "report.html", "report.json"):
        typer.echo(f"wrote {out / name}")
