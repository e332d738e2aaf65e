"""Shared fixtures. TensorFlow-free: the runtime tests run in environments without it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "runtime" / "fixtures"


def _shared_dir(env: str, *parts: str) -> Path | None:
    """A folder of real data: from ``env``, else ``../shared/...`` beside the checkout."""
    if os.environ.get(env):
        return Path(os.environ[env])
    candidate = REPO.parent.joinpath("shared", *parts)
    return candidate if candidate.exists() else None


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture
def edgeface(capsys):
    """Run ``edgeface ARGS...`` the way the console script does (the runtime's dispatcher, and
    for training commands their installed entry point); returns (exit code, stdout, stderr)."""
    from edgeface_runtime.cli import main

    def run(*args):
        capsys.readouterr()  # only this command's output
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture(scope="session")
def lfw_dir() -> Path:
    """``$EDGEFACE_DATA_HOME/lfw``; the test is skipped when it is not there."""
    home = os.environ.get("EDGEFACE_DATA_HOME")
    if not home:
        pytest.skip("EDGEFACE_DATA_HOME is not set (point it at a folder holding lfw/ to run real-face tests)")
    lfw = Path(home) / "lfw"
    if not (lfw / "lfw-deepfunneled").is_dir():
        pytest.skip(f"LFW not found at {lfw}/lfw-deepfunneled")
    return lfw


@pytest.fixture(scope="session")
def orl_dir() -> Path:
    """``$EDGEFACE_DATA_HOME/orl`` (the AT&T/ORL faces); the test is skipped when it is not there."""
    home = os.environ.get("EDGEFACE_DATA_HOME")
    if not home:
        pytest.skip("EDGEFACE_DATA_HOME is not set (point it at the folder holding orl/)")
    root = Path(home) / "orl"
    if not (root / "s1" / "1.pgm").is_file():
        pytest.skip(f"{root} lacks s1/1.pgm (the AT&T/ORL faces)")
    return root


@pytest.fixture(scope="session")
def detector_models_dir() -> Path:
    """Folder with the MediaPipe BlazeFace .tflite files (``$EDGEFACE_MODELS_DIR`` or ../shared/models)."""
    found = _shared_dir("EDGEFACE_MODELS_DIR", "models")
    if found is None or not (found / "face_detection_short_range.tflite").exists():
        pytest.skip("BlazeFace models not found: set EDGEFACE_MODELS_DIR to a folder holding "
                    "face_detection_short_range.tflite")
    return found


class LocalHTTP:
    """Files served on 127.0.0.1 for download tests (never the internet).

    ``files`` maps a URL path ("/name") to its bytes. Range requests are answered with 206
    unless ``ranges`` is False; ``cut_after[path] = n`` makes the next response for ``path``
    announce the full length but stop after ``n`` body bytes (an interrupted transfer).
    With ``announce_length`` False, responses carry no Content-Length and end when the
    connection closes (a stream of unknown size). ``requests`` records ``(path, Range header or None)`` for every GET.
    """

    def __init__(self, base: str) -> None:
        self.base = base
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.cut_after: dict[str, int] = {}
        self.ranges = True
        self.announce_length = True
        self.delay_s = 0.0

    def url(self, name: str) -> str:
        return f"{self.base}/{name.lstrip('/')}"

    def add(self, name: str, data: bytes) -> str:
        self.files["/" + name.lstrip("/")] = data
        return self.url(name)


@pytest.fixture
def local_http(monkeypatch):
    """A :class:`LocalHTTP` serving in a thread for the test's duration; proxies disabled."""
    import http.server
    import re
    import threading
    import time

    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.delenv("EDGEFACE_MIRRORS", raising=False)
    state: dict = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            server: LocalHTTP = state["server"]
            server.requests.append((self.path, self.headers.get("Range")))
            data = server.files.get(self.path)
            if data is None:
                self.send_error(404, "File not found")
                return
            start, status = 0, 200
            found = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
            if found and server.ranges:
                start = int(found.group(1))
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                status = 206
            self.send_response(status)
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            if server.announce_length:
                self.send_header("Content-Length", str(len(data) - start))
            else:
                self.close_connection = True
            self.end_headers()
            body = data[start:]
            cut = server.cut_after.pop(self.path, None)
            if cut is not None:
                body = body[:cut]
                self.close_connection = True
            try:
                for i in range(0, len(body), 1 << 16):
                    self.wfile.write(body[i:i + (1 << 16)])
                    if server.delay_s:
                        time.sleep(server.delay_s)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True  # the client stopped reading (a cut-off download)

        def log_message(self, *args) -> None:  # keep the test output clean
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state["server"] = LocalHTTP(f"http://127.0.0.1:{httpd.server_address[1]}")
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state["server"]
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
