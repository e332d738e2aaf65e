"""LFW and ImageNet weights for users without the project's data: downloaded, verified, cached.

Everything goes through the runtime's downloader (resumable ``.part`` files, atomic renames,
mirrors from ``$EDGEFACE_MIRRORS``) into the cache (``$EDGEFACE_CACHE``, else
``$XDG_CACHE_HOME/edgeface``, else ``~/.cache/edgeface``)::

    <cache>/data/lfw/pairs.txt, lfw-deepfunneled/<Name>/<Name>_NNNN.jpg, .edgeface-source.json
    <cache>/weights/mobilenet_2_5_224_tf_no_top.h5
    <cache>/downloads/          archives while they download (``.part``) and are unpacked

What is verified, and against what:

- ``pairs.txt``: sha256, pinned (the official file; LFW publishes its md5 9f1ba174…).
- ``lfw-deepfunneled.tgz``: md5 68331da3…, the checksum the LFW page publishes (torchvision
  pins the same). No sha256 of the official archive is known here, so none is pinned; the one
  measured on download is recorded in ``.edgeface-source.json``.
- the unpacked images: exactly the 13,233 expected files of 5,749 people (sha256 of the sorted
  ``Name/Name_NNNN.jpg`` listing, computed from a complete official copy). This is also what a
  cache hit re-checks (about 0.1 s), so a damaged or partial cache is fetched again.
- the weights: sha256, pinned.

Extraction refuses absolute paths, ``..``, members outside ``lfw-deepfunneled/``, links and
device files, and stops at a size limit; it unpacks into a temporary folder that is renamed
into place only after the checks pass.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tarfile
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Iterator, Optional, Sequence, Union

from edgeface_runtime.download import (
    FetchedFile,
    cached_download,
    default_cache_dir,
    fetch_file,
    find_cached,
    mirror_urls,
    sha256_of,
)
from edgeface_runtime import DownloadError

logger = logging.getLogger(__name__)

DownloadProgress = Callable[[str, int, Optional[int], str], None]
"""Called as ``progress(label, done, total_or_None, unit)``; unit is "B" (bytes) or "files"."""

PROVENANCE_FILE = ".edgeface-source.json"
Mirrors = Union[str, Sequence[str], None]


@dataclass(frozen=True)
class RemoteFile:
    """One downloadable file: its name, official URLs, and the checksums known for it."""

    filename: str
    urls: tuple[str, ...]
    sha256: Optional[str] = None
    md5: Optional[str] = None
    max_bytes: Optional[int] = None  # the exact size when known, else a bound: downloads stop beyond it


@dataclass(frozen=True)
class ArchivedDataset:
    """A dataset shipped as a tar archive (one top folder) plus loose files (the protocol)."""

    name: str
    archive: RemoteFile
    top: str
    extras: tuple[RemoteFile, ...]
    files: int
    people: int
    listing_sha256: str
    max_bytes: int
    homepage: str


_LFW_SITE = "http://vis-www.cs.umass.edu/lfw/"

LFW = ArchivedDataset(
    name="lfw",
    archive=RemoteFile("lfw-deepfunneled.tgz", (_LFW_SITE + "lfw-deepfunneled.tgz",),
                       md5="68331da3eb755a505a502b5aacb3c201", max_bytes=400 << 20),
    top="lfw-deepfunneled",
    # figshare's copy of pairs.txt is the one scikit-learn uses; same sha256 as the official file.
    extras=(RemoteFile("pairs.txt", (_LFW_SITE + "pairs.txt", "https://ndownloader.figshare.com/files/5976006"),
                       sha256="ea42330c62c92989f9d7c03237ed5d591365e89b3e649747777b70e692dc1592",
                       md5="9f1ba174e4e1c508ff7cdf10ac338a7d", max_bytes=155_335),),
    files=13233,
    people=5749,
    listing_sha256="aacd42dcb6273897f99b82eef42ad6f69799a53c1e53755560bb713a882fb9b7",
    max_bytes=400 << 20,  # the images are 117 MB; a bigger archive is not LFW
    homepage=_LFW_SITE,
)

_KERAS_WEIGHTS = "https://storage.googleapis.com/tensorflow/keras-applications/"

WEIGHTS: dict[str, RemoteFile] = {
    # The Keras-applications release (MobileNet v1 alpha 0.25, no top); works at any input size.
    "mobilenet_v1_025": RemoteFile(
        "mobilenet_2_5_224_tf_no_top.h5", (_KERAS_WEIGHTS + "mobilenet/mobilenet_2_5_224_tf_no_top.h5",),
        sha256="dbdb03ee2a22fd895301636cd328b234bb3a9952358f436d82f46b81e0d5b0bf", max_bytes=2_108_140),
}


def cache_dir(cache: Union[str, os.PathLike, None] = None) -> Path:
    """``cache`` itself, or the runtime's download cache."""
    return Path(cache).expanduser() if cache is not None else default_cache_dir()


def lfw_cache_path(cache: Union[str, os.PathLike, None] = None, *, spec: Optional[ArchivedDataset] = None) -> Path:
    """Where the downloaded LFW lives (whether or not it is there yet)."""
    return cache_dir(cache) / "data" / (spec or LFW).name


def _offline_hint(spec: ArchivedDataset) -> str:
    names = " and ".join([spec.archive.filename] + [f.filename for f in spec.extras])
    return (f"Without network here: download {names} from {spec.homepage} on another machine, then either "
            f"unpack them into a folder and pass --data FOLDER (or set EDGEFACE_DATA_HOME to a folder holding "
            f"{spec.name}/), or leave the files in a folder and pass --mirror FOLDER (or set "
            f"EDGEFACE_MIRRORS=FOLDER); the original host is often down, so another mirror URL works too")


# --- verification of an unpacked tree -------------------------------------------------------


@dataclass(frozen=True)
class Listing:
    """The files under a dataset's top folder: ``Person/Person_0001.jpg`` lines, sorted, hashed."""

    sha256: str
    files: int
    people: int
    odd: tuple[str, ...]  # entries that are neither a person folder nor a regular file in one


def listing_of(top: Union[str, "os.PathLike[str]"]) -> Listing:
    """Scan ``top`` (e.g. ``lfw-deepfunneled/``): two levels, links and other types reported as odd."""
    names: list[str] = []
    odd: list[str] = []
    people = 0
    with os.scandir(top) as persons:
        for person in persons:
            if not person.is_dir(follow_symlinks=False):
                odd.append(person.name)
                continue
            people += 1
            with os.scandir(person.path) as files:
                for entry in files:
                    if entry.is_file(follow_symlinks=False):
                        names.append(f"{person.name}/{entry.name}")
                    else:
                        odd.append(f"{person.name}/{entry.name}")
    names.sort()
    digest = hashlib.sha256("".join(n + "\n" for n in names).encode("utf-8")).hexdigest()
    return Listing(digest, len(names), people, tuple(sorted(odd)))


def _tree_problem(folder: Path, spec: ArchivedDataset) -> str:
    """Why ``folder`` is not a complete copy of ``spec`` ("" when it is)."""
    top = folder / spec.top
    if not top.is_dir():
        return f"{top} is missing"
    for extra in spec.extras:
        path = folder / extra.filename
        if not path.is_file():
            return f"{path} is missing"
        if extra.sha256 and sha256_of(path) != extra.sha256:
            return f"{path} has sha256 {sha256_of(path)}, expected {extra.sha256}"
    found = listing_of(top)
    if found.odd:
        return f"{top} holds unexpected entries (e.g. {', '.join(found.odd[:3])})"
    if found.sha256 != spec.listing_sha256:
        return (f"{top} holds {found.files:,} files of {found.people:,} people, expected {spec.files:,} of "
                f"{spec.people:,} (file-listing sha256 {found.sha256}, expected {spec.listing_sha256})")
    return ""


def cached_lfw(cache: Union[str, os.PathLike, None] = None, *,
               spec: Optional[ArchivedDataset] = None) -> Optional[Path]:
    """The downloaded LFW folder if it is complete and verified, else None. Never downloads."""
    spec = spec or LFW
    folder = lfw_cache_path(cache, spec=spec)
    if not folder.is_dir():
        return None
    problem = _tree_problem(folder, spec)
    if problem:
        logger.warning("ignoring the cached %s: %s", spec.name, problem)
        return None
    return folder


# --- safe extraction ------------------------------------------------------------------------


def _member_parts(member: tarfile.TarInfo, top: str) -> tuple[str, ...]:
    """The path parts of a member that may be unpacked, or DownloadError saying why it may not."""
    name = member.name
    if not name or "\\" in name or "\x00" in name:
        raise DownloadError(f"refusing to unpack member {name!r}: not a plain relative path")
    path = PurePosixPath(name)
    parts = tuple(p for p in path.parts if p not in ("", "."))
    if path.is_absolute() or ".." in parts:
        raise DownloadError(f"refusing to unpack member {name!r}: it points outside the destination")
    if not parts or parts[0] != top:
        raise DownloadError(f"refusing to unpack member {name!r}: everything must be under {top}/")
    if member.issym() or member.islnk():
        raise DownloadError(f"refusing to unpack member {name!r}: links are not allowed (-> {member.linkname!r})")
    if not (member.isfile() or member.isdir()):
        raise DownloadError(f"refusing to unpack member {name!r}: only files and folders are allowed")
    return parts


class _DiskError(DownloadError):
    """Unpacking failed for want of space or permission: the archive itself is fine, keep it."""


def safe_extract(archive: Union[str, os.PathLike], destination: Union[str, os.PathLike], *, top: str,
                 max_bytes: int, max_members: int, progress: Optional[DownloadProgress] = None,
                 expected_files: Optional[int] = None) -> int:
    """Unpack ``archive`` (tar, any compression) into ``destination``; return the files written.

    Only regular files and folders under ``top/`` are accepted, written by this function (never
    by ``tarfile.extract``) with fixed permissions. Any other member, more than ``max_members``
    members or ``max_bytes`` of content raises :class:`DownloadError`; the caller then discards
    ``destination``.
    """
    root = Path(destination).resolve()
    written = total = members = 0
    label = f"unpacking {Path(archive).name}"
    try:
        tar = tarfile.open(archive, "r:*")
    except (tarfile.TarError, OSError) as exc:
        raise DownloadError(f"{archive} is not a readable tar archive: {exc}") from exc
    with tar:
        try:
            for member in tar:
                members += 1
                if members > max_members:
                    raise DownloadError(f"{archive} holds more than {max_members} members; not the expected archive")
                parts = _member_parts(member, top)
                target = root.joinpath(*parts)
                if os.path.commonpath([root, target]) != str(root):  # belt and braces after _member_parts
                    raise DownloadError(f"refusing to unpack member {member.name!r}: it points outside the destination")
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                total += member.size
                if total > max_bytes:
                    raise DownloadError(f"{archive} unpacks to more than {max_bytes:,} bytes; not the expected archive")
                target.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(member)
                if source is None:  # pragma: no cover (regular files always have data)
                    raise DownloadError(f"cannot read member {member.name!r} of {archive}")
                with source, open(target, "wb") as sink:
                    shutil.copyfileobj(source, sink, 1 << 20)
                written += 1
                if progress is not None:
                    progress(label, written, expected_files, "files")
        except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
            if isinstance(exc, OSError) and exc.errno is not None:  # the disk, not the archive's content
                raise _DiskError(f"cannot unpack {archive} into {root}: {exc}; free some space or set "
                                 "EDGEFACE_CACHE to another folder") from exc
            raise DownloadError(f"{archive} is damaged ({exc})") from exc
    return written


# --- fetching -------------------------------------------------------------------------------


def _bytes_progress(progress: Optional[DownloadProgress], label: str):
    if progress is None:
        return None
    return lambda done, total: progress(label, done, total, "B")


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_path`` (POSIX); two processes never unpack into one cache at once."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover (Windows: unguarded)
        yield
        return
    with open(lock_path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        yield


def _fetch_remote(remote: RemoteFile, folder: Path, mirrors: Mirrors, progress: Optional[DownloadProgress],
                  hint: str) -> FetchedFile:
    return fetch_file(mirror_urls(remote.filename, remote.urls, mirrors), folder / remote.filename,
                      sha256=remote.sha256, md5=remote.md5, progress=_bytes_progress(progress, remote.filename),
                      hint=hint, max_bytes=remote.max_bytes)


def fetch_lfw(*, cache: Union[str, os.PathLike, None] = None, mirrors: Mirrors = None,
              progress: Optional[DownloadProgress] = None, keep_archive: bool = False,
              spec: Optional[ArchivedDataset] = None) -> Path:
    """LFW (deep-funneled images and pairs.txt) in the cache, downloading and verifying it first if needed.

    Returns the folder holding ``pairs.txt`` and ``lfw-deepfunneled/``. A verified cached copy
    is returned without network access. ``mirrors`` (None: ``$EDGEFACE_MIRRORS``) are tried
    before the official host. Raises :class:`DownloadError` (with what to do offline) when the
    files cannot be fetched or fail a check.
    """
    spec = spec or LFW
    folder = lfw_cache_path(cache, spec=spec)
    found = cached_lfw(cache, spec=spec)
    if found is not None:
        return found
    home, downloads = folder.parent, cache_dir(cache) / "downloads"
    hint = _offline_hint(spec)
    try:
        home.mkdir(parents=True, exist_ok=True)
        downloads.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"cannot create {home}: {exc}; set EDGEFACE_CACHE to a writable folder") from exc
    with _exclusive(home / f".{spec.name}.lock"):
        found = cached_lfw(cache, spec=spec)  # another process may have finished meanwhile
        if found is not None:
            return found
        logger.info("fetching %s into %s (mirrors first, then %s)", spec.name, folder, spec.homepage)
        extras = [_fetch_remote(extra, downloads, mirrors, progress, hint) for extra in spec.extras]
        archive = _fetch_remote(spec.archive, downloads, mirrors, progress, hint)
        staging = Path(tempfile.mkdtemp(prefix=f".{spec.name}.", suffix=".partial", dir=home))
        try:
            count = safe_extract(archive.path, staging, top=spec.top, max_bytes=spec.max_bytes,
                                 max_members=2 * (spec.files + spec.people) + 16, progress=progress,
                                 expected_files=spec.files)
            for extra in extras:
                shutil.copyfile(extra.path, staging / extra.path.name)
            problem = _tree_problem(staging, spec)
            if problem:
                raise DownloadError(f"the unpacked {archive.path.name} is not the expected {spec.name}: {problem}")
            _write_provenance(staging, spec, archive, extras, count)
            _replace_folder(staging, folder)
        except BaseException as exc:
            shutil.rmtree(staging, ignore_errors=True)
            # A bad archive: never unpack it again.
            if isinstance(exc, DownloadError) and not isinstance(exc, _DiskError):
                archive.path.unlink(missing_ok=True)
                raise DownloadError(f"{exc}. The archive was deleted; try another mirror (--mirror or "
                                    f"EDGEFACE_MIRRORS). {hint}") from None
            raise
        if not keep_archive:
            for fetched in [archive, *extras]:
                fetched.path.unlink(missing_ok=True)
    logger.info("%s ready in %s (%d files)", spec.name, folder, count)
    return folder


def _write_provenance(folder: Path, spec: ArchivedDataset, archive: FetchedFile, extras: list[FetchedFile],
                      count: int) -> None:
    record = {
        "dataset": spec.name,
        "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "archive": {"file": archive.path.name, "url": archive.url, "sha256": archive.sha256, "md5": archive.md5,
                    "pinned": {"sha256": spec.archive.sha256, "md5": spec.archive.md5}},
        "files": [{"file": f.path.name, "url": f.url, "sha256": f.sha256, "md5": f.md5} for f in extras],
        "images": count,
        "listing_sha256": spec.listing_sha256,
    }
    (folder / PROVENANCE_FILE).write_text(json.dumps(record, indent=1) + "\n")


def _replace_folder(staging: Path, folder: Path) -> None:
    """Rename ``staging`` to ``folder``; an older (unverifiable) ``folder`` is moved aside and removed."""
    if folder.exists() or folder.is_symlink():
        old = folder.with_name(f".{folder.name}.old-{os.getpid()}-{time.monotonic_ns()}")
        os.replace(folder, old)
        shutil.rmtree(old, ignore_errors=True)
    os.replace(staging, folder)


def fetch_weights(backbone: str = "mobilenet_v1_025", *, cache: Union[str, os.PathLike, None] = None,
                  mirrors: Mirrors = None, progress: Optional[DownloadProgress] = None) -> Path:
    """The ImageNet weights file for ``backbone`` in the cache (sha256-checked), downloaded if needed."""
    if backbone not in WEIGHTS:
        raise ValueError(f"no downloadable weights are pinned for backbone {backbone!r} (have: {sorted(WEIGHTS)}); "
                         "pass weights='imagenet' to use Keras' own download, or a local .h5 file")
    remote = WEIGHTS[backbone]
    hint = (f"Without network here: download {remote.filename} on another machine and pass --weights FILE, or "
            "leave it in a folder and pass --mirror FOLDER (or set EDGEFACE_MIRRORS=FOLDER)")
    return cached_download(list(remote.urls), remote.sha256 or "", cache_dir=cache_dir(cache) / "weights",
                           filename=remote.filename, progress=_bytes_progress(progress, remote.filename),
                           mirrors=mirrors, hint=hint, max_bytes=remote.max_bytes)


def cached_weights(backbone: str = "mobilenet_v1_025", *,
                   cache: Union[str, os.PathLike, None] = None) -> Optional[Path]:
    """The cached, sha256-verified weights for ``backbone``, or None. Never downloads."""
    remote = WEIGHTS.get(backbone)
    if remote is None or remote.sha256 is None:
        return None
    return find_cached(remote.filename, remote.sha256, cache_dir=cache_dir(cache) / "weights")


# --- what a command uses ----------------------------------------------------------------------


def _lfw_under(path: Path) -> Path:
    """An LFW folder given directly or as a data home holding ``lfw/`` (ValueError otherwise)."""
    from ._data import find_lfw

    if (path / "lfw" / "pairs.txt").is_file():
        path = path / "lfw"
    return find_lfw(path)


def resolve_lfw(data: Union[str, os.PathLike, None] = None, *, download: bool = True,
                cache: Union[str, os.PathLike, None] = None, mirrors: Mirrors = None,
                progress: Optional[DownloadProgress] = None) -> Path:
    """The LFW folder to use: ``data``, else ``$EDGEFACE_DATA_HOME/lfw``, else the cache (downloaded if allowed).

    An explicit ``data`` or ``$EDGEFACE_DATA_HOME`` that does not hold LFW is an error, never a
    reason to download: the caller said where the data is.
    """
    if data is not None:
        return _lfw_under(Path(data).expanduser())
    home = os.environ.get("EDGEFACE_DATA_HOME")
    if home:
        return _lfw_under(Path(home).expanduser())
    found = cached_lfw(cache)
    if found is not None:
        return found
    if not download:
        raise ValueError(f"LFW not found: no --data, EDGEFACE_DATA_HOME is not set, and {lfw_cache_path(cache)} "
                         "holds no verified copy; run `edgeface download lfw` (needs network), pass --data "
                         "/path/to/lfw (holding pairs.txt and lfw-deepfunneled/), or set EDGEFACE_DATA_HOME")
    return fetch_lfw(cache=cache, mirrors=mirrors, progress=progress)


def resolve_weights(weights: Optional[str], *, backbone: str = "mobilenet_v1_025", download: bool = True,
                    cache: Union[str, os.PathLike, None] = None, mirrors: Mirrors = None,
                    progress: Optional[DownloadProgress] = None) -> str:
    """``weights`` as given ("imagenet", "none", a path), or with None the pinned ImageNet file from the cache."""
    if weights is not None:
        return weights
    found = cached_weights(backbone, cache=cache)
    if found is not None:
        return str(found)
    if not download:
        raise ValueError(f"no --weights given and the ImageNet weights for {backbone} are not in "
                         f"{cache_dir(cache) / 'weights'}; run `edgeface download weights` (needs network), or "
                         "pass --weights FILE.h5 (or --weights imagenet for Keras' own download)")
    return str(fetch_weights(backbone, cache=cache, mirrors=mirrors, progress=progress))


def fetch_detector(variant: str = "short", *, mirrors: Mirrors = None,
                   progress: Optional[DownloadProgress] = None) -> Path:
    """The official BlazeFace file in the runtime's cache (sha256-checked), downloaded if needed."""
    from edgeface_runtime import DETECTORS
    from edgeface_runtime.download import default_detector_path

    spec = DETECTORS[variant]  # an unknown name: a ValueError naming the closest and the choices
    return default_detector_path(variant, mirrors=mirrors, progress=_bytes_progress(progress, spec.filename))


def resolve_detector(detector: Union[str, os.PathLike, None], *, download: bool = True, mirrors: Mirrors = None,
                     progress: Optional[DownloadProgress] = None) -> Path:
    """``detector`` itself, or the official short-range BlazeFace file from the runtime's cache."""
    from edgeface_runtime import resolve_detector_path

    if detector is not None or not download:
        return resolve_detector_path(detector, "short")  # without download: a ModelError saying how to get it
    return fetch_detector("short", mirrors=mirrors, progress=progress)
