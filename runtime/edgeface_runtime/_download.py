"""Checksum-verified, resumable downloads into a local cache (detector models, training data).

Nothing here runs at import time or in a constructor: a device that never asks for a default
model never touches the network. The cache lives in ``$EDGEFACE_CACHE``, else
``$XDG_CACHE_HOME/edgeface``, else ``~/.cache/edgeface``. A file is only used after its
checksum matched, and it appears under its final name atomically: bytes go to
``.<name>.part`` beside it, which is renamed into place once verified. An interrupted download
keeps its ``.part`` file, and the next attempt asks the server for the rest (HTTP Range) instead
of starting again. While a process downloads a file it holds a lock on the ``.part`` file
(POSIX ``flock``), so two processes filling the same cache wait for each other rather than
interleave bytes.

Sources: each file has official URLs; ``$EDGEFACE_MIRRORS`` (or ``mirrors=``) lists base URLs or
local folders tried first, each expected to hold the file under its own name. Mirrors need no
trust: the checksum decides.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import logging
import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence, Union
from urllib.parse import quote, urlparse

from ._errors import DownloadError

try:  # POSIX only; elsewhere concurrent downloads of one file are simply not guarded
    import fcntl
except ImportError:  # pragma: no cover (Windows)
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

CACHE_ENV = "EDGEFACE_CACHE"
MIRRORS_ENV = "EDGEFACE_MIRRORS"
_CHUNK = 1 << 16
_TIMEOUT_S = 60.0
_USER_AGENT = "edgeface-downloader/1 (+python-urllib)"

Progress = Callable[[int, Optional[int]], None]
"""Called as ``progress(bytes_so_far, total_bytes_or_None)`` while downloading."""


def default_cache_dir() -> Path:
    """The download cache: ``$EDGEFACE_CACHE``, else ``$XDG_CACHE_HOME/edgeface``, else ``~/.cache/edgeface``."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and Path(xdg).is_absolute():  # the XDG spec says to ignore relative values
        return Path(xdg) / "edgeface"
    return Path.home() / ".cache" / "edgeface"


def sha256_of(path: Union[str, PathLike]) -> str:
    """The sha256 (hex) of a file's bytes, read in chunks."""
    return _digests_of(path)[0]


def _digests_of(path: Union[str, PathLike]) -> tuple[str, str]:
    sha, md5 = hashlib.sha256(), _md5()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            sha.update(chunk)
            md5.update(chunk)
    return sha.hexdigest(), md5.hexdigest()


def _md5():
    # md5 only to compare with checksums published as md5 (LFW's); FIPS builds need the flag.
    return hashlib.md5(usedforsecurity=False)


def _normalise_hex(value: Optional[str], digits: int, kind: str) -> Optional[str]:
    if value is None:
        return None
    text = value.strip().lower()
    if len(text) != digits or any(c not in "0123456789abcdef" for c in text):
        raise ValueError(f"{kind} must be {digits} hex digits, got {value!r}")
    return text


def mirror_urls(filename: str, urls: Union[str, Sequence[str]],
                mirrors: Union[str, Sequence[str], None] = None) -> list[str]:
    """The URLs to try for ``filename``: each mirror's ``<base>/<filename>``, then ``urls``.

    ``mirrors`` None reads ``$EDGEFACE_MIRRORS`` (separated by spaces or commas). A mirror is a
    base URL (``https://host/path``, ``file:///folder``) or a local folder path.
    """
    if mirrors is None:
        mirrors = os.environ.get(MIRRORS_ENV, "")
    if isinstance(mirrors, str):
        mirrors = [m for m in re.split(r"[\s,]+", mirrors) if m]
    official = [urls] if isinstance(urls, str) else list(urls)
    found: list[str] = []
    for base in mirrors:
        base = str(base)
        if "://" not in base:  # a local folder
            base = Path(base).expanduser().resolve().as_uri()
        found.append(f"{base.rstrip('/')}/{quote(filename)}")
    return found + [u for u in official if u not in found]


@dataclass(frozen=True)
class FetchedFile:
    """A verified download: where it is, its digests, and which URL served it (None: already there)."""

    path: Path
    sha256: str
    md5: str
    url: Optional[str]


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


def cached_download(url: Union[str, Sequence[str]], sha256: str, *, cache_dir: Union[str, PathLike, None] = None,
                    filename: Optional[str] = None, progress: Optional[Progress] = None,
                    mirrors: Union[str, Sequence[str], None] = None, hint: Optional[str] = None,
                    max_bytes: Optional[int] = None) -> Path:
    """Return the path of ``url``'s file in the cache, downloading it first if needed.

    ``url`` is one URL or several tried in order (mirrors from ``mirrors``/``$EDGEFACE_MIRRORS``
    first). A cached file whose sha256 matches is returned without any network access.
    Otherwise the file is downloaded (resuming an interrupted ``.part``), verified, and renamed
    into place. Raises :class:`DownloadError` when no source gives the right bytes, ending with
    ``hint`` (what to do without network; a generic line by default). ``max_bytes``: see
    :func:`fetch_file`.
    """
    expected = _normalise_hex(sha256, 64, "sha256")
    urls = [url] if isinstance(url, str) else list(url)
    if not urls:
        raise ValueError("no URL given")
    name = filename or Path(urlparse(urls[0]).path).name
    if not name or name in (".", "..") or "/" in name or "\\" in name:
        raise ValueError(f"cannot derive a file name from {urls[0]!r}; pass filename=")
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    target = folder / name
    if find_cached(name, expected, cache_dir=folder) is not None:  # type: ignore[arg-type]
        return target
    fetch_file(mirror_urls(name, urls, mirrors), target, sha256=expected, progress=progress,
               hint=hint or _OFFLINE_HINT, max_bytes=max_bytes)
    return target


_NETWORK_ERRORS = (urllib.error.URLError, http.client.HTTPException, OSError, ValueError)  # timeouts are OSError
_OFFLINE_HINT = "Retry, or fetch the file elsewhere and pass its local path instead"


class _SourceFailed(Exception):
    """One URL did not give the file; the next one is tried."""

    def __init__(self, detail: str, *, mismatch: bool = False) -> None:
        super().__init__(detail)
        self.mismatch = mismatch


def fetch_file(urls: Union[str, Sequence[str]], target: Union[str, PathLike], *, sha256: Optional[str] = None,
               md5: Optional[str] = None, progress: Optional[Progress] = None,
               hint: str = _OFFLINE_HINT, max_bytes: Optional[int] = None) -> FetchedFile:
    """Download ``target`` from the first of ``urls`` that gives bytes matching the checksums.

    Checks whichever of ``sha256``/``md5`` are given (with neither, the caller must verify the
    content and the digests are only reported). An existing ``target`` that matches is returned
    untouched; a ``.part`` left by an interrupted download is resumed. A source that announces
    or sends more than ``max_bytes`` (the file's known size, or a bound) is cut off there, so a
    wrong or endless response cannot fill the disk before the checksum would catch it. Raises
    :class:`DownloadError` naming every URL tried and why it failed, ending with ``hint``.
    """
    if max_bytes is not None and (isinstance(max_bytes, bool) or int(max_bytes) < 1):
        raise ValueError(f"max_bytes must be a positive number of bytes or None, got {max_bytes!r}")
    expected_sha = _normalise_hex(sha256, 64, "sha256")
    expected_md5 = _normalise_hex(md5, 32, "md5")
    candidates = [urls] if isinstance(urls, str) else list(urls)
    if not candidates:
        raise ValueError("no URL given")
    target = Path(target)
    part = target.with_name(f".{target.name}.part")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"cannot create the cache folder {target.parent}: {exc}; set ${CACHE_ENV} to a "
                            "writable folder, or pass a local path instead") from exc
    with _locked_part(part) as fd:
        if (expected_sha or expected_md5) and target.is_file():  # another process may have finished it
            have_sha, have_md5 = _digests_of(target)
            if have_sha == (expected_sha or have_sha) and have_md5 == (expected_md5 or have_md5):
                _unlink_if_empty(part, fd)
                return FetchedFile(target, have_sha, have_md5, None)
        failures: list[str] = []
        mismatches = 0
        for url in candidates:
            try:
                sha, md5_found = _fetch_verified(url, fd, part, progress, expected_sha, expected_md5, max_bytes)
                os.fsync(fd)
                os.replace(part, target)
            except _SourceFailed as exc:
                failures.append(f"{url}: {exc}")
                mismatches += exc.mismatch
                logger.warning("download of %s failed: %s", url, exc)
                continue
            except OSError as exc:  # writing the cache, not the network (those become _SourceFailed)
                raise DownloadError(f"cannot write {part} while downloading {url}: {exc}; free some space or "
                                    f"set ${CACHE_ENV} to another folder") from exc
            logger.info("downloaded %s to %s", url, target)
            return FetchedFile(target, sha, md5_found, url)
        kept = _unlink_if_empty(part, fd)
    if mismatches:
        advice = ("a source served a different file than the one expected (a wrong or damaged file, or a "
                  "captive portal page); try again later or another mirror ($EDGEFACE_MIRRORS)")
    elif kept:
        advice = f"{kept} bytes are kept in {part}; run the same command again to resume"
    else:
        advice = "no source could be reached"
    tried = "; ".join(failures)
    raise DownloadError(f"cannot download {target.name}: {tried}. {advice}. {hint}")


def _fetch_verified(url: str, fd: int, part: Path, progress: Optional[Progress], expected_sha: Optional[str],
                    expected_md5: Optional[str], max_bytes: Optional[int] = None) -> tuple[str, str]:
    """One URL into ``fd``, checked; a resumed download that fails the check is fetched once more whole."""
    for _ in range(2):
        resumed = os.fstat(fd).st_size > 0
        sha, md5 = _fetch_resuming(url, fd, part, progress, max_bytes)
        problem = _checksum_problem(expected_sha, expected_md5, sha, md5)
        if not problem:
            return sha, md5
        os.ftruncate(fd, 0)  # bad bytes are never resumed from
        if not resumed:
            break
        logger.warning("%s: %s after resuming; downloading it again from the start", url, problem)
    raise _SourceFailed(f"checksum mismatch: {problem}; the file was discarded", mismatch=True)


def _checksum_problem(expected_sha: Optional[str], expected_md5: Optional[str], sha: str, md5: str) -> str:
    if expected_sha is not None and sha != expected_sha:
        return f"expected sha256 {expected_sha}, got {sha}"
    if expected_md5 is not None and md5 != expected_md5:
        return f"expected md5 {expected_md5}, got {md5}"
    return ""


@contextlib.contextmanager
def _locked_part(part: Path) -> Iterator[int]:
    """Open (creating) ``part`` and hold an exclusive lock on it; yields the descriptor.

    A lock obtained on a file that was meanwhile renamed into place (or removed) by the
    process that held it is dropped and taken again on the new ``part``.
    """
    while True:
        try:
            fd = os.open(part, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise DownloadError(f"cannot write to the cache folder {part.parent}: {exc}; set ${CACHE_ENV} to a "
                                "writable folder, or pass a local path instead") from exc
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
                try:
                    current = os.stat(part)
                except FileNotFoundError:
                    current = None
                mine = os.fstat(fd)
                if current is None or (current.st_ino, current.st_dev) != (mine.st_ino, mine.st_dev):
                    continue  # finally closes fd; go round and open the new part
            yield fd
            return
        finally:
            os.close(fd)


def _unlink_if_empty(part: Path, fd: int) -> int:
    """Remove ``part`` when it holds nothing worth resuming; return the bytes it keeps."""
    size = os.fstat(fd).st_size
    if size == 0:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(part)
    return size


def _fetch_resuming(url: str, fd: int, part: Path, progress: Optional[Progress],
                    max_bytes: Optional[int] = None) -> tuple[str, str]:
    """Fill ``fd`` with ``url``'s bytes, continuing after what it already holds when the server allows.

    Returns (sha256, md5) of the whole file. Raises :class:`_SourceFailed` on network trouble,
    keeping what arrived so that a later call can resume, and (as a mismatch, keeping nothing)
    when the file is or would be longer than ``max_bytes``.
    """
    offset = os.fstat(fd).st_size
    for attempt in range(2):  # the second attempt starts from zero when the resume was refused
        headers = {"User-Agent": _USER_AGENT}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        logger.info("downloading %s%s", url, f" (resuming at byte {offset})" if offset else "")
        try:
            response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=_TIMEOUT_S)  # noqa: S310
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and offset:  # the part is as long as the file or longer: start over
                os.ftruncate(fd, 0)
                offset = 0
                continue
            raise _SourceFailed(str(exc)) from exc
        except _NETWORK_ERRORS as exc:
            raise _SourceFailed(str(getattr(exc, "reason", None) or exc)) from exc
        with response:
            status = getattr(response, "status", None)
            total: Optional[int]
            if offset and status == 206:
                found = re.fullmatch(r"\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*", response.headers.get("Content-Range", ""))
                if not found or int(found.group(1)) != offset:
                    os.ftruncate(fd, 0)  # a range we did not ask for: do not splice it in
                    offset = 0
                    continue
                total = int(found.group(3)) if found.group(3) != "*" else None
                sha, md5 = _hash_prefix(fd, offset)
            else:  # 200 (or file://): the server sends the whole file
                if offset:
                    logger.info("%s does not resume downloads; starting again", url)
                os.ftruncate(fd, 0)
                offset = 0
                length = response.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
                sha, md5 = hashlib.sha256(), _md5()
            if max_bytes is not None and total is not None and total > max_bytes:
                os.ftruncate(fd, 0)
                raise _SourceFailed(f"the server offers {total} bytes, more than the {max_bytes} expected",
                                    mismatch=True)
            os.lseek(fd, offset, os.SEEK_SET)
            done = offset
            if progress is not None:
                progress(done, total)
            while True:
                try:
                    chunk = response.read(_CHUNK)
                except _NETWORK_ERRORS as exc:
                    raise _SourceFailed(f"the connection broke after {done} bytes ({exc})") from exc
                if not chunk:
                    break
                if max_bytes is not None and done + len(chunk) > max_bytes:
                    os.ftruncate(fd, 0)
                    raise _SourceFailed(f"the server sent more than the {max_bytes} bytes expected; stopped there "
                                        "and discarded them", mismatch=True)
                _write_all(fd, chunk)
                sha.update(chunk)
                md5.update(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
        if total is not None and done != total:
            raise _SourceFailed(f"the transfer stopped after {done} of {total} bytes")
        return sha.hexdigest(), md5.hexdigest()
    raise _SourceFailed("the server refused to resume and to restart the download")


def _hash_prefix(fd: int, length: int):
    sha, md5 = hashlib.sha256(), _md5()
    os.lseek(fd, 0, os.SEEK_SET)
    remaining = length
    while remaining:
        chunk = os.read(fd, min(1 << 20, remaining))
        if not chunk:
            break
        sha.update(chunk)
        md5.update(chunk)
        remaining -= len(chunk)
    return sha, md5


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def default_detector_path(variant: str = "short", *, progress: Optional[Progress] = None,
                          mirrors: Union[str, Sequence[str], None] = None) -> Path:
    """The official MediaPipe BlazeFace file for ``variant`` ("short" or "full"), cached or downloaded.

    ``mirrors`` (None: ``$EDGEFACE_MIRRORS``) are tried before the official URL."""
    from ._detector import DETECTORS  # here, not at module level: _detector imports this module lazily too

    spec = DETECTORS[variant]  # an unknown name: a ValueError naming the closest and the choices
    return cached_download(spec.url, spec.sha256, filename=spec.filename, progress=progress, mirrors=mirrors,
                           max_bytes=spec.size,
                           hint="Retry, or fetch the file elsewhere and pass its path (--detector), or leave it in "
                                "a folder and set EDGEFACE_MIRRORS to that folder")
