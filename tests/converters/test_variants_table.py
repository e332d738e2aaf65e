"""The variants table and the package facade (no TensorFlow needed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import edgeface_converters as ec
from edgeface_converters._variants import QUANTIZATIONS, STEPS


def test_table_names_every_required_variant():
    assert list(ec.VARIANTS) == ["float32", "float16", "dynamic", "int8", "pruned-int8", "clustered-int8", "qat-int8",
                                 "pruned-clustered-int8", "pruned-qat-int8", "clustered-qat-int8"]
    for name, variant in ec.VARIANTS.items():
        assert variant.name == name
        assert variant.file_name == f"{name}.tflite"
        assert variant.quantization in QUANTIZATIONS
        assert set(variant.steps) <= set(STEPS)
        assert variant.needs_data == bool(variant.steps)
        assert variant.to_dict()["file"] == variant.file_name
    assert ec.VARIANTS["pruned-clustered-int8"].steps == ("prune", "cluster")
    assert ec.VARIANTS["clustered-qat-int8"].steps == ("cluster", "qat")


def test_parse_variants():
    assert [v.name for v in ec.parse_variants("all")] == list(ec.VARIANTS)
    assert [v.name for v in ec.parse_variants("int8, float16")] == ["float16", "int8"]  # table order
    assert [v.name for v in ec.parse_variants(["qat-int8"])] == ["qat-int8"]
    with pytest.raises(ValueError, match=r"unknown variant\(s\) 'int4'.*choose from float32"):
        ec.parse_variants("int8,int4")
    with pytest.raises(ValueError, match="none given"):
        ec.parse_variants(" , ")


def test_docs_table_is_generated_from_the_table():
    markdown = ec.variants_markdown().splitlines()
    assert len(markdown) == 2 + len(ec.VARIANTS)
    assert markdown[2].startswith("| `float32` |")
    assert "| `pruned-qat-int8` | pruning, then pruning-preserving QAT, then full int8 | yes |" in markdown[-2]


def test_targets_table():
    assert ec.DEFAULT_TARGET == "tflite-runtime-2.14"
    assert ec.TARGETS["tflite-runtime-2.14"].per_channel_dense is False  # the FULLY_CONNECTED v12 workaround
    assert ec.TARGETS["ai-edge-litert-2.3"].per_channel_dense is True
    from edgeface_runtime._op_tables import MAX_OP_VERSIONS

    assert set(ec.TARGETS) <= set(MAX_OP_VERSIONS)


def test_import_loads_no_tensorflow():
    here = str(Path(__file__).parent)
    code = ("import sys; sys.path.insert(0, %r); import conftest; import edgeface_converters as ec, "
            "edgeface_converters.cli; ec.VARIANTS, ec.format_table; "
            "print(sorted(m for m in ('tensorflow', 'tf_keras', 'tensorflow_model_optimization') if m in sys.modules))"
            % here)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_manifest_round_trip_and_table():
    result = ec.VariantResult("int8", "full integer", bytes=1234, gzip_bytes=1000, sparsity=0.01,
                              agreement={"mean": 0.999, "min": 0.99, "n": 10}, thresholds={"0.001": 0.42},
                              seconds=1.5)
    skipped = ec.VariantResult("qat-int8", "qat", status="skipped", reason="needs fine-tuning data")
    manifest = ec.Manifest(out_dir="/tmp/x", source={"path": "m.keras"}, target="tflite-runtime-2.14",
                           variants=[result, skipped])
    again = ec.Manifest.from_dict(__import__("json").loads(manifest.to_json()), "/tmp/x")
    assert again.to_dict() == manifest.to_dict()
    assert again["qat-int8"].status == "skipped"
    table = ec.format_table(manifest)
    assert "int8" in table and "0.9990" in table and "0.4200" in table
    assert "qat-int8: needs fine-tuning data" in table
    with pytest.raises(KeyError, match="no variant 'float16'"):
        manifest["float16"]
