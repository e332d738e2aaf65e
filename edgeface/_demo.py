"""`edgeface demo`: the whole product, end to end, on LFW.

train (transfer from ImageNet weights, on LFW people outside folds 6-10, detector-aligned
crops) → convert (float32 and full int8; the full run adds float16, dynamic range, pruned
and QAT int8) with thresholds calibrated on folds 6-10 → report → enroll a few folds 6-10
people into a gallery and verify/identify their other photos (and strangers') through the
TensorFlow-free runtime. Every artefact is written under ``out``.

What is not given is taken from the cache, and downloaded into it (checksum-verified) when
missing and ``download`` allows: LFW, the MobileNet v1 0.25 ImageNet weights, the detector.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

logger = logging.getLogger(__name__)

EVAL_FOLDS = (6, 7, 8, 9, 10)


@dataclass
class DemoOptions:
    """``data``: the LFW folder, or a data home holding ``lfw/`` (default ``$EDGEFACE_DATA_HOME``, else
    the cache). ``weights``: None (the pinned ImageNet file from the cache), "imagenet" (Keras'
    download) or a local MobileNet v1 0.25 ``.h5``. ``detector``: a BlazeFace short-range
    ``.tflite`` (default: the runtime's cached file). ``download``: fetch what the cache lacks;
    ``mirrors``: base URLs or folders tried first (None: ``$EDGEFACE_MIRRORS``)."""

    out: Path = Path("runs/demo")
    data: Path | None = None
    weights: str | None = None
    detector: Path | None = None
    download: bool = True
    mirrors: list[str] | None = None
    quick: bool = False
    people: int = 5
    seed: int = 0
    epochs_frozen: int | None = None  # None: the plan's (quick or full)
    epochs: int | None = None


@dataclass
class DemoResult:
    out: Path
    artefacts: dict[str, Path]
    report_rows: list[dict[str, Any]]
    device: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)


def _plan(quick: bool) -> dict[str, Any]:
    if quick:  # a few minutes on two cores: the pipeline, not the accuracy
        return {"epochs_frozen": 1, "epochs": 2, "variants": "float32,int8", "latency_runs": 20,
                "calibration_images": 200}
    # ≤ 30 minutes on two cores: fine-tuning epochs took 33-55 s here and pruned-int8's 1000 fine-tuning
    # steps about 4 minutes; qat-int8 is left out (on these models it agreed less with float than plain int8).
    return {"epochs_frozen": 3, "epochs": 20, "variants": "float32,float16,dynamic,int8,pruned-int8",
            "latency_runs": 100, "calibration_images": 400}


def train_config(plan: dict[str, Any], *, lfw: Any, weights: Any, detector: Any, out: Any, seed: int) -> Any:
    """The benchmark recipe with the plan's epochs (from_dict: values equal to a default still win)."""
    from ._train import TrainConfig

    return TrainConfig.from_dict({
        "recipe": "lfw-mobilenet-v1-025", "data": str(lfw), "weights": weights, "align": True, "detector": detector,
        "epochs_frozen": plan["epochs_frozen"], "epochs": plan["epochs"], "out": str(out), "seed": seed,
    })


def write_eval_pairs(lfw: Path, destination: Path, folds: Sequence[int] = EVAL_FOLDS) -> Path:
    """The LFW pairs of ``folds`` as their own LFW-format file (fold k of it = the k-th chosen fold)."""
    lines = (lfw / "pairs.txt").read_text().splitlines()
    count, per_fold = (int(v) for v in lines[0].split())
    body = lines[1:]
    chosen = []
    for fold in folds:
        chosen.extend(body[(fold - 1) * 2 * per_fold: fold * 2 * per_fold])
    destination.write_text(f"{len(folds)}\t{per_fold}\n" + "\n".join(chosen) + "\n")
    return destination


def _write_calibration_crops(train_dataset: Any, crop: Callable[[str], Any], folder: Path, count: int,
                             seed: int) -> Path:
    """A folder of aligned face crops from training people: what int8 calibration should see."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in rng.permutation(len(train_dataset.paths))[:count]:
        Image.fromarray(crop(train_dataset.paths[i])).save(folder / f"crop_{int(i):05d}.png")
    return folder


def _device_check(model: Path, detector: Path | None, lfw: Path, out: Path, people: int) -> dict[str, Any]:
    """Enroll ``people`` folds 6-10 people from 2 photos each; identify their other photos and strangers'."""
    from edgeface_runtime import FaceVerifier, NoFaceError
    from edgeface_runtime.metrics import lfw_identities_in_folds, read_pairs

    from ._data import lfw_image_root

    root = lfw_image_root(lfw)
    if root is None:  # resolve_lfw checked the folder; only a copy changed since then gets here
        raise ValueError(f"no LFW image folder (lfw-deepfunneled or lfw) under {lfw}")
    names = sorted(lfw_identities_in_folds(read_pairs(lfw / "pairs.txt"), EVAL_FOLDS))
    by_count = sorted(names, key=lambda n: (-len(list((root / n).glob("*.jpg"))), n))
    enrolled, strangers = by_count[:people], by_count[people:2 * people]
    gallery = out / "gallery.db"
    if gallery.exists():
        gallery.unlink()
    photos = {n: sorted((root / n).glob("*.jpg")) for n in enrolled + strangers}
    outcome: dict[str, Any] = {"genuine_accepted": 0, "genuine_total": 0, "genuine_correct_name": 0,
                               "genuine_ranked_first": 0, "stranger_accepted": 0, "stranger_total": 0, "no_face": 0}
    started = time.perf_counter()
    with FaceVerifier.from_path(model, detector_path=detector, gallery_path=gallery) as verifier:
        for name in enrolled:
            verifier.enroll(name, [str(p) for p in photos[name][:2]])
        for name in enrolled + strangers:
            probes = photos[name][2:5] if name in enrolled else photos[name][:3]
            for probe in probes:
                try:
                    result = verifier.identify(str(probe))
                except NoFaceError:
                    outcome["no_face"] += 1
                    continue
                best = result.best
                if name in enrolled:
                    outcome["genuine_total"] += 1
                    # closed-set rank 1, threshold aside: separates "wrong person" from "too strict"
                    outcome["genuine_ranked_first"] += bool(result.matches) and result.matches[0].name == name
                    outcome["genuine_accepted"] += best is not None
                    outcome["genuine_correct_name"] += best is not None and best.name == name
                else:
                    outcome["stranger_total"] += 1
                    outcome["stranger_accepted"] += best is not None
        same = verifier.verify(str(photos[enrolled[0]][0]), str(photos[enrolled[0]][1]))
        different = verifier.verify(str(photos[enrolled[0]][0]), str(photos[strangers[0]][0]))
        threshold, far = verifier.threshold()
    outcome.update(enrolled=enrolled, strangers=strangers, gallery=str(gallery), threshold=threshold, far=far,
                   verify_same={"pair": [photos[enrolled[0]][0].name, photos[enrolled[0]][1].name],
                                "same": same.same, "score": same.score},
                   verify_different={"pair": [photos[enrolled[0]][0].name, photos[strangers[0]][0].name],
                                     "same": different.same, "score": different.score},
                   seconds=time.perf_counter() - started)
    return outcome


def _default_model_check(detector: Path | None, lfw: Path, out: Path, people: int) -> dict[str, Any] | None:
    """The device check with the runtime's bundled model: what a door gets without training anything.
    None when this runtime installation carries no default model."""
    from edgeface_runtime import bundled_path

    model = bundled_path("default-model")
    if model is None:
        logger.warning("this edgeface-runtime carries no default model; the demo's device check runs on the trained "
                       "model only")
        return None
    folder = out / "default_model"
    folder.mkdir(parents=True, exist_ok=True)
    outcome = _device_check(model, detector, lfw, folder, people)
    outcome["model"] = str(model)
    return outcome


def run_demo(options: DemoOptions, *, progress: Callable[[str], None] = logger.info,
             download_progress: Callable[[str, int, int | None, str], None] | None = None) -> DemoResult:
    """Run the pipeline; ``progress`` receives one line per stage, ``download_progress`` byte counts."""
    from edgeface_converters import convert, format_table

    from ._data import CropMaker
    from ._datasets import resolve_detector, resolve_lfw, resolve_weights
    from ._report import build_report
    from ._train import train

    plan = _plan(options.quick)
    for key in ("epochs_frozen", "epochs"):
        if getattr(options, key) is not None:
            plan[key] = getattr(options, key)
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    fetch: dict[str, Any] = {"download": options.download, "mirrors": options.mirrors, "progress": download_progress}
    lfw = resolve_lfw(options.data, **fetch)
    weights = resolve_weights(options.weights, **fetch)
    detector_path = resolve_detector(options.detector, **fetch)
    detector = str(detector_path)
    progress(f"data: LFW {lfw}\n      weights {weights}\n      detector {detector}")
    seconds["data"] = time.perf_counter() - t0

    progress(f"[1/4] training MobileNet v1 0.25 (weights: {weights}) on LFW people outside folds 6-10")
    t0 = time.perf_counter()
    config = train_config(plan, lfw=lfw, weights=weights, detector=detector, out=out / "train", seed=options.seed)
    trained = train(config)
    seconds["train"] = time.perf_counter() - t0

    progress("[2/4] converting to TFLite, thresholds calibrated at FAR 1e-3 on folds 6-10")
    t0 = time.perf_counter()
    from ._data import load_lfw, lfw_image_root

    train_people, _ = load_lfw(lfw)
    # Quantization's representative images, not a measurement: a centre crop of a no-face image is fine.
    crop = CropMaker(str(lfw_image_root(lfw)), config.input_size, align=True, detector=detector, no_face="center")
    calibration = _write_calibration_crops(train_people, crop, out / "calibration", plan["calibration_images"],
                                           options.seed)
    eval_pairs = write_eval_pairs(lfw, out / "pairs_folds_6-10.txt")
    finetune = None
    if any(v in plan["variants"] for v in ("pruned", "qat", "clustered")):
        finetune = _finetune_data(train_people, config, detector, options.seed)
    from edgeface_runtime import FaceDetector

    face_detector = FaceDetector.from_path(detector_path)
    manifest = convert(trained.model_path, out / "variants", plan["variants"], calibration=calibration,
                       data=finetune, calibration_pairs=eval_pairs, pairs_root=lfw_image_root(lfw),
                       face_detector=face_detector, seed=options.seed)
    progress(format_table(manifest))
    seconds["convert"] = time.perf_counter() - t0

    progress("[3/4] report: accuracy, size and latency of every variant on folds 6-10")
    t0 = time.perf_counter()
    report = build_report([trained.model_path, out / "variants"], pairs=eval_pairs, images=lfw_image_root(lfw),
                          folds=None, latency_runs=plan["latency_runs"], detector=detector)
    written = report.write(out / "report")
    progress(report.to_markdown())
    seconds["report"] = time.perf_counter() - t0

    shipped = device_variant(manifest.variants)
    if shipped is None:
        raise RuntimeError("no variant passed its checks; see " + str(out / "variants" / "manifest.json"))
    progress(f"[4/4] device: enroll, identify and verify with {shipped.name} through edgeface_runtime")
    device = _device_check(out / "variants" / shipped.file, detector_path, lfw, out, options.people)
    device["variant"] = shipped.name
    seconds["device"] = device["seconds"]
    default = _default_model_check(detector_path, lfw, out, options.people)
    if default is not None:
        progress("      and the same with the default model that ships with edgeface-runtime (SFace)")
        device["default_model"] = default
        seconds["device"] += default["seconds"]

    artefacts = {"model": trained.model_path, "training card": trained.card_path,
                 "variants": out / "variants", "manifest": out / "variants" / "manifest.json",
                 "report (markdown)": written["report.md"], "report (html)": written["report.html"],
                 "gallery": Path(device["gallery"])}
    rows = [row.to_dict() if hasattr(row, "to_dict") else dict(row.__dict__) for row in report.rows]
    return DemoResult(out, artefacts, rows, device, seconds)


def device_variant(records: Sequence[Any]) -> Any:
    """The variant a device should run: the smallest full-integer file that passed every check, else the
    smallest file that passed (None if none did). Files within 1 % of the smallest count as the same size,
    and among them the one that agrees best with the source model wins.

    Full int8 even when a dynamic-range file is smaller (it was, by 10 %, for the demo's model): integer-only
    kernels are what ARM CPUs and NPUs run fast, while dynamic-range files quantize activations on the fly
    (slower than int8 with two threads in the demo's report). A pruned file is as large as the plain one
    (its zeros only compress), so it is shipped only when it agrees better.
    """
    from edgeface_converters import VARIANTS

    passed = [r for r in records if r.ok]
    integer = [r for r in passed if r.name in VARIANTS and VARIANTS[r.name].quantization == "int8"]
    pool = integer or passed
    if not pool:
        return None
    smallest = min(r.bytes or 0 for r in pool)
    tied = [r for r in pool if (r.bytes or 0) <= smallest * 1.01]
    return max(tied, key=lambda r: (r.agreement or {}).get("mean", 0.0))


def _finetune_data(train_people: Any, config: Any, detector: str | None, seed: int):
    """Fine-tuning data for the pruned/QAT variants: the training people only (never folds 6-10)."""
    from edgeface_converters import FineTuneData

    from ._backbones import get_backbone_spec
    from ._data import CropMaker, decode_dataset, make_train_dataset

    preprocess = get_backbone_spec(config.backbone).preprocess_for(config.input_size)
    crop = CropMaker(train_people.root, config.input_size, align=True, detector=detector)
    people, crops = decode_dataset(train_people, crop)
    dataset = make_train_dataset(people, batch_size=32, preprocess=preprocess, crops=crops, seed=seed)
    return FineTuneData(dataset=dataset, num_classes=people.num_classes,
                        describe={"source": "LFW people outside folds 6-10", "images": len(people)})


def format_summary(result: DemoResult) -> str:
    d = result.device
    lines = ["", "edgeface demo: done", ""]
    lines += [f"  {name:<18} {path}" for name, path in result.artefacts.items()]
    lines += _device_lines(f"the trained {d['variant']} model", d)
    if d.get("default_model"):
        lines += _device_lines("the default model bundled with edgeface-runtime", d["default_model"])
    lines += ["", "time: " + ", ".join(f"{k} {v:.0f} s" for k, v in result.seconds.items())]
    return "\n".join(lines)


def _device_lines(what: str, d: dict[str, Any]) -> list[str]:
    return ["", f"device check with {what} (threshold {d['threshold']:.4f} at FAR {d['far']:g}):",
            f"  enrolled {len(d['enrolled'])} people (2 photos each): {', '.join(d['enrolled'])}",
            f"  their other photos accepted: {d['genuine_accepted']}/{d['genuine_total']} "
            f"(right name: {d['genuine_correct_name']}; right person ranked first, threshold aside: "
            f"{d['genuine_ranked_first']})",
            f"  strangers' photos accepted: {d['stranger_accepted']}/{d['stranger_total']}",
            f"  verify {d['verify_same']['pair'][0]} vs {d['verify_same']['pair'][1]}: "
            f"{'SAME' if d['verify_same']['same'] else 'DIFFERENT'} ({d['verify_same']['score']:.3f})",
            f"  verify {d['verify_different']['pair'][0]} vs {d['verify_different']['pair'][1]}: "
            f"{'SAME' if d['verify_different']['same'] else 'DIFFERENT'} ({d['verify_different']['score']:.3f})"]
