"""Start a loopback cluster of training workers: one process per worker, each with its own TF_CONFIG."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent

# One training worker. argv: the run folder, the worker's index, a JSON object of TrainConfig
# overrides and of test hooks: "die_after_epoch" (this worker kills itself with SIGKILL at the end
# of that epoch, an abrupt death with no clean-up, like a crashed machine) or "hang_after_epoch"
# (it stops itself with SIGSTOP: alive, connections open, but silent, like a hung machine).
WORKER = r"""
import json, os, signal, sys, time
sys.path.insert(0, sys.argv[4])
from pathlib import Path

run, index, options = Path(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3])
die_after = options.pop("die_after_epoch", None)
hang_after = options.pop("hang_after_epoch", None)

# Record every training index this worker's input pipeline draws, in order (a test hook around
# the data layer's own function: what the workers really read, not what they were meant to).
import edgeface._data as data_layer
original = data_layer.index_stream
def recording(*args, **kwargs):
    with open(run / f"seen-{index}.txt", "a") as fh:
        for i in original(*args, **kwargs):
            fh.write(f"{i}\n")
            fh.flush()
            yield i
data_layer.index_stream = recording

from training_helpers import tiny_config
from edgeface._keras import keras
from edgeface.training import train

if options.pop("recording_teacher", False):
    # A cacheable teacher that logs what it embeds (spec "recording:<any file>"): which shard each worker took.
    import hashlib
    import numpy as np
    from edgeface.teachers import Teacher, register_teacher

    class Recording(Teacher):
        kind = "recording"

        def __init__(self, path):
            super().__init__(str(path), {"version": 1}, 8)

        def embed(self, root, paths, progress=None):
            with open(run / f"teacher-{index}.txt", "a") as fh:
                fh.writelines(f"{p}\n" for p in paths)
            return np.stack([np.frombuffer(hashlib.sha256(p.encode()).digest()[:8], np.uint8) - 127.5
                             for p in paths]).astype(np.float32)

    register_teacher("recording", Recording)

class Die(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if die_after is not None and epoch + 1 >= die_after:
            (run / f"died-{index}").write_text(repr(time.time()))
            os.kill(os.getpid(), signal.SIGKILL)
        if hang_after is not None and epoch + 1 >= hang_after:
            (run / f"died-{index}").write_text(repr(time.time()))
            os.kill(os.getpid(), signal.SIGSTOP)

started = time.monotonic()
result = train(tiny_config(options.pop("data", run / "faces"), run / "out", strategy="multiworker", **options),
               callbacks=[Die()])
print("RESULT " + json.dumps({"chief": result.chief, "model_path": str(result.model_path),
                              "epochs": len(result.history), "seconds": time.monotonic() - started,
                              "strategy": result.card["environment"]["strategy"],
                              "train_images": result.card["data"]["train"]["images"]}), flush=True)
"""


def free_ports(count: int) -> list[int]:
    """Ports the OS hands out now on 127.0.0.1 (held together so they differ)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@dataclass
class Worker:
    index: int
    process: subprocess.Popen
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def result(self) -> dict:
        lines = [line for line in self.output().splitlines() if line.startswith("RESULT ")]
        assert lines, f"worker {self.index} printed no result:\n{self.output()[-3000:]}"
        return json.loads(lines[-1][len("RESULT "):])


def start_workers(run: Path, count: int, options: dict, per_worker: dict | None = None) -> list[Worker]:
    """``count`` workers on 127.0.0.1 training the tiny backbone on ``run/faces`` into ``run/out``.

    ``per_worker``: extra options by worker index (e.g. ``{1: {"die_after_epoch": 2}}``). Each
    worker's temporary folder is ``run/tmp-<index>`` (so the test sees what it leaves behind).
    """
    ports = free_ports(count)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    workers = []
    for index in range(count):
        tmp = run / f"tmp-{index}"
        tmp.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TMPDIR=str(tmp),
                   PYTHONPATH=os.pathsep.join([str(REPO / "runtime"), str(REPO)]),
                   TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}))
        mine = {**options, **(per_worker or {}).get(index, {})}
        log = run / f"worker-{index}.log"
        with open(log, "wb") as fh:
            process = subprocess.Popen([sys.executable, "-c", WORKER, str(run), str(index), json.dumps(mine),
                                        str(HERE)], stdout=fh, stderr=subprocess.STDOUT, env=env)
        workers.append(Worker(index, process, log))
    return workers


def wait_all(workers: list[Worker], timeout: float) -> float:
    """Wait for every worker to exit; kill them all and fail past ``timeout`` seconds. Returns the
    time the last one exited (``time.time()``)."""
    deadline = time.monotonic() + timeout
    try:
        while any(w.process.poll() is None for w in workers):
            if time.monotonic() > deadline:
                raise AssertionError(f"workers still running after {timeout:.0f} s:\n"
                                     + "\n".join(f"--- worker {w.index}\n{w.output()[-2000:]}" for w in workers))
            time.sleep(0.2)
        return time.time()
    finally:
        for w in workers:
            if w.process.poll() is None:
                w.process.kill()
                w.process.wait()


def seen(run: Path, index: int) -> list[int]:
    file = run / f"seen-{index}.txt"
    return [int(line) for line in file.read_text().split()] if file.is_file() else []
