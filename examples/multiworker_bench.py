"""Training steps per second with one process and with N loopback workers (tf.distribute), in one run.

    python examples/multiworker_bench.py                      # MobileNetV2-0.35, 112x112, global batch 64
    python examples/multiworker_bench.py --workers 2 --rounds 3 --backbone mobilenet_v1_025

Each round trains the same configuration once as a plain single-process run (``strategy="none"``)
and once as ``--workers`` processes on 127.0.0.1 (``strategy="multiworker"``, one TF_CONFIG
each), alternating, so both see the same machine load. The global batch stays the same: with two
workers each one computes half of it. A step's time is its epoch's time (input pipeline and
gradient all-reduce included, checkpoint not) over the steps in it, and its CPU time the CPU time
of all the workers' processes in that epoch (steadier than wall time when other jobs share the
machine); the first epoch of each run (graph tracing, warm-up) is left out. Prints one JSON object
with the medians and their ratios.

On one machine the workers share its cores: the ratio says what the collectives cost there, not
what several machines would gain.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
REPO = HERE.parents[1]


def _faces(root: Path, identities: int, per_identity: int, size: int) -> Path:
    """Synthetic identities (colour, stripes and noise per person): timing needs pixels, not faces."""
    import numpy as np
    from PIL import Image

    for i in range(identities):
        person = root / f"person_{i:03d}"
        person.mkdir(parents=True, exist_ok=True)
        base = np.random.default_rng(i).integers(40, 216, size=3)
        for j in range(per_identity):
            noise = np.random.default_rng(1000 * i + j).normal(0, 25, size=(size, size, 3))
            Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)).save(person / f"{j:03d}.jpg")
    return root


def _config(args: argparse.Namespace, data: Path, out: Path, strategy: str) -> dict:
    return {"data": str(data), "out": str(out), "backbone": args.backbone, "weights": None,
            "input_size": [args.input_size, args.input_size], "embedding_size": 128, "head": "arcface",
            "epochs_frozen": 0, "epochs": args.epochs, "steps_per_epoch": args.steps, "batch_size": args.batch_size,
            "val_fraction": 0.0, "patience": None, "strategy": strategy, "seed": 0}


def _worker(config: dict) -> None:
    from edgeface.keras import keras
    from edgeface.training import TrainConfig, train

    class Clock(keras.callbacks.Callback):
        """Wall and CPU time (all of this process's threads) of each epoch: under other load the CPU
        time is the steadier measure of what a step costs."""

        def __init__(self):
            super().__init__()
            self.wall, self.cpu = [], []

        def on_epoch_begin(self, epoch, logs=None):
            self._start = (time.perf_counter(), time.process_time())

        def on_epoch_end(self, epoch, logs=None):
            self.wall.append(time.perf_counter() - self._start[0])
            self.cpu.append(time.process_time() - self._start[1])

    clock = Clock()
    result = train(TrainConfig(**config), callbacks=[clock])
    print("RESULT " + json.dumps({"epoch_seconds": clock.wall, "epoch_cpu_seconds": clock.cpu,
                                  "chief": result.chief}), flush=True)


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _run(config: dict, workers: int, timeout: float) -> tuple[list[float], list[float]]:
    """Start ``workers`` processes (one: no TF_CONFIG); return the chief's epoch times and the CPU
    time of each epoch, all workers together."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=os.pathsep.join([str(REPO / "runtime"), str(REPO), os.environ.get("PYTHONPATH", "")]))
    cluster = {"worker": [f"127.0.0.1:{p}" for p in _free_ports(workers)]}
    procs = []
    for index in range(workers):
        if workers > 1:
            env = dict(env, TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}))
        procs.append(subprocess.Popen([sys.executable, str(HERE), "--worker", json.dumps(config)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    deadline = time.monotonic() + timeout
    try:
        outputs = [p.communicate(timeout=max(1.0, deadline - time.monotonic())) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, (_, err) in zip(procs, outputs):
        if p.returncode != 0:
            raise RuntimeError(f"a benchmark worker failed (exit {p.returncode}):\n{err[-3000:]}")
    results = [json.loads([x for x in out.splitlines() if x.startswith("RESULT ")][-1][len("RESULT "):])
               for out, _ in outputs]
    cpu = [sum(epochs) for epochs in zip(*(r["epoch_cpu_seconds"] for r in results))]
    return results[0]["epoch_seconds"], cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=2, help="loopback workers to compare with one process")
    parser.add_argument("--rounds", type=int, default=2, help="one-process and multi-worker runs, alternating")
    parser.add_argument("--backbone", default="mobilenet_v2_035")
    parser.add_argument("--input-size", type=int, default=112)
    parser.add_argument("--batch-size", type=int, default=64, help="the global batch (split over the workers)")
    parser.add_argument("--steps", type=int, default=15, help="steps per epoch")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per run; the first is left out")
    parser.add_argument("--timeout", type=float, default=900, help="seconds a run may take before it is killed")
    args = parser.parse_args(argv)
    if args.worker:
        _worker(json.loads(args.worker))
        return 0
    if args.epochs < 2:
        parser.error("--epochs must be at least 2: the first epoch is warm-up and left out")

    step_seconds: dict[str, list[float]] = {"1 process": [], f"{args.workers} workers": []}
    step_cpu: dict[str, list[float]] = {name: [] for name in step_seconds}
    with tempfile.TemporaryDirectory(prefix="edgeface-bench-") as tmp:
        data = _faces(Path(tmp) / "faces", identities=40, per_identity=10, size=args.input_size + 16)
        for round_ in range(args.rounds):
            for name, workers, strategy in (("1 process", 1, "none"),
                                            (f"{args.workers} workers", args.workers, "multiworker")):
                out = Path(tmp) / f"run-{round_}-{workers}"
                epochs, cpu = _run(_config(args, data, out, strategy), workers, args.timeout)
                step_seconds[name].extend(s / args.steps for s in epochs[1:])
                step_cpu[name].extend(s / args.steps for s in cpu[1:])
                print(f"round {round_ + 1}, {name}: {[round(s / args.steps, 3) for s in epochs[1:]]} s per step, "
                      f"{[round(s / args.steps, 3) for s in cpu[1:]]} CPU s per step", file=sys.stderr, flush=True)
    medians = {name: statistics.median(values) for name, values in step_seconds.items()}
    rates = {name: 1.0 / m for name, m in medians.items()}
    one, many = rates["1 process"], rates[f"{args.workers} workers"]
    cpu = {name: statistics.median(values) for name, values in step_cpu.items()}
    print(json.dumps({
        "backbone": args.backbone, "input_size": args.input_size, "global_batch": args.batch_size,
        "steps_per_epoch": args.steps, "epochs_timed_per_run": args.epochs - 1, "rounds": args.rounds,
        "cpu_cores": os.cpu_count(),
        "median_seconds_per_step": {k: round(v, 4) for k, v in medians.items()},
        "steps_per_second": {k: round(v, 3) for k, v in rates.items()},
        "images_per_second": {k: round(v * args.batch_size, 1) for k, v in rates.items()},
        "ratio_multiworker_to_one": round(many / one, 3),
        "median_cpu_seconds_per_step": {k: round(v, 4) for k, v in cpu.items()},
        "cpu_ratio_multiworker_to_one": round(cpu[f"{args.workers} workers"] / cpu["1 process"], 3),
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "all_step_seconds": {k: [round(v, 4) for v in vs] for k, vs in step_seconds.items()},
    }, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
