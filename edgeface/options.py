"""The configuration model, public: how an options dataclass declares its fields and loads from TOML.

``TrainConfig``, ``AdaptConfig``, ``ReportOptions`` and ``edgeface_converters.ConvertOptions`` are
built from these pieces: :func:`option` declares a field (its default, help text and flag), the
:class:`OptionsLoading` mixin gives ``from_dict``/``from_toml`` with errors that name the key and
the closest valid one, and :func:`merged` applies keyword changes to an options object with the same
checks. A package that adds a command (the converters do) declares its options with these.
"""

from ._options import OptionsLoading, merged, option, option_fields, option_info, read_toml

__all__ = ["OptionsLoading", "merged", "option", "option_fields", "option_info", "read_toml"]
