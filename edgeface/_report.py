"""`edgeface report`: a Keras model and its converted variants, compared on one protocol.

What is measured, and how (the decisions a reader of a report needs to trust it):

* **Protocol.** LFW-style pairs (``pairs=`` + ``images=``; by default folds 6-10 of a
  10-fold LFW pairs.txt, the project's rule, else every fold of the file as it is; JPEG, PNG
  or PGM images) or pairs drawn reproducibly from a folder-per-identity dataset
  (``dataset=``: :func:`~edgeface_runtime.metrics.generate_pairs` with ``n_pairs``,
  ``seed`` and ``dataset_folds`` folds). The people evaluated must not have been trained
  on: ``training_card.json`` beside the Keras model (train and validation people) and the
  fine-tuning folder a convert manifest records list them; any overlap is refused unless
  ``allow_overlap=True``.
* **Crops.** Each image is cropped once per preprocessing (input size + alignment) with
  the training side's :class:`~edgeface._data.CropMaker` (``center_crop``, or BlazeFace +
  ``align_face``), kept in memory, and every variant embeds the same crops. An image in which
  BlazeFace finds no face is left out with its pairs, for every variant, as the device
  refuses it (``no_face="center"``: centre-cropped instead); the notes and the settings
  count them.
* **Quality.** Cosine similarity of L2-normalised embeddings. Accuracy is the k-fold mean
  ± std over the protocol's folds (each fold's threshold chosen on the other folds); TAR at
  FAR 1e-3, EER and AUC over all pairs; cosine to the Keras model on every evaluation crop;
  the threshold stored in each model's metadata and the FAR it actually gives here. These
  numbers are deterministic for the same inputs.
* **Speed and memory.** Each ``.tflite`` is timed in a fresh subprocess that imports only
  the TF-free runtime, as a device process would: embed only (crop -> embedding, no
  decode/detect/align), median and p90 over ``latency_runs`` crops after a warm-up, at one
  thread and at all usable cores. Peak memory is that process's peak resident set size
  (``VmHWM`` on Linux, else ``ru_maxrss``): what a device process needs with the interpreter, numpy and Pillow
  loaded; beside it, the part the model adds (peak after running minus peak before
  loading). ``tracemalloc`` would miss the TFLite arena, which is native memory. The Keras
  model runs only under TensorFlow, so it has no device timing.
* **Recommendation.** The smallest ``.tflite`` (file bytes) whose accuracy is within
  ``tolerance`` points of the best row's (the Keras model included). Latency never enters
  it: it is noisy.
"""

from __future__ import annotations

import gzip
import json
import logging
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Sequence

import numpy as np

from ._options import OptionsLoading, merged, option
from ._records import CARD_NAME, parse_folds
from ._report_latency import DEFAULT_LATENCY_RUNS, WARMUP_RUNS, device_info, measure_variant, usable_cores

logger = logging.getLogger(__name__)

REPORT_FORMAT = "edgeface-report/1"
REPORT_FILES = ("report.md", "report.html", "report.json")
DEFAULT_FOLDS = "auto"  # folds 6-10 of a 10-fold LFW pairs.txt, else every fold of the file
DEFAULT_N_PAIRS = 1000
DEFAULT_DATASET_FOLDS = 10
DEFAULT_TOLERANCE = 0.5  # accuracy points
REPORT_FAR = 1e-3  # the operating point of the table's TAR column
FARS = (1e-2, 1e-3)  # operating points kept in the JSON
KERAS_ROW = "keras"

Progress = Callable[[str, int, int], None]  # (stage, done, total)


# --------------------------------------------------------------------------- options


@dataclass
class ReportOptions(OptionsLoading):
    """What :func:`build_report` measures, on which protocol, and where it writes (all but the models).

    Each field is one option: its default and help live here, and ``edgeface report``'s flags
    are derived from the fields that have help (``edgeface._options``). Protocol: ``pairs`` +
    ``images`` or ``dataset``; see :func:`build_report`.
    """

    _what: ClassVar[str] = "report"
    _table: ClassVar[str | None] = "report"

    pairs: str | os.PathLike[str] | None = option(
        None, help="LFW-style pairs file (pairs.txt); needs --images (default: the pairs the manifest or training card "
                   "recorded).")
    images: str | os.PathLike[str] | None = option(None, help="Image root the pairs' paths are relative to.")
    folds: str | Sequence[int] | None = option(
        DEFAULT_FOLDS, cli_type=str,
        help="Folds of --pairs to report: 'auto' (6-10 of LFW's 10-fold pairs.txt, else every fold of the file), "
             "'all', a range (6-10) or a list (1,2,3).")
    dataset: str | os.PathLike[str] | None = option(
        None, help="Instead of --pairs: one sub-folder per person; pairs are generated reproducibly.")
    n_pairs: int = option(DEFAULT_N_PAIRS, flags=("--n-pairs",),
                          help="Pairs to generate from --dataset (half same person).")
    seed: int = option(0, help="Seed of the generated pairs.")
    out: str | os.PathLike[str] | None = option(
        None, flags=("--out", "-o"), help="Folder for report.md, report.html and report.json (default: report/ beside "
                                          "the first model or folder).")
    latency_runs: int = option(DEFAULT_LATENCY_RUNS, flags=("--latency-runs",),
                               help="Timed embeddings per variant and thread count (0: skip timing).")
    tolerance: float = option(DEFAULT_TOLERANCE,
                              help="Recommend the smallest variant within this many accuracy points of the best.")
    allow_overlap: bool = option(False, flags=("--allow-overlap",),
                                 help="Report even when evaluation people were in the training data (optimistic).")
    detector: Any = option(None, cli_type=Path, help="BlazeFace .tflite for models with aligned crops.")
    no_face: str = option(
        "skip", choices=("skip", "center"),
        help="Images in which the detector finds no face (aligned models): 'skip' leaves them and their pairs out, as "
             "the device refuses them (default); 'center' centre-crops them. Counted in the report.")
    # Library and TOML only (no flag):
    dataset_folds: int = DEFAULT_DATASET_FOLDS  # folds the generated pairs of ``dataset`` are split into
    people: Sequence[str] | None = None  # only these sub-folders of ``dataset`` (e.g. the ones training held out)
    max_unreadable: float | None = None  # fraction of images that may fail to decode (None: the data default)

    def __post_init__(self) -> None:
        if isinstance(self.folds, str):  # "6-10", "1,2,3", "all" (None), as the flag and TOML files write them
            parsed = parse_folds(self.folds)
            self.folds = tuple(parsed) if isinstance(parsed, list) else parsed


# --------------------------------------------------------------------------- results


@dataclass
class VariantRow:
    """One row of the report: a Keras model (``kind="keras"``) or a ``.tflite`` variant."""

    name: str
    kind: str  # "keras" | "tflite"
    path: str
    technique: str
    bytes: int
    gzip_bytes: int
    parameters: int | None
    sparsity: float | None
    verification: dict[str, Any]  # edgeface_runtime.metrics.verification_report(...)
    cosine_to_keras: dict[str, Any] | None = None  # {"mean", "min", "n"}; None without a Keras model
    threshold: dict[str, Any] | None = None  # from the model's metadata: {"far", "threshold", "achieved_far", "tar"}
    latency: dict[str, dict[str, float]] | None = None  # threads -> {"median_ms", "p90_ms", "n"}
    memory: dict[str, float] | None = None  # {"peak_rss_mb", "model_rss_mb"}
    folder: str | None = None  # the convert output folder it came from
    roc: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False, compare=False)  # (far, tar)

    @property
    def accuracy(self) -> float:
        return float(self.verification["accuracy"]["mean"])

    @property
    def accuracy_std(self) -> float:
        return float(self.verification["accuracy"]["std"])

    def operating_point(self, far: float = REPORT_FAR) -> dict[str, Any] | None:
        for point in self.verification.get("tar_at_far", []):
            if math.isclose(point["far"], far):
                return point
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "path": self.path, "folder": self.folder,
                "technique": self.technique, "bytes": self.bytes, "gzip_bytes": self.gzip_bytes,
                "parameters": self.parameters, "sparsity": self.sparsity, "verification": self.verification,
                "cosine_to_keras": self.cosine_to_keras, "threshold": self.threshold, "latency": self.latency,
                "memory": self.memory}


@dataclass
class Report:
    """The comparison; render it with :meth:`to_markdown`, :meth:`to_html`, :meth:`to_json`."""

    rows: list[VariantRow]
    protocol: dict[str, Any]
    device: dict[str, Any]
    recommendation: dict[str, Any]
    settings: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    def __getitem__(self, name: str) -> VariantRow:
        for row in self.rows:
            if row.name == name:
                return row
        raise KeyError(f"no variant {name!r} in this report; it has {[r.name for r in self.rows]}")

    def to_dict(self) -> dict[str, Any]:
        return {"format": REPORT_FORMAT, "protocol": self.protocol, "device": self.device,
                "settings": self.settings, "recommendation": self.recommendation,
                "variants": [row.to_dict() for row in self.rows], "notes": list(self.notes)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, default=_json_default) + "\n"

    def to_markdown(self) -> str:
        from ._report_render import render_markdown

        return render_markdown(self)

    def to_html(self) -> str:
        from ._report_render import render_html

        return render_html(self)

    def write(self, out_dir: str | os.PathLike) -> dict[str, Path]:
        """Write ``report.md``, ``report.html`` and ``report.json`` into ``out_dir``; return their paths."""
        from ._modelio import atomic_write_text

        out = Path(out_dir)
        if out.exists() and not out.is_dir():
            raise ValueError(f"report output {str(out_dir)!r} is a file; pass a folder (it is created if missing)")
        out.mkdir(parents=True, exist_ok=True)
        texts = {"report.md": self.to_markdown(), "report.html": self.to_html(), "report.json": self.to_json()}
        return {name: atomic_write_text(out / name, text) for name, text in texts.items()}


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


# --------------------------------------------------------------------------- inputs


@dataclass
class _Source:
    """A model to report on, before it is run."""

    name: str
    kind: str
    path: Path
    metadata: Any  # edgeface_runtime ModelMetadata
    technique: str = ""
    parameters: int | None = None
    sparsity: float | None = None
    folder: str | None = None

    @property
    def crop_key(self) -> tuple[tuple[int, int], str]:
        return tuple(self.metadata.preprocess.input_size), self.metadata.preprocess.alignment


@dataclass
class _Models:
    keras: _Source | None
    variants: list[_Source]
    manifests: list[Any]  # edgeface_converters Manifest, one per folder
    notes: list[str]


def _resolve_models(models: Any) -> _Models:
    """Sort the inputs into one Keras model and ``.tflite`` variants; nothing heavy is loaded."""
    if isinstance(models, (str, os.PathLike)):
        models = [models]
    paths = [Path(m) for m in (models or [])]
    if not paths:
        raise ValueError("no models given: pass a model.keras, one or more `edgeface convert` output folders, "
                         "or .tflite files")
    keras_paths: list[Path] = []
    folders: list[Path] = []
    files: list[Path] = []
    for path in paths:
        if not path.exists():
            raise ValueError(f"model or folder not found: {str(path)!r}; pass a model.keras, a .tflite file, or a "
                             "folder written by `edgeface convert` (it holds manifest.json)")
        if path.is_dir():
            if (path / "manifest.json").is_file():
                folders.append(path)
            elif (path / "model.keras").is_file():
                keras_paths.append(path / "model.keras")
            else:
                raise ValueError(f"{str(path)!r} holds neither manifest.json (an `edgeface convert` output folder) "
                                 "nor model.keras (an `edgeface train` output folder)")
        elif path.suffix == ".keras":
            keras_paths.append(path)
        elif path.suffix == ".tflite":
            files.append(path)
        else:
            raise ValueError(f"cannot report on {str(path)!r}: expected a .keras model, a .tflite model or a "
                             "convert output folder")
    unique_keras = list({p.resolve(): p for p in keras_paths}.values())  # one per file, as the caller wrote it
    if len(unique_keras) > 1:
        raise ValueError(f"one Keras model per report (it is the float reference the variants are compared to); "
                         f"got {', '.join(map(str, unique_keras))}. Report each model's convert folder separately")

    notes: list[str] = []
    manifests, variants = [], []
    labels = _folder_labels(folders)
    for folder in folders:
        manifest, sources = _folder_variants(folder, labels[folder] if len(folders) > 1 or files else None, notes)
        manifests.append(manifest)
        variants.extend(sources)
    for file in files:
        variants.append(_tflite_source(file, file.stem, technique="", folder=None))
    _deduplicate_names(variants)

    keras_path = unique_keras[0] if unique_keras else _keras_from_manifests(manifests, notes)
    keras = None
    if keras_path is not None:
        from ._modelio import read_keras_metadata

        metadata = read_keras_metadata(keras_path)
        if metadata is None:
            raise ValueError(f"{keras_path} carries no edgeface metadata (edgeface.json), so its preprocessing is "
                             "unknown; report on a model saved by `edgeface train`")
        keras = _Source(KERAS_ROW, "keras", keras_path, metadata, technique="Keras float model (reference)")
    return _Models(keras, variants, manifests, notes)


def _folder_labels(folders: Sequence[Path]) -> dict[Path, str]:
    """Short, unique labels for convert folders: their names, with parents where names repeat."""
    labels = {folder: folder.name or str(folder) for folder in folders}
    if len(set(labels.values())) < len(labels):
        labels = {folder: f"{folder.parent.name}/{folder.name}" for folder in folders}
    if len(set(labels.values())) < len(labels):
        labels = {folder: str(folder) for folder in folders}
    return labels


def _folder_variants(folder: Path, label: str | None, notes: list[str]) -> tuple[Any, list[_Source]]:
    from edgeface_converters import read_manifest

    try:
        manifest = read_manifest(folder)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{folder / 'manifest.json'} is not valid JSON ({exc}); re-run `edgeface convert`") from None
    built = [v for v in manifest.variants if v.ok]
    for variant in manifest.variants:
        if not variant.ok:
            notes.append(f"{label + '/' if label else ''}{variant.name} was {variant.status} by `edgeface convert`: "
                         f"{variant.reason or 'no reason recorded'}")
    if not built:
        statuses = ", ".join(f"{v.name}: {v.status}" for v in manifest.variants) or "none listed"
        raise ValueError(f"{str(folder)!r} has no variants to report: its manifest.json lists no variant built "
                         f"successfully ({statuses}); re-run `edgeface convert`")
    sources = []
    for variant in built:
        file = folder / (variant.file or f"{variant.name}.tflite")
        if not file.is_file():
            raise ValueError(f"{str(folder)!r}: manifest.json lists variant {variant.name!r} as {file.name}, but the "
                             "file is missing; re-run `edgeface convert` into this folder")
        name = f"{label}/{variant.name}" if label else variant.name
        sources.append(_tflite_source(file, name, technique=variant.technique, folder=str(folder),
                                      parameters=variant.parameters, sparsity=variant.sparsity))
    return manifest, sources


def _tflite_source(path: Path, name: str, *, technique: str, folder: str | None, parameters: int | None = None,
                   sparsity: float | None = None) -> _Source:
    from edgeface_runtime.metadata import split_model

    _, metadata = split_model(path)
    if metadata is None:
        raise ValueError(f"{path} carries no edgeface metadata, so its preprocessing is unknown; report on the "
                         "output of `edgeface convert`")
    return _Source(name, "tflite", path, metadata, technique=technique, parameters=parameters, sparsity=sparsity,
                   folder=folder)


def _deduplicate_names(sources: list[_Source]) -> None:
    seen: dict[str, int] = {}
    for source in sources:
        count = seen.get(source.name, 0)
        seen[source.name] = count + 1
        if count or source.name == KERAS_ROW:
            source.name = f"{source.name} ({count + 1})"


def _keras_from_manifests(manifests: Sequence[Any], notes: list[str]) -> Path | None:
    """The Keras model the convert folders were made from, when they all name the same existing file."""
    import hashlib

    if not manifests:
        return None
    named = {(m.source.get("path"), m.source.get("sha256")) for m in manifests}
    if len(named) != 1:
        notes.append("the convert folders come from different Keras models: no cosine to a float model; pass "
                     "model.keras to compare against one")
        return None
    (path, digest), = named
    if not path:
        return None
    # As recorded, else beside the folder (a run folder moved as a whole: run/model.keras, run/variants/).
    candidates = [Path(path)] + [Path(m.out_dir).parent / "model.keras" for m in manifests]
    for candidate in candidates:
        if candidate.is_file() and (not digest or hashlib.sha256(candidate.read_bytes()).hexdigest() == digest):
            logger.info("using %s, the model the variants were converted from, as the float reference", candidate)
            return candidate
    notes.append(f"the Keras model the variants were converted from ({path}) was not found or has changed: no "
                 "cosine to the float model; pass model.keras to add it")
    return None


# --------------------------------------------------------------------------- protocol


@dataclass
class _Protocol:
    pairs: list[Any]  # edgeface_runtime.metrics.Pair
    root: Path
    description: dict[str, Any]
    notes: list[str]


def _protocol(pairs: Any, images: Any, dataset: Any, n_pairs: int, seed: int, folds: Iterable[int] | str | None,
              dataset_folds: int, people: Sequence[str] | None = None) -> _Protocol:
    if (pairs is None) == (dataset is None):
        raise ValueError("choose one protocol: pairs=PAIRS_FILE with images=IMAGE_DIR (LFW pairs.txt, folds 6-10 "
                         "by default) or dataset=DIR (one sub-folder per person; pairs are generated), "
                         f"got {'both' if pairs is not None else 'neither'}")
    if pairs is not None:
        return _pairs_protocol(Path(pairs), images, folds)
    if images is not None:
        raise ValueError("images= goes with pairs=; with dataset= the images are the dataset's own")
    return _dataset_protocol(Path(dataset), n_pairs, seed, dataset_folds, people)


def _pairs_protocol(pairs_file: Path, images: Any, folds: Iterable[int] | str | None) -> _Protocol:
    from edgeface_runtime.metrics import read_pairs

    from ._evaluate import _select_folds

    if images is None:
        raise ValueError("pairs= needs images= too: the folder the pairs' paths are relative to "
                         "(for LFW: lfw-deepfunneled)")
    root = Path(images)
    if not pairs_file.is_file():
        raise ValueError(f"pairs file not found: {str(pairs_file)!r}")
    if not root.is_dir():
        raise ValueError(f"image folder not found: {str(images)!r}")
    chosen_pairs, chosen = _select_folds(read_pairs(pairs_file, image_root=root), folds, str(pairs_file))
    _check_images_exist(chosen_pairs, root, str(pairs_file))
    evaluated = chosen if chosen is not None else sorted({p.fold for p in chosen_pairs})
    description = {"kind": "pairs", "pairs_file": str(pairs_file), "images": str(root), "folds": evaluated,
                   **_pair_counts(chosen_pairs)}
    return _Protocol(chosen_pairs, root, description, [])


def _dataset_protocol(root: Path, n_pairs: int, seed: int, n_folds: int,
                      only: Sequence[str] | None = None) -> _Protocol:
    from edgeface_runtime.metrics import generate_pairs

    from ._data import scan_folder

    people = scan_folder(root)
    if only is not None:
        people = people.subset([name for name in only if name in set(people.identities)])
    if people.num_classes < 2:
        raise ValueError(f"dataset {str(root)!r} holds {people.num_classes} person ({', '.join(people.identities)}); "
                         "verification pairs need at least two people, one sub-folder of images each")
    notes = []
    # A training card's validation people are often few: then fewer pairs, said in the notes, beat no report.
    counts = [n_pairs] + ([c for c in (300, 100, 40, 2 * n_folds) if c < n_pairs] if only is not None else [])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        for attempt, count in enumerate(counts):
            try:
                pairs = generate_pairs(people.by_identity(), count, seed, folds=n_folds)
                break
            except ValueError as exc:
                if attempt == len(counts) - 1:
                    raise ValueError(f"dataset {str(root)!r} ({people.num_classes} people, {len(people)} images): "
                                     f"{exc}") from None
    if count != n_pairs:
        notes.append(f"{people.num_classes} people could supply {count} distinct pairs, not the {n_pairs} asked for")
        n_pairs = count
    for warning in caught:
        notes.append(f"pair generation: {warning.message}")
        logger.warning("%s", warning.message)
    description = {"kind": "generated", "dataset": str(root), "images": str(root), "n_pairs": int(n_pairs),
                   "seed": int(seed), "folds": list(range(1, n_folds + 1)), **_pair_counts(pairs)}
    return _Protocol(pairs, root, description, notes)


def _pair_counts(pairs: Sequence[Any]) -> dict[str, int]:
    from edgeface_runtime.metrics import lfw_identities_in_folds

    same = sum(1 for p in pairs if p.same)
    people = lfw_identities_in_folds(pairs, {p.fold for p in pairs})
    return {"num_pairs": len(pairs), "num_same": same, "num_different": len(pairs) - same,
            "num_images": len({p.path_a for p in pairs} | {p.path_b for p in pairs}), "num_identities": len(people)}


def _check_images_exist(pairs: Sequence[Any], root: Path, source: str) -> None:
    unique = sorted({p.path_a for p in pairs} | {p.path_b for p in pairs})
    missing = [path for path in unique if not (root / path).is_file()]
    if missing:
        shown = ", ".join(repr(p) for p in missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise ValueError(f"{source} names {len(missing)} image(s) missing under {str(root)!r}: {shown}; pass the "
                         "folder the pairs' paths are relative to (for LFW: lfw-deepfunneled)")


# --------------------------------------------------------------------------- training identities


def _training_identities(models: _Models, *, with_validation: bool = True) -> tuple[set[str], list[str]]:
    """People the models saw in training (or fine-tuning), and where that was read from;
    ``with_validation``: also the people a card held out to pick the best epoch."""
    names: set[str] = set()
    sources: list[str] = []
    keras_files = {models.keras.path} if models.keras else set()
    keras_files |= {Path(m.source["path"]) for m in models.manifests if m.source.get("path")}
    for keras_file in sorted(keras_files):
        card = keras_file.parent / CARD_NAME
        if not card.is_file():
            continue
        try:
            data = json.loads(card.read_text(encoding="utf-8")).get("data", {})
        except (OSError, ValueError) as exc:
            raise ValueError(f"{card} cannot be read ({exc}); fix or remove it (it lists the training people, "
                             "which the report keeps out of the evaluation)") from None
        for part in ("train", "validation") if with_validation else ("train",):
            names.update((data.get(part) or {}).get("identity_names") or [])
        sources.append(str(card))
    for manifest in models.manifests:
        finetune = manifest.finetune_data or {}
        root = finetune.get("root")
        if finetune.get("identity_names"):
            names.update(finetune["identity_names"])
            sources.append(f"the fine-tuning people of {manifest.out_dir}")
        elif root and Path(root).is_dir():
            names.update(p.name for p in Path(root).iterdir() if p.is_dir() and not p.name.startswith("."))
            sources.append(f"{root} (fine-tuning data of {manifest.out_dir})")
    return names, sources


def _check_overlap(protocol: _Protocol, models: _Models, allow_overlap: bool,
                   validation_people: bool = False) -> list[str]:
    """``validation_people``: the protocol is, on purpose, the people a card held out for validation."""
    from edgeface_runtime.metrics import lfw_identities_in_folds

    trained, sources = _training_identities(models, with_validation=not validation_people)
    if not sources:
        return ["no training card (training_card.json beside model.keras) was found: that the evaluation people "
                "were not trained on is not checked"]
    evaluated = lfw_identities_in_folds(protocol.pairs, {p.fold for p in protocol.pairs})
    overlap = sorted(evaluated & trained)
    protocol.description["identity_disjoint_from"] = sources
    if not overlap:
        return []
    shown = ", ".join(overlap[:5]) + (f" and {len(overlap) - 5} more" if len(overlap) > 5 else "")
    message = (f"{len(overlap)} of the {len(evaluated)} people in the evaluation pairs were seen in training "
               f"({shown}; from {', '.join(sources)}): their accuracy is optimistic")
    logger.warning("WARNING: %s", message)
    if not allow_overlap:
        raise ValueError(f"{message}. Evaluate on people the model never saw (LFW: train outside folds 6-10 and "
                         "report folds 6-10), or pass allow_overlap=True (--allow-overlap) to report anyway")
    protocol.description["training_overlap"] = overlap
    return [f"WARNING: {message} (reported with --allow-overlap)"]


# --------------------------------------------------------------------------- crops and embeddings


def _make_crops(protocol: _Protocol, keys: Sequence[tuple[tuple[int, int], str]], detector: Any,
                max_unreadable: float, progress: Progress | None, no_face: str = "skip",
                ) -> tuple[dict, list[str], dict]:
    """``{crop key: (paths, uint8 crops)}`` over the images every key could read (and, with
    ``no_face="skip"``, found a face in); notes; and what happened to images without a face."""
    from concurrent.futures import ThreadPoolExecutor

    from edgeface_runtime import ImageDecodeError

    from ._data import NO_FACE_REASON, CropMaker, NoFaceDetected, check_unreadable

    unique = sorted({p.path_a for p in protocol.pairs} | {p.path_b for p in protocol.pairs})
    makers = {key: CropMaker(str(protocol.root), key[0], align=key[1], detector=detector, no_face=no_face)
              for key in keys}
    total = len(unique) * len(makers)
    done = 0
    crops: dict[Any, dict[str, np.ndarray]] = {key: {} for key in makers}
    failed: dict[str, str] = {}
    for key, maker in makers.items():
        def one(path: str, maker=maker):
            try:
                return maker(path), None
            except NoFaceDetected:
                return None, NO_FACE_REASON
            except (ImageDecodeError, OSError, ValueError) as exc:
                return None, str(exc).splitlines()[0] if str(exc) else type(exc).__name__

        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:  # Pillow releases the GIL
            for path, (array, reason) in zip(unique, pool.map(one, unique, chunksize=16)):
                if array is None:
                    failed.setdefault(path, reason or "unreadable")
                else:
                    crops[key][path] = array
                done += 1
                if progress and (done % 64 == 0 or done == total):
                    progress("crop images", done, total)
    unreadable = {p: r for p, r in failed.items() if r != NO_FACE_REASON}
    check_unreadable(len(unreadable), len(unique), max_unreadable, sorted(unreadable.items()))
    paths = [p for p in unique if p not in failed]
    notes = []
    if unreadable:
        notes.append(f"{len(unreadable)} of {len(unique)} images could not be read; the pairs using them are left out")
        logger.warning(notes[-1])
    summary: dict[str, Any] = {"policy": no_face, "images": len(unique), "no_face": 0, "by_crop": {}}
    for key, maker in makers.items():
        if maker.align:
            summary["by_crop"][f"{key[0][0]}x{key[0][1]} {key[1]}"] = maker.no_face
            summary["no_face"] = max(summary["no_face"], maker.no_face)
        if maker.no_face:
            what = ("left out with their pairs, for every variant, as the device refuses them" if no_face == "skip"
                    else "centre-cropped and kept (--no-face center)")
            notes.append(f"no face found in {maker.no_face} of {len(unique)} images at {key[0][0]}x{key[0][1]}: "
                         f"{what}")
            logger.warning(notes[-1])
    return {key: (paths, np.stack([crops[key][p] for p in paths])) for key in makers}, notes, summary


def _embed_keras(source: _Source, crops: np.ndarray, progress: Progress | None) -> tuple[np.ndarray, Any]:
    from ._data import embed_crops
    from ._modelio import load_model

    model, _ = load_model(source.path)
    chunk = 256
    parts = []
    for start in range(0, len(crops), chunk):
        parts.append(embed_crops(model, crops[start:start + chunk], source.metadata.preprocess, batch_size=chunk))
        if progress:
            progress(f"embed {source.name}", min(start + chunk, len(crops)), len(crops))
    return np.concatenate(parts), model


def _embed_tflite(source: _Source, crops: np.ndarray, threads: int, progress: Progress | None) -> np.ndarray:
    from edgeface_runtime import Embedder

    out = np.zeros((len(crops), source.metadata.embedding_size), np.float32)
    with Embedder.from_path(source.path, num_threads=threads) as embedder:
        for i, crop in enumerate(crops):
            out[i] = embedder.embed(crop)
            if progress and ((i + 1) % 64 == 0 or i + 1 == len(crops)):
                progress(f"embed {source.name}", i + 1, len(crops))
    return out


def _score(pairs: Sequence[Any], paths: Sequence[str], embeddings: np.ndarray) -> dict[str, Any]:
    """Verification numbers of one model over the pairs whose images were read."""
    from edgeface_runtime.metrics import roc_curve, verification_report

    from ._evaluate import pair_scores

    usable, scores, labels, folds = pair_scores(pairs, paths, embeddings)
    report = verification_report(scores, labels, folds=folds if len(np.unique(folds)) > 1 else 10, fars=FARS)
    report["skipped_pairs"] = len(pairs) - len(usable)
    far, tar, _ = roc_curve(scores, labels)
    return {"report": report, "scores": scores, "labels": labels, "roc": (far, tar)}


def _stored_threshold(metadata: Any, scores: np.ndarray, labels: np.ndarray) -> dict[str, Any] | None:
    """The threshold the model's metadata carries (as a device uses it) and what it gives on these pairs."""
    from edgeface_runtime.metrics import false_accept_rate

    if not metadata.thresholds:
        return None
    threshold, far = metadata.threshold_for(None)
    return {"far": far, "threshold": threshold, "achieved_far": false_accept_rate(scores[~labels], threshold),
            "tar": float(np.mean(scores[labels].astype(np.float64) >= threshold))}


def _file_sizes(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    # mtime=0: the same file always gives the same size (the header would otherwise hold a timestamp).
    return len(data), len(gzip.compress(data, compresslevel=9, mtime=0))


# --------------------------------------------------------------------------- recommendation


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    if n >= 1e6:
        return f"{n / 1e6:.2f} MB"
    return f"{n / 1e3:.1f} kB" if n >= 1e3 else f"{n} B"


def _pct(value: float) -> str:
    return f"{value * 100:.2f}"




def _recommend(rows: Sequence[VariantRow], tolerance: float) -> dict[str, Any]:
    best = max(rows, key=lambda r: r.accuracy)  # ties: the first row, the Keras reference when present
    floor = best.accuracy - tolerance / 100.0
    deployable = [r for r in rows if r.kind == "tflite"]
    # Accuracies are means of fold fractions: compare with a hair of slack for float rounding.
    within = [r for r in deployable if r.accuracy >= floor - 1e-12]
    out: dict[str, Any] = {"variant": None, "tolerance_points": tolerance, "best": best.name,
                           "best_accuracy": best.accuracy, "rule": "smallest .tflite file within the tolerance "
                           "of the best accuracy (latency is not considered)"}
    if within:
        pick = min(within, key=lambda r: (r.bytes, r.gzip_bytes, r.name))
        out.update(variant=pick.name, accuracy=pick.accuracy, bytes=pick.bytes)
        reference = "it is the most accurate" if pick is best else f"best: `{best.name}`, {_pct(best.accuracy)} %"
        out["text"] = (f"`{pick.name}` ({_size(pick.bytes)}, accuracy {_pct(pick.accuracy)} %), the smallest "
                       f"variant within {tolerance:g} points of the best accuracy ({reference})")
    elif deployable:
        top = max(deployable, key=lambda r: (r.accuracy, -r.bytes))
        out["text"] = (f"none: no variant is within {tolerance:g} points of `{best.name}` ({_pct(best.accuracy)} %); "
                       f"the most accurate is `{top.name}` ({_pct(top.accuracy)} %). Convert with fine-tuning or "
                       "a less aggressive recipe")
    else:
        out["text"] = "none: no .tflite variant to deploy; convert the model with `edgeface convert`"
    return out


# --------------------------------------------------------------------------- entry point


def build_report(
    models: Sequence[str | os.PathLike] | str | os.PathLike,
    *,
    options: ReportOptions | None = None,
    progress: Progress | None = None,
    **keywords: Any,
) -> Report:
    """Compare a Keras model and/or ``edgeface convert`` folders on one verification protocol.

    ``options``: a :class:`ReportOptions` (each option's default and help live there); the
    keyword form ``build_report(models, pairs=..., out_dir=...)`` is the same call, each keyword
    setting that option (``out_dir`` is ``out``).

    ``models``: ``model.keras`` (or its ``edgeface train`` folder), convert output folders
    (several are compared in one report) and ``.tflite`` files. Without a Keras model, the
    one the folders' manifests name is used when it is still there, unchanged.
    Protocol: ``pairs`` + ``images`` (LFW ``pairs.txt``; ``folds``, 1-based, default 6-10;
    None: all) or ``dataset`` (one sub-folder per person; ``n_pairs`` pairs in
    ``dataset_folds`` folds drawn with ``seed``; ``people``: only these sub-folders, e.g. the
    people a training card held out). People the training card lists are refused
    unless ``allow_overlap``. ``latency_runs`` 0 skips timing; ``tolerance`` is in accuracy
    points; ``detector`` is a BlazeFace ``.tflite`` for models with alignment "arcface";
    ``no_face``: images in which it finds no face are left out with their pairs ("skip", as the
    device refuses them) or centre-cropped ("center"), counted in the notes and settings;
    ``progress(stage, done, total)`` is called as work advances. With ``out`` the
    report is also written there (:meth:`Report.write`). See the module docstring for how
    every number is measured.
    """
    from ._data import DEFAULT_MAX_UNREADABLE

    if "out_dir" in keywords:  # the keyword's name before the options had one name per flag
        keywords["out"] = keywords.pop("out_dir")
    opts = merged(ReportOptions, options, "report", **keywords)
    pairs, images, dataset, people, no_face = opts.pairs, opts.images, opts.dataset, opts.people, opts.no_face
    latency_runs, tolerance, detector, out_dir = opts.latency_runs, opts.tolerance, opts.detector, opts.out
    folds: Any = opts.folds  # folds, None (all) or "auto", as _protocol takes them
    if isinstance(latency_runs, bool) or not isinstance(latency_runs, int) or latency_runs < 0:
        raise ValueError(f"latency_runs must be a whole number >= 0 (0 skips timing), got {latency_runs!r}")
    if not isinstance(tolerance, (int, float)) or not 0.0 <= float(tolerance) <= 100.0:
        raise ValueError(f"tolerance is in accuracy points, between 0 and 100 (e.g. 0.5), got {tolerance!r}")
    max_unreadable = DEFAULT_MAX_UNREADABLE if opts.max_unreadable is None else float(opts.max_unreadable)

    protocol = _protocol(pairs, images, dataset, opts.n_pairs, opts.seed, folds, opts.dataset_folds, people)
    resolved = _resolve_models(models)
    notes = list(resolved.notes) + protocol.notes
    notes += _check_overlap(protocol, resolved, opts.allow_overlap, validation_people=people is not None)
    if people is not None:
        notes.append("the evaluation people are the ones training held out for validation: never trained on, but "
                     "they picked the best epoch, so the accuracy is slightly optimistic")
    sources = ([resolved.keras] if resolved.keras else []) + resolved.variants
    keys = sorted({s.crop_key for s in sources})
    crops, crop_notes, no_face_counts = _make_crops(protocol, keys, detector, max_unreadable, progress, no_face)
    notes += crop_notes

    threads = sorted({1, usable_cores()})
    rows: list[VariantRow] = []
    reference: np.ndarray | None = None
    for source in sources:
        paths, source_crops = crops[source.crop_key]
        size, gzip_size = _file_sizes(source.path)
        if source.kind == "keras":
            embeddings, model = _embed_keras(source, source_crops, progress)
            from edgeface_converters import kernel_sparsity

            source.parameters, source.sparsity = int(model.count_params()), round(kernel_sparsity(model), 4)
            reference = embeddings
        else:
            embeddings = _embed_tflite(source, source_crops, threads[-1], progress)
        scored = _score(protocol.pairs, paths, embeddings)
        row = VariantRow(source.name, source.kind, str(source.path), source.technique, size, gzip_size,
                         source.parameters, source.sparsity, scored["report"], folder=source.folder,
                         roc=scored["roc"],
                         threshold=_stored_threshold(source.metadata, scored["scores"], scored["labels"]))
        if reference is not None and resolved.keras is not None and source.kind != "keras":
            if source.crop_key == resolved.keras.crop_key and embeddings.shape == reference.shape:
                cosine = np.sum(embeddings * reference, axis=1)
                row.cosine_to_keras = {"mean": round(float(cosine.mean()), 6), "min": round(float(cosine.min()), 6),
                                       "n": int(cosine.size)}
            else:
                notes.append(f"{source.name} takes other crops or embeddings than the Keras model: no cosine to it")
        rows.append(row)

    if latency_runs:
        tflite_rows = [(row, source) for row, source in zip(rows, sources) if row.kind == "tflite"]
        for done, (row, source) in enumerate(tflite_rows):
            if progress:
                progress("time variants", done, len(tflite_rows))
            try:
                measured = measure_variant(source.path, crops[source.crop_key][1], runs=latency_runs, threads=threads)
            except RuntimeError as exc:
                notes.append(f"{row.name}: latency not measured: {exc}")
                logger.warning(notes[-1])
                continue
            row.latency = measured["latency"]
            row.memory = {"peak_rss_mb": measured["peak_rss_mb"], "model_rss_mb": measured["model_rss_mb"]}
        if progress:
            progress("time variants", len(tflite_rows), len(tflite_rows))

    settings = {"tolerance_points": float(tolerance), "latency_runs": latency_runs, "warmup_runs": WARMUP_RUNS,
                "threads": threads, "far": REPORT_FAR, "crops": [f"{k[0][0]}x{k[0][1]} {k[1]}" for k in keys],
                "no_face": no_face_counts,
                "memory": "peak RSS (Linux VmHWM, else ru_maxrss) of a fresh subprocess running only "
                          "edgeface_runtime; model share = that peak minus the peak before loading the model"}
    report = Report(rows, protocol.description, device_info(), _recommend(rows, float(tolerance)), settings, notes)
    if out_dir is not None:
        report.write(out_dir)
    return report
