"""cached_download against a local HTTP server on 127.0.0.1 (never the internet)."""

from __future__ import annotations

import hashlib
import http.server
import os
import shutil
import socket
import threading
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from edgeface_runtime import _download
from edgeface_runtime._download import (cached_download, default_cache_dir, default_detector_path, fetch_file,
                                       mirror_urls)
from edgeface_runtime._detector import DETECTORS
from edgeface_runtime._errors import DownloadError

PAYLOAD = os.urandom(300_000)  # several read chunks
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


class _Handler(http.server.SimpleHTTPRequestHandler):
    requests: list[str]

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self.requests.append(self.path)
        super().do_GET()

    def log_message(self, *args) -> None:  # keep the test output clean
        pass


@pytest.fixture
def server(tmp_path):
    """Serves tmp_path/www on a free port; yields (base_url, requests seen, folder)."""
    root = tmp_path / "www"
    root.mkdir()
    (root / "model.bin").write_bytes(PAYLOAD)
    requests: list[str] = []
    handler = type("Handler", (_Handler,), {"requests": requests})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", requests, root
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    # A proxy configured in the environment must not intercept requests to 127.0.0.1.
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "*")


def cache_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_downloads_caches_and_reuses(server, tmp_path):
    base, requests, _ = server
    cache = tmp_path / "cache"
    seen = []
    path = cached_download(f"{base}/model.bin", PAYLOAD_SHA, cache_dir=cache,
                           progress=lambda done, total: seen.append((done, total)))
    assert path == cache / "model.bin"
    assert path.read_bytes() == PAYLOAD
    assert requests == ["/model.bin"]
    assert cache_files(cache) == ["model.bin"]  # no temp file left behind
    assert seen[-1] == (len(PAYLOAD), len(PAYLOAD)) and len(seen) > 1
    # Second call: served from the cache, no request.
    again = cached_download(f"{base}/model.bin", PAYLOAD_SHA.upper(), cache_dir=cache)
    assert again == path and requests == ["/model.bin"]


def test_cache_location_from_environment_and_custom_filename(server, tmp_path, monkeypatch):
    base, requests, _ = server
    monkeypatch.setenv("EDGEFACE_CACHE", str(tmp_path / "env-cache"))
    assert default_cache_dir() == tmp_path / "env-cache"
    path = cached_download(f"{base}/model.bin", PAYLOAD_SHA, filename="renamed.tflite")
    assert path == tmp_path / "env-cache" / "renamed.tflite" and path.read_bytes() == PAYLOAD
    monkeypatch.delenv("EDGEFACE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "edgeface"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")  # the XDG spec: relative values are invalid
    assert default_cache_dir() == Path.home() / ".cache" / "edgeface"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == Path.home() / ".cache" / "edgeface"


def test_checksum_mismatch_raises_and_leaves_no_file(server, tmp_path):
    base, _, _ = server
    cache = tmp_path / "cache"
    wrong = "0" * 64
    with pytest.raises(DownloadError) as caught:
        cached_download(f"{base}/model.bin", wrong, cache_dir=cache)
    message = str(caught.value)
    assert wrong in message and PAYLOAD_SHA in message and "local path" in message
    assert cache_files(cache) == []


def test_corrupt_cached_file_is_downloaded_again(server, tmp_path):
    base, requests, _ = server
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "model.bin").write_bytes(b"truncated")
    path = cached_download(f"{base}/model.bin", PAYLOAD_SHA, cache_dir=cache)
    assert path.read_bytes() == PAYLOAD and requests == ["/model.bin"]


def test_http_error_raises_download_error(server, tmp_path):
    base, _, _ = server
    with pytest.raises(DownloadError, match="404") as caught:
        cached_download(f"{base}/missing.bin", PAYLOAD_SHA, cache_dir=tmp_path / "cache")
    assert f"{base}/missing.bin" in str(caught.value)
    assert cache_files(tmp_path / "cache") == []


def test_unreachable_server_raises_download_error(tmp_path):
    with socket.socket() as probe:  # a port nobody listens on once the probe closes
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/model.bin"
    with pytest.raises(DownloadError) as caught:
        cached_download(url, PAYLOAD_SHA, cache_dir=tmp_path / "cache")
    assert url in str(caught.value) and "local path" in str(caught.value)
    assert cache_files(tmp_path / "cache") == []


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="64 hex"):
        cached_download("http://127.0.0.1:1/x.bin", "abc", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="file name"):
        cached_download("http://127.0.0.1:1/", PAYLOAD_SHA, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="unknown detector variant"):
        default_detector_path("medium")


def test_default_detector_comes_from_the_cache_without_network(tmp_path, monkeypatch):
    from edgeface_runtime._detector import DETECTORS, FaceDetector, download_detector, resolve_detector_path

    configured = os.environ.get("EDGEFACE_MODELS_DIR")
    models = Path(configured) if configured else Path(__file__).resolve().parents[2].parent / "shared" / "models"
    # The full-range model: the short-range one ships inside the package, which wins over the cache.
    source = models / DETECTORS["full"].filename
    if not source.is_file():
        pytest.skip(f"detector model {source} not found; set EDGEFACE_MODELS_DIR")
    cache = tmp_path / "cache"
    cache.mkdir()
    shutil.copyfile(source, cache / source.name)
    monkeypatch.setenv("EDGEFACE_CACHE", str(cache))

    def no_network(*args, **kwargs):
        raise AssertionError("the network was used although the cache held the file")

    monkeypatch.setattr(_download.urllib.request, "urlopen", no_network)
    assert default_detector_path("full") == cache / source.name
    assert download_detector("full") == cache / source.name
    assert resolve_detector_path(None, "full") == cache / source.name
    with FaceDetector.default("full") as detector:
        assert detector.variant == "full"
        assert detector.detect(np.zeros((32, 32, 3), dtype=np.uint8)) == []


def test_resolve_detector_path_never_downloads(tmp_path, monkeypatch):
    from edgeface_runtime._detector import resolve_detector_path
    from edgeface_runtime._errors import ModelError

    monkeypatch.setenv("EDGEFACE_CACHE", str(tmp_path / "empty"))
    monkeypatch.setattr(_download.urllib.request, "urlopen", lambda *a, **k: pytest.fail("network used"))
    assert resolve_detector_path(tmp_path / "mine.tflite", "full") == tmp_path / "mine.tflite"
    with pytest.raises(ModelError, match="download-detector --variant full"):
        resolve_detector_path(None, "full")
    with pytest.raises(ValueError, match="unknown detector variant"):
        resolve_detector_path(None, "huge")


def test_interrupted_download_keeps_its_part_and_resumes_with_a_range_request(local_http, tmp_path):
    url = local_http.add("big.bin", PAYLOAD)
    local_http.cut_after["/big.bin"] = 100_000
    cache = tmp_path / "cache"
    with pytest.raises(DownloadError) as caught:
        cached_download(url, PAYLOAD_SHA, cache_dir=cache)
    assert "100000 of 300000" in str(caught.value) and "resume" in str(caught.value)
    assert cache_files(cache) == [".big.bin.part"]
    assert (cache / ".big.bin.part").read_bytes() == PAYLOAD[:100_000]
    seen = []
    path = cached_download(url, PAYLOAD_SHA, cache_dir=cache, progress=lambda d, t: seen.append((d, t)))
    assert path.read_bytes() == PAYLOAD and cache_files(cache) == ["big.bin"]
    assert local_http.requests == [("/big.bin", None), ("/big.bin", "bytes=100000-")]
    assert seen[0] == (100_000, len(PAYLOAD)) and seen[-1] == (len(PAYLOAD), len(PAYLOAD))


def test_server_without_range_support_restarts_from_zero(local_http, tmp_path):
    url = local_http.add("big.bin", PAYLOAD)
    local_http.ranges = False
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / ".big.bin.part").write_bytes(b"x" * 5000)  # not even a prefix of the file
    assert cached_download(url, PAYLOAD_SHA, cache_dir=cache).read_bytes() == PAYLOAD
    assert local_http.requests == [("/big.bin", "bytes=5000-")]


def test_corrupt_partial_download_is_fetched_again_whole(local_http, tmp_path):
    url = local_http.add("big.bin", PAYLOAD)
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / ".big.bin.part").write_bytes(b"x" * 5000)  # the server will append the real remainder
    assert cached_download(url, PAYLOAD_SHA, cache_dir=cache).read_bytes() == PAYLOAD
    assert local_http.requests == [("/big.bin", "bytes=5000-"), ("/big.bin", None)]


def test_oversized_partial_download_starts_again(local_http, tmp_path):
    url = local_http.add("big.bin", PAYLOAD)
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / ".big.bin.part").write_bytes(PAYLOAD + b"junk")  # the server answers 416
    assert cached_download(url, PAYLOAD_SHA, cache_dir=cache).read_bytes() == PAYLOAD
    assert [r[1] for r in local_http.requests] == [f"bytes={len(PAYLOAD) + 4}-", None]


def test_mirrors_come_first_and_a_bad_mirror_falls_back(local_http, tmp_path, monkeypatch):
    official = local_http.add("official/model.bin", PAYLOAD)
    local_http.add("broken/model.bin", b"a captive portal page")
    monkeypatch.setenv("EDGEFACE_MIRRORS", f"{local_http.base}/missing, {local_http.base}/broken")
    path = cached_download(official, PAYLOAD_SHA, cache_dir=tmp_path / "cache")
    assert path.read_bytes() == PAYLOAD
    assert [r[0] for r in local_http.requests] == ["/missing/model.bin", "/broken/model.bin", "/official/model.bin"]


def test_a_local_folder_works_as_a_mirror_without_network(local_http, tmp_path):
    folder = tmp_path / "usb stick"
    folder.mkdir()
    (folder / "model.bin").write_bytes(PAYLOAD)
    urls = mirror_urls("model.bin", local_http.url("model.bin"), [str(folder)])
    assert urls[0].startswith("file://") and urls[0].endswith("/usb%20stick/model.bin")
    path = cached_download(local_http.url("model.bin"), PAYLOAD_SHA, cache_dir=tmp_path / "cache",
                           mirrors=[str(folder)])
    assert path.read_bytes() == PAYLOAD and local_http.requests == []


def test_every_failed_source_is_named_with_the_expected_and_found_checksums(local_http, tmp_path):
    bad = local_http.add("bad.bin", b"not the model")
    with pytest.raises(DownloadError) as caught:
        cached_download([local_http.url("gone.bin"), bad], PAYLOAD_SHA, cache_dir=tmp_path / "cache",
                        filename="model.bin")
    message = str(caught.value)
    assert local_http.url("gone.bin") in message and "404" in message
    assert bad in message and PAYLOAD_SHA in message and hashlib.sha256(b"not the model").hexdigest() in message
    assert "another mirror" in message and "local path" in message
    assert cache_files(tmp_path / "cache") == []


def test_fetch_file_checks_md5_and_reports_digests_when_none_is_pinned(local_http, tmp_path):
    url = local_http.add("data.tgz", PAYLOAD)
    md5 = hashlib.md5(PAYLOAD).hexdigest()
    unchecked = fetch_file(url, tmp_path / "a" / "data.tgz")
    assert (unchecked.sha256, unchecked.md5, unchecked.url) == (PAYLOAD_SHA, md5, url)
    with pytest.raises(DownloadError, match=f"expected md5 {'0' * 32}, got {md5}"):
        fetch_file(url, tmp_path / "b" / "data.tgz", md5="0" * 32)
    assert not (tmp_path / "b" / "data.tgz").exists()
    requests = len(local_http.requests)
    again = fetch_file(url, tmp_path / "a" / "data.tgz", md5=md5)  # present and matching: no request
    assert again.url is None and len(local_http.requests) == requests
    with pytest.raises(ValueError, match="32 hex"):
        fetch_file(url, tmp_path / "c", md5="abc")


def test_concurrent_downloads_of_one_file_wait_for_each_other(local_http, tmp_path):
    url = local_http.add("big.bin", PAYLOAD)
    local_http.delay_s = 0.02  # slow enough for the two calls to overlap
    cache = tmp_path / "cache"
    results, errors = [], []
    first_bytes_arrived = threading.Event()

    def fetch(progress=None):
        try:
            results.append(cached_download(url, PAYLOAD_SHA, cache_dir=cache, progress=progress))
        except Exception as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    first = threading.Thread(target=fetch, args=(lambda done, total: done and first_bytes_arrived.set(),))
    first.start()
    assert first_bytes_arrived.wait(timeout=30)
    second = threading.Thread(target=fetch)  # starts while the first is mid-transfer
    second.start()
    first.join(timeout=60)
    second.join(timeout=60)
    assert errors == [] and len(results) == 2
    assert (cache / "big.bin").read_bytes() == PAYLOAD and cache_files(cache) == ["big.bin"]
    assert len(local_http.requests) == 1  # the second caller found the first one's file


def test_a_source_announcing_more_than_the_known_size_is_not_downloaded(local_http, tmp_path):
    url = local_http.add("model.bin", PAYLOAD + b"x" * 1000)
    with pytest.raises(DownloadError, match=f"offers {len(PAYLOAD) + 1000} bytes, more than the {len(PAYLOAD)}"):
        cached_download(url, PAYLOAD_SHA, cache_dir=tmp_path / "cache", max_bytes=len(PAYLOAD))
    assert cache_files(tmp_path / "cache") == []


def test_a_stream_longer_than_the_known_size_is_cut_off_and_discarded(local_http, tmp_path):
    # No Content-Length: only counting the bytes stops a wrong or endless response.
    local_http.announce_length = False
    endless = local_http.add("model.bin", bytes(4 << 20))
    with pytest.raises(DownloadError, match="sent more than the 1000 bytes expected") as caught:
        cached_download(endless, PAYLOAD_SHA, cache_dir=tmp_path / "cache", max_bytes=1000)
    assert "different file" in str(caught.value)  # a mismatch: not offered for resuming
    assert cache_files(tmp_path / "cache") == []
    exact = local_http.add("exact.bin", PAYLOAD)
    path = cached_download(exact, PAYLOAD_SHA, cache_dir=tmp_path / "cache", max_bytes=len(PAYLOAD))
    assert path.read_bytes() == PAYLOAD
    with pytest.raises(ValueError, match="max_bytes"):
        fetch_file(exact, tmp_path / "other.bin", max_bytes=0)


@pytest.mark.parametrize("variant", sorted(DETECTORS))
def test_pinned_detector_sizes_match_the_official_files(variant, detector_models_dir):
    path = detector_models_dir / DETECTORS[variant].filename
    if not path.is_file():
        pytest.skip(f"{path} not found")
    assert path.stat().st_size == DETECTORS[variant].size
