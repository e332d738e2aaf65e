"""`edgeface download lfw|weights|detector|all`: fetch what the demo and training need into the cache."""

from __future__ import annotations

import json
import sys
from typing import Any, List, Optional

import typer

from ._cli_support import JSON, QUIET, VERBOSE, setup_logging

WHAT = ("lfw", "weights", "detector", "all")


class ProgressBars:
    """A tqdm bar per download or unpacking step, fed by ``DownloadProgress`` events.

    tqdm hides itself when stderr is not a terminal (logs, CI), so scripted runs stay quiet.
    """

    def __init__(self) -> None:
        self._bar: Any = None
        self._label: Optional[str] = None
        self._done = 0

    def __call__(self, label: str, done: int, total: Optional[int], unit: str) -> None:
        if label != self._label or self._bar is None:
            from tqdm import tqdm

            self.close()
            self._bar = tqdm(total=total, initial=done, desc=label, unit=unit, unit_scale=unit == "B",
                             unit_divisor=1024 if unit == "B" else 1000, disable=None, file=sys.stderr,
                             dynamic_ncols=True)
            self._label, self._done = label, done
            return
        if done < self._done or total != self._bar.total:  # a restart from zero, or a new length
            self._bar.reset(total=total)
            self._done = 0
        self._bar.update(done - self._done)
        self._done = done

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        self._bar, self._label, self._done = None, None, 0


def download_command(
    what: str = typer.Argument(..., help="lfw (deep-funneled images + pairs.txt), weights (MobileNet v1 0.25 "
                                         "ImageNet), detector (BlazeFace short range), or all."),
    mirror: Optional[List[str]] = typer.Option(
        None, "--mirror", help="Base URL or local folder holding the files under their own names, tried before "
                               "the official hosts (repeatable; default: $EDGEFACE_MIRRORS)."),
    keep_archive: bool = typer.Option(False, "--keep-archive", help="Keep lfw-deepfunneled.tgz after unpacking."),
    as_json: bool = JSON,
    verbose: bool = VERBOSE,
    quiet: bool = QUIET,
) -> None:
    """Download LFW, the ImageNet weights or the face detector into the cache, checked by checksum.

    The cache is $EDGEFACE_CACHE, else $XDG_CACHE_HOME/edgeface, else ~/.cache/edgeface.
    Interrupted downloads resume; a verified copy is never downloaded again.
    """
    from . import _datasets

    setup_logging(verbose, quiet)
    if what not in WHAT:
        raise ValueError(f"unknown item {what!r}; choose one of {', '.join(WHAT)}")
    mirrors = list(mirror) if mirror else None
    bars = ProgressBars()
    paths: dict[str, str] = {}
    try:
        if what in ("lfw", "all"):
            paths["lfw"] = str(_datasets.fetch_lfw(mirrors=mirrors, progress=bars, keep_archive=keep_archive))
        if what in ("weights", "all"):
            paths["weights"] = str(_datasets.fetch_weights(mirrors=mirrors, progress=bars))
        if what in ("detector", "all"):
            paths["detector"] = str(_datasets.fetch_detector(mirrors=mirrors, progress=bars))
    finally:  # errors (bad input, a full or unwritable cache folder) map to exit codes in _cli_support.run
        bars.close()
    if as_json:
        typer.echo(json.dumps(paths, indent=2))
    else:
        for name, path in paths.items():
            typer.echo(f"{name}: {path}")
