"""`edgeface convert`: parse options, call :func:`edgeface_converters.convert`, print the table.

The flags are :class:`edgeface_converters.ConvertOptions`' fields (``options_command``), and
``--config FILE.toml`` reads the same options from a file (flags win).

Thin on purpose: TensorFlow is imported inside the command, errors map to exit codes in
``_cli_support.run``, and the progress bar lives here (never in the library). Every input
left out comes from the training card beside the model (:mod:`edgeface._records`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from edgeface_converters import ConvertOptions
from edgeface_runtime.commandline import exit_code

from ._cli_support import JSON, MODEL_OPTION, QUIET, VERBOSE, options_command, pick_model, setup_logging


@options_command(ConvertOptions, what="convert")
def convert_command(
    model: Optional[Path] = typer.Argument(None, help="The trained embedding model (model.keras from "
                                                      "`edgeface train`)."),
    model_option: Optional[Path] = MODEL_OPTION,
    options: ConvertOptions = ConvertOptions(),  # one flag per field, and --config (options_command)
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
    if options.variants != "auto":
        parse_variants(options.variants)  # a typo fails before any work
    bars: list = []

    def progress(event: str, name: str) -> None:
        if not bars:  # first event: every input has been checked, building starts
            bars.append(tqdm(unit="variant", disable=as_json or quiet, leave=False))
        if event == "start":
            bars[0].set_description(name)
        else:
            bars[0].update(1)

    try:
        manifest = convert(model, options=options, progress=progress)
    finally:
        for bar in bars:
            bar.close()
    typer.echo(manifest.to_json() if as_json else format_table(manifest))
    if manifest.by_status("failed"):
        raise typer.Exit(exit_code("negative"))

