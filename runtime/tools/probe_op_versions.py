"""Regenerate ``edgeface_runtime/_op_tables.py``: which TFLite builtin ops, up to which
version, each supported interpreter can load.

Why: an interpreter that lacks an (op, version) pair a model uses fails only on the device,
with "Didn't find op for builtin opcode 'FULLY_CONNECTED' version '12'". With this table the
runtime and the converter refuse such a model up front.

How (empirical): InterpreterBuilder resolves EVERY entry of a model's ``operator_codes``
when the Interpreter is constructed, even codes no operator uses. So from one tiny valid
float32 model (x * 2 + 1, converted with TensorFlow) we write one variant per (builtin
code, version) that appends that single extra OperatorCode, then construct each variant
(+ allocate_tensors) in the target interpreter. The highest version that loads is the
table entry; codes with none are omitted. Any failure whose message is not the
interpreter's "op not found" / "code out of range" message aborts the run, so a broken
probe cannot silently shrink the table.

Run from the repository root with the TensorFlow venv (it builds the variants and the
names table from TF's schema, then runs this same file with ``--worker`` inside each
interpreter's venv, which needs only the stdlib and that interpreter)::

    .venv/bin/python runtime/tools/probe_op_versions.py \\
        [--legacy-venv /work/venvs/legacy] [--litert-venv /work/venvs/rt]

``--litert-venv ''`` skips ai-edge-litert. Takes well under a minute.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OUT_FILE = Path(__file__).resolve().parents[1] / "edgeface_runtime" / "_op_tables.py"
# interpreter id -> (argparse option, default venv, module with Interpreter, dist name)
INTERPRETERS = {
    "tflite-runtime-2.14": ("legacy_venv", "/work/venvs/legacy",
                            "tflite_runtime.interpreter", "tflite-runtime"),
    "ai-edge-litert-2.3": ("litert_venv", "/work/venvs/rt",
                           "ai_edge_litert.interpreter", "ai-edge-litert"),
}
CUSTOM = 32  # BuiltinOperator.CUSTOM: resolved by custom_code, not by version; probed apart
CUSTOM_PROBE = "EdgefaceNoSuchCustomOp"


# ---------------------------------------------------------------- worker (interpreter venv)
def worker(module: str, dist: str, workdir: Path) -> None:
    """Load every variant listed in workdir/manifest.json; write workdir/<dist>.json."""
    import importlib
    import importlib.metadata

    import numpy as np

    interpreter_cls = importlib.import_module(module).Interpreter

    def load(path: str) -> str | None:
        try:
            interp = interpreter_cls(model_content=(workdir / path).read_bytes())
            interp.allocate_tensors()
            return None
        except Exception as exc:  # the interpreters raise ValueError/RuntimeError
            return f"{type(exc).__name__}: {exc}"

    # The base model must load AND compute, else every "ok" below would mean nothing.
    interp = interpreter_cls(model_content=(workdir / "base.tflite").read_bytes())
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    x = np.arange(4, dtype=np.float32)
    interp.set_tensor(inp["index"], x)
    interp.invoke()
    if not np.allclose(interp.get_tensor(out["index"]), x * 2 + 1):
        raise SystemExit("base model computes the wrong result")

    manifest = json.loads((workdir / "manifest.json").read_text())
    result = {
        "version": importlib.metadata.version(dist),
        "custom": load("custom.tflite"),
        "variants": [[code, ver, load(path)] for code, ver, path in manifest],
    }
    (workdir / f"{dist}.json").write_text(json.dumps(result))


# ---------------------------------------------------------------- orchestrator (TF venv)
def build_variants(workdir: Path, max_version: int) -> dict[int, str]:
    """Write base.tflite, custom.tflite and one variant per (code, version); return names."""
    import flatbuffers
    import tensorflow as tf
    from tensorflow.lite.python import schema_py_generated as schema

    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}

    @tf.function(input_signature=[tf.TensorSpec([4], tf.float32)])
    def f(x):
        return x * 2.0 + 1.0

    conv = tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()], f)
    base = conv.convert()
    (workdir / "base.tflite").write_bytes(base)
    model = schema.ModelT.InitFromPackedBuf(base, 0)
    if any(oc.customCode for oc in model.operatorCodes):
        raise SystemExit("base model unexpectedly uses a custom op")

    def write(path: str, code: int, version: int, custom: bytes | None = None) -> None:
        oc = schema.OperatorCodeT()
        # Codes > 127 live in builtinCode; deprecatedBuiltinCode then holds 127
        # (PLACEHOLDER_FOR_GREATER_OP_CODES), as the converter writes them.
        oc.builtinCode, oc.deprecatedBuiltinCode, oc.version = code, min(code, 127), version
        oc.customCode = custom
        model.operatorCodes.append(oc)
        b = flatbuffers.Builder(1024)
        b.Finish(model.Pack(b), file_identifier=b"TFL3")
        model.operatorCodes.pop()
        (workdir / path).write_bytes(bytes(b.Output()))

    write("custom.tflite", CUSTOM, 1, CUSTOM_PROBE.encode())
    manifest = []
    for code in sorted(names):
        if code == CUSTOM:
            continue
        for ver in range(1, max_version + 1):
            path = f"op{code}_v{ver}.tflite"
            write(path, code, ver)
            manifest.append([code, ver, path])
    (workdir / "manifest.json").write_text(json.dumps(manifest))
    return names


def max_versions(report: dict, names: dict[int, str], max_version: int,
                 notes: list[str]) -> dict[int, int]:
    """Highest loadable version per code; abort on any failure that is not "op absent".

    Versions below the highest that do not load are appended to ``notes``."""
    best: dict[int, int] = {}
    for code, ver, err in report["variants"]:
        if err is None:
            best[code] = max(best.get(code, 0), ver)
        elif not (f"Didn't find op for builtin opcode '{names[code]}' version '{ver}'" in err
                  or f"builtin_code out of range: {code}" in err):
            raise SystemExit(f"code {code} ({names[code]}) v{ver}: unexpected failure: {err}")
    loaded = {(c, v) for c, v, err in report["variants"] if err is None}
    for code, top in best.items():
        if top == max_version:
            raise SystemExit(f"{names[code]} loads at v{top}; raise --max-version")
        gaps = [v for v in range(1, top) if (code, v) not in loaded]
        if gaps:  # e.g. BROADCAST_TO v1 was the Flex kernel; the builtin registers v2..
            notes.append(f"{names[code]} loads up to v{top} but not v{gaps}")
    codes = {n: c for c, n in names.items()}
    for name in ("ADD", "MUL", "CONV_2D", "FULLY_CONNECTED", "DEPTHWISE_CONV_2D"):
        if (codes[name], 1) not in loaded:
            raise SystemExit(f"sanity check failed: {name} v1 does not load")
    return best


def dense(items: list[str], indent: str = "    ", width: int = 96) -> str:
    """Pack dict items into as few lines as fit ``width``."""
    lines, line = [], indent
    for item in items:
        if len(line) + len(item) + 1 > width and line.strip():
            lines.append(line.rstrip())
            line = indent
        line += item + " "
    lines.append(line.rstrip())
    return "\n".join(lines)


def render(names: dict[int, str], tables: dict[str, dict[int, int]],
           versions: dict[str, str], notes: dict[str, list[str]]) -> str:
    parts = [
        '"""GENERATED by runtime/tools/probe_op_versions.py -- do not edit by hand.',
        "",
        "Regenerate (from the repository root, TensorFlow venv):",
        "    .venv/bin/python runtime/tools/probe_op_versions.py",
        "",
        "BUILTIN_OP_NAMES: every builtin operator code of the TFLite schema -> name.",
        "MAX_OP_VERSIONS: interpreter id -> {builtin code: highest op version that",
        "interpreter loads}; a code that is absent there is not available at all.",
        "Probed: " + ", ".join(f"{i} = {versions[i]}" for i in tables) + ".",
        *[f"Gap in {i}: {n}." for i in tables for n in notes[i]],
        '"""',
        "",
        "BUILTIN_OP_NAMES: dict[int, str] = {",
        dense([f'{c}: "{names[c]}",' for c in sorted(names)]),
        "}",
        "",
        "MAX_OP_VERSIONS: dict[str, dict[int, int]] = {",
    ]
    for interp_id, best in tables.items():
        parts += [f'    "{interp_id}": {{',
                  dense([f"{c}: {v}," for c, v in sorted(best.items())], indent=" " * 8),
                  "    },"]
    parts.append("}")
    return "\n".join(parts) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for interp_id, (opt, default, _, _) in INTERPRETERS.items():
        ap.add_argument("--" + opt.replace("_", "-"), default=default,
                        help=f"venv with {interp_id} ('' to skip; default {default})")
    ap.add_argument("--max-version", type=int, default=20)
    ap.add_argument("--out", type=Path, default=OUT_FILE)
    ap.add_argument("--worker", nargs=3, metavar=("MODULE", "DIST", "DIR"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        module, dist, workdir = args.worker
        return worker(module, dist, Path(workdir))

    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        names = build_variants(workdir, args.max_version)
        print(f"built {len(names) * args.max_version} variants in {time.time() - t0:.1f}s")
        tables, versions, notes = {}, {}, {}
        for interp_id, (opt, _, module, dist) in INTERPRETERS.items():
            venv = getattr(args, opt)
            if not venv:
                continue
            t1 = time.time()
            # The interpreter logs every failed load to stderr: keep it unless the worker dies.
            proc = subprocess.run([str(Path(venv) / "bin" / "python"), __file__, "--worker",
                                   module, dist, tmp], capture_output=True, text=True)
            if proc.returncode:
                raise SystemExit(f"{interp_id} worker failed:\n{proc.stderr[-4000:]}")
            report = json.loads((workdir / f"{dist}.json").read_text())
            if not report["version"].startswith(interp_id.rsplit("-", 1)[1] + "."):
                raise SystemExit(f"{venv} has {dist} {report['version']}, expected {interp_id}")
            notes[interp_id] = []
            tables[interp_id] = max_versions(report, names, args.max_version, notes[interp_id])
            versions[interp_id] = f"{dist} {report['version']}"
            custom = "loads" if report["custom"] is None else f"fails: {report['custom']}"
            print(f"{interp_id}: probed in {time.time() - t1:.1f}s, "
                  f"{len(tables[interp_id])} builtin codes; unused unknown custom op {custom}")
            for note in notes[interp_id]:
                print(f"  note: {note}")
    args.out.write_text(render(names, tables, versions, notes))
    print(f"wrote {args.out} in {time.time() - t0:.1f}s total")


if __name__ == "__main__":
    main()
