"""Checksum-verified downloads into a local cache (the official detector models).

Nothing here runs at import time or in a constructor: a device that never asks for a default
model never touches the network. The cache lives in ``$EDGEFACE_CACHE`` or
``~/.cache/edgeface``; a file is only ever used after its sha256 matched, and it appears under
its final name atomically (temp file in the same folder, then ``os.replace``), so an
interrupted download never leaves a half-written model behind.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import tempfile
import urllib.error
import urllib.request
from os import PathLike
from pathlib import Path
from typing import Callable, Optional, Union
from urllib.parse import urlparse

from ._errors import DownloadError

logger = logging.getLogger(__name__)

CACHE_ENV = "EDGEFACE_CACHE"
_CHUNK = 1 << 16
_TIMEOUT_S = 60.0

Progress = Callable[[int, Optional[int]], None]
"""Called as ``progress(bytes_so_far, total_bytes_or_None)`` while downloading."""


def default_cache_dir() -> Path:
    """The download cache: ``$EDGEFACE_CACHE`` if set, else ``~/.cache/edgeface``."""
    configured = os.environ.get(CACHE_ENV)
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "edgeface"


def sha256_of(path: Union[str, PathLike]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def find_cached(filename: str, sha256: str, *, cache_dir: Union[str, PathLike, None] = None) -> Optional[Path]:
    """The cached ``filename`` if it exists and its sha256 matches, else None. Never downloads."""
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    target = folder / filename
    if not target.is_file():
        return None
    found, expected = sha256_of(target), sha256.strip().lower()
    if found != expected:
        logger.warning("cached %s has sha256 %s, expected %s; ignoring it", target, found, expected)
        return None
    logger.debug("using cached %s", target)
    return target


def cached_download(url: str, sha256: str, *, cache_dir: Union[str, PathLike, None] = None,
                    filename: Optional[str] = None, progress: Optional[Progress] = None) -> Path:
    """Return the path of ``url``'s file in the cache, downloading it first if needed.

    A cached file whose sha256 matches is returned without any network access. Otherwise the
    file is downloaded to a temporary file beside it, verified, and renamed into place.
    Raises :class:`DownloadError` on network failure or checksum mismatch (no file is left).
    """
    expected = sha256.strip().lower()
    if len(expected) != 64 or any(c not in "0123456789abcdef" for c in expected):
        raise ValueError(f"sha256 must be 64 hex digits, got {sha256!r}")
    name = filename or Path(urlparse(url).path).name
    if not name or name in (".", ".."):
        raise ValueError(f"cannot derive a file name from {url!r}; pass filename=")
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    target = folder / name
    if find_cached(name, expected, cache_dir=folder) is not None:
        return target

    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle = tempfile.NamedTemporaryFile(dir=folder, prefix=f".{name}.", suffix=".part", delete=False)
    except OSError as exc:
        raise DownloadError(f"cannot write to the cache folder {folder}: {exc}; set ${CACHE_ENV} to a writable "
                            "folder, or pass a local model path instead") from exc
    temp = Path(handle.name)
    try:
        with handle:
            try:
                found = _fetch(url, handle, progress)
            except OSError as exc:  # only local write failures arrive here as OSError
                raise DownloadError(f"cannot write {temp} while downloading {url}: {exc}; free some space or "
                                    f"set ${CACHE_ENV} to another folder") from exc
        if found != expected:
            raise DownloadError(f"checksum mismatch for {url}: expected sha256 {expected}, got {found}; the file "
                                f"was discarded. {_OFFLINE_HINT}")
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    logger.info("downloaded %s to %s", url, target)
    return target


_NETWORK_ERRORS = (urllib.error.URLError, http.client.HTTPException, OSError, ValueError)  # timeouts are OSError
_OFFLINE_HINT = "Retry, or fetch the file elsewhere and pass its local path instead"


def _network_error(url: str, exc: BaseException) -> DownloadError:
    # HTTPError's str() names the status; URLError's reason is the readable part.
    detail = exc if isinstance(exc, urllib.error.HTTPError) else (getattr(exc, "reason", None) or exc)
    return DownloadError(f"cannot download {url}: {detail}. {_OFFLINE_HINT}")


def _fetch(url: str, sink, progress: Optional[Progress]) -> str:
    """Stream ``url`` into ``sink``; return the sha256 of what was written.

    Network failures become :class:`DownloadError`; a failure writing ``sink`` stays ``OSError``.
    """
    logger.info("downloading %s", url)
    try:
        response = urllib.request.urlopen(url, timeout=_TIMEOUT_S)  # noqa: S310 (https URLs from a table)
    except _NETWORK_ERRORS as exc:
        raise _network_error(url, exc) from exc
    digest = hashlib.sha256()
    done, last_logged = 0, 0
    with response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        while True:
            try:
                chunk = response.read(_CHUNK)
            except _NETWORK_ERRORS as exc:
                raise _network_error(url, exc) from exc
            if not chunk:
                break
            sink.write(chunk)
            digest.update(chunk)
            done += len(chunk)
            if progress is not None:
                progress(done, total)
            if done - last_logged >= (1 << 20):
                last_logged = done
                logger.debug("%s: %d of %s bytes", url, done, total if total is not None else "?")
    if total is not None and done != total:
        raise DownloadError(f"download of {url} stopped after {done} of {total} bytes. {_OFFLINE_HINT}")
    return digest.hexdigest()


def default_detector_path(variant: str = "short", *, progress: Optional[Progress] = None) -> Path:
    """The official MediaPipe BlazeFace file for ``variant`` ("short" or "full"), cached or downloaded."""
    from ._detector import DETECTORS  # here, not at module level: _detector imports this module lazily too

    if variant not in DETECTORS:
        raise ValueError(f"unknown detector variant {variant!r}; choose one of {sorted(DETECTORS)}")
    spec = DETECTORS[variant]
    return cached_download(spec.url, spec.sha256, filename=spec.filename, progress=progress)
