"""Frames for :meth:`FaceVerifier.process_frame`: from a camera, a video file or a folder of images.

    for frame in open_frames("camera:0"):            # or "clip.mp4", or "frames/"
        result = verifier.process_frame(frame.image, color_order=frame.color_order)

Folders need nothing beyond the runtime. Cameras and video files are read with OpenCV (``cv2``),
imported only when one is opened; without it the error says how to install it.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Union

from ._errors import FrameSourceError
from ._images import IMAGE_SUFFIXES, image_files

logger = logging.getLogger(__name__)

# A camera that fails this many reads in a row (about a second at 25 fps) is gone: the caller
# (a service manager restarting the process, say) gets a FrameSourceError rather than a hang.
_CAMERA_FAILURES = 25
_CAMERA_RETRY_S = 0.04


@dataclass(frozen=True)
class Frame:
    """One frame: a path (folder sources) or an H×W×3 uint8 array, and a label for logs."""

    image: Any
    label: str
    color_order: str = "BGR"  # of numpy frames (OpenCV delivers BGR); files carry their own


def open_frames(spec: Union[str, "os.PathLike[str]"]) -> Iterator[Frame]:
    """Frames from ``camera:N`` / ``camera:/dev/videoN`` (OpenCV), a folder of images (sorted by
    name, see :func:`image_files`) or a video file (OpenCV). A generator: close it to release the
    camera. A source that does not exist is a :class:`FrameSourceError`, raised here."""
    text = os.fspath(spec)
    if text.startswith("camera:"):
        target = text[len("camera:"):]
        if not target:
            raise FrameSourceError("'camera:' needs a camera: 'camera:0' (index) or 'camera:/dev/video0'")
        return _opencv_frames(int(target) if target.isdigit() else target, camera=True)
    path = Path(text)
    if path.is_dir():
        return folder_frames(path)
    if path.is_file():
        return _opencv_frames(str(path), camera=False)
    raise FrameSourceError(f"frame source {text} does not exist; give 'camera:0', a folder of images or a video file")


def folder_frames(folder: Union[str, "os.PathLike[str]"]) -> Iterator[Frame]:
    """The images in ``folder`` as frames, sorted by name (labelled with the file name)."""
    files = image_files(folder)
    if not files:
        logger.warning("no images (%s) in %s", ", ".join(IMAGE_SUFFIXES), folder)
    for path in files:
        yield Frame(str(path), path.name, color_order="RGB")


def _import_cv2() -> Any:
    try:
        import cv2  # type: ignore[import-not-found]
    except ImportError:
        raise FrameSourceError("camera and video sources need OpenCV, which is not installed: "
                               "`pip install opencv-python-headless` (on Raspberry Pi OS also `sudo apt install "
                               "python3-opencv`), or use a folder of images") from None
    return cv2


def _opencv_frames(target: Any, *, camera: bool) -> Iterator[Frame]:
    cv2 = _import_cv2()
    capture = cv2.VideoCapture(target)
    try:
        if not capture.isOpened():
            hint = ("is it connected, and is this user in the 'video' group?" if camera
                    else "is it a video format this OpenCV build can decode?")
            raise FrameSourceError(f"cannot open {'camera' if camera else 'video file'} {target}: {hint}")
        if camera:
            # Keep at most one frame queued: when inference is slower than the camera, a deeper
            # buffer hands out frames from seconds ago.
            capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        index, failures = 0, 0
        while True:
            ok, image = capture.read()
            if not ok:
                if not camera:
                    return  # end of the video
                failures += 1
                if failures >= _CAMERA_FAILURES:
                    raise FrameSourceError(f"camera {target} stopped delivering frames (unplugged?)")
                time.sleep(_CAMERA_RETRY_S)
                continue
            failures = 0
            yield Frame(image, f"{'camera' if camera else Path(str(target)).name}#{index}", color_order="BGR")
            index += 1
    finally:
        capture.release()
