"""What is inside a model file: metadata, tensors, operators and interpreter support."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ._flatbuffer import operator_codes
from ._interpreter import Engine, select_backend, unsupported_ops
from ._metadata import split_model

LEGACY_INTERPRETER = "tflite-runtime-2.14"


def _tensor(detail: dict) -> dict[str, Any]:
    scale, zero_point = detail.get("quantization", (0.0, 0))
    return {"name": detail["name"], "shape": [int(v) for v in detail["shape"]],
            "dtype": np.dtype(detail["dtype"]).name, "scale": float(scale), "zero_point": int(zero_point)}


def describe_model(path: str | os.PathLike, interpreter: str | None = None) -> dict[str, Any]:
    model, metadata = split_model(path)
    backend = select_backend(interpreter)
    ops = operator_codes(model)
    info: dict[str, Any] = {
        "path": str(path),
        "file_bytes": os.path.getsize(path),
        "model_bytes": len(model),
        "metadata": metadata.to_dict() if metadata else None,
        "operators": [{"name": op.name, "version": op.version} for op in ops],
        "interpreter": f"{backend.name} {backend.version}",
    }
    for table in sorted({LEGACY_INTERPRETER, backend.op_table_id}):
        info.setdefault("unsupported", {})[table] = [f"{op.name} v{op.version}"
                                                     for op, _ in unsupported_ops(model, table)]
    if not info["unsupported"][backend.op_table_id]:
        engine = Engine(model, interpreter=interpreter, description=str(path))
        info["inputs"] = [_tensor(d) for d in engine.input_details]
        info["outputs"] = [_tensor(d) for d in engine.output_details]
        engine.close()
    return info


def _provenance_lines(extra: dict[str, Any]) -> list[str]:
    """Where the model came from and what it was measured to do, as recorded at training time."""
    lines = []
    weights = extra.get("weights") or {}
    if extra.get("backbone"):
        source = f"  source: {extra['backbone']}"
        if weights.get("license"):
            source += f" ({weights['license']}"
            source += f", sha256 {weights['sha256'][:12]}…)" if weights.get("sha256") else ")"
        lines.append(source)
    if weights.get("provenance"):
        lines.append(f"    {weights['provenance']}")
    if extra.get("training_data"):
        lines.append(f"  training data: {extra['training_data']}")
    for name, result in (extra.get("measured") or {}).items():
        if isinstance(result, dict) and "accuracy" in result:
            tar = result.get("tar_at_far_1e-3")
            lines.append(f"  measured on {name}: accuracy {100 * result['accuracy']:.2f} %"
                         + (f", TAR {100 * tar:.2f} % at FAR 1e-3" if tar is not None else "")
                         + (f" ({result['pairs']} pairs)" if result.get("pairs") else ""))
    return lines


def format_description(info: dict[str, Any]) -> str:
    lines = [f"{info['path']}: {info['file_bytes']:,} bytes ({info['model_bytes']:,} model)"]
    meta = info["metadata"]
    if meta is None:
        lines.append("metadata: none (the runtime refuses this model unless given its preprocessing)")
    else:
        pre = meta["preprocess"]
        lines.append(f"metadata: {meta['name'] or '(unnamed)'}, edgeface {meta['edgeface_version']}, "
                     f"fingerprint {meta['fingerprint'][:16]}…")
        lines.append(f"  input {pre['input_size'][0]}x{pre['input_size'][1]} {pre['color_order']} "
                     f"mean {pre['mean']} std {pre['std']} alignment {pre['alignment']}; "
                     f"embedding {meta['embedding_size']}-d")
        for t in meta["thresholds"]:
            lines.append(f"  threshold {t['threshold']:.4f} at FAR {t['far']:g}")
        lines.extend(_provenance_lines(meta.get("extra") or {}))
    for key in ("inputs", "outputs"):
        for t in info.get(key, []):
            lines.append(f"{key[:-1]}: {t['name']} {t['shape']} {t['dtype']}"
                         + (f" (scale {t['scale']:.5g}, zero point {t['zero_point']})" if t["scale"] else ""))
    lines.append("operators: " + ", ".join(f"{o['name']} v{o['version']}" for o in info["operators"]))
    for table, missing in info["unsupported"].items():
        lines.append(f"{table}: " + ("runs every operator" if not missing else "MISSING " + ", ".join(missing)))
    return "\n".join(lines)
