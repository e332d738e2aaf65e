"""The one table of conversion variants (and of the interpreters a conversion can target).

CLI help, docs, the orchestrator and the checks all read :data:`VARIANTS`; adding a row
here is how a new variant appears everywhere. Pure Python: importing it loads no TensorFlow.

A variant is a recipe: compression ``steps`` applied in order to a copy of the Keras model
(each step is an apply/strip pair with fine-tuning in between, see ``_pruning``,
``_clustering``, ``_qat``), then one TFLite ``quantization`` (see ``_ptq``). A step that
follows another keeps the earlier one's work: clustering after pruning preserves the zeros
(sparsity-preserving clustering), QAT after pruning or clustering uses tfmot's
prune-/cluster-preserving quantization scheme.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from edgeface_runtime.registry import Registry

STEPS = ("prune", "cluster", "qat", "leaky")
QUANTIZATIONS = ("float32", "float16", "dynamic", "int8")
IO_TYPES = ("float32", "int8", "uint8")

# Agreement of each .tflite with the Keras model it was converted from (the gate).
MIN_COSINE = 0.98
# Variants whose recipe fine-tunes move the embedding on purpose; what must not move is how
# well it verifies. With calibration pairs (each variant's thresholds recalibrated on its own
# scores) they must keep the source model's ROC AUC on those pairs within this margin; without
# pairs they inherit the source's thresholds, so their embedding must stay near the source's:
# mean cosine at least MIN_SOURCE_COSINE_FINETUNED. (The fidelity gate above still applies to
# their conversion.)
MAX_AUC_DROP_FINETUNED = 0.01
MIN_SOURCE_COSINE_FINETUNED = 0.90
# Weights the pruned variants prune together: consecutive input channels of one output channel
# (see _pruning). Runs of 4 zeros gzip smaller but move the embedding further from the source's,
# which only a conversion that recalibrates thresholds on pairs can afford (the AUC gate holds it);
# without pairs a file inherits the source's thresholds, so each weight is pruned on its own (1).
# Measured on the quick demo's model: 4 gave 19.8 % of float32's gzip, 1 gave 22.2 % (docs/conversion.md).
PRUNE_BLOCK_WITH_PAIRS = 4
DEFAULT_PRUNE_BLOCK = 1


@dataclass(frozen=True)
class Variant:
    name: str
    technique: str  # one line, for tables and --help
    steps: tuple[str, ...]  # compression steps, in order (each fine-tunes, so each needs data)
    quantization: str  # TFLite conversion: float32 | float16 | dynamic | int8
    options: tuple[str, ...]  # the convert() options that change this variant
    file_name: str

    @property
    def needs_data(self) -> bool:
        return bool(self.steps)

    @property
    def min_source_cosine(self) -> float:
        return MIN_SOURCE_COSINE_FINETUNED if self.steps else MIN_COSINE

    def to_dict(self) -> dict:
        return {"name": self.name, "technique": self.technique, "steps": list(self.steps),
                "quantization": self.quantization, "options": list(self.options), "file": self.file_name,
                "needs_data": self.needs_data}


def _v(name: str, technique: str, steps: tuple[str, ...], quantization: str, options: tuple[str, ...]) -> Variant:
    return Variant(name, technique, steps, quantization, options, f"{name}.tflite")


# Table order is the order of conversion, of manifests and of report rows.
VARIANTS: Registry[Variant] = Registry("variant", (
    _v("float32", "no quantization (reference)", (), "float32", ()),
    _v("float16", "float16 weights, float32 compute", (), "float16", ()),
    _v("dynamic", "dynamic-range: int8 weights, float activations", (), "dynamic", ("target",)),
    _v("int8", "full integer, calibrated on face crops", (), "int8", ("io",)),
    _v("pruned-int8", "magnitude pruning (PolynomialDecay) + fine-tuning, then full int8", ("prune",), "int8",
       ("sparsity", "layer_sparsity", "prune_block", "finetune_steps", "io")),
    # For models whose activations have no fast int8 kernel (SFace's PReLU: 36 ms per face in full
    # int8 against 7.8 ms dynamic-range): the pruned weights stored as int8, the compute in float.
    _v("pruned-dynamic", "magnitude pruning + fine-tuning, then dynamic-range (int8 weights)", ("prune",),
       "dynamic", ("sparsity", "layer_sparsity", "prune_block", "finetune_steps", "target")),
    # PReLU models (SFace): each PReLU a LeakyReLU with one slope, distilled back, so that the
    # full-int8 file runs on XNNPACK's int8 kernels (_activations). Skipped for models without PReLU.
    _v("leaky-int8", "PReLU replaced by LeakyReLU + fine-tuning, then full int8 (fast int8 for PReLU models)",
       ("leaky",), "int8", ("finetune_steps", "io")),
    _v("clustered-int8", "weight clustering (k clusters) + fine-tuning, then full int8", ("cluster",), "int8",
       ("clusters", "finetune_steps", "io")),
    _v("qat-int8", "quantization-aware training, then full int8", ("qat",), "int8", ("finetune_steps", "io")),
    _v("pruned-clustered-int8", "pruning, then sparsity-preserving clustering, then full int8",
       ("prune", "cluster"), "int8",
       ("sparsity", "layer_sparsity", "prune_block", "clusters", "finetune_steps", "io")),
    _v("pruned-qat-int8", "pruning, then pruning-preserving QAT, then full int8", ("prune", "qat"), "int8",
       ("sparsity", "layer_sparsity", "prune_block", "finetune_steps", "io")),
    _v("clustered-qat-int8", "clustering, then cluster-preserving QAT, then full int8", ("cluster", "qat"), "int8",
       ("clusters", "finetune_steps", "io")),
))


@dataclass(frozen=True)
class Target:
    """An interpreter the outputs must load on, and the converter settings that ensures it."""

    name: str  # an interpreter's operator table, as edgeface_runtime.check_ops(model, table_id) takes it
    # TF >= 2.16 writes dynamic-range FULLY_CONNECTED v12 (per-channel dense weights), which
    # tflite-runtime 2.14 lacks; per-tensor dense quantization gives v9 (STACK.md).
    per_channel_dense: bool
    description: str


TARGETS: Registry[Target] = Registry("target", (
    Target("tflite-runtime-2.14", False, "oldest supported interpreter (32-bit Pi OS, Python 3.9); the default"),
    Target("ai-edge-litert-2.3", True, "current LiteRT only (64-bit boards, Python >= 3.10)"),
))
DEFAULT_TARGET = "tflite-runtime-2.14"


def parse_variants(spec: str | Iterable[str] | None) -> list[Variant]:
    """``"all"``, ``"int8,float16"`` or a list of names → variants in table order."""
    if spec is None or spec == "all":
        return list(VARIANTS.values())
    names = [n.strip() for n in (spec.split(",") if isinstance(spec, str) else spec)]
    names = [n for n in names if n]
    if "all" in names:
        return list(VARIANTS.values())
    unknown = [n for n in names if n not in VARIANTS]
    if unknown or not names:
        close = {n: VARIANTS.closest(n, 1)[0] for n in unknown if VARIANTS.closest(n, 1)}
        guesses = [repr(c) if len(unknown) == 1 else f"{c!r} for {n!r}" for n, c in close.items()]
        guess = f" (did you mean {', '.join(guesses)}?)" if guesses else ""
        raise ValueError(f"unknown variant(s) {', '.join(map(repr, unknown)) or '(none given)'}{guess}; choose from "
                         f"{', '.join(VARIANTS)} or 'all'")
    wanted = set(names)
    return [v for v in VARIANTS.values() if v.name in wanted]


def variants_markdown() -> str:
    """The table as Markdown, for the docs (generated, so docs cannot drift from the code)."""
    lines = ["| variant | technique | fine-tunes | options | file |", "|---|---|---|---|---|"]
    for v in VARIANTS.values():
        options = ", ".join(f"`{o}`" for o in v.options) or "-"
        lines.append(f"| `{v.name}` | {v.technique} | {'yes' if v.needs_data else 'no'} | {options} "
                     f"| `{v.file_name}` |")
    return "\n".join(lines)


def get_target(name: str) -> Target:
    """The target ``name``; an unknown one is a ValueError naming the closest and every choice."""
    return TARGETS[name]
