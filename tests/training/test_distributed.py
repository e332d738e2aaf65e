from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent

# Logical devices must be configured before TensorFlow initialises them: a fresh process.
SCRIPT = """
import json, sys
from edgeface._keras import tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
sys.path.insert(0, sys.argv[3])
from pathlib import Path
from training_helpers import make_dataset, tiny_config
from edgeface.training import train, load_model
data = make_dataset(Path(sys.argv[1]) / "faces", identities=4, per_identity=6)
result = train(tiny_config(data, Path(sys.argv[1]) / "run", strategy=sys.argv[2], epochs=2, steps_per_epoch=2))
model, md = load_model(result.model_path)
print("RESULT", json.dumps({"devices": result.card["environment"]["devices"], "epochs": len(result.history),
                            "embedding": md.embedding_size, "replicas": result.card["environment"]["strategy"]["replicas"]}))
"""


@pytest.mark.slow
def test_mirrored_strategy_on_two_logical_cpus(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "runtime"), str(REPO)]), TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path), "mirrored", str(HERE)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    line = [l for l in done.stdout.splitlines() if l.startswith("RESULT ")][-1]
    import json

    result = json.loads(line[len("RESULT "):])
    assert sum("CPU" in d for d in result["devices"]) == 2
    assert result["epochs"] == 2 and result["embedding"] == 16 and result["replicas"] == 2
