"""edgeface_runtime.registry: the one shape behind edgeface's named tables."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass

import pytest

from edgeface_runtime.registry import Registry, UnknownNameError, closest, unknown_name


@dataclass(frozen=True)
class Entry:
    name: str
    value: int = 0


def test_entries_keep_registration_order_and_read_like_a_mapping():
    table = Registry("colour", [Entry("red", 1), Entry("green", 2)])
    table.register(Entry("blue", 3))
    assert table.names() == list(table) == ["red", "green", "blue"]
    assert table["green"].value == 2 and len(table) == 3
    assert "red" in table and "pink" not in table and ["unhashable"] not in table
    assert table.get("pink") is None and table.get("pink", "x") == "x"  # dict semantics kept
    assert dict(table)["blue"] == Entry("blue", 3)


def test_an_unknown_name_says_what_was_given_the_closest_and_every_choice():
    table = Registry("detector variant", [Entry("short"), Entry("full")], hint="(or a path)")
    with pytest.raises(UnknownNameError) as caught:
        table["shrot"]
    message = str(caught.value)
    assert message == "unknown detector variant 'shrot'; did you mean 'short'? choose one of short, full (or a path)"
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, KeyError)  # bad input; a missing key
    assert (caught.value.name, caught.value.suggestions, caught.value.choices) == ("shrot", ("short",),
                                                                                   ("short", "full"))
    assert "did you mean" not in str(table.unknown("zzzz"))  # nothing close: no guess
    assert str(table.unknown("aut", extra=("auto",))).endswith("choose one of auto, short, full (or a path)")


def test_registering_a_taken_name_needs_overwrite():
    table = Registry("colour", [Entry("red", 1)])
    with pytest.raises(ValueError, match="colour 'red' is already registered; pass overwrite=True"):
        table.register(Entry("red", 2))
    table.register(Entry("red", 2), overwrite=True)
    assert table["red"].value == 2
    with pytest.raises(ValueError, match="a colour name is a non-empty string, got ''"):
        table.register(Entry(""))


def test_built_ins_are_registered_on_first_use_and_copies_are_independent():
    calls = []
    table: Registry[Entry] = Registry("colour", populate=lambda: calls.append(1) or table.register(Entry("red")))
    assert calls == []  # nothing at construction: no work at import time
    assert table.names() == ["red"] and table.names() == ["red"] and calls == [1]
    copy = table.copy()
    copy.register(Entry("red", 5), overwrite=True)
    assert table["red"].value == 0 and copy["red"].value == 5


def test_closest_ignores_case_dots_and_dashes_and_prefers_prefixes():
    names = ["mobilenet_v2_035", "mobilenet_v2_050", "mobilenet_v1_050", "resnet50"]
    assert closest("MobileNet-V2-0.5", names)[0] == "mobilenet_v2_050"
    assert closest("mobilenet_v2_05", names)[0] == "mobilenet_v2_050"
    assert closest("pruned_int8", ["int8", "pruned-int8"])[0] == "pruned-int8"
    assert closest("xyz", names) == []
    assert str(unknown_name("head", "arcfce", ("softmax", "arcface"))) == \
        "unknown head 'arcfce'; did you mean 'arcface'? choose one of softmax, arcface"


def test_the_runtime_tables_share_the_shape():
    from edgeface_runtime import DETECTORS
    from edgeface_runtime._align import TEMPLATES, template_points
    from edgeface_runtime._bundled import BUNDLED, bundled_path
    from edgeface_runtime._interpreter import BACKENDS, select_backend

    assert DETECTORS.names() == ["short", "full"] and DETECTORS["full"].input_size == (192, 192)
    assert set(TEMPLATES) == {"arcface", "arcface4", "dlib"}
    assert all(t.points.shape == (4, 2) and t.weights.shape == (4,) for t in TEMPLATES.values())
    with pytest.raises(ValueError, match=r"unknown alignment template 'arcfase'; did you mean 'arcface'.*"
                                         r"alignment='none'"):
        template_points("arcfase")
    with pytest.raises(ValueError, match="unknown interpreter 'tflite'; did you mean 'tflite-runtime'"):
        select_backend("tflite")
    with pytest.raises(ValueError, match="unknown bundled file 'default_model'; did you mean 'default-model'"):
        bundled_path("default_model")
    assert BUNDLED.names() == ["default-model", "detector-short"] and "tensorflow" in BACKENDS


def test_importing_the_registry_loads_nothing_heavy():
    code = ("import sys, edgeface_runtime.registry; "
            "print(sorted(m for m in ('numpy', 'PIL', 'tensorflow', 'edgeface') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
