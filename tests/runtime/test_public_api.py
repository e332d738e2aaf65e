"""The runtime's public surface: what ``edgeface_runtime`` and its public modules export.

The training side and the converters import only these (import-linter's private-modules
contract checks it); this file checks that every exported name resolves, says what it is,
and that type checkers see the same names the lazy ``__getattr__`` serves.
"""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

import pytest

import edgeface_runtime

PUBLIC_MODULES = ["edgeface_runtime", "edgeface_runtime.metrics", "edgeface_runtime.metadata",
                  "edgeface_runtime.download", "edgeface_runtime.bench", "edgeface_runtime.commandline"]


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_every_exported_name_resolves_and_has_a_docstring(module_name):
    module = importlib.import_module(module_name)
    assert inspect.getdoc(module), f"{module_name} has no docstring"
    undocumented = []
    for name in module.__all__:
        value = getattr(module, name)  # AttributeError: exported but missing
        if (inspect.isclass(value) or inspect.isfunction(value)) and not inspect.getdoc(value):
            undocumented.append(name)
    assert not undocumented, f"{module_name} exports undocumented {undocumented}"


def test_type_checkers_see_every_lazy_export():
    # The package resolves names lazily (``__getattr__``); its ``if TYPE_CHECKING:`` imports are
    # what mypy and IDEs see. A name added to one list and not the other would be untyped (Any)
    # for every caller, or typed but missing at run time.
    tree = ast.parse(Path(edgeface_runtime.__file__).read_text())
    block = next(node for node in tree.body if isinstance(node, ast.If)
                 and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING")
    seen = {}
    for node in block.body:
        assert isinstance(node, ast.ImportFrom)
        for alias in node.names:
            assert alias.asname == alias.name, f"{alias.name}: re-export it as `{alias.name} as {alias.name}`"
            seen[alias.name] = None if node.module is None else node.module
    expected = dict(edgeface_runtime._EXPORTS)
    assert seen == expected
