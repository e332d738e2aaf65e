
import numpy as np
import pytest

from edgeface_runtime import Engine, UnsupportedOpError, check_ops, select_backend
from edgeface_runtime._flatbuffer import operator_codes
from edgeface_runtime._interpreter import unsupported_ops
from edgeface_runtime._metadata import strip_metadata
from edgeface_runtime._errors import ModelError, InterpreterNotFoundError


def test_operator_codes_are_read_from_the_flatbuffer(fixtures_dir):
    ops = {(op.name, op.version) for op in operator_codes(strip_metadata(fixtures_dir / "tiny_float32.tflite"))}
    assert ("CONV_2D", 1) in {(n, 1) for n, _ in ops}
    assert {"CONV_2D", "MEAN", "FULLY_CONNECTED", "L2_NORMALIZATION"} <= {n for n, _ in ops}


def test_legacy_interpreter_table_flags_the_dynamic_range_fully_connected(fixtures_dir):
    model = strip_metadata(fixtures_dir / "tiny_dynamic_fc_v12.tflite")
    missing = unsupported_ops(model, "tflite-runtime-2.14")
    assert [(op.name, op.version, have) for op, have in missing] == [("FULLY_CONNECTED", 12, 10)]
    with pytest.raises(UnsupportedOpError, match="FULLY_CONNECTED version 12"):
        check_ops(model, "tflite-runtime-2.14")


def test_float_and_int8_models_pass_the_legacy_check(fixtures_dir):
    for name in ("tiny_float32.tflite", "tiny_uint8_io.tflite"):
        check_ops(strip_metadata(fixtures_dir / name), "tflite-runtime-2.14")


def test_engine_refuses_legacy_incompatible_model_before_running_it(fixtures_dir):
    model = strip_metadata(fixtures_dir / "tiny_dynamic_fc_v12.tflite")
    backend = select_backend()
    if backend.name == "tflite-runtime":
        with pytest.raises(UnsupportedOpError, match="FULLY_CONNECTED"):
            Engine(model)
    else:
        Engine(model).close()  # newer interpreters run it


def test_engine_runs_a_model_and_is_reusable(fixtures_dir):
    with Engine(strip_metadata(fixtures_dir / "tiny_float32.tflite"), num_threads=2) as engine:
        x = np.zeros(engine.input_details[0]["shape"], np.float32)
        first = engine.run(x)[0]
        assert first.shape == (1, 16)
        np.testing.assert_allclose(engine.run(x)[0], first)


def test_engine_rejects_wrong_input_shape_and_count(fixtures_dir):
    with Engine(strip_metadata(fixtures_dir / "tiny_float32.tflite")) as engine:
        with pytest.raises(ValueError):
            engine.run(np.zeros((1, 3, 3, 3), np.float32))
        with pytest.raises(ValueError, match="takes 1 inputs"):
            engine.run()


def test_corrupt_flatbuffer_gives_model_error():
    data = bytearray(b"\x1c\x00\x00\x00TFL3" + b"\xff" * 64)
    with pytest.raises(ModelError):
        operator_codes(bytes(data))


def test_unknown_interpreter_name_is_a_value_error():
    with pytest.raises(ValueError, match="choose one of"):
        select_backend("onnxruntime")


def test_missing_interpreter_names_the_pip_command(monkeypatch):
    import builtins

    from edgeface_runtime import _interpreter

    real_import = builtins.__import__

    def no_tflite(name, *args, **kwargs):
        if name.split(".")[0] in ("ai_edge_litert", "tflite_runtime", "tensorflow"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(_interpreter, "_cache", {})
    monkeypatch.setattr(builtins, "__import__", no_tflite)
    monkeypatch.setattr(_interpreter.importlib, "import_module", lambda name: no_tflite(name))
    with pytest.raises(InterpreterNotFoundError, match="pip install"):
        select_backend()


def test_interpreter_can_be_forced_by_environment(monkeypatch):
    backend = select_backend()
    monkeypatch.setenv("EDGEFACE_INTERPRETER", backend.name)
    assert select_backend().name == backend.name
