"""`edgeface bench`: per-stage latency of the device pipeline, measured, not asserted.

Stages: decode (JPEG file → RGB) → detect (BlazeFace) → align → embed → match (1:N against
a synthetic gallery). Reports median and p90 per stage at one thread and at all cores,
per LFW-sized JPEG and per 640×480 camera frame, identify cost against 1,000 and 10,000
people, and the process's peak memory.
"""

from __future__ import annotations

import itertools
import os
import platform
import resource
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

STAGES = ("decode", "detect", "align", "embed", "match", "total")


def _peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux


def latency_summary(samples: Sequence[float]) -> dict[str, float]:
    """``{"median_ms", "p90_ms", "n"}`` of latencies in milliseconds, rounded to microseconds:
    the form of every timing ``edgeface bench`` and ``edgeface report`` print."""
    values = np.asarray(samples, dtype=np.float64)
    return {"median_ms": round(float(np.median(values)), 3), "p90_ms": round(float(np.percentile(values, 90)), 3),
            "n": int(values.size)}


def _camera_frames(paths: Sequence[Path], seed: int = 0) -> Iterator[np.ndarray]:
    """640×480 BGR frames: an LFW photo placed on a textured background, as a camera would see it.

    Made one at a time (outside the timed section), so the benchmark's own inputs do not
    count towards the pipeline's peak memory."""
    from ._images import load_image

    rng = np.random.default_rng(seed)
    for path in paths:
        face = load_image(path)
        frame = rng.integers(40, 90, (480, 640, 3), dtype=np.uint8)  # the background's channel order is moot
        y, x = rng.integers(0, 480 - face.shape[0]), rng.integers(0, 640 - face.shape[1])
        frame[y:y + face.shape[0], x:x + face.shape[1]] = face[..., ::-1]  # BGR, without a second frame
        yield frame


def _run_pipeline(verifier: Any, items: Iterable[Any], color_order: str, gallery: tuple | None) -> dict[str, Any]:
    from ._matching import identify_embeddings

    per_stage: dict[str, list[float]] = {stage: [] for stage in STAGES}
    cpu: list[float] = []
    misses = 0
    for item in items:
        cpu_start = time.process_time()
        start = time.perf_counter()
        result = verifier.process_frame(item, color_order=color_order)
        t = dict(result.timings_ms)
        if result.faces and gallery is not None:
            t0 = time.perf_counter()
            identify_embeddings(result.faces[0].embedding, gallery[0], gallery[1], top_k=1, threshold=0.5)
            t["match"] = (time.perf_counter() - t0) * 1e3
        t["total"] = (time.perf_counter() - start) * 1e3
        cpu_ms = (time.process_time() - cpu_start) * 1e3
        if not result.faces:
            misses += 1
            continue
        for stage in STAGES:
            per_stage[stage].append(t.get(stage, 0.0))
        cpu.append(cpu_ms)
    # CPU time of the whole process per image (all threads): unlike the wall-clock stages it
    # does not count time spent waiting for a core, so it is the steadier figure on a busy machine.
    return {"stages": {s: latency_summary(v) for s, v in per_stage.items() if v}, "no_face": misses,
            "cpu": latency_summary(cpu) if cpu else None}


def _synthetic_gallery(people: int, dim: int, seed: int = 0) -> tuple[np.ndarray, Any]:
    """One template per person, grouped once, as a loaded :class:`Gallery` holds them."""
    from ._matching import TemplateGroups

    rng = np.random.default_rng(seed)
    # Drawn as float32 and normalised without a squared copy: the float64 draw, its float32
    # cast and np.linalg.norm's temporary were three transients the size of the gallery or
    # twice it, counted in the peak memory this benchmark reports.
    templates = rng.standard_normal((people, dim), dtype=np.float32)
    templates /= np.sqrt(np.einsum("ij,ij->i", templates, templates))[:, None]
    return templates, TemplateGroups.from_labels([f"person_{i:05d}" for i in range(people)])


def identify_cost(dim: int, sizes: Sequence[int], repeats: int = 200) -> dict[str, Any]:
    from ._matching import identify_embeddings

    out = {}
    rng = np.random.default_rng(1)
    for size in sizes:
        templates, groups = _synthetic_gallery(size, dim)
        probes = rng.standard_normal((repeats, dim), dtype=np.float32)
        probes /= np.linalg.norm(probes, axis=1, keepdims=True)
        samples = []
        for probe in probes:
            t0 = time.perf_counter()
            identify_embeddings(probe, templates, groups, top_k=5, threshold=0.5)
            samples.append((time.perf_counter() - t0) * 1e3)
        out[str(size)] = latency_summary(samples)
    return out


def _jpegs_in_order(folder: Path) -> Iterator[Path]:
    """The ``*.jpg`` files under ``folder`` in ``sorted(folder.rglob("*.jpg"))`` order, listed
    lazily: sorting all of LFW's 13,233 paths up front held several MB of path objects,
    which counted in the peak memory this benchmark reports."""
    try:
        entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
    except (FileNotFoundError, NotADirectoryError):
        return
    for entry in entries:
        if entry.is_dir() and not entry.is_symlink():  # rglob does not descend into linked folders either
            yield from _jpegs_in_order(Path(entry.path))
        elif entry.name.endswith(".jpg") and entry.is_file():
            yield Path(entry.path)


def _best_of(passes: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The pass with the lowest median total (timeit's rule: on a shared machine the slower passes
    measure other processes), with every pass's median total beside it."""
    timed = [p for p in passes if "total" in p["stages"]]
    best = dict(min(timed, key=lambda p: p["stages"]["total"]["median_ms"]) if timed else passes[0])
    best["pass_totals_ms"] = [p["stages"]["total"]["median_ms"] if "total" in p["stages"] else None for p in passes]
    return best


def run_bench(model_path: str | os.PathLike, images: str | os.PathLike, *, detector_path: Any = None,
              count: int = 200, gallery_sizes: Sequence[int] = (1000, 10000), warmup: int = 5,
              detector_sizes: Sequence[int | None] = (None,), repeat: int = 1) -> dict[str, Any]:
    """Times the pipeline at one thread and at all cores, once per detector input size
    (None: the model's own); runs are keyed ``"1_thread"`` or ``"1_thread_detector_96"``.

    ``repeat`` times each run that many passes over the same images and keeps the fastest pass
    (by median total), listing every pass's median total in ``pass_totals_ms``."""
    from ._interpreter import select_backend
    from ._pipeline import FaceVerifier

    if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 1:
        raise ValueError(f"repeat must be a positive number of passes, got {repeat!r}")
    root = Path(images)
    paths = list(itertools.islice(_jpegs_in_order(root), count + warmup))
    if len(paths) < warmup + 1:
        raise ValueError(f"need at least {warmup + 1} JPEG images under {root}, found {len(paths)}")
    backend = select_backend()
    result: dict[str, Any] = {
        "device": {"machine": platform.machine(), "processor": platform.processor() or platform.machine(),
                   "cpus": os.cpu_count(), "python": platform.python_version(),
                   "interpreter": f"{backend.name} {backend.version}"},
        "model": str(model_path), "images": len(paths) - warmup, "repeat": repeat, "runs": {},
    }
    for threads, size in itertools.product(sorted({1, os.cpu_count() or 1}), detector_sizes):
        with FaceVerifier.from_path(model_path, detector_path=detector_path, num_threads=threads,
                                    detector_input_size=size) as verifier:
            gallery = _synthetic_gallery(1000, verifier.embedder.embedding_size)
            _run_pipeline(verifier, [str(p) for p in paths[:warmup]], "RGB", gallery)
            jpegs = [str(p) for p in paths[warmup:]]
            result["runs"][f"{threads}_thread" + (f"_detector_{size}" if size else "")] = {
                "jpeg": _best_of([_run_pipeline(verifier, jpegs, "RGB", gallery) for _ in range(repeat)]),
                "frame_640x480": _best_of([_run_pipeline(verifier, _camera_frames(paths[warmup:]), "BGR", gallery)
                                           for _ in range(repeat)]),
            }
            dim = verifier.embedder.embedding_size
            result["model_bytes"] = os.path.getsize(model_path)
    result["peak_rss_pipeline_mb"] = _peak_rss_mb()  # before the synthetic galleries of identify_cost
    result["identify"] = identify_cost(dim, gallery_sizes)
    result["peak_rss_mb"] = _peak_rss_mb()
    return result


def format_bench(result: dict[str, Any]) -> str:
    """The text ``edgeface bench`` prints for a :func:`run_bench` result: a Markdown table of
    median / p90 ms per stage and run, then the identify cost and peak memory."""
    dev = result["device"]
    lines = [f"device: {dev['processor']} ({dev['cpus']} cpus), Python {dev['python']}, {dev['interpreter']}",
             f"model: {result['model']} ({result['model_bytes']:,} bytes); {result['images']} images",
             "", "| run | input | " + " | ".join(STAGES) + " | cpu |", "|---|---|" + "---|" * (len(STAGES) + 1)]
    for run, inputs in result["runs"].items():
        for kind, data in inputs.items():
            stats = [data["stages"].get(s) for s in STAGES] + [data.get("cpu")]
            cells = [f"{x['median_ms']:.2f} / {x['p90_ms']:.2f}" if x else "-" for x in stats]
            lines.append(f"| {run.replace('_', ' ')} | {kind} | " + " | ".join(cells) + " |")
    lines.append("(median / p90 ms per image; match = 1:N against 1,000 people; cpu = the process's CPU time)")
    repeat = result.get("repeat", 1)
    if repeat > 1:
        lines.append(f"(each row: the fastest of {repeat} passes by median total; every pass's median total:)")
        for run, inputs in result["runs"].items():
            for kind, data in inputs.items():
                totals = " ".join("-" if t is None else f"{t:.2f}" for t in data["pass_totals_ms"])
                lines.append(f"  {run.replace('_', ' ')}, {kind}: {totals}")
    lines.append("")
    for size, stats in result["identify"].items():
        lines.append(f"identify vs {int(size):,} people: median {stats['median_ms']:.3f} ms, "
                     f"p90 {stats['p90_ms']:.3f} ms")
    lines.append(f"peak memory (max RSS): {result['peak_rss_mb']} MB "
                 f"({result['peak_rss_pipeline_mb']} MB before the identify galleries)")
    return "\n".join(lines)
