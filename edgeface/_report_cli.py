"""`edgeface report`: the typer command over :func:`edgeface.report.build_report`.

Entry point ``edgeface.cli:report_main``; the progress bar lives here, not in the library. The
flags are :class:`edgeface.report.ReportOptions`' fields (``options_command``), and ``--config
FILE.toml`` reads the same options from a file (flags win).
`edgeface report DIR` needs nothing else: the protocol defaults to the one the convert
folder's manifest calibrated on, else the one the training card measured on (``_records``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, List, Optional

import typer

from ._cli_support import JSON, QUIET, VERBOSE, options_command, pick_models, setup_logging
from ._report import ReportOptions


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


@options_command(ReportOptions, what="report")
def report_command(
    models: Optional[List[Path]] = typer.Argument(None, help="model.keras (or its train folder), `edgeface convert` "
                                                             "output folders (several are compared) and/or .tflite "
                                                             "files."),
    model_option: Optional[List[Path]] = typer.Option(None, "--model", "-m", help="The same, as an option "
                                                                                  "(repeatable)."),
    options: ReportOptions = ReportOptions(),  # one flag per field, and --config (options_command)
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
    as_json: bool = JSON,
    verbose: bool = VERBOSE,
    quiet: bool = QUIET,
) -> None:
    """Compare a model and its converted variants: accuracy, size, speed; Markdown, HTML and JSON."""
    setup_logging(verbose, quiet)
    chosen = pick_models(models, model_option)
    if options.pairs is None and options.images is None and options.dataset is None:
        from ._records import recorded_protocol

        protocol = recorded_protocol(chosen)
        if protocol is None:
            raise ValueError("no verification protocol given and none recorded: no manifest names a calibration pairs "
                             "file and no training card records LFW or people held out for validation; pass "
                             "--pairs FILE --images DIR, or --dataset DIR (one sub-folder per person)")
        options = dataclasses.replace(options, **protocol.report_arguments())
        if not quiet:
            typer.echo(f"protocol: {protocol.describe()}", err=True)
    out = Path(options.out) if options.out is not None else None
    if out is None:
        first = chosen[0]
        out = (first if first.is_dir() else first.parent) / "report"
    bars = _Bars(progress and not (quiet or as_json))
    try:
        from ._report import build_report

        report = build_report(chosen, options=dataclasses.replace(options, out=out), progress=bars)
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
