"""Mutated and truncated model files raise only documented exceptions (and never crash the process)."""

import subprocess
import sys
import textwrap
from pathlib import Path

RUNTIME = Path(__file__).resolve().parents[2] / "runtime"

SCRIPT = textwrap.dedent("""
    import sys, tempfile, os
    import numpy as np
    from edgeface_runtime import Embedder, Preprocess, EdgefaceError

    base = open(sys.argv[1], "rb").read()
    rng = np.random.default_rng(int(sys.argv[2]))
    ok = refused = 0
    path = os.path.join(tempfile.mkdtemp(), "fuzz.tflite")
    for case in range(int(sys.argv[3])):
        data = bytearray(base)
        kind = case % 4
        if kind == 0:    # truncated anywhere
            data = data[: rng.integers(0, len(data))]
        elif kind == 1:  # bytes flipped anywhere
            for _ in range(rng.integers(1, 20)):
                data[rng.integers(0, len(data))] = rng.integers(0, 256)
        elif kind == 2:  # the flatbuffer's root tables and offsets
            for _ in range(4):
                data[rng.integers(0, 256)] = rng.integers(0, 256)
        else:            # a chunk inserted
            at = rng.integers(0, len(data))
            data[at:at] = rng.integers(0, 256, rng.integers(1, 64)).astype(np.uint8).tobytes()
        open(path, "wb").write(data)
        try:
            with Embedder.from_path(path, preprocess=Preprocess(input_size=(48, 48))) as embedder:
                embedder.embed(np.zeros((48, 48, 3), np.uint8))
            ok += 1
        except EdgefaceError:
            refused += 1
        except Exception as exc:
            print(f"case {case} (kind {kind}): undocumented {type(exc).__name__}: {exc}")
            sys.exit(1)
    print(f"ran {ok} refused {refused}")
""")


def test_mutated_models_raise_only_documented_errors(fixtures_dir):
    # In a child process: a crash inside the interpreter would otherwise take pytest down with it.
    cases = 240
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(fixtures_dir / "tiny_nometa.tflite"), "3", str(cases)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    ran, refused = (int(v) for v in result.stdout.split()[1::2])
    assert ran + refused == cases and refused > 0
