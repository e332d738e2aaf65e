"""Keras → every variant → the TF-free runtime, on a small trained model (one shared conversion)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from converters_testkit import IDENTITIES, SIZE, face

pytestmark = pytest.mark.slow

SPARSITY = 0.4  # the tiny model (55 k weights) has little to spare: 0.5 needs far more fine-tuning steps
CLUSTERS = 16
# Embedding cosine to the source Keras model, through the runtime, on crops no step has seen.
# Post-training variants must agree closely; fine-tuned ones are meant to move (see _variants).
MIN_COSINE = {"float32": 0.9999, "float16": 0.999, "dynamic": 0.995, "int8": 0.98, "pruned-int8": 0.85,
              "pruned-dynamic": 0.85, "clustered-int8": 0.9, "qat-int8": 0.9, "pruned-clustered-int8": 0.85,
              "pruned-qat-int8": 0.85, "clustered-qat-int8": 0.9}
LEGACY_PYTHON = Path(os.environ.get("EDGEFACE_LEGACY_PYTHON", "/work/venvs/legacy/bin/python"))


@pytest.fixture(scope="module")
def converted(tiny_model_path, faces_dir, tmp_path_factory):
    from edgeface_converters import convert

    out = tmp_path_factory.mktemp("variants")
    events = []
    manifest = convert(tiny_model_path, out, "all", calibration=faces_dir / "calibration", data=faces_dir / "data",
                       calibration_pairs=faces_dir / "lfw" / "pairs.txt", sparsity=SPARSITY, clusters=CLUSTERS,
                       prune_block=1,  # single weights: the reference the block test compares with
                       finetune_steps=60, learning_rate=1e-3, face_detector=None,
                       progress=lambda event, name: events.append((event, name)))
    return manifest, out, events


@pytest.fixture(scope="module")
def fresh_crops():
    from edgeface_runtime import center_crop

    return np.stack([center_crop(face(i, 300 + j), (SIZE, SIZE)) for i in range(IDENTITIES) for j in range(2)])


def _built(manifest):
    return [result for result in manifest if result.status == "ok"]


def test_every_variant_is_built_and_passes_its_checks(converted):
    manifest, out, events = converted
    import edgeface_converters as ec

    assert [r.name for r in manifest] == list(ec.VARIANTS)
    not_ok = {r.name: (r.status, r.reason) for r in manifest if r.status != "ok"}
    # the tiny model has no PReLU for the leaky step to replace (test_prelu_rewrite covers it)
    assert list(not_ok) == ["leaky-int8"] and not_ok["leaky-int8"][0] == "skipped"
    assert "no PReLU layers" in not_ok["leaky-int8"][1]
    built = [n for n in ec.VARIANTS if n not in not_ok]
    assert sorted(p.name for p in out.iterdir()) == sorted([f"{n}.tflite" for n in built] + ["manifest.json"])
    assert events[0] == ("start", "float32") and events.count(("ok", "int8")) == 1


def test_runtime_embeddings_agree_with_keras(converted, tiny_model_path, fresh_crops):
    from edgeface.training import load_model
    from edgeface_runtime import Embedder

    manifest, out, _ = converted
    model, metadata = load_model(tiny_model_path)
    x = (fresh_crops.astype(np.float32) - 127.5) / 127.5
    expected = np.asarray(model(x, training=False))
    for result in _built(manifest):
        with Embedder.from_path(out / result.file) as embedder:
            got = embedder.embed_many(list(fresh_crops))
        cos = np.sum(got * expected, axis=1)
        assert cos.mean() >= MIN_COSINE[result.name], (result.name, cos.mean(), cos.min())
        assert result.fidelity["mean"] >= 0.98, result.name  # each file vs the Keras model it came from


def test_metadata_and_ops_of_every_file(converted, tiny_model_path):
    from edgeface.training import read_keras_metadata
    from edgeface_runtime import check_ops
    from edgeface_runtime.metadata import read_metadata, strip_metadata

    manifest, out, _ = converted
    source = read_keras_metadata(tiny_model_path)
    for result in _built(manifest):
        data = (out / result.file).read_bytes()
        metadata = read_metadata(data)
        assert metadata is not None, result.name
        assert metadata.preprocess == source.preprocess and metadata.embedding_size == source.embedding_size
        assert metadata.extra["variant"] == result.name
        assert metadata.thresholds == {1e-3: result.thresholds["0.001"]}  # calibrated, not the source's 0.5
        assert "calibrated with this variant" in metadata.extra["thresholds_from"]
        auc = result.pairs_auc  # every variant scored on the pairs; fine-tuned ones gated on it
        assert 0.5 < auc["variant"] <= 1.0 and auc["source"] - auc["variant"] <= 0.01, (result.name, auc)
        check_ops(strip_metadata(data), "tflite-runtime-2.14")
        assert result.bytes == len(data)
    dynamic_fc = [op for op in manifest["dynamic"].ops if op.startswith("FULLY_CONNECTED/")]
    assert dynamic_fc == ["FULLY_CONNECTED/v9"]  # the per-tensor dense workaround, not v12


def test_pruned_files_are_sparse_and_compress_better(converted):
    from edgeface_converters._validate import weight_tensors

    manifest, out, _ = converted
    dense = manifest["int8"]
    for name in ("pruned-int8", "pruned-dynamic", "pruned-clustered-int8", "pruned-qat-int8"):
        result = manifest[name]
        assert result.sparsity > 0.3, (name, result.sparsity)  # depthwise kernels are not pruned
        assert result.gzip_bytes < dense.gzip_bytes, name
        pointwise = [v for _, v, _ in weight_tensors((out / result.file).read_bytes()) if not _depthwise(v)]
        zeros = sum(int(np.count_nonzero(v == 0)) for v in pointwise) / sum(v.size for v in pointwise)
        assert zeros >= SPARSITY - 0.02, (name, zeros)
    assert dense.sparsity < 0.05
    assert manifest["clustered-int8"].gzip_bytes < dense.gzip_bytes


BLOCK = 4


@pytest.fixture(scope="module")
def block_pruned(tiny_model_path, faces_dir, tmp_path_factory):
    from edgeface_converters import convert

    out = tmp_path_factory.mktemp("block-pruned")
    manifest = convert(tiny_model_path, out, "pruned-int8", calibration=faces_dir / "calibration",
                       data=faces_dir / "data", sparsity=SPARSITY, prune_block=BLOCK, finetune_steps=300,
                       learning_rate=1e-3, face_detector=None)  # whole blocks cost more: 60 steps give cosine 0.76
    return manifest["pruned-int8"], out


def test_block_pruning_writes_runs_of_zeros_that_gzip_smaller(converted, block_pruned):
    from edgeface_converters._validate import weight_tensors

    result, out = block_pruned
    assert result.status == "ok", result.reason
    assert result.options["prune_block"] == BLOCK
    assert result.agreement["mean"] >= MIN_COSINE["pruned-int8"], result.agreement
    pruned = 0
    for _, values, _ in weight_tensors((out / result.file).read_bytes()):
        if _depthwise(values) or np.mean(values == 0) < 0.2:
            continue  # depthwise and the smallest layers stay dense
        width = min(BLOCK, values.shape[-1])  # the stem's 3 input channels make one shorter block
        runs = values.reshape(-1, width)  # TFLite keeps input channels last: each block is one run
        zero_blocks = (runs == 0).all(axis=-1)
        assert abs(zero_blocks.mean() - SPARSITY) < 0.02, (values.shape, zero_blocks.mean())
        stray = np.count_nonzero(runs[~zero_blocks] == 0) / runs[~zero_blocks].size
        assert stray < 0.05, (values.shape, stray)  # kept weights that int8 rounded to zero, as in dense files
        pruned += 1
    assert pruned >= 2
    unstructured = converted[0]["pruned-int8"]
    assert abs(result.sparsity - unstructured.sparsity) < 0.02  # same zeros, arranged in runs:
    assert result.gzip_bytes < unstructured.gzip_bytes, (result.gzip_bytes, unstructured.gzip_bytes)


def test_clustered_kernels_hold_at_most_k_values_per_channel(converted):
    from edgeface_converters._validate import weight_tensors

    manifest, out, _ = converted
    for name in ("clustered-int8", "pruned-clustered-int8", "clustered-qat-int8"):
        tensors = [v for _, v, _ in weight_tensors((out / manifest[name].file).read_bytes())
                   if not _depthwise(v)]  # depthwise kernels are not clustered
        assert len(tensors) == 4  # stem, two pointwise convs, the embedding dense
        for values in tensors:
            per_channel = values.reshape(values.shape[0], -1)  # per-channel int8 scales on the output axis
            most = max(len(np.unique(row)) for row in per_channel)
            assert most <= CLUSTERS + 1, (name, values.shape, most)  # +1: a zero kept apart by sparsity


def _depthwise(kernel: np.ndarray) -> bool:
    # Files keep no inner tensor names (_compact); TFLite depthwise kernels are (1, h, w, channels),
    # the tiny model's others (out, h, w, in) with out >= 8, or a dense (out, in).
    return kernel.ndim == 4 and kernel.shape[0] == 1


def test_manifest_records_everything(converted, tiny_model_path):
    import edgeface_converters as ec

    manifest, out, _ = converted
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk == json.loads(manifest.to_json())
    assert ec.read_manifest(out).to_dict() == manifest.to_dict()
    assert on_disk["source"]["sha256"] and on_disk["source"]["parameters"] > 10_000
    assert on_disk["target"] == "tflite-runtime-2.14"
    assert on_disk["calibration"]["held_out"] >= 20 and on_disk["calibration"]["representative"] >= 90
    assert on_disk["pairs"]["impostor"] == 60
    assert on_disk["finetune_data"]["num_classes"] == IDENTITIES
    assert {"tensorflow", "tf-keras", "tensorflow-model-optimization", "ai-edge-litert"} <= set(on_disk["tools"])
    for entry in on_disk["variants"]:
        if entry["name"] == "leaky-int8":
            assert entry["status"] == "skipped"
            continue
        assert entry["status"] == "ok"
        assert entry["bytes"] > entry["gzip_bytes"] > 0
        assert entry["parameters"] == on_disk["source"]["parameters"]
        assert 0.0 <= entry["sparsity"] < 1.0
        assert (set(entry["agreement"]) == {"mean", "min", "n"}
                and entry["agreement"]["min"] <= entry["agreement"]["mean"])
        assert set(entry["thresholds"]) == {"0.001"} and set(entry["tar"]) == {"0.001"}
        assert entry["seconds"] > 0 and entry["ops"]
        steps = ec.VARIANTS[entry["name"]].steps
        assert [f["step"] for f in entry["finetune"]] == list(steps)
    assert on_disk["variants"][4]["options"] == {"sparsity": SPARSITY, "layer_sparsity": {}, "prune_block": 1,
                                                 "finetune_steps": 60,
                                                 "io": "float32"}
    table = ec.format_table(manifest)
    assert all(name in table for name in ec.VARIANTS) and "11 ok, 0 failed, 1 skipped" in table


@pytest.mark.skipif(not LEGACY_PYTHON.exists(), reason="no tflite-runtime 2.14 venv (set EDGEFACE_LEGACY_PYTHON)")
def test_every_file_runs_on_tflite_runtime_2_14(converted):
    import edgeface_converters as ec

    _, out, _ = converted
    script = (
        "import sys, numpy as np\n"
        "from tflite_runtime.interpreter import Interpreter\n"
        "for path in sys.argv[1:]:\n"
        "    it = Interpreter(model_path=path); it.allocate_tensors()\n"
        "    d = it.get_input_details()[0]\n"
        "    it.set_tensor(d['index'], np.zeros(d['shape'], d['dtype'])); it.invoke()\n"
        "    print('ok', path)\n")
    files = sorted(str(p) for p in out.glob("*.tflite"))
    run = subprocess.run([str(LEGACY_PYTHON), "-c", script, *files], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.count("ok ") == len(files) == len(ec.VARIANTS) - 1  # leaky-int8: no PReLU to replace
