"""Choosing a TFLite interpreter and running models through it.

Order of preference: ai-edge-litert (current LiteRT), tflite-runtime (older Pi images),
then TensorFlow's ``tf.lite`` (only where TensorFlow is installed anyway).
``EDGEFACE_INTERPRETER`` or the ``interpreter=`` option forces one.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import sys
import threading
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ._errors import InterpreterError, InterpreterNotFoundError, ModelError, UnsupportedOpError
from ._flatbuffer import OperatorCode, operator_codes
from .commandline import native_log_captured
from .registry import Registry

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackendSpec:
    """A TFLite interpreter edgeface can run on: the module holding its ``Interpreter`` and the
    distribution whose version it reports."""

    name: str
    module: str
    distribution: str


# In order of preference ("auto" takes the first installed).
BACKENDS: Registry[BackendSpec] = Registry("interpreter", [
    BackendSpec("ai-edge-litert", "ai_edge_litert.interpreter", "ai-edge-litert"),
    BackendSpec("tflite-runtime", "tflite_runtime.interpreter", "tflite-runtime"),
    BackendSpec("tensorflow", "tensorflow.lite", "tensorflow"),
])
_MISSING_OP = re.compile(r"Didn't find op for builtin opcode '(\w+)' version '(\d+)'")


@dataclass(frozen=True)
class Backend:
    name: str
    version: str
    interpreter_class: Any

    @property
    def op_table_id(self) -> str:
        """Key of this interpreter's row in the op-version table, e.g. 'tflite-runtime-2.14'."""
        return f"{self.name}-{'.'.join(self.version.split('.')[:2])}"


_cache: dict[str, Backend] = {}


def select_backend(name: str | None = None) -> Backend:
    """The interpreter to use: ``name``, else ``$EDGEFACE_INTERPRETER``, else the first installed."""
    wanted = name or os.environ.get("EDGEFACE_INTERPRETER") or "auto"
    if wanted != "auto" and wanted not in BACKENDS:
        raise BACKENDS.unknown(wanted, extra=("auto",))
    if wanted in _cache:
        return _cache[wanted]
    tried = []
    for spec in BACKENDS.values():
        if wanted not in ("auto", spec.name):
            continue
        try:
            module = importlib.import_module(spec.module)
        except ImportError as exc:
            tried.append(f"{spec.name}: {exc}")
            continue
        version = _version(spec.module, spec.distribution)
        backend = Backend(spec.name, version, module.Interpreter)
        _cache[wanted] = backend
        logger.debug("using TFLite interpreter %s %s", spec.name, version)
        return backend
    raise InterpreterNotFoundError(
        "no TFLite interpreter is installed (" + "; ".join(tried) + "). Install one: "
        "`pip install edgeface-runtime` brings ai-edge-litert on 64-bit Linux/macOS with Python >= 3.10; "
        "on 32-bit Raspberry Pi OS or Python 3.9 use `pip install 'edgeface-runtime[legacy]'` "
        "(tflite-runtime, numpy<2)."
    )


def _version(module_name: str, dist: str) -> str:
    # The package's own __version__ first: importlib.metadata costs about 4 MB of resident
    # memory and 60 modules, which a device process embedding the runtime need not carry.
    version = getattr(sys.modules.get(module_name.split(".")[0]), "__version__", None)
    if isinstance(version, str) and version:
        return version
    from importlib import metadata as importlib_metadata

    try:
        return importlib_metadata.version(dist)
    except importlib_metadata.PackageNotFoundError:
        return "unknown"


def unsupported_ops(model: bytes, table_id: str) -> list[tuple[OperatorCode, int]]:
    """Operators the interpreter ``table_id`` lacks: ``[(op, highest version it has or 0)]``.

    Returns ``[]`` when no table is known for that interpreter (the load-time check still runs).
    """
    from ._op_tables import MAX_OP_VERSIONS

    table = MAX_OP_VERSIONS.get(table_id)
    if table is None:
        return []
    return [(op, table.get(op.builtin_code, 0)) for op in operator_codes(model)
            if op.custom_code == "" and op.version > table.get(op.builtin_code, 0)]


def check_ops(model: bytes, table_id: str) -> None:
    """Raise :class:`UnsupportedOpError` naming every operator ``table_id`` cannot run."""
    missing = unsupported_ops(model, table_id)
    if missing:
        raise UnsupportedOpError(_describe_missing(missing, table_id))


def _describe_missing(missing: Sequence[tuple[OperatorCode, int]], who: str) -> str:
    parts = [f"{op.name} version {op.version} (has {'up to ' + str(have) if have else 'none'})" for op, have in missing]
    return (
        f"the interpreter {who} cannot run this model: " + ", ".join(parts) + ". Re-convert for the older "
        "interpreter (`edgeface convert --target tflite-runtime-2.14`), or install a newer one "
        "(`pip install -U ai-edge-litert`)."
    )


class Engine:
    """One loaded model: a thin, thread-safe wrapper over a TFLite Interpreter."""

    def __init__(self, model: bytes, *, num_threads: int | None = 1, interpreter: str | None = None,
                 description: str = "model") -> None:
        if num_threads is not None and int(num_threads) < 1:
            raise ValueError(f"num_threads must be >= 1 (or None for the interpreter's default), got {num_threads!r}")
        self.backend = select_backend(interpreter)
        self.description = description
        missing = unsupported_ops(model, self.backend.op_table_id)
        if missing:
            raise UnsupportedOpError(f"{description}: " + _describe_missing(missing, self.backend.op_table_id))
        self._model = model  # the interpreter reads from this buffer: keep it alive
        self._lock = threading.Lock()
        try:
            with native_log_captured():  # LiteRT's "Created ... XNNPACK delegate" line, in a command
                self._interpreter = self.backend.interpreter_class(model_content=model, num_threads=num_threads)
                self._interpreter.allocate_tensors()
            # Tensor names are decoded here: a corrupt string table fails in this call.
            self.input_details = self._interpreter.get_input_details()
            self.output_details = self._interpreter.get_output_details()
        except UnicodeDecodeError as exc:
            raise ModelError(f"{description} is not a valid TFLite model: corrupt tensor names ({exc})") from exc
        except (RuntimeError, ValueError, TypeError) as exc:
            raise self._translate(exc) from exc

    def _translate(self, exc: Exception) -> Exception:
        text = str(exc)
        found = _MISSING_OP.search(text)
        if found:
            return UnsupportedOpError(
                f"{self.description}: {self.backend.name} {self.backend.version} has no operator "
                f"{found.group(1)} version {found.group(2)}; re-convert for this interpreter "
                "(`edgeface convert --target tflite-runtime-2.14`) or upgrade it (`pip install -U ai-edge-litert`)"
            )
        custom = re.search(r"unresolved custom op:? ?'?(\w+)", text, re.IGNORECASE)
        if custom:
            return UnsupportedOpError(
                f"{self.description} uses the custom operator {custom.group(1)}, which {self.backend.name} does not "
                "provide (TensorFlow 'Flex' ops need full TensorFlow); re-convert with builtin ops only"
            )
        if "_ARRAY_API" in text or "numpy.core.multiarray failed" in text:
            return InterpreterError(
                f"{self.backend.name} {self.backend.version} was built against numpy 1.x and cannot run with numpy "
                f"{np.__version__}: `pip install 'numpy<2'` in this environment"
            )
        if "Model provided has model identifier" in text or "flatbuffer" in text.lower() or "verif" in text.lower():
            return ModelError(f"{self.description} is not a valid TFLite model: {text.strip()}")
        return InterpreterError(f"{self.backend.name} failed to load {self.description}: {text.strip()}")

    def resize_input(self, shape: Sequence[int]) -> None:
        """Give the (single) input tensor a new shape and re-plan every tensor after it.

        Only for fully convolutional models whose reshapes infer their sizes; a model that cannot
        take the shape raises :class:`InterpreterError`.
        """
        with self._lock:
            if self._interpreter is None:
                raise RuntimeError(f"{self.description} is closed")
            try:
                self._interpreter.resize_tensor_input(self.input_details[0]["index"], [int(v) for v in shape])
                self._interpreter.allocate_tensors()
            except (RuntimeError, ValueError) as exc:
                raise InterpreterError(f"{self.description} cannot take input shape {tuple(shape)}: {exc}") from exc
            self.input_details = self._interpreter.get_input_details()
            self.output_details = self._interpreter.get_output_details()

    def run(self, *inputs: np.ndarray) -> list[np.ndarray]:
        if len(inputs) != len(self.input_details):
            raise ValueError(f"{self.description} takes {len(self.input_details)} inputs, got {len(inputs)}")
        with self._lock:
            if self._interpreter is None:
                raise RuntimeError(f"{self.description} is closed")
            try:
                for detail, array in zip(self.input_details, inputs):
                    self._interpreter.set_tensor(detail["index"], array)
                self._interpreter.invoke()
                return [self._interpreter.get_tensor(d["index"]).copy() for d in self.output_details]
            except ValueError as exc:
                raise ValueError(f"{self.description}: bad input tensor: {exc}") from exc
            except RuntimeError as exc:
                raise InterpreterError(f"{self.backend.name} failed running {self.description}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._interpreter = None

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
