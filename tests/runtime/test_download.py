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
from edgeface_runtime._download import cached_download, default_cache_dir, default_detector_path
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
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
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
    source = models / DETECTORS["short"].filename
    if not source.is_file():
        pytest.skip(f"detector model {source} not found; set EDGEFACE_MODELS_DIR")
    cache = tmp_path / "cache"
    cache.mkdir()
    shutil.copyfile(source, cache / source.name)
    monkeypatch.setenv("EDGEFACE_CACHE", str(cache))

    def no_network(*args, **kwargs):
        raise AssertionError("the network was used although the cache held the file")

    monkeypatch.setattr(_download.urllib.request, "urlopen", no_network)
    assert default_detector_path("short") == cache / source.name
    assert download_detector("short") == cache / source.name
    assert resolve_detector_path(None, "short") == cache / source.name
    with FaceDetector.default("short") as detector:
        assert detector.variant == "short"
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
