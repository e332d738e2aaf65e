"""The ``edgeface`` command.

The runtime owns the command and its device commands, parsed with :mod:`argparse` so a
device needs nothing beyond numpy, pillow and an interpreter. Installing the ``edgeface``
distribution adds the training commands through the ``edgeface.commands`` entry-point
group: each entry point is named after its command and loads to ``main(argv, prog_name)
-> int``, called with the arguments after the command's name (the training side parses
them itself, with typer). Without it, those names answer with the pip command that
provides them. Commands are thin: parse, call the library, turn its errors into a
one-line message and exit code.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import sys
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence

from .commandline import console_logging, error_line, exit_code, exit_code_for, log_level, quiet_native_logs

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
EXIT_USAGE = exit_code("usage")  # bad input, usage errors and missing commands, as argparse's own errors
DESCRIPTION = "edgeface: face verification for Raspberry-Pi-class devices."


def emit(data: Any, as_json: bool, text: str) -> None:
    print(json.dumps(data, indent=2, default=_jsonable) if as_json else text)


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


def _default_model() -> Path:
    from ._bundled import default_model_path

    return default_model_path()


def _verifier(args: argparse.Namespace, gallery: Optional[Path] = None, threshold: Optional[float] = None):
    from ._pipeline import FaceVerifier

    return FaceVerifier.from_path(args.model, detector_path=args.detector, detect=not args.no_detect,
                                  detector_input_size=args.detector_size, num_threads=args.threads,
                                  gallery_path=gallery, threshold=threshold)


# --- the device commands: each takes the parsed arguments and returns its exit code -----------


_SOURCES = {"site": "site threshold, calibrated on this gallery", "model": "the model's threshold",
            "explicit": "explicit threshold"}


def _decided_by(result) -> str:
    """``the model's threshold at FAR 0.001`` — which threshold decided, for the text output."""
    far = f" at FAR {result.far:g}" if result.far else ""
    return f"{_SOURCES.get(result.threshold_source, 'threshold')}{far}"


def verify(args: argparse.Namespace) -> int:
    """1:1 — are two photos the same person? Exit code 0 if they are, 1 if not."""
    gallery = getattr(args, "gallery", None)
    if gallery is not None and not gallery.is_file():
        raise FileNotFoundError(f"no gallery at {gallery}; --gallery here only supplies its site threshold "
                                "(`edgeface calibrate`), so it must exist")
    with _verifier(args, gallery=gallery, threshold=args.threshold) as fv:
        result = fv.verify(args.image_a, args.image_b)
    emit({"same": result.same, "score": result.score, "threshold": result.threshold, "far": result.far,
          "threshold_source": result.threshold_source},
         args.as_json, f"{'SAME' if result.same else 'DIFFERENT'} person: score {result.score:.4f}, "
                       f"threshold {result.threshold:.4f} ({_decided_by(result)})")
    return 0 if result.same else 1


def enroll(args: argparse.Namespace) -> int:
    """Enroll a person from one or more photos (one transaction: all or nothing)."""
    with _verifier(args, gallery=args.gallery) as fv:
        count = fv.enroll(args.name, [str(p) for p in args.images], replace=args.replace)
    emit({"name": args.name, "templates": count, "gallery": str(args.gallery)}, args.as_json,
         f"enrolled {args.name!r} with {count} template(s) in {args.gallery}")
    return 0


def _stranger_odds(result) -> str:
    rate = result.compounded_far
    if rate is None:
        return ""
    upper = result.stranger_accept_rate
    extra = f", up to ~{upper:.1%} over {result.comparisons} templates" if result.comparisons > result.people else ""
    return (f"; FAR {result.far:g} per comparison, {result.people} people: a stranger passes as someone "
            f"~{rate:.1%}{extra}")


def identify(args: argparse.Namespace) -> int:
    """1:N — who in the gallery is this? Exit code 0 if someone passes the threshold, 1 if not."""
    with _verifier(args, gallery=args.gallery, threshold=args.threshold) as fv:
        result = fv.identify(args.image, top_k=args.top_k)
    lines = [f"{m.name}: {m.score:.4f}{'  (accepted)' if m.accepted else ''}" for m in result.matches]
    best = result.best.name if result.best else None
    emit({"best": best, "threshold": result.threshold, "far": result.far,
          "threshold_source": result.threshold_source, "people": result.people,
          "compounded_far": result.compounded_far,
          "comparisons": result.comparisons, "stranger_accept_rate": result.stranger_accept_rate,
          "matches": [{"name": m.name, "score": m.score, "accepted": m.accepted} for m in result.matches]},
         args.as_json, "\n".join([f"best: {best or 'unknown'} (threshold {result.threshold:.4f}, "
                                  f"{_decided_by(result)}{_stranger_odds(result)})"] + lines))
    return 0 if best else 1


def calibrate(args: argparse.Namespace) -> int:
    """Set the site threshold for a FAR from the gallery's own different-person pairs (stored in the gallery)."""
    from ._errors import GalleryError
    from ._pipeline import FaceVerifier

    if not args.gallery.is_file():
        raise GalleryError(f"no gallery at {args.gallery}; enroll people first (`edgeface enroll NAME PHOTOS "
                           f"-g {args.gallery}`): their different-person pairs are what calibration measures")
    with FaceVerifier.from_path(args.model, detect=False, gallery_path=args.gallery) as fv:
        if args.clear:
            fv._require_gallery().clear_site_calibration()
            emit({"gallery": str(args.gallery), "cleared": True}, args.as_json,
                 f"removed the site thresholds of {args.gallery}; verify and identify use the model's again")
            return 0
        record = fv.calibrate(args.far, save=not args.dry_run)
    data = record.to_dict()
    data.update(gallery=str(args.gallery), saved=not args.dry_run)
    lines = [f"site threshold {record.threshold:.4f} at FAR {record.far:g}"
             f"{' (not saved: --dry-run)' if args.dry_run else f' stored in {args.gallery}'}",
             f"  from {record.impostor_pairs} impostor pairs ({record.people} people, {record.templates} templates"
             f"{', sampled' if record.sampled else ''}): {record.false_accepts} accepted, "
             f"lowest FAR they support {record.min_supported_far:.2g} (3/n)"]
    if record.tar is not None:
        lines.append(f"  accepts {record.tar:.1%} of {record.genuine_pairs} same-person template pairs")
    if record.model_threshold is not None:
        lines.append(f"  the model's own threshold {record.model_threshold:.4f} (FAR {record.far:g} where it was "
                     f"calibrated) accepts {record.model_far_on_site:.2%} of these impostor pairs")
    if record.warning:
        lines.append(f"warning: {record.warning}")
    emit(data, args.as_json, "\n".join(lines))
    return 0


def detect(args: argparse.Namespace) -> int:
    """Faces in a photo: boxes, scores and the six keypoints."""
    import numpy as np

    from ._detector import FaceDetector, resolve_detector_path
    from ._images import load_image

    with FaceDetector.from_path(resolve_detector_path(args.detector, args.variant), num_threads=args.threads,
                                input_size=args.detector_size) as det:
        faces = det.detect(load_image(args.image))
    records = [{"box": [round(float(v), 1) for v in f.box], "score": round(float(f.score), 4),
                "keypoints": np.round(f.keypoints, 1).tolist()} for f in faces] if faces else []
    emit({"image": str(args.image), "faces": records}, args.as_json,
         "\n".join([f"{len(records)} face(s) in {args.image}"] +
                   [f"  box {r['box']} score {r['score']}" for r in records]))
    return 0


def download_detector(args: argparse.Namespace) -> int:
    """Fetch the official MediaPipe BlazeFace file into the cache (checked by sha256)."""
    from ._detector import download_detector as fetch

    print(str(fetch(args.variant)))
    return 0


def inspect(args: argparse.Namespace) -> int:
    """A model's edgeface metadata, operators and tensors."""
    from ._inspect import describe_model, format_description

    if args.model and args.model_option and args.model != args.model_option:
        raise ValueError(f"two models given: {args.model} and -m {args.model_option}; give one")
    info = describe_model(args.model or args.model_option or _default_model())
    emit(info, args.as_json, format_description(info))
    return 0


def bench(args: argparse.Namespace) -> int:
    """Per-stage latency (median, p90) at one thread and all cores, identify cost, peak memory."""
    from ._bench import format_bench, run_bench

    result = run_bench(args.model or _default_model(), args.images, detector_path=args.detector, count=args.count,
                       gallery_sizes=[int(s) for s in args.gallery_sizes.split(",") if s],
                       detector_sizes=args.detector_sizes, repeat=args.repeat)
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    emit(result, args.as_json, format_bench(result))
    return 0


def gallery_list(args: argparse.Namespace) -> int:
    """Everyone enrolled, with their template counts."""
    from ._gallery import Gallery

    with Gallery.open_existing(args.gallery, readonly=True) as g:
        people = g.people()
    emit([{"name": p.name, "templates": p.templates, "created": p.created, "updated": p.updated} for p in people],
         args.as_json,
         "\n".join([f"{len(people)} people in {args.gallery}"] + [f"  {p.name} ({p.templates})" for p in people]))
    return 0


def gallery_remove(args: argparse.Namespace) -> int:
    """Remove a person and their templates."""
    from ._gallery import Gallery

    with Gallery.open_existing(args.gallery) as g:
        g.remove(args.name)
    print(f"removed {args.name!r}")
    return 0


def gallery_rename(args: argparse.Namespace) -> int:
    """Rename an enrolled person."""
    from ._gallery import Gallery

    with Gallery.open_existing(args.gallery) as g:
        g.rename(args.old, args.new)
    print(f"renamed {args.old!r} to {args.new!r}")
    return 0


DEVICE_COMMANDS = ("verify", "enroll", "identify", "calibrate", "detect", "download-detector", "inspect", "bench",
                   "gallery")


# --- the parser ---------------------------------------------------------------------------------


def _add_command(sub: Any, name: str, func: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
    doc = (func.__doc__ or "").strip()
    parser = sub.add_parser(name, help=doc, description=doc, epilog=_EPILOG,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.set_defaults(func=func)
    parser.add_argument("--verbose", "-v", action="store_true",
                        help="also log progress and the interpreter's own lines")
    parser.add_argument("--quiet", "-q", action="store_true", help="print only results and errors")
    return parser


def _exit_codes_epilog() -> str:
    from .commandline import exit_codes_text

    return "exit codes:\n" + exit_codes_text()


_EPILOG = _exit_codes_epilog()


def _model(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", "-m", type=Path, default=None,
                   help="embedding model (.tflite with edgeface metadata; default: the bundled SFace model)")


def _detector(p: argparse.ArgumentParser) -> None:
    p.add_argument("--detector", type=Path,
                   help="BlazeFace .tflite (default: the official short-range file bundled with the package)")


def _detector_size(p: argparse.ArgumentParser) -> None:
    p.add_argument("--detector-size", type=int, metavar="PIXELS",
                   help="run the short-range detector at this input size, a multiple of 16 (default: its own "
                        "128); 96 halves its inference but needs faces a sixth of the frame wide, 192 finds "
                        "faces a twelfth of the frame wide at 2.2x the cost")


def _detector_sizes(text: str) -> list:
    """``"native,96"`` → ``[None, 96]``."""
    try:
        return [None if part.strip() in ("native", "") else int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected sizes such as 'native,96', got {text!r}") from None


def _threshold(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threshold", type=float,
                   help="cosine threshold (default: the gallery's site threshold when calibrated, else the "
                        "model's, calibrated at FAR 1e-3)")


def _no_detect(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-detect", action="store_true",
                   help="images are already aligned face crops: skip detection and centre-crop instead. "
                        "Never use it to get past 'no face found': on unaligned photos the centre crop is not a "
                        "face the model knows, scores lose meaning and strangers are accepted")


def _threads(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, default=1, help="interpreter threads (default: 1)")


def _json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", dest="as_json", action="store_true", help="machine-readable output")


def _gallery_file(p: argparse.ArgumentParser) -> None:
    p.add_argument("--gallery", "-g", type=Path, required=True, help="gallery file (SQLite)")


def _variant(p: argparse.ArgumentParser) -> None:
    p.add_argument("--variant", default="short", help="short (≤2 m) or full (≤5 m) range (default: short)")


def build_parser(training: Optional[Dict[str, str]] = None) -> argparse.ArgumentParser:
    """The parser of the device commands; ``training`` (name → summary) only lists those in the help."""
    parser = argparse.ArgumentParser(prog="edgeface", description=DESCRIPTION)
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    p = _add_command(sub, "verify", verify)
    p.add_argument("image_a", type=Path)
    p.add_argument("image_b", type=Path)
    p.add_argument("--gallery", "-g", type=Path, default=None,
                   help="gallery whose site threshold (`edgeface calibrate`) decides; nobody in it is needed")
    for add in (_model, _detector, _detector_size, _threshold, _no_detect, _threads, _json):
        add(p)

    p = _add_command(sub, "enroll", enroll)
    p.add_argument("name")
    p.add_argument("images", type=Path, nargs="+")
    _gallery_file(p)
    _model(p)
    _detector(p)
    _detector_size(p)
    p.add_argument("--replace", action="store_true", help="re-enroll: replace this person's templates")
    for add in (_no_detect, _threads, _json):
        add(p)

    p = _add_command(sub, "identify", identify)
    p.add_argument("image", type=Path)
    _gallery_file(p)
    _model(p)
    _detector(p)
    _detector_size(p)
    p.add_argument("--top-k", type=int, default=3, help="how many best matches to list (default: 3)")
    for add in (_threshold, _no_detect, _threads, _json):
        add(p)

    p = _add_command(sub, "calibrate", calibrate)
    _gallery_file(p)
    _model(p)
    p.add_argument("--far", type=float, default=1e-3,
                   help="false-accept rate the threshold is set for (default: 1e-3); needs at least 3/FAR "
                        "different-person template pairs in the gallery, or it warns")
    p.add_argument("--dry-run", action="store_true", help="measure and print, but do not store the threshold")
    p.add_argument("--clear", action="store_true", help="remove the stored site thresholds instead")
    _json(p)

    p = _add_command(sub, "detect", detect)
    p.add_argument("image", type=Path)
    for add in (_detector, _detector_size, _variant, _threads, _json):
        add(p)

    p = _add_command(sub, "download-detector", download_detector)
    _variant(p)

    p = _add_command(sub, "inspect", inspect)
    p.add_argument("model", type=Path, nargs="?", help="the .tflite to describe (default: the bundled default model)")
    p.add_argument("--model", "-m", dest="model_option", type=Path, default=None, help="the same, as an option")
    _json(p)

    p = _add_command(sub, "bench", bench)
    _model(p)
    p.add_argument("--images", type=Path, required=True, help="folder of test photos (JPEG)")
    _detector(p)
    p.add_argument("--count", type=int, default=200, help="images timed per input kind (default: 200)")
    p.add_argument("--detector-sizes", type=_detector_sizes, default=[None], metavar="SIZES",
                   help="detector input sizes to time, e.g. 'native,96' (default: native)")
    p.add_argument("--repeat", type=int, default=1, metavar="N",
                   help="passes per run; each row shows the fastest, all are listed (default: 1)")
    p.add_argument("--gallery-sizes", default="1000,10000",
                   help="comma-separated synthetic gallery sizes for identify (default: 1000,10000)")
    p.add_argument("--out", type=Path, help="write the results as JSON here")
    _json(p)

    gallery_doc = "Inspect and edit a gallery of enrolled people."
    gallery = sub.add_parser("gallery", help=gallery_doc, description=gallery_doc)
    gallery.set_defaults(func=None, parser=gallery)
    gallery_sub = gallery.add_subparsers(title="commands", metavar="COMMAND")
    p = _add_command(gallery_sub, "list", gallery_list)
    p.add_argument("gallery", type=Path)
    _json(p)
    p = _add_command(gallery_sub, "remove", gallery_remove)
    p.add_argument("gallery", type=Path)
    p.add_argument("name")
    p = _add_command(gallery_sub, "rename", gallery_rename)
    p.add_argument("gallery", type=Path)
    p.add_argument("old")
    p.add_argument("new")

    for name, summary in (training or {}).items():  # dispatched before parsing; here for the listing
        sub.add_parser(name, help=summary, add_help=False)
    return parser


# --- the training commands, from the `edgeface` distribution -----------------------------------


def _entry_points() -> Dict[str, Any]:
    """Installed ``edgeface.commands`` entry points by command name (read only when needed:
    importlib.metadata costs a device command time and memory)."""
    from importlib import metadata

    found = metadata.entry_points()
    group = (found.select(group=ENTRY_POINT_GROUP) if hasattr(found, "select")
             else found.get(ENTRY_POINT_GROUP, []))  # type: ignore[arg-type]  # Python 3.9: a dict
    return {ep.name: ep for ep in group}


def _training_listing(installed: Dict[str, Any]) -> Dict[str, str]:
    listing = {name: summary[:1].upper() + summary[1:] + "." if name in installed
               else f"[needs `pip install edgeface`] {summary}" for name, summary in TRAINING_COMMANDS.items()}
    for name, ep in installed.items():  # a further plugin's command
        listing.setdefault(name, f"from {ep.value}")
    return listing


def _missing(name: str, rest: Sequence[str]) -> int:
    summary = TRAINING_COMMANDS[name]
    if any(arg in ("--help", "-h") for arg in rest):
        print(f"usage: edgeface {name} ...\n\n[needs `pip install edgeface`] {summary}")
        return 0
    print(f"error: `edgeface {name}` ({summary}) comes with the training package, which is not installed here: "
          "`pip install edgeface` (it brings TensorFlow; devices need only edgeface-runtime).", file=sys.stderr)
    return EXIT_USAGE


def _run_entry_point(name: str, entry_point: Any, rest: Sequence[str]) -> int:
    try:
        command = entry_point.load()
    except ImportError as exc:  # e.g. edgeface installed without TensorFlow's or typer's dependencies
        print(f"error: `edgeface {name}` is unavailable: {entry_point.value} failed to import: {exc}",
              file=sys.stderr)
        return EXIT_USAGE
    try:
        code = command(list(rest), f"edgeface {name}")
    except SystemExit as exc:  # a command that exits instead of returning its code
        code = exc.code
    if code is None:
        return 0
    return code if isinstance(code, int) else 1


# --- entry point --------------------------------------------------------------------------------


def _run_device(parser: argparse.ArgumentParser, argv: Sequence[str]) -> int:
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2), already printed by argparse
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if getattr(args, "func", None) is None:  # `edgeface gallery` alone
        args.parser.print_help()
        return EXIT_USAGE
    try:
        level = log_level(args.verbose, args.quiet)
    except ValueError as exc:
        print(error_line(exc), file=sys.stderr)
        return EXIT_USAGE
    quiet_native_logs(args.verbose)
    console_logging("edgeface_runtime", level, defer_to_root=True)
    try:
        return args.func(args)
    except (Exception, KeyboardInterrupt) as exc:
        code = exit_code_for(exc)
        if code is None:  # a bug, not a user's mistake: keep the traceback
            raise
        print(error_line(exc), file=sys.stderr)
        return code


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``edgeface`` with ``argv`` (default: the process's arguments); returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in DEVICE_COMMANDS:
        return _run_device(build_parser(), argv)
    installed = _entry_points()
    if argv and argv[0] in installed:
        return _run_entry_point(argv[0], installed[argv[0]], argv[1:])
    if argv and argv[0] in TRAINING_COMMANDS:
        return _missing(argv[0], argv[1:])
    parser = build_parser(_training_listing(installed))
    if not argv:
        parser.print_help()
        return EXIT_USAGE
    return _run_device(parser, argv)
