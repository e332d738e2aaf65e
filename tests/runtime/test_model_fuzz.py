"""Mutated and truncated model files raise only documented exceptions (and never crash the process).

Models with edgeface metadata are checked against their sha256 fingerprint before any
interpreter sees them, so a damaged copy is refused on every interpreter. A model without
metadata goes to the interpreter as it is: ai-edge-litert verifies the flatbuffer, but
tflite-runtime 2.14 does not and can crash on a corrupt one (seen here: SIGSEGV), so the
metadata-free fuzz runs only where the interpreter verifies.
"""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

RUNTIME = Path(__file__).resolve().parents[2] / "runtime"

SCRIPT = textwrap.dedent("""
    import sys, tempfile, os
    import numpy as np
    from edgeface_runtime import Embedder, Preprocess, EdgefaceError, MetadataError

    base = open(sys.argv[1], "rb").read()
    with_metadata = sys.argv[4] == "1"
    preprocess = None if with_metadata else Preprocess(input_size=(48, 48))
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
            with Embedder.from_path(path, preprocess=preprocess) as embedder:
                embedder.embed(np.zeros((48, 48, 3), np.uint8))
            ok += 1
        except EdgefaceError:
            refused += 1
        except Exception as exc:
            print(f"case {case} (kind {kind}): undocumented {type(exc).__name__}: {exc}")
            sys.exit(1)
    print(f"ran {ok} refused {refused}")
""")


def _fuzz(model: Path, with_metadata: bool, cases: int = 240) -> tuple[int, int]:
    # In a child process: a crash inside the interpreter would otherwise take pytest down with it.
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(model), "3", str(cases), str(int(with_metadata))],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    ran, refused = (int(v) for v in result.stdout.split()[1::2])
    assert ran + refused == cases
    return ran, refused


def test_damaged_models_with_metadata_are_refused_before_the_interpreter_sees_them(fixtures_dir):
    ran, refused = _fuzz(fixtures_dir / "tiny_float32.tflite", with_metadata=True)
    assert refused >= 0.95 * (ran + refused)  # only chunks inserted into the metadata zip itself may pass


def test_damaged_models_without_metadata_raise_only_documented_errors(fixtures_dir):
    from edgeface_runtime import select_backend

    if select_backend().name == "tflite-runtime":
        pytest.skip("tflite-runtime 2.14 does not verify flatbuffers and can crash on corrupt models; "
                    "edgeface protects it through the metadata fingerprint instead")
    ran, refused = _fuzz(fixtures_dir / "tiny_nometa.tflite", with_metadata=False)
    assert refused > 0
