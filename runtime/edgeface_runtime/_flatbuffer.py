"""Just enough of a TFLite flatbuffer reader to list a model's operators without an interpreter.

Used to check, before a model is run, that every operator (and operator version) is one
the chosen interpreter has: a device otherwise fails late with "Didn't find op for builtin
opcode ...". Reads the schema's Model.operator_codes, Model.subgraphs[*].tensors/inputs/outputs.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ._errors import ModelError

# Field indices in tensorflow/lite/schema/schema.fbs.
_MODEL_OPERATOR_CODES, _MODEL_SUBGRAPHS = 1, 2
_OPCODE_DEPRECATED_BUILTIN, _OPCODE_CUSTOM, _OPCODE_VERSION, _OPCODE_BUILTIN = 0, 1, 2, 3
_SUBGRAPH_TENSORS, _SUBGRAPH_INPUTS, _SUBGRAPH_OUTPUTS, _SUBGRAPH_OPERATORS = 0, 1, 2, 3
_TENSOR_SHAPE, _TENSOR_TYPE, _TENSOR_NAME = 0, 1, 3
_CUSTOM_OP_CODE = 32


@dataclass(frozen=True)
class OperatorCode:
    """One operator a model declares: TFLite builtin code (32: custom), its version, and the custom
    op's name; ``name`` is the builtin's name as interpreters print it (``CONV_2D``)."""

    builtin_code: int
    version: int
    custom_code: str = ""

    @property
    def name(self) -> str:
        if self.builtin_code == _CUSTOM_OP_CODE:
            return f"CUSTOM({self.custom_code})"
        from ._op_tables import BUILTIN_OP_NAMES

        return BUILTIN_OP_NAMES.get(self.builtin_code, f"BUILTIN_{self.builtin_code}")


class _Table:
    __slots__ = ("buf", "pos", "vtable", "vtable_len")

    def __init__(self, buf: bytes, pos: int) -> None:
        self.buf, self.pos = buf, pos
        self.vtable = pos - struct.unpack_from("<i", buf, pos)[0]
        self.vtable_len = struct.unpack_from("<H", buf, self.vtable)[0]

    def _offset(self, field: int) -> int:
        slot = 4 + 2 * field
        return struct.unpack_from("<H", self.buf, self.vtable + slot)[0] if slot < self.vtable_len else 0

    def scalar(self, field: int, fmt: str, default: int) -> int:
        off = self._offset(field)
        return struct.unpack_from("<" + fmt, self.buf, self.pos + off)[0] if off else default

    def _indirect(self, field: int) -> int | None:
        off = self._offset(field)
        if not off:
            return None
        at = self.pos + off
        return at + struct.unpack_from("<I", self.buf, at)[0]

    def vector(self, field: int) -> tuple[int, int]:
        start = self._indirect(field)
        if start is None:
            return 0, 0
        return start + 4, struct.unpack_from("<I", self.buf, start)[0]

    def tables(self, field: int) -> list["_Table"]:
        start, count = self.vector(field)
        out = []
        for i in range(count):
            at = start + 4 * i
            out.append(_Table(self.buf, at + struct.unpack_from("<I", self.buf, at)[0]))
        return out

    def ints(self, field: int) -> list[int]:
        start, count = self.vector(field)
        return list(struct.unpack_from(f"<{count}i", self.buf, start)) if count else []

    def string(self, field: int) -> str:
        start, count = self.vector(field)
        return bytes(self.buf[start : start + count]).decode("utf-8", "replace") if count else ""


def _root(model: bytes) -> _Table:
    return _Table(model, struct.unpack_from("<I", model, 0)[0])


def operator_codes(model: bytes) -> list[OperatorCode]:
    """Every operator code the model declares (builtin code, version, custom name)."""
    try:
        codes = []
        for table in _root(model).tables(_MODEL_OPERATOR_CODES):
            # Codes above 127 live in the int32 field; the old byte field saturates at 127.
            code = max(
                table.scalar(_OPCODE_DEPRECATED_BUILTIN, "b", 0),
                table.scalar(_OPCODE_BUILTIN, "i", 0),
            )
            codes.append(OperatorCode(code, table.scalar(_OPCODE_VERSION, "i", 1), table.string(_OPCODE_CUSTOM)))
        return codes
    except (struct.error, IndexError, OverflowError, MemoryError) as exc:
        raise ModelError(f"the TFLite flatbuffer is corrupt or truncated ({exc})") from exc
