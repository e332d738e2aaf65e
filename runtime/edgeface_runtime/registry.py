"""One shape for edgeface's named tables: detector variants, alignment templates, backbones, variants...

A :class:`Registry` maps names to typed entries (frozen dataclasses with a ``name`` field) and
answers an unknown name the same way everywhere: the name received, the closest registered
names, and every valid choice::

    from edgeface_runtime.registry import Registry

    DETECTORS = Registry("detector variant", [DetectorSpec("short", ...), DetectorSpec("full", ...)])
    DETECTORS["short"]        # the entry
    DETECTORS["shrot"]        # UnknownNameError: unknown detector variant 'shrot'; did you mean
                              # 'short'? choose one of short, full
    DETECTORS.names()         # ['short', 'full'], in registration order
    DETECTORS.register(spec)  # add one; overwrite=True replaces an existing entry

A registry is a read-only :class:`~collections.abc.Mapping` (``in``, iteration, ``.get(name,
default)``, ``.items()``), so code that read the plain dicts it replaced keeps working;
:meth:`Registry.register` is the one way in. It lives in the runtime, the bottom layer, because
the runtime's own tables use it; training and conversion import it from here. Pure Python.
"""

from __future__ import annotations

import difflib
from typing import Callable, Iterable, Iterator, Mapping, Optional, Protocol, Sequence, TypeVar

__all__ = ["Registry", "UnknownNameError", "closest", "unknown_name"]


class _Named(Protocol):
    @property
    def name(self) -> str: ...


T = TypeVar("T", bound=_Named)


class UnknownNameError(ValueError, KeyError):
    """A name no registry entry has. A ValueError (bad input: the exit code "usage") and a
    KeyError (so ``Mapping`` methods such as ``get`` and ``in`` keep their dict behaviour)."""

    def __init__(self, message: str, *, name: object, kind: str, choices: Sequence[str],
                 suggestions: Sequence[str]) -> None:
        super().__init__(message)
        self.name = name
        self.kind = kind
        self.choices = tuple(choices)
        self.suggestions = tuple(suggestions)

    __str__ = BaseException.__str__  # KeyError's own would quote the whole message


def closest(query: str, names: Iterable[str], n: int = 3, cutoff: float = 0.5) -> list[str]:
    """The names most like ``query``, best first ("MobileNet-V2-0.5" → "mobilenet_v2_050" first).

    Case, "." and "-" are ignored ("-" counts as "_"), and a name that starts with the query
    or that the query starts with ranks higher: a truncated or extended name means that entry.
    """
    wanted = str(query).lower().replace(".", "").replace("-", "_")
    scored = []
    for name in names:
        plain = name.lower().replace("-", "_")
        score = difflib.SequenceMatcher(None, wanted, plain).ratio()
        if plain.startswith(wanted) or wanted.startswith(plain):
            score += 0.2
        scored.append((score, name))
    return [name for score, name in sorted(scored, key=lambda s: (-s[0], s[1]))[:n] if score >= cutoff]


def unknown_name(kind: str, name: object, choices: Sequence[str], *, hint: str = "") -> UnknownNameError:
    """The error for ``name``, which is none of ``choices``: "unknown KIND 'NAME'; did you mean
    'X'? choose one of A, B, C HINT". For closed tuples of choices that need no registry."""
    suggestions = closest(str(name), choices)
    guess = f"did you mean {' or '.join(repr(s) for s in suggestions)}? " if suggestions else ""
    tail = f" {hint}" if hint else ""
    return UnknownNameError(f"unknown {kind} {name!r}; {guess}choose one of {', '.join(choices)}{tail}",
                            name=name, kind=kind, choices=choices, suggestions=suggestions)


class Registry(Mapping[str, T]):
    """Named entries of one kind, in registration order.

    ``kind`` names what is registered, for messages ("backbone", "detector variant");
    ``hint`` is appended to the unknown-name error (another way to say "none", say);
    ``populate`` registers built-in entries on first use instead of at import time (it may
    import modules that are slow or optional). Rules for names beyond "a non-empty string" are
    the caller's to check before :meth:`register`, in the words of its domain.
    """

    def __init__(self, kind: str, entries: Iterable[T] = (), *, hint: str = "",
                 populate: Optional[Callable[[], None]] = None) -> None:
        self.kind = kind
        self.hint = hint
        self._entries: dict[str, T] = {}
        self._populate = populate
        for entry in entries:
            self.register(entry)

    def _ready(self) -> dict[str, T]:
        if self._populate is not None:
            populate, self._populate = self._populate, None  # first: populate itself calls register
            populate()
        return self._entries

    def register(self, entry: T, *, overwrite: bool = False) -> T:
        """Add ``entry`` under ``entry.name``; a name already taken is an error unless ``overwrite``."""
        entries = self._ready()
        name = entry.name
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.kind} name is a non-empty string, got {name!r}")
        if name in entries and not overwrite:
            raise ValueError(f"{self.kind} {name!r} is already registered; pass overwrite=True to replace it")
        entries[name] = entry
        return entry

    def names(self) -> list[str]:
        """The registered names, in registration order."""
        return list(self._ready())

    def closest(self, name: object, n: int = 3) -> list[str]:
        """The registered names most like ``name`` (see :func:`closest`)."""
        return closest(str(name), self._ready(), n)

    def unknown(self, name: object, *, extra: Sequence[str] = ()) -> UnknownNameError:
        """The error for ``name``, which is not registered; ``extra``: valid choices that are not
        entries (e.g. "auto"), listed first."""
        return unknown_name(self.kind, name, [*extra, *self.names()], hint=self.hint)

    def copy(self) -> "Registry[T]":
        """An independent registry with the same entries (to change one without touching this one)."""
        other: Registry[T] = Registry(self.kind, hint=self.hint)
        other._entries = dict(self._ready())
        return other

    def __getitem__(self, name: str) -> T:
        try:
            return self._ready()[name]
        except (KeyError, TypeError):  # TypeError: an unhashable name
            raise self.unknown(name) from None

    def __contains__(self, name: object) -> bool:
        try:
            return name in self._ready()
        except TypeError:
            return False

    def __iter__(self) -> Iterator[str]:
        return iter(self._ready())

    def __len__(self) -> int:
        return len(self._ready())

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._ready())})"
