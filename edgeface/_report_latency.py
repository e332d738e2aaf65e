"""`edgeface report`'s speed and memory: each ``.tflite`` timed in a fresh process that imports
only the TF-free runtime, as a device process would; and a description of the machine.

See :mod:`edgeface._report` for what is measured and why this way.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

DEFAULT_LATENCY_RUNS = 50
WARMUP_RUNS = 3

_WORKER = ("import sys; from edgeface._report_latency import _measure_main; sys.exit(_measure_main(sys.argv[1:]))")


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def measure_variant(path: str | os.PathLike, crops: np.ndarray, *, runs: int = DEFAULT_LATENCY_RUNS,
                    threads: Sequence[int] | None = None, warmup: int = WARMUP_RUNS,
                    timeout: float = 900.0) -> dict[str, Any]:
    """Embed-only latency and peak memory of one ``.tflite``, in a fresh TF-free process.

    ``crops`` (uint8, the model's input size) are cycled to ``runs`` samples per thread
    count (default: 1 and all usable cores). Returns ``{"latency": {threads: {"median_ms",
    "p90_ms", "n"}}, "peak_rss_mb", "model_rss_mb", "baseline_rss_mb", "tensorflow_loaded"}``.
    """
    if runs < 1:
        raise ValueError(f"runs must be at least 1, got {runs!r}")
    if len(crops) == 0:
        raise ValueError("need at least one crop to time the model")
    threads = sorted({1, usable_cores()}) if threads is None else sorted({int(t) for t in threads})
    sample = np.stack([crops[i % len(crops)] for i in range(runs + warmup)])
    with tempfile.TemporaryDirectory(prefix="edgeface-report-") as tmp:
        crops_file, out_file = Path(tmp) / "crops.npy", Path(tmp) / "result.json"
        np.save(crops_file, sample)
        command = [sys.executable, "-c", _WORKER, str(path), str(crops_file), str(out_file), str(warmup),
                   *map(str, threads)]
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"timing {path} took longer than {timeout:.0f} s; lower latency_runs") from None
        if done.returncode != 0 or not out_file.is_file():
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise RuntimeError(f"timing {path} failed (exit {done.returncode}): {tail[0]}")
        return json.loads(out_file.read_text(encoding="utf-8"))


def _peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MiB.

    Linux: ``VmHWM``, the peak of this process image. ``ru_maxrss`` is not used there: Linux
    carries it across ``exec``, so a child of a large (TensorFlow) parent would report the
    parent's peak. Elsewhere ``ru_maxrss`` (bytes on macOS, KiB on the BSDs).
    """
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024


def _measure_main(argv: Sequence[str]) -> int:
    """The timing subprocess: ``MODEL CROPS.npy OUT.json WARMUP THREADS...``; imports only the runtime."""
    from edgeface_runtime import Embedder, select_backend
    from edgeface_runtime.bench import latency_summary

    model, crops_file, out_file, warmup_text, *thread_counts = argv
    warmup = int(warmup_text)
    crops = np.load(crops_file)
    select_backend()  # import the interpreter first: the model's share should not include it
    baseline = _peak_rss_mb()
    latency = {}
    for threads in map(int, thread_counts):
        with Embedder.from_path(model, num_threads=threads) as embedder:
            for crop in crops[:warmup]:
                embedder.embed(crop)
            samples = []
            for crop in crops[warmup:]:
                start = time.perf_counter()
                embedder.embed(crop)
                samples.append((time.perf_counter() - start) * 1e3)
        latency[str(threads)] = latency_summary(samples)
    peak = _peak_rss_mb()
    result = {"latency": latency, "peak_rss_mb": round(peak, 1), "baseline_rss_mb": round(baseline, 1),
              "model_rss_mb": round(peak - baseline, 1), "tensorflow_loaded": "tensorflow" in sys.modules}
    Path(out_file).write_text(json.dumps(result), encoding="utf-8")
    return 0




def device_info() -> dict[str, Any]:
    """The machine a report was measured on: CPU model, board, cores, Python and TFLite interpreter."""
    info: dict[str, Any] = {"cpu": platform.processor() or platform.machine(), "machine": platform.machine(),
                            "system": f"{platform.system()} {platform.release()}".strip(),
                            "cores": os.cpu_count() or 1, "usable_cores": usable_cores(),
                            "python": f"{platform.python_implementation()} {platform.python_version()}"}
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip().lower(), value.strip())
    # x86: "model name"; Raspberry Pi: "Model" is the board ("Raspberry Pi 4 Model B Rev 1.4"),
    # and older kernels give the SoC as "Hardware".
    cpu = fields.get("model name") or fields.get("hardware") or fields.get("cpu model")
    if cpu:
        info["cpu"] = cpu
    if fields.get("model") and not fields["model"].isdigit():
        info["board"] = fields["model"]
    try:
        from edgeface_runtime import select_backend

        backend = select_backend()
        info["tflite_interpreter"] = f"{backend.name} {backend.version}"
    except Exception as exc:  # noqa: BLE001 - the report still names the machine without it
        info["tflite_interpreter"] = f"none ({type(exc).__name__})"
    return info


def _describe_device(device: dict[str, Any]) -> str:
    board = f"{device['board']}, " if device.get("board") else ""
    cores = f"{device['cores']} cores" + (f" ({device['usable_cores']} usable)"
                                          if device.get("usable_cores") != device["cores"] else "")
    return (f"{board}{device['cpu']} ({device['machine']}), {cores}, {device['system']}; "
            f"{device['python']}; TFLite interpreter {device['tflite_interpreter']}")
