"""Typer glue for the training commands, over the convention in :mod:`edgeface_runtime.commandline`.

The rules (how a model is named, ``--json`` a switch, ``--out`` for files, ``-v``/``-q``, one
exit-code table) are written once there, for both halves; this module only adapts them to
typer: the shared options, the model argument, and :func:`run`, which every training
command's entry point goes through.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence

import typer
from edgeface_runtime.commandline import (console_logging, error_line, exit_code_for, exit_codes_text, log_level,
                                          quiet_native_logs, wants_verbose)

VERBOSE = typer.Option(False, "--verbose", "-v", help="Also log each step, and TensorFlow's own lines.")
QUIET = typer.Option(False, "--quiet", "-q", help="Print only results and errors.")
JSON = typer.Option(False, "--json", help="Print the result as JSON instead of text.")
MODEL_OPTION = typer.Option(None, "--model", "-m", help="The model, as an option (the same as the argument).")
EPILOG = "Exit codes: " + "; ".join(line.strip().replace("  ", " ", 1) for line in exit_codes_text().splitlines())


def setup_logging(verbose: bool, quiet: bool = False) -> None:
    """The training side's loggers at the level ``-v``/``-q`` ask for (one line per message, on stderr)."""
    level = log_level(verbose, quiet)
    for name in ("edgeface", "edgeface_converters", "edgeface_runtime"):
        console_logging(name, level, defer_to_root=True)


def pick_model(argument: Optional[Path], option: Optional[Path], *, what: str = "model") -> Path:
    """The model named positionally or with ``-m`` (both is fine when they agree)."""
    if argument is not None and option is not None and Path(argument) != Path(option):
        raise ValueError(f"two {what}s given: {argument} and -m {option}; give one")
    chosen = argument if argument is not None else option
    if chosen is None:
        raise ValueError(f"no {what} given: name it as the first argument or with -m/--model")
    return Path(chosen)


def pick_models(arguments: Optional[List[Path]], options: Optional[List[Path]]) -> List[Path]:
    """Models and folders named positionally and/or with repeated ``-m``, in that order."""
    chosen = list(arguments or []) + [m for m in (options or []) if m not in (arguments or [])]
    if not chosen:
        raise ValueError("no model given: name a model.keras, a convert output folder or .tflite files as "
                         "arguments (or with -m/--model)")
    return chosen


def run(command: Callable[..., Any], argv: Sequence[str], prog_name: str, *, relaunch: Optional[str] = None) -> int:
    """Run one typer command function on ``argv`` as ``prog_name``; return its exit code.

    The runtime's ``edgeface`` dispatcher (argparse, no typer on devices) calls each
    ``edgeface.commands`` entry point as ``main(argv, prog_name)``; this makes that call. Before
    anything imports TensorFlow it sets how loud native libraries may be (``-v``); with
    ``relaunch`` the process may re-execute itself under tcmalloc (``_allocator``). An error the
    table knows becomes one line on stderr and its exit code; anything else is a bug and raises.
    """
    quiet_native_logs(wants_verbose(argv))
    if relaunch:
        from ._allocator import relaunch_with_tcmalloc

        relaunch_with_tcmalloc(relaunch, argv)
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command(epilog=EPILOG)(command)
    try:  # one command and no callback: typer makes the command itself the program
        typer.main.get_command(app).main(args=list(argv), prog_name=prog_name, standalone_mode=True)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except Exception as exc:  # noqa: BLE001 - mapped through the one table, or re-raised
        code = exit_code_for(exc)
        if code is None:
            raise
        logging.getLogger("edgeface").debug("command failed", exc_info=True)
        typer.echo(error_line(exc), err=True)
        return code
    return 0
