"""``manifest.json``: what was built, how well it agrees, and what was skipped or failed (and why)."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator, Mapping

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
STATUSES = ("ok", "failed", "skipped")


@dataclass
class VariantResult:
    name: str
    technique: str
    status: str = "ok"  # ok | failed | skipped
    reason: str = ""  # why it failed or was skipped
    file: str | None = None  # relative to the output folder; None unless status == "ok"
    bytes: int | None = None
    gzip_bytes: int | None = None
    parameters: int | None = None
    sparsity: float | None = None  # measured zeros in the file's weight tensors
    agreement: dict[str, float] | None = None  # cosine to the source Keras model on held-out crops
    fidelity: dict[str, float] | None = None  # cosine to the Keras model this file was converted from
    thresholds: dict[str, float] = field(default_factory=dict)  # FAR -> cosine threshold
    tar: dict[str, float] = field(default_factory=dict)  # FAR -> TAR at that threshold (calibration pairs)
    pairs_auc: dict[str, float] | None = None  # ROC AUC on the calibration pairs: this file's and the source's
    io: dict[str, str] | None = None
    ops: list[str] = field(default_factory=list)
    finetune: list[dict[str, Any]] = field(default_factory=list)  # one entry per compression step
    bias_correction: dict[str, Any] | None = None  # int8 weight-rounding bias correction: layers corrected
    options: dict[str, Any] = field(default_factory=dict)
    seconds: float | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Manifest:
    out_dir: str
    source: dict[str, Any]
    target: str
    variants: list[VariantResult]
    calibration: dict[str, Any] | None = None
    pairs: dict[str, Any] | None = None
    finetune_data: dict[str, Any] | None = None
    inputs: dict[str, str] = field(default_factory=dict)  # where each input came from (flag, training card, ...)
    tools: dict[str, str] = field(default_factory=dict)
    created: str = ""
    seconds: float | None = None
    version: int = MANIFEST_VERSION

    def __iter__(self) -> Iterator[VariantResult]:
        return iter(self.variants)

    def __getitem__(self, name: str) -> VariantResult:
        for result in self.variants:
            if result.name == name:
                return result
        raise KeyError(f"no variant {name!r} in this manifest; it has {[r.name for r in self.variants]}")

    def by_status(self, status: str) -> list[VariantResult]:
        return [r for r in self.variants if r.status == status]

    @property
    def path(self) -> str:
        return os.path.join(self.out_dir, MANIFEST_NAME)

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "created": self.created, "source": self.source, "target": self.target,
                "calibration": self.calibration, "pairs": self.pairs, "finetune_data": self.finetune_data,
                "inputs": self.inputs, "tools": self.tools, "seconds": self.seconds,
                "variants": [r.to_dict() for r in self.variants]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], out_dir: str = "") -> "Manifest":
        known = VariantResult.__dataclass_fields__
        variants = [VariantResult(**{k: v for k, v in r.items() if k in known}) for r in data.get("variants", [])]
        return cls(out_dir=out_dir, source=dict(data.get("source", {})), target=str(data.get("target", "")),
                   variants=variants, calibration=data.get("calibration"), pairs=data.get("pairs"),
                   finetune_data=data.get("finetune_data"), inputs=dict(data.get("inputs") or {}),
                   tools=dict(data.get("tools", {})),
                   created=str(data.get("created", "")), seconds=data.get("seconds"),
                   version=int(data.get("version", MANIFEST_VERSION)))


def read_manifest(out_dir: str | os.PathLike) -> Manifest:
    path = os.path.join(out_dir, MANIFEST_NAME)
    try:
        with open(path, encoding="utf-8") as fh:
            return Manifest.from_dict(json.load(fh), str(out_dir))
    except FileNotFoundError:
        raise ValueError(f"no {MANIFEST_NAME} in {str(out_dir)!r}; run `edgeface convert` first") from None


def tool_versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": sys.version.split()[0]}
    for dist in ("tensorflow", "tf-keras", "tensorflow-model-optimization", "ai-edge-litert", "edgeface",
                 "edgeface-runtime", "numpy"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    if "edgeface" not in out:
        import edgeface

        out["edgeface"] = edgeface.__version__
    return out


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / 1e6:.2f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


def format_table(manifest: Manifest) -> str:
    """A plain-text table of the variants (one row each, skipped/failed reasons below it)."""
    header = ("variant", "status", "size", "gzip", "sparsity", "cosine mean", "cosine min", "thr@1e-3", "seconds")
    rows = []
    notes = []
    for r in manifest.variants:
        cos = r.agreement or {}
        threshold = r.thresholds.get("0.001")
        rows.append((r.name, r.status, _size(r.bytes), _size(r.gzip_bytes),
                     "-" if r.sparsity is None else f"{r.sparsity:.0%}",
                     f"{cos['mean']:.4f}" if cos else "-", f"{cos['min']:.4f}" if cos else "-",
                     "-" if threshold is None else f"{threshold:.4f}",
                     "-" if r.seconds is None else f"{r.seconds:.1f}"))
        if r.reason:
            notes.append(f"  {r.name}: {r.reason}")
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip() for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines[:0] = [f"{name}: {origin}" for name, origin in manifest.inputs.items()]
    lines.append(f"target {manifest.target}; {len(manifest.by_status('ok'))} ok, {len(manifest.by_status('failed'))} "
                 f"failed, {len(manifest.by_status('skipped'))} skipped; {manifest.out_dir}")
    return "\n".join(lines + notes)
