"""One configuration model: each command's options are one dataclass, loadable from TOML.

``train``, ``convert``, ``report`` and ``adapt`` each take one options dataclass
(:class:`~edgeface.training.TrainConfig`, :class:`edgeface_converters.ConvertOptions`,
:class:`edgeface.report.ReportOptions`, :class:`edgeface.adaptation.AdaptConfig`). A field is
the one place where an option's name, type, default and help live: declared with
:func:`option`, its metadata carries the help text and, where the command line needs them,
the flag's names, choices and how the flag's text becomes the field's value. The typer glue
(``_cli_support.options_command``) turns those fields into the command's flags, so adding an
option is adding a field. A field declared without help is an option of the library and of
TOML files only (no flag).

This module is the one loader behind every ``from_dict``/``from_toml``: an unknown key is a
ValueError naming the closest valid one, a value of the wrong type one saying what was
received and what the field takes. Values passed to a dataclass directly, in Python, are not
checked here (the functions that run the options validate them).
"""

from __future__ import annotations

import collections.abc
import dataclasses
import difflib
import numbers
import os
import types
import typing
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence, TypeVar, Union

T = TypeVar("T")

_META = "edgeface"  # the key of a field's metadata this module owns


@dataclasses.dataclass(frozen=True)
class OptionInfo:
    """What a field says about itself beyond its type and default (see :func:`option`)."""

    help: str | None = None
    flags: tuple[str, ...] = ()
    choices: tuple[str, ...] = ()
    show_default: bool = True
    cli_type: Any = None
    cli_default: Any = None
    parse: Callable[[Any], Any] | None = None
    cli_name: str | None = None

    @property
    def on_cli(self) -> bool:
        return self.help is not None


def option(default: Any = dataclasses.MISSING, *, help: str | None = None, flags: Sequence[str] = (),
           choices: Iterable[str] = (), show_default: bool = True, cli_type: Any = None, cli_default: Any = None,
           parse: Callable[[Any], Any] | None = None, cli_name: str | None = None,
           default_factory: Callable[[], Any] | None = None) -> Any:
    """A dataclass field that is one option: its default, and how it reads on the command line.

    help: the flag's help text; without it the option has no flag (TOML and Python only).
    flags: the flag's names when they are not ``--field-name`` (e.g. ``("--out", "-o")``, or
        ``("--align/--no-align",)`` for a switch with an off form).
    choices: the values allowed (checked when loading; the help text names them).
    show_default: False hides the default in ``--help`` (where a recipe or the training card
        decides the value, a printed default would mislead).
    cli_type, cli_default, parse, cli_name: for a flag that is not the field itself: the
        type typer parses (e.g. ``str`` for ``--input-size 112x96``), the flag's own default,
        the function from the flag's value to the field's, and the flag's parameter name.
    """
    info = OptionInfo(help=help, flags=tuple(flags), choices=tuple(choices), show_default=show_default,
                      cli_type=cli_type, cli_default=cli_default, parse=parse, cli_name=cli_name)
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata={_META: info})
    return dataclasses.field(default=default, metadata={_META: info})


def option_info(field: dataclasses.Field) -> OptionInfo:
    """The :class:`OptionInfo` of ``field`` (an empty one for a field declared without :func:`option`)."""
    info = field.metadata.get(_META)
    return info if isinstance(info, OptionInfo) else OptionInfo()


def option_fields(cls: type) -> list[dataclasses.Field]:
    """The fields of the options dataclass ``cls`` that are options (the ones ``__init__`` takes)."""
    return [f for f in dataclasses.fields(cls) if f.init]


def field_default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


def closest(word: str, names: Iterable[str]) -> str:
    """``did you mean 'x'?`` for the name nearest ``word``, else the list of names."""
    names = list(names)
    close = difflib.get_close_matches(str(word), names, n=1)
    return f"did you mean {close[0]!r}?" if close else f"known: {', '.join(sorted(names))}"


def check_keys(cls: type, keys: Iterable[str], what: str) -> None:
    """ValueError for the first key of ``keys`` that names no option of ``cls``, naming the closest one."""
    known = [f.name for f in option_fields(cls)]
    unknown = [key for key in keys if key not in known]
    if unknown:
        plural = "s" if len(unknown) > 1 else ""
        raise ValueError(f"unknown {what} option{plural} {', '.join(map(repr, unknown))}; "
                         f"{closest(unknown[0], known)}")


def checked(cls: type, data: Mapping[str, Any], what: str) -> dict[str, Any]:
    """``data`` (from TOML, a dict or the command line) checked against the options of ``cls``.

    Returns the values converted to the fields' types (a TOML string to a ``Path``, an int to a
    float, a list to a tuple); raises ValueError for an unknown key, a wrong type or a value
    outside the field's choices, saying what was received.
    """
    check_keys(cls, data, what)
    hints = typing.get_type_hints(cls)
    by_name = {f.name: f for f in option_fields(cls)}
    values: dict[str, Any] = {}
    for key, value in data.items():
        try:
            values[key] = _convert(value, hints.get(key, Any))
        except _WrongType:
            raise ValueError(f"{what} option {key!r} takes {describe(hints.get(key, Any))}, got {value!r} "
                             f"({type(value).__name__})") from None
        choices = option_info(by_name[key]).choices
        if choices and values[key] is not None and values[key] not in choices:
            raise ValueError(f"{key} must be one of {', '.join(choices)}, got {values[key]!r}")
    return values


def read_toml(path: str | os.PathLike[str], table: str | None = None) -> dict[str, Any]:
    """The keys of a TOML file: its top level, or its ``[table]`` when the file has that table."""
    import tomllib

    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ValueError(f"config file not found: {str(path)!r}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path} is not valid TOML: {exc}") from exc
    if table is not None and isinstance(data.get(table), Mapping):
        return dict(data[table])
    return data


def merged(cls: type[T], base: T | None, what: str, **changes: Any) -> T:
    """``base`` (default: ``cls()``) with ``changes``, for the keyword call forms of the library functions.

    A keyword that names no option is a TypeError (it is a Python call), naming the closest
    option; the values are taken as given, as a direct construction would.
    """
    known = [f.name for f in option_fields(cls)]
    unknown = [key for key in changes if key not in known]
    if unknown:
        raise TypeError(f"unexpected keyword argument {unknown[0]!r} (not a {what} option); "
                        f"{closest(unknown[0], known)}")
    if base is None:
        return cls(**changes)
    if not isinstance(base, cls):
        raise TypeError(f"options must be a {cls.__name__}, got {type(base).__name__}")
    return dataclasses.replace(base, **changes) if changes else base  # type: ignore[type-var]


class _WrongType(Exception):
    pass


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (Union, types.UnionType)


def _convert(value: Any, tp: Any) -> Any:
    """``value`` as the type ``tp`` (see :func:`checked`); _WrongType when it is not one."""
    if tp is Any:
        return value
    if _is_union(tp):
        for member in typing.get_args(tp):
            try:
                return _convert(value, member)
            except _WrongType:
                continue
        raise _WrongType
    if tp is type(None):
        if value is None:
            return None
        raise _WrongType
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _WrongType
    if tp is int:
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return int(value)
        raise _WrongType
    if tp is float:
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            return float(value)
        raise _WrongType
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, os.PathLike):  # a path flag for a field the training card records as text
            return os.fspath(value)
        raise _WrongType
    if tp in (Path, os.PathLike) or typing.get_origin(tp) is os.PathLike:
        if isinstance(value, (str, os.PathLike)):
            return Path(value)
        raise _WrongType
    origin = typing.get_origin(tp) or tp
    args = typing.get_args(tp)
    if origin in (tuple, list, collections.abc.Sequence):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise _WrongType
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise _WrongType
            return tuple(_convert(v, a) for v, a in zip(value, args))
        member = args[0] if args else Any
        items = [_convert(v, member) for v in value]
        return list(items) if origin is list else tuple(items)
    if origin in (dict, collections.abc.Mapping):
        if isinstance(value, Mapping):
            return dict(value)
        raise _WrongType
    if isinstance(origin, type) and isinstance(value, origin):
        return value
    raise _WrongType


def describe(tp: Any) -> str:
    """A type as a user reads it: ``a number``, ``true or false``, ``a path or nothing``."""
    if tp is Any:
        return "any value"
    if _is_union(tp):
        members = [m for m in typing.get_args(tp) if m is not type(None)]
        return " or ".join(dict.fromkeys(describe(m) for m in members))
    names = {bool: "true or false", int: "a whole number", float: "a number", str: "text", Path: "a path",
             os.PathLike: "a path"}
    if tp in names:
        return names[tp]
    origin = typing.get_origin(tp) or tp
    if origin is os.PathLike:
        return "a path"
    if origin in (tuple, list, collections.abc.Sequence):
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        return f"a list ({describe(args[0])} each)" if args else "a list"
    if origin in (dict, collections.abc.Mapping):
        return "a table"
    return getattr(tp, "__name__", str(tp))


class OptionsLoading:
    """``from_dict`` and ``from_toml`` for an options dataclass, through the one loader above.

    ``_what`` names the options in messages ("convert"); ``_table`` is the TOML table a file
    may hold them in (``[convert]``), for one file with a table per command.
    """

    _what: typing.ClassVar[str] = "the"
    _table: typing.ClassVar[str | None] = None

    @classmethod
    def from_dict(cls: type[T], data: Mapping[str, Any]) -> T:
        """Options from a mapping (TOML's keys, a JSON object): unknown keys and wrong types are ValueErrors."""
        table = getattr(cls, "_table", None)
        if table is not None and isinstance(data.get(table), Mapping):
            data = data[table]
        return cls(**checked(cls, data, getattr(cls, "_what")))

    @classmethod
    def from_toml(cls: type[T], path: str | os.PathLike[str], **overrides: Any) -> T:
        """Options from a TOML file (top-level keys or a ``[table]``); ``overrides`` that are not None win."""
        data = read_toml(path, getattr(cls, "_table", None))
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_dict(data)  # type: ignore[attr-defined, no-any-return]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload, no-any-return]
