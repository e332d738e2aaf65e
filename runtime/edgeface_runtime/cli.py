"""The ``edgeface`` command.

The runtime owns the typer app and its device commands. Installing the ``edgeface``
distribution adds the training commands through the ``edgeface.commands`` entry-point
group; without it, those names answer with the pip command that provides them. Commands
are thin: parse, call the library, turn its errors into a one-line message and exit code.
"""

from __future__ import annotations

import datetime
import functools
import json
import logging
import sys
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any, Callable, List, Optional

import typer

from ._errors import EdgefaceError

logger = logging.getLogger("edgeface_runtime.cli")

TRAINING_COMMANDS = {
    "train": "train a face-embedding model by transfer learning",
    "evaluate": "measure a model on a verification protocol",
    "convert": "compress a trained model into .tflite variants",
    "report": "compare variants: accuracy, size, latency",
    "demo": "run the whole pipeline end to end",
    "download": "fetch LFW, the ImageNet weights and the detector into the cache",
    "adapt": "adapt a model to a new target domain",
}
ENTRY_POINT_GROUP = "edgeface.commands"

app = typer.Typer(help="edgeface: face verification for Raspberry-Pi-class devices.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
gallery_app = typer.Typer(help="Inspect and edit a gallery of enrolled people.", no_args_is_help=True)
app.add_typer(gallery_app, name="gallery")


def handle_errors(func: Callable) -> Callable:
    """Turn the library's expected errors into one line on stderr and a documented exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except EdgefaceError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(exc.exit_code) from None
        except (ValueError, FileNotFoundError, ImportError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None

    return wrapper


def emit(data: Any, as_json: bool, text: str) -> None:
    typer.echo(json.dumps(data, indent=2, default=_jsonable) if as_json else text)


def _jsonable(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


ModelOpt = typer.Option(..., "--model", "-m", help="embedding model (.tflite with edgeface metadata)")
DetectorOpt = typer.Option(None, "--detector", help="BlazeFace .tflite (default: the cached official file)")
ThreadsOpt = typer.Option(1, "--threads", help="interpreter threads")
JsonOpt = typer.Option(False, "--json", help="machine-readable output")
NoDetectOpt = typer.Option(False, "--no-detect", help="images are already face crops: skip detection")
ThresholdOpt = typer.Option(None, "--threshold", help="cosine threshold (default: the model's, calibrated at FAR 1e-3)")


def _verifier(model: Path, detector: Optional[Path], threads: int, no_detect: bool, gallery: Optional[Path] = None,
              threshold: Optional[float] = None):
    from ._pipeline import FaceVerifier

    return FaceVerifier.from_path(model, detector_path=detector, detect=not no_detect, num_threads=threads,
                                  gallery_path=gallery, threshold=threshold)


@app.command()
@handle_errors
def verify(image_a: Path, image_b: Path, model: Path = ModelOpt, detector: Optional[Path] = DetectorOpt,
           threshold: Optional[float] = ThresholdOpt, no_detect: bool = NoDetectOpt, threads: int = ThreadsOpt,
           as_json: bool = JsonOpt) -> None:
    """1:1 — are two photos the same person? Exit code 0 if they are, 1 if not."""
    with _verifier(model, detector, threads, no_detect, threshold=threshold) as fv:
        result = fv.verify(image_a, image_b)
    far = f" (calibrated at FAR {result.far:g})" if result.far else ""
    emit({"same": result.same, "score": result.score, "threshold": result.threshold, "far": result.far},
         as_json, f"{'SAME' if result.same else 'DIFFERENT'} person: score {result.score:.4f}, "
                  f"threshold {result.threshold:.4f}{far}")
    raise typer.Exit(0 if result.same else 1)


@app.command()
@handle_errors
def enroll(name: str, images: List[Path], gallery: Path = typer.Option(..., "--gallery", "-g", help="gallery file (SQLite)"),
           model: Path = ModelOpt, detector: Optional[Path] = DetectorOpt, replace: bool = typer.Option(
               False, "--replace", help="re-enroll: replace this person's templates"),
           no_detect: bool = NoDetectOpt, threads: int = ThreadsOpt, as_json: bool = JsonOpt) -> None:
    """Enroll a person from one or more photos (one transaction: all or nothing)."""
    with _verifier(model, detector, threads, no_detect, gallery=gallery) as fv:
        count = fv.enroll(name, [str(p) for p in images], replace=replace)
    emit({"name": name, "templates": count, "gallery": str(gallery)}, as_json,
         f"enrolled {name!r} with {count} template(s) in {gallery}")


@app.command()
@handle_errors
def identify(image: Path, gallery: Path = typer.Option(..., "--gallery", "-g"), model: Path = ModelOpt,
             detector: Optional[Path] = DetectorOpt, top_k: int = typer.Option(3, "--top-k"),
             threshold: Optional[float] = ThresholdOpt, no_detect: bool = NoDetectOpt, threads: int = ThreadsOpt,
             as_json: bool = JsonOpt) -> None:
    """1:N — who in the gallery is this? Exit code 0 if someone passes the threshold, 1 if not."""
    with _verifier(model, detector, threads, no_detect, gallery=gallery, threshold=threshold) as fv:
        result = fv.identify(image, top_k=top_k)
    lines = [f"{m.name}: {m.score:.4f}{'  (accepted)' if m.accepted else ''}" for m in result.matches]
    best = result.best.name if result.best else None
    emit({"best": best, "threshold": result.threshold, "far": result.far,
          "matches": [{"name": m.name, "score": m.score, "accepted": m.accepted} for m in result.matches]},
         as_json, "\n".join([f"best: {best or 'unknown'} (threshold {result.threshold:.4f})"] + lines))
    raise typer.Exit(0 if best else 1)


@app.command()
@handle_errors
def detect(image: Path, detector: Optional[Path] = DetectorOpt,
           variant: str = typer.Option("short", "--variant", help="short (≤2 m) or full (≤5 m) range"),
           threads: int = ThreadsOpt, as_json: bool = JsonOpt) -> None:
    """Faces in a photo: boxes, scores and the six keypoints."""
    import numpy as np

    from ._detector import FaceDetector, resolve_detector_path
    from ._images import load_image

    with FaceDetector.from_path(resolve_detector_path(detector, variant), num_threads=threads) as det:
        faces = det.detect(load_image(image))
    records = [{"box": [round(float(v), 1) for v in f.box], "score": round(float(f.score), 4),
                "keypoints": np.round(f.keypoints, 1).tolist()} for f in faces] if faces else []
    emit({"image": str(image), "faces": records}, as_json,
         "\n".join([f"{len(records)} face(s) in {image}"] +
                   [f"  box {r['box']} score {r['score']}" for r in records]))


@app.command("download-detector")
@handle_errors
def download_detector(variant: str = typer.Option("short", "--variant")) -> None:
    """Fetch the official MediaPipe BlazeFace file into the cache (checked by sha256)."""
    from ._detector import download_detector as fetch

    typer.echo(str(fetch(variant)))


@app.command()
@handle_errors
def inspect(model: Path, as_json: bool = JsonOpt) -> None:
    """A model's edgeface metadata, operators and tensors."""
    from ._inspect import describe_model, format_description

    info = describe_model(model)
    emit(info, as_json, format_description(info))


@app.command()
@handle_errors
def bench(model: Path = ModelOpt, images: Path = typer.Option(..., "--images", help="folder of test photos (JPEG)"),
          detector: Optional[Path] = DetectorOpt, count: int = typer.Option(200, "--count"),
          gallery_sizes: str = typer.Option("1000,10000", "--gallery-sizes"),
          out: Optional[Path] = typer.Option(None, "--out", help="write the results as JSON here"),
          as_json: bool = JsonOpt) -> None:
    """Per-stage latency (median, p90) at one thread and all cores, identify cost, peak memory."""
    from ._bench import format_bench, run_bench

    result = run_bench(model, images, detector_path=detector, count=count,
                       gallery_sizes=[int(s) for s in gallery_sizes.split(",") if s])
    if out:
        out.write_text(json.dumps(result, indent=2))
    emit(result, as_json, format_bench(result))


@gallery_app.command("list")
@handle_errors
def gallery_list(gallery: Path, as_json: bool = JsonOpt) -> None:
    """Everyone enrolled, with their template counts."""
    from ._gallery import Gallery

    with Gallery.open_existing(gallery, readonly=True) as g:
        people = g.people()
    emit([{"name": p.name, "templates": p.templates, "created": p.created, "updated": p.updated} for p in people],
         as_json, "\n".join([f"{len(people)} people in {gallery}"] + [f"  {p.name} ({p.templates})" for p in people]))


@gallery_app.command("remove")
@handle_errors
def gallery_remove(gallery: Path, name: str) -> None:
    """Remove a person and their templates."""
    from ._gallery import Gallery

    with Gallery.open_existing(gallery) as g:
        g.remove(name)
    typer.echo(f"removed {name!r}")


@gallery_app.command("rename")
@handle_errors
def gallery_rename(gallery: Path, old: str, new: str) -> None:
    """Rename an enrolled person."""
    from ._gallery import Gallery

    with Gallery.open_existing(gallery) as g:
        g.rename(old, new)
    typer.echo(f"renamed {old!r} to {new!r}")


def _registered_names(typer_app: typer.Typer) -> set[str]:
    return {info.name or info.callback.__name__.replace("_", "-") for info in typer_app.registered_commands}


def _missing_command(name: str, summary: str) -> None:
    def command(ctx: typer.Context) -> None:
        typer.echo(f"error: `edgeface {name}` ({summary}) comes with the training package, which is not "
                   "installed here: `pip install edgeface` (it brings TensorFlow; devices need only "
                   "edgeface-runtime).", err=True)
        raise typer.Exit(2)

    app.command(name, help=f"[needs `pip install edgeface`] {summary}",
                context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(command)


def load_plugins() -> None:
    """Add commands from installed distributions; offer install hints for the rest."""
    for entry_point in importlib_metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            entry_point.load()(app)
        except ImportError as exc:  # e.g. edgeface installed without TensorFlow
            logger.warning("edgeface commands from %s are unavailable: %s", entry_point.value, exc)
    present = _registered_names(app)
    for name, summary in TRAINING_COMMANDS.items():
        if name not in present:
            _missing_command(name, summary)


_plugins_loaded = False


def main() -> None:
    global _plugins_loaded
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    if not _plugins_loaded:
        load_plugins()
        _plugins_loaded = True
    app()

