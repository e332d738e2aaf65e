"""Typer glue for the training commands, over the convention in :mod:`edgeface_runtime.commandline`.

The rules (how a model is named, ``--json`` a switch, ``--out`` for files, ``-v``/``-q``, one
exit-code table) are written once there, for both halves; this module only adapts them to
typer: the shared options, the model argument, :func:`options_command`, which turns a
command's options dataclass (:mod:`edgeface._options`) into its flags, and :func:`run`, which
every training command's entry point goes through.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import functools
import inspect
import logging
import os
import types
import typing
from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence

import typer
from edgeface_runtime.commandline import (console_logging, error_line, exit_code_for, exit_codes_text, log_level,
                                          quiet_native_logs, wants_verbose)

from ._options import OptionInfo, field_default, option_fields, option_info

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


CONFIG_HELP = "TOML file of {what} options (flags override it)."
_CONTEXT = "_typer_context"


def option_parameters(options_type: type) -> list[inspect.Parameter]:
    """One typer option per field of ``options_type`` that has help (:func:`edgeface._options.option`).

    The flag's name, help, choices and shown default all come from the field; its value type is
    the field's (``Optional`` where the field may be None) unless the field names a ``cli_type``.
    """
    hints = typing.get_type_hints(options_type)
    parameters = []
    for field in option_fields(options_type):
        info = option_info(field)
        if not info.on_cli:
            continue
        name = info.cli_name or field.name
        annotation = info.cli_type if info.cli_type is not None else _flag_type(hints[field.name])
        default = _flag_default(field, info)
        decls = info.flags or (f"--{name.replace('_', '-')}",)
        parameters.append(inspect.Parameter(
            name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation,
            default=typer.Option(default, *decls, help=info.help, show_default=info.show_default)))
    return parameters


def _flag_type(tp: Any) -> Any:
    """The type typer parses for a field of type ``tp``: ``X | None`` stays, other unions are read as text."""
    args = [a for a in typing.get_args(tp) if a is not type(None)] if _is_union(tp) else [tp]
    if any(a in (Path, os.PathLike) or typing.get_origin(a) is os.PathLike for a in args):
        return Optional[Path]  # a path, whatever else the library also takes there (a loaded data set)
    inner = args[0] if len(args) == 1 else str
    origin = typing.get_origin(inner) or inner
    if origin in (tuple, list, collections.abc.Sequence):  # a repeatable flag
        member = typing.get_args(inner)[0] if typing.get_args(inner) else str
        return Optional[List[member]]  # type: ignore[valid-type]
    if inner is Any:
        inner = str
    return Optional[inner]


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def _flag_default(field: dataclasses.Field, info: OptionInfo) -> Any:
    # Only flags given on the command line override a --config file or a recipe (see
    # options_command), so the typer default is what --help shows: the field's default
    # where that is the flag's own value, else the flag's ``cli_default``.
    if not info.show_default or info.parse is not None or info.cli_type is not None:
        return info.cli_default
    default = field_default(field)
    return None if default is dataclasses.MISSING else default


def options_command(options_type: type, *, what: str,
                    config_argument: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give a typer command one flag per option of ``options_type`` and ``--config FILE.toml``.

    The decorated command declares a parameter ``options``; in the signature typer reads it is
    replaced by the fields' flags (:func:`option_parameters`) and ``--config``. When the command
    runs, ``options`` is the dataclass built from the field defaults, then the TOML file, then
    the flags given on the command line (a flag left at its default does not override the
    file). ``config_argument`` also takes the file as the first positional argument
    (``edgeface train FILE.toml``). Adding a field to ``options_type`` adds its flag: nothing
    else is edited.
    """
    fields = {option_info(f).cli_name or f.name: f for f in option_fields(options_type) if option_info(f).on_cli}

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        signature = inspect.signature(command)
        if "options" not in signature.parameters:
            raise TypeError(f"{command.__name__} takes no 'options' parameter to derive flags for")
        config_option = inspect.Parameter(
            "config_file", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[Path],
            default=typer.Option(None, "--config", help=CONFIG_HELP.format(what=what)))
        # typer hands the command's context to a parameter annotated typer.Context (it is no flag).
        parameters = [inspect.Parameter(_CONTEXT, inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context)]
        if config_argument:
            parameters.append(inspect.Parameter(
                "config", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[Path],
                default=typer.Argument(None, help=CONFIG_HELP.format(what=what))))
        for parameter in signature.parameters.values():
            if parameter.name == "options":
                parameters += option_parameters(options_type) + [config_option]
            else:
                parameters.append(parameter.replace(kind=inspect.Parameter.KEYWORD_ONLY,
                                                    annotation=_resolved(parameter.annotation, command)))

        @functools.wraps(command)
        def wrapper(**values: Any) -> Any:
            context = values.pop(_CONTEXT)
            config = _one_config(values.pop("config", None), values.pop("config_file"))
            flags = {name: values.pop(name) for name in fields}
            return command(**values, options=build_options(options_type, config, flags, fields, context))

        wrapper.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
        del wrapper.__wrapped__  # typer must read the derived signature, not the command's own
        return wrapper

    return decorate


def _resolved(annotation: Any, command: Callable[..., Any]) -> Any:
    # Annotations are text under ``from __future__ import annotations``; the command's module
    # names them (as inspect.signature(eval_str=True) would, but without the options parameter,
    # whose dataclass may be local to the caller).
    return eval(annotation, getattr(command, "__globals__", {})) if isinstance(annotation, str) else annotation


def _one_config(argument: Optional[Path], option: Optional[Path]) -> Optional[Path]:
    if argument is not None and option is not None and Path(argument) != Path(option):
        raise ValueError(f"two config files given: {argument} and --config {option}; give one")
    return argument if argument is not None else option


def build_options(options_type: type, config: Optional[Path], flags: dict[str, Any],
                  fields: dict[str, dataclasses.Field], context: Any = None) -> Any:
    """``options_type`` from the TOML file ``config`` (if any) and the flags given on the command line.

    ``context`` is the command's typer context: with it, only flags typed on the command line
    count (a flag at its default leaves the file's value); without it, every flag not None does.
    """
    given: dict[str, Any] = {}
    for name, value in flags.items():
        if context is not None:
            source = context.get_parameter_source(name)
            if source is None or source.name not in ("COMMANDLINE", "ENVIRONMENT", "PROMPT"):
                continue
        elif value is None:
            continue
        info = option_info(fields[name])
        if info.parse is not None:
            value = info.parse(value)
        given[fields[name].name] = value
    if config is not None:
        return options_type.from_toml(config, **given)  # type: ignore[attr-defined]
    return options_type.from_dict(given)  # type: ignore[attr-defined]


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
