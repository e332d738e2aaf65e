"""Fetching LFW and ImageNet weights for users without the data: a tiny synthetic archive served on 127.0.0.1.

Never the internet: the pinned LFW entry is replaced by one describing an archive built here
(a few fake people with generated JPEGs and a pairs.txt); only the real-data test at the end
compares the pinned constants with the project's copy of LFW.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import socket
import tarfile
from pathlib import Path

import pytest
from training_helpers import make_lfw

from edgeface import _datasets
from edgeface._datasets import (
    LFW,
    ArchivedDataset,
    RemoteFile,
    cached_lfw,
    fetch_lfw,
    fetch_weights,
    listing_of,
    resolve_lfw,
    resolve_weights,
)
from edgeface_runtime import DownloadError

PEOPLE, PER_PERSON = 6, 3


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    """(folder with lfw-deepfunneled/ and pairs.txt, the .tgz bytes, pairs.txt bytes)."""
    root = make_lfw(tmp_path_factory.mktemp("mini"), people=PEOPLE, per_person=PER_PERSON, size=24)
    return root, _tgz(root), (root / "pairs.txt").read_bytes()


def _tgz(root: Path, extra=None, skip: str | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in sorted((root / "lfw-deepfunneled").rglob("*")):
            name = path.relative_to(root).as_posix()
            if skip and name.endswith(skip):
                continue
            tar.add(path, arcname=name, recursive=False)
        if extra is not None:
            extra(tar)
    return buffer.getvalue()


def _spec(server, mini_root: Path, archive: bytes, pairs: bytes, *, md5: str | None = "auto",
          sha256: str | None = None) -> ArchivedDataset:
    """The LFW entry, pointed at ``server`` and describing the synthetic archive."""
    archive_url = server.add("lfw/lfw-deepfunneled.tgz", archive)
    pairs_url = server.add("lfw/pairs.txt", pairs)
    return dataclasses.replace(
        LFW,
        archive=RemoteFile("lfw-deepfunneled.tgz", (archive_url,), sha256=sha256,
                           md5=hashlib.md5(archive).hexdigest() if md5 == "auto" else md5),
        extras=(RemoteFile("pairs.txt", (pairs_url,), sha256=_sha(pairs)),),
        files=PEOPLE * PER_PERSON, people=PEOPLE,
        listing_sha256=listing_of(mini_root / "lfw-deepfunneled").sha256,
        homepage=server.base + "/lfw/",
    )


def _events():
    seen: list[tuple[str, int, int | None, str]] = []
    return seen, lambda label, done, total, unit: seen.append((label, done, total, unit))


def _leftovers(cache: Path) -> list[str]:
    return sorted(p.relative_to(cache).as_posix() for p in cache.rglob("*")
                  if "lfw/lfw-deepfunneled" not in p.as_posix())


def test_fetch_downloads_verifies_unpacks_and_the_second_call_is_a_cache_hit(local_http, mini, tmp_path):
    root, archive, pairs = mini
    spec = _spec(local_http, root, archive, pairs)
    cache = tmp_path / "cache"
    seen, progress = _events()
    folder = fetch_lfw(cache=cache, spec=spec, progress=progress)
    assert folder == cache / "data" / "lfw"
    assert (folder / "pairs.txt").read_bytes() == pairs
    for image in (root / "lfw-deepfunneled").rglob("*.jpg"):
        assert (folder / image.relative_to(root)).read_bytes() == image.read_bytes()
    provenance = json.loads((folder / ".edgeface-source.json").read_text())
    assert provenance["archive"]["sha256"] == _sha(archive) and provenance["images"] == PEOPLE * PER_PERSON
    # Archives are removed once unpacked; nothing half-made is left.
    assert _leftovers(cache) == ["data", "data/.lfw.lock", "data/lfw", "data/lfw/.edgeface-source.json",
                                 "data/lfw/pairs.txt", "downloads"]
    assert ("pairs.txt", len(pairs), len(pairs), "B") in seen
    assert ("lfw-deepfunneled.tgz", len(archive), len(archive), "B") in seen
    assert seen[-1] == ("unpacking lfw-deepfunneled.tgz", PEOPLE * PER_PERSON, PEOPLE * PER_PERSON, "files")
    requests = list(local_http.requests)
    assert [r[0] for r in requests] == ["/lfw/pairs.txt", "/lfw/lfw-deepfunneled.tgz"]

    assert fetch_lfw(cache=cache, spec=spec) == folder  # second call: from the cache
    assert cached_lfw(cache, spec=spec) == folder
    assert local_http.requests == requests
    from edgeface._data import find_lfw  # the training side accepts the downloaded folder as is

    assert find_lfw(folder) == folder


@pytest.mark.parametrize("pin", ["md5", "sha256"])
def test_archive_checksum_mismatch_names_expected_and_found_and_keeps_nothing(local_http, mini, tmp_path, pin):
    root, archive, pairs = mini
    wrong = {"md5": "0" * 32, "sha256": "0" * 64}[pin]
    spec = _spec(local_http, root, archive, pairs,
                 **({"md5": wrong} if pin == "md5" else {"md5": None, "sha256": wrong}))
    cache = tmp_path / "cache"
    with pytest.raises(DownloadError) as caught:
        fetch_lfw(cache=cache, spec=spec)
    message = str(caught.value)
    found = hashlib.md5(archive).hexdigest() if pin == "md5" else _sha(archive)
    assert f"expected {pin} {wrong}, got {found}" in message
    assert "--data" in message and "EDGEFACE_MIRRORS" in message
    assert not (cache / "data" / "lfw").exists()
    assert not list((cache / "downloads").glob("*lfw-deepfunneled*"))


def test_interrupted_archive_download_resumes_where_it_stopped(local_http, mini, tmp_path):
    root, archive, pairs = mini
    spec = _spec(local_http, root, archive, pairs)
    local_http.cut_after["/lfw/lfw-deepfunneled.tgz"] = half = len(archive) // 2
    cache = tmp_path / "cache"
    with pytest.raises(DownloadError, match="run the same command again to resume"):
        fetch_lfw(cache=cache, spec=spec)
    assert (cache / "downloads" / ".lfw-deepfunneled.tgz.part").stat().st_size == half
    assert cached_lfw(cache, spec=spec) is None
    folder = fetch_lfw(cache=cache, spec=spec)
    assert listing_of(folder / "lfw-deepfunneled").sha256 == spec.listing_sha256
    assert local_http.requests[-1] == ("/lfw/lfw-deepfunneled.tgz", f"bytes={half}-")
    assert not list((cache / "downloads").iterdir())


def _link(kind: bytes, target: str):
    """A symbolic (tarfile.SYMTYPE) or hard (tarfile.LNKTYPE) link member pointing at ``target``."""
    def add(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo("lfw-deepfunneled/Person_AA/Person_AA_0009.jpg")
        info.type, info.linkname = kind, target
        tar.addfile(info)
    return add


def _file(name: str, data: bytes = b"owned"):
    def add(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return add


def _fifo(tar: tarfile.TarFile) -> None:
    info = tarfile.TarInfo("lfw-deepfunneled/Person_AA/pipe")
    info.type = tarfile.FIFOTYPE
    tar.addfile(info)


@pytest.mark.parametrize("evil, reason", [
    (_file("../evil.txt"), "outside the destination"),
    (_file("lfw-deepfunneled/../../evil.txt"), "outside the destination"),
    (_file("/tmp/edgeface-evil.txt"), "outside the destination"),
    (_file("elsewhere/evil.txt"), "everything must be under lfw-deepfunneled/"),
    (_link(tarfile.SYMTYPE, "../../../evil.txt"), "links are not allowed"),
    (_link(tarfile.LNKTYPE, "/etc/passwd"), "links are not allowed"),
    (_fifo, "only files and folders"),
], ids=["dotdot", "dotdot-inside", "absolute", "outside-top", "symlink", "hardlink", "fifo"])
def test_unsafe_archive_members_are_refused_and_nothing_is_written_outside(local_http, mini, tmp_path, evil, reason):
    root, _, pairs = mini
    archive = _tgz(root, extra=evil)
    spec = _spec(local_http, root, archive, pairs)  # the checksum matches: only the extraction can refuse
    cache = tmp_path / "deep" / "cache"
    with pytest.raises(DownloadError, match="refusing to unpack") as caught:
        fetch_lfw(cache=cache, spec=spec)
    assert reason in str(caught.value) and "archive was deleted" in str(caught.value)
    assert not (tmp_path / "deep" / "evil.txt").exists() and not (tmp_path / "evil.txt").exists()
    assert not (cache / "evil.txt").exists() and not Path("/tmp/edgeface-evil.txt").exists()
    assert not (cache / "data" / "lfw").exists()
    assert [p.name for p in (cache / "data").iterdir()] == [".lfw.lock"]  # the staging folder is gone
    assert not (cache / "downloads" / "lfw-deepfunneled.tgz").exists()


def test_a_full_disk_while_unpacking_keeps_the_verified_archive_for_the_next_try(local_http, mini, tmp_path,
                                                                                monkeypatch):
    import errno

    import edgeface._datasets as datasets

    root, archive, pairs = mini
    spec = _spec(local_http, root, archive, pairs)
    cache = tmp_path / "cache"
    real_copy = datasets.shutil.copyfileobj

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(datasets.shutil, "copyfileobj", disk_full)
    with pytest.raises(DownloadError, match="free some space") as caught:
        fetch_lfw(cache=cache, spec=spec)
    assert "archive was deleted" not in str(caught.value)
    assert (cache / "downloads" / "lfw-deepfunneled.tgz").read_bytes() == archive
    assert not (cache / "data" / "lfw").exists()
    monkeypatch.setattr(datasets.shutil, "copyfileobj", real_copy)
    requests = len(local_http.requests)
    assert fetch_lfw(cache=cache, spec=spec) == cache / "data" / "lfw"  # unpacked from the kept archive
    assert [r[0] for r in local_http.requests[requests:]] == []


def test_without_an_archive_checksum_the_unpacked_content_is_what_is_verified(local_http, mini, tmp_path):
    root, _, pairs = mini
    short = _tgz(root, skip="Person_AB_0002.jpg")  # one image missing: a different archive
    spec = _spec(local_http, root, short, pairs, md5=None)
    with pytest.raises(DownloadError) as caught:
        fetch_lfw(cache=tmp_path / "cache", spec=spec)
    message = str(caught.value)
    assert f"holds {PEOPLE * PER_PERSON - 1} files of {PEOPLE} people, expected {PEOPLE * PER_PERSON}" in message
    assert not (tmp_path / "cache" / "data" / "lfw").exists()


def test_a_damaged_cache_is_noticed_and_fetched_again(local_http, mini, tmp_path):
    root, archive, pairs = mini
    spec = _spec(local_http, root, archive, pairs)
    cache = tmp_path / "cache"
    folder = fetch_lfw(cache=cache, spec=spec)
    victim = next((folder / "lfw-deepfunneled").rglob("*.jpg"))
    victim.unlink()
    assert cached_lfw(cache, spec=spec) is None
    assert fetch_lfw(cache=cache, spec=spec) == folder and victim.is_file()
    assert [r[0] for r in local_http.requests].count("/lfw/lfw-deepfunneled.tgz") == 2


def test_no_network_says_how_to_use_a_local_copy_and_a_local_folder_mirror_works(local_http, mini, tmp_path):
    root, archive, pairs = mini
    with socket.socket() as probe:  # a port nobody listens on once the probe closes
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}"
    spec = _spec(local_http, root, archive, pairs)
    spec = dataclasses.replace(spec, archive=dataclasses.replace(spec.archive, urls=(f"{dead}/lfw-deepfunneled.tgz",)),
                               extras=(dataclasses.replace(spec.extras[0], urls=(f"{dead}/pairs.txt",)),))
    with pytest.raises(DownloadError) as caught:
        fetch_lfw(cache=tmp_path / "cache", spec=spec)
    message = str(caught.value)
    assert f"{dead}/pairs.txt" in message and "no source could be reached" in message
    assert "--data FOLDER" in message and "EDGEFACE_DATA_HOME" in message and "--mirror FOLDER" in message

    usb = tmp_path / "usb"
    usb.mkdir()
    (usb / "lfw-deepfunneled.tgz").write_bytes(archive)
    (usb / "pairs.txt").write_bytes(pairs)
    folder = fetch_lfw(cache=tmp_path / "cache", spec=spec, mirrors=[str(usb)])
    assert (folder / "pairs.txt").read_bytes() == pairs


def test_resolve_lfw_prefers_explicit_data_then_data_home_then_the_cache(local_http, mini, tmp_path, monkeypatch):
    root, archive, pairs = mini
    monkeypatch.setattr(_datasets, "LFW", _spec(local_http, root, archive, pairs))
    monkeypatch.delenv("EDGEFACE_DATA_HOME", raising=False)
    cache = tmp_path / "cache"
    with pytest.raises(ValueError, match="edgeface download lfw"):
        resolve_lfw(None, download=False, cache=cache)
    assert local_http.requests == []
    assert resolve_lfw(None, cache=cache) == cache / "data" / "lfw"  # downloaded
    assert resolve_lfw(root, cache=cache) == root  # an LFW folder given directly
    home = tmp_path / "home"
    home.mkdir()
    (home / "lfw").symlink_to(root, target_is_directory=True)
    assert resolve_lfw(home, cache=cache) == home / "lfw"  # a data home holding lfw/
    monkeypatch.setenv("EDGEFACE_DATA_HOME", str(home))
    assert resolve_lfw(None, cache=cache) == home / "lfw"
    monkeypatch.setenv("EDGEFACE_DATA_HOME", str(tmp_path / "nothing"))
    with pytest.raises(ValueError, match="not an LFW folder"):  # told where the data is: never a download
        resolve_lfw(None, cache=cache)


def test_weights_are_downloaded_once_checked_by_sha256_and_passed_through_when_given(local_http, tmp_path, monkeypatch):
    payload = os.urandom(50_000)
    url = local_http.add("keras/mobilenet_2_5_224_tf_no_top.h5", payload)
    monkeypatch.setitem(_datasets.WEIGHTS, "mobilenet_v1_025",
                        RemoteFile("mobilenet_2_5_224_tf_no_top.h5", (url,), sha256=_sha(payload)))
    cache = tmp_path / "cache"
    with pytest.raises(ValueError, match="edgeface download weights"):
        resolve_weights(None, download=False, cache=cache)
    seen, progress = _events()
    path = Path(resolve_weights(None, cache=cache, progress=progress))
    assert path == cache / "weights" / "mobilenet_2_5_224_tf_no_top.h5" and path.read_bytes() == payload
    assert seen[-1] == ("mobilenet_2_5_224_tf_no_top.h5", len(payload), len(payload), "B")
    assert fetch_weights(cache=cache) == path and len(local_http.requests) == 1
    assert resolve_weights("imagenet", cache=cache) == "imagenet"
    assert resolve_weights("/my/weights.h5", cache=cache) == "/my/weights.h5"
    with pytest.raises(ValueError, match="no downloadable weights"):
        fetch_weights("resnet50", cache=cache)

    wrong = "1" * 64
    monkeypatch.setitem(_datasets.WEIGHTS, "mobilenet_v1_025",
                        RemoteFile("mobilenet_2_5_224_tf_no_top.h5", (url,), sha256=wrong))
    with pytest.raises(DownloadError) as caught:
        fetch_weights(cache=tmp_path / "other")
    assert f"expected sha256 {wrong}, got {_sha(payload)}" in str(caught.value)
    assert "--weights FILE" in str(caught.value)


@pytest.mark.lfw
def test_pinned_lfw_and_weight_checksums_match_the_real_files(lfw_dir):
    """The constants the download checks against, recomputed from the project's copy of LFW."""
    found = listing_of(lfw_dir / "lfw-deepfunneled")
    assert (found.files, found.people, found.odd) == (LFW.files, LFW.people, ())
    assert found.sha256 == LFW.listing_sha256
    pairs = (lfw_dir / "pairs.txt").read_bytes()
    assert _sha(pairs) == LFW.extras[0].sha256 and hashlib.md5(pairs).hexdigest() == LFW.extras[0].md5
    assert len(pairs) == LFW.extras[0].max_bytes  # the exact size: downloads stop beyond it
    weights = lfw_dir.parent.parent / "weights" / _datasets.WEIGHTS["mobilenet_v1_025"].filename
    if weights.is_file():
        assert _sha(weights.read_bytes()) == _datasets.WEIGHTS["mobilenet_v1_025"].sha256
        assert weights.stat().st_size == _datasets.WEIGHTS["mobilenet_v1_025"].max_bytes


# --- the commands ---------------------------------------------------------------------------


def test_download_command_fetches_into_the_cache_and_reports_failures_with_exit_9(local_http, mini, tmp_path,
                                                                               monkeypatch, edgeface):
    root, archive, pairs = mini
    monkeypatch.setattr(_datasets, "LFW", _spec(local_http, root, archive, pairs))
    monkeypatch.setenv("EDGEFACE_CACHE", str(tmp_path / "cache"))
    code, out, err = edgeface("download", "lfw", "--json")
    assert code == 0, err
    assert json.loads(out) == {"lfw": str(tmp_path / "cache" / "data" / "lfw")}
    code, out, _ = edgeface("download", "lfw")
    assert code == 0 and out.strip() == f"lfw: {tmp_path / 'cache' / 'data' / 'lfw'}"
    assert [r[0] for r in local_http.requests].count("/lfw/lfw-deepfunneled.tgz") == 1

    monkeypatch.setenv("EDGEFACE_CACHE", str(tmp_path / "other"))
    monkeypatch.setattr(_datasets, "LFW", _spec(local_http, root, archive, pairs, md5="0" * 32))
    code, _, err = edgeface("download", "lfw")
    assert code == 9 and "expected md5 " + "0" * 32 in err
    code, _, err = edgeface("download", "imagenet")
    assert code == 2 and "lfw, weights, detector, all" in err


def test_demo_takes_missing_data_from_the_cache_or_says_how_to_get_it(local_http, mini, tmp_path, monkeypatch,
                                                                     edgeface):
    """The demo's data stage only: training is replaced by a stand-in that records its configuration."""
    import sys
    import types

    root, archive, pairs = mini
    monkeypatch.setattr(_datasets, "LFW", _spec(local_http, root, archive, pairs))
    payload = os.urandom(10_000)
    url = local_http.add("keras/weights.h5", payload)
    monkeypatch.setitem(_datasets.WEIGHTS, "mobilenet_v1_025",
                        RemoteFile("mobilenet_2_5_224_tf_no_top.h5", (url,), sha256=_sha(payload)))
    monkeypatch.setenv("EDGEFACE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("EDGEFACE_DATA_HOME", raising=False)
    seen = {}

    class Stop(ValueError):
        pass

    def train(config):
        seen["config"] = config
        raise Stop("stopped after the data stage")

    fake = types.ModuleType("edgeface._train")
    fake.TrainConfig = types.SimpleNamespace(from_dict=lambda values: types.SimpleNamespace(**values))
    fake.train = train
    monkeypatch.setitem(sys.modules, "edgeface._train", fake)
    detector = tmp_path / "detector.tflite"
    args = ["demo", "--quick", "--detector", str(detector), "--out", str(tmp_path / "out")]

    code, _, err = edgeface(*args, "--no-download")
    assert code == 2 and "edgeface download lfw" in err and local_http.requests == []

    code, out, err = edgeface(*args)
    assert code == 2 and "stopped after the data stage" in err
    config = seen["config"]
    assert config.data == str(tmp_path / "cache" / "data" / "lfw")
    assert config.weights == str(tmp_path / "cache" / "weights" / "mobilenet_2_5_224_tf_no_top.h5")
    assert config.detector == str(detector)
    assert f"data: LFW {tmp_path / 'cache' / 'data' / 'lfw'}" in out
