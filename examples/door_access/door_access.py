#!/usr/bin/env python3
"""Door access with edgeface-runtime: open a door for an enrolled person seen in N of the last M frames.

    python door_access.py --config door.toml enroll      # people/<name>/*.jpg -> gallery
    python door_access.py --config door.toml calibrate   # this door's own threshold, from the gallery
    python door_access.py --config door.toml run         # frames -> decisions -> door action + access log

Needs only ``edgeface_runtime`` and the standard library; OpenCV (``cv2``) only for camera and
video sources. The runtime does the face work: frames (``open_frames``), detection, alignment,
embedding and matching (``FaceVerifier.process_frame``), the threshold and where it came from
(``threshold_choice``), enrolment from folders (``enroll_folders``), site calibration. What is
left here is the door's own policy, each part testable and replaceable on its own:

* :class:`DoorController` - the decision, pure (no I/O, no clock): per-frame identities in,
  ``open`` / ``deny`` / nothing out;
* :func:`load_config` - the door's TOML file, every problem reported at once;
* :class:`AccessLog` - one JSON line per decision;
* door actions - any callable taking a :class:`Decision` (log, run a command, a GPIO relay), and
  the presentation-attack hook that can veto an open (:func:`check_presentation`);
* :func:`run_door`, :func:`enroll_people`, :func:`calibrate_door` and :func:`main`.

Written for Python >= 3.9 (32-bit Raspberry Pi OS ships 3.9; there, ``pip install tomli``).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

from edgeface_runtime import (DETECTORS, EdgefaceError, FaceVerifier, Frame, GalleryModelMismatchError,
                              ImageDecodeError, InterpreterNotFoundError, ModelError, UnsupportedOpError,
                              VerifierOptions, open_frames)
from edgeface_runtime import FrameSourceError as SourceError  # noqa: F401  (what open_frames raises)
from edgeface_runtime.commandline import exit_code
from edgeface_runtime.registry import closest

logger = logging.getLogger("door_access")

OPEN, DENY = "open", "deny"
# Exit codes of main(): 2 (the runtime's "usage") means "fix the configuration"; restarting cannot
# help, so the systemd unit lists it in RestartPreventExitStatus. 1 is a failure a restart may cure
# (camera unplugged). The door keeps to these three so that a service manager can tell them apart.
EXIT_OK, EXIT_FAILURE, EXIT_CONFIG = exit_code("ok"), 1, exit_code("usage")


class ConfigError(ValueError):
    """The configuration file is missing, unreadable or invalid (exit code 2)."""


# --------------------------------------------------------------------------------------------
# Decisions
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    """What the controller decided on one frame.

    ``person`` is the enrolled name for ``open`` and None (an unknown face) for ``deny``;
    ``score`` is the deciding frame's best cosine score; ``closest`` is the best-scoring enrolled
    person of a denied face (below the threshold), which is what threshold tuning needs;
    ``threshold_source`` says which threshold decided: "site" (calibrated on this door's own
    gallery: ``door_access.py calibrate``), "model" (the model maker's) or "explicit".
    """

    action: str
    person: Optional[str]
    score: Optional[float]
    threshold: float
    far: Optional[float]
    hits: int
    window: int
    closest: Optional[str] = None
    reason: Optional[str] = None  # why an open became a deny (the presentation-attack check)
    threshold_source: Optional[str] = None


@dataclass(frozen=True)
class _Vote:
    face: bool  # False: no face in the frame
    person: Optional[str]  # the accepted match, None for an unknown face


class DoorController:
    """N-of-M voting with a cooldown. Feed it one identification result per frame.

    * ``open`` when one enrolled person passed the threshold in ``required_hits`` of the last
      ``window`` frames. Hits of different people never add up, a frame without a face counts
      as a miss, and an unknown face never opens. After an open the votes start afresh, and no
      further open happens for ``cooldown_seconds``.
    * ``deny`` when an unknown face was seen in ``required_hits`` of the last ``window`` frames
      (someone is at the door and is not recognised); at most once per ``cooldown_seconds``.
    * None otherwise.

    Timestamps are seconds on any monotonic clock; the controller never reads a clock itself.
    """

    def __init__(self, required_hits: int = 3, window: int = 5, cooldown_seconds: float = 5.0) -> None:
        if not _is_int(required_hits) or required_hits < 1:
            raise ValueError(f"required_hits must be an integer >= 1, got {required_hits!r}")
        if not _is_int(window) or window < required_hits:
            raise ValueError(f"window must be an integer >= required_hits ({required_hits}), got {window!r}")
        if not _is_number(cooldown_seconds) or cooldown_seconds < 0:
            raise ValueError(f"cooldown_seconds must be a number >= 0, got {cooldown_seconds!r}")
        self.required_hits = int(required_hits)
        self.window = int(window)
        self.cooldown_seconds = float(cooldown_seconds)
        self._votes: deque = deque(maxlen=self.window)
        self._last_open: Optional[float] = None
        self._last_deny: Optional[float] = None

    def reset(self) -> None:
        """Forget the votes and cooldowns (e.g. after the camera was reconnected)."""
        self._votes.clear()
        self._last_open = self._last_deny = None

    def update(self, timestamp: float, identity: Any) -> Optional[Decision]:
        """One frame: ``identity`` is the frame's ``IdentifyResult`` (``FaceResult.identity``), or
        None when the frame had no face. Returns a :class:`Decision` or None."""
        if identity is None:
            self._votes.append(_Vote(face=False, person=None))
            return None
        best = identity.best
        top = identity.matches[0] if identity.matches else None
        if best is not None:
            self._votes.append(_Vote(face=True, person=best.name))
            hits = sum(1 for vote in self._votes if vote.person == best.name)
            if hits < self.required_hits or self._cooling(self._last_open, timestamp):
                return None
            self._last_open = timestamp
            self._votes.clear()  # the next open needs fresh evidence
            return Decision(OPEN, best.name, best.score, identity.threshold, identity.far, hits, self.window,
                            threshold_source=getattr(identity, "threshold_source", None))
        self._votes.append(_Vote(face=True, person=None))
        unknown = sum(1 for vote in self._votes if vote.face and vote.person is None)
        if unknown < self.required_hits or self._cooling(self._last_deny, timestamp):
            return None
        self._last_deny = timestamp
        return Decision(DENY, None, top.score if top else None, identity.threshold, identity.far, unknown,
                        self.window, closest=top.name if top else None,
                        threshold_source=getattr(identity, "threshold_source", None))

    def _cooling(self, last: Optional[float], now: float) -> bool:
        return last is not None and now - last < self.cooldown_seconds


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------

_REQUIRED = object()
# section -> key -> (accepted types, default). Paths are resolved against the config file's folder.
_SCHEMA: dict = {
    "model": {"path": (str, _REQUIRED), "threshold": (float, None), "far": (float, None),
              "num_threads": (int, 1), "interpreter": (str, None)},
    "detector": {"enabled": (bool, True), "path": (str, None), "variant": (str, "short"), "min_score": (float, None),
                 "input_size": (int, None)},
    "gallery": {"path": (str, _REQUIRED), "people": (str, None)},
    "decision": {"required_hits": (int, 3), "window": (int, 5), "cooldown_seconds": (float, 5.0)},
    "source": {"input": (str, _REQUIRED), "max_fps": (float, 0.0)},
    "log": {"path": (str, "access.jsonl")},
    "action": {"type": (str, "log"), "command": (list, None), "timeout_seconds": (float, 10.0),
               "callable": (str, None)},
    "liveness": {"callable": (str, None)},
}
_ACTION_TYPES = ("log", "command", "python")


@dataclass(frozen=True)
class DoorConfig:
    """A validated configuration; build it with :func:`load_config` or :func:`parse_config`."""

    model_path: Path
    gallery_path: Path
    source: str  # "camera:0", or the absolute path of a folder or a video file
    threshold: Optional[float] = None
    far: Optional[float] = None
    num_threads: int = 1
    interpreter: Optional[str] = None
    detect: bool = True
    detector_path: Optional[Path] = None
    detector_variant: str = "short"
    min_face_score: Optional[float] = None
    detector_input_size: Optional[int] = None
    people_dir: Optional[Path] = None
    required_hits: int = 3
    window: int = 5
    cooldown_seconds: float = 5.0
    max_fps: float = 0.0  # 0: as fast as frames come
    log_path: Path = Path("access.jsonl")
    action: str = "log"
    command: tuple = ()
    command_timeout: float = 10.0
    action_callable: Optional[str] = None
    liveness_callable: Optional[str] = None  # "module:function": the presentation-attack check
    base_dir: Path = field(default=Path("."), compare=False)


def load_config(path: os.PathLike | str) -> DoorConfig:
    """Read and validate a TOML configuration file. Raises :class:`ConfigError` saying what to fix."""
    path = Path(path)
    toml = _toml_module()
    try:
        with open(path, "rb") as file:
            data = toml.load(file)
    except FileNotFoundError:
        raise ConfigError(f"configuration file {path} not found; start from door.example.toml beside "
                          "door_access.py") from None
    except OSError as exc:
        raise ConfigError(f"cannot read configuration file {path}: {exc.strerror or exc}") from None
    except toml.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    return parse_config(data, base_dir=path.resolve().parent, origin=str(path))


def parse_config(data: dict, *, base_dir: os.PathLike | str = ".", origin: str = "configuration") -> DoorConfig:
    """Validate a parsed configuration (a dict as TOML gives it); report every problem at once."""
    base_dir = Path(base_dir)
    problems: list = []
    values: dict = {}
    for section in data:
        if section not in _SCHEMA:
            problems.append(f"unknown section [{section}]{_suggest(section, _SCHEMA)}; "
                            f"sections are {', '.join('[' + s + ']' for s in _SCHEMA)}")
    for section, keys in _SCHEMA.items():
        table = data.get(section, {})
        if not isinstance(table, dict):
            problems.append(f"[{section}] must be a table, got {type(table).__name__} {table!r}")
            table = {}
        for key in table:
            if key not in keys:
                problems.append(f"unknown key {key!r} in [{section}]{_suggest(key, keys)}; "
                                f"valid keys: {', '.join(keys)}")
        for key, (kind, default) in keys.items():
            if key not in table:
                if default is _REQUIRED:
                    problems.append(f"[{section}] {key} is required")
                values[section, key] = None if default is _REQUIRED else default
                continue
            value = table[key]
            if not _has_type(value, kind):
                problems.append(f"[{section}] {key} must be {_type_name(kind)}, got {type(value).__name__} {value!r}")
                value = None if default is _REQUIRED else default
            values[section, key] = float(value) if kind is float and value is not None else value

    def get(section: str, key: str) -> Any:
        return values[section, key]

    def path_of(section: str, key: str) -> Optional[Path]:
        value = get(section, key)
        return None if value is None else (base_dir / Path(value).expanduser())

    threshold, far = get("model", "threshold"), get("model", "far")
    if threshold is not None and far is not None:
        problems.append(f"[model] sets both threshold ({threshold}) and far ({far}); keep one: threshold is an "
                        "explicit cosine score, far picks the model's threshold calibrated at that false-accept rate")
    if threshold is not None and not -1.0 <= threshold <= 1.0:
        problems.append(f"[model] threshold is a cosine similarity in [-1, 1], got {threshold}")
    if far is not None and not 0.0 < far < 1.0:
        problems.append(f"[model] far is a false-accept rate in (0, 1), e.g. 1e-3, got {far}")
    if get("model", "num_threads") is not None and get("model", "num_threads") < 1:
        problems.append(f"[model] num_threads must be >= 1, got {get('model', 'num_threads')}")
    if get("detector", "variant") not in DETECTORS:
        problems.append(f"[detector] variant must be one of {', '.join(DETECTORS)}, "
                        f"got {get('detector', 'variant')!r}")
    min_score = get("detector", "min_score")
    if min_score is not None and not 0.0 < min_score < 1.0:
        problems.append(f"[detector] min_score is a detection score in (0, 1), got {min_score}")
    input_size = get("detector", "input_size")
    if input_size is not None and (input_size % 16 or not 64 <= input_size <= 512):
        problems.append(f"[detector] input_size is a multiple of 16 between 64 and 512 (96: faster, for faces that "
                        f"fill a sixth of the frame width), got {input_size}")
    hits, window, cooldown = (get("decision", "required_hits"), get("decision", "window"),
                              get("decision", "cooldown_seconds"))
    if hits < 1:
        problems.append(f"[decision] required_hits must be >= 1, got {hits}")
    elif window < hits:
        problems.append(f"[decision] window ({window}) must be >= required_hits ({hits}): the door opens when one "
                        "person passes in required_hits of the last window frames")
    if window > 1000:
        problems.append(f"[decision] window is a number of frames, at most 1000, got {window}")
    if cooldown < 0:
        problems.append(f"[decision] cooldown_seconds must be >= 0, got {cooldown}")
    if get("source", "max_fps") < 0:
        problems.append(f"[source] max_fps must be >= 0 (0: no limit), got {get('source', 'max_fps')}")

    source = get("source", "input")
    if source is not None:
        if source.startswith("camera:"):
            if not source[len("camera:"):]:
                problems.append("[source] input 'camera:' needs a camera: 'camera:0' (index) or 'camera:/dev/video0'")
        elif not source.strip():
            problems.append("[source] input is empty; give 'camera:0', a folder of images or a video file")
        else:
            source = str(base_dir / Path(source).expanduser())

    action = get("action", "type")
    command: tuple = ()
    if action not in _ACTION_TYPES:
        problems.append(f"[action] type must be one of {', '.join(_ACTION_TYPES)}, got {action!r}")
    elif action == "command":
        raw = get("action", "command")
        if not raw or not all(isinstance(part, str) and part for part in raw):
            problems.append(f"[action] type 'command' needs command = [\"program\", \"arg\", ...] (a list of "
                            f"non-empty strings, run without a shell), got {raw!r}")
        else:
            command = tuple(raw)
    elif action == "python":
        target = get("action", "callable")
        if not target or ":" not in target:
            problems.append(f"[action] type 'python' needs callable = \"module:function\" (a module importable "
                            f"from the config file's folder), got {target!r}")
    liveness = get("liveness", "callable")
    if liveness is not None and ":" not in liveness:
        problems.append(f"[liveness] callable must be \"module:function\" (a module importable from the config "
                        f"file's folder), got {liveness!r}")
    if get("action", "timeout_seconds") <= 0:
        problems.append(f"[action] timeout_seconds must be > 0, got {get('action', 'timeout_seconds')}")

    if problems:
        raise ConfigError(f"{origin}: " + ("\n  ".join(["invalid configuration:", *problems])
                                           if len(problems) > 1 else problems[0]))
    return DoorConfig(
        model_path=path_of("model", "path"), gallery_path=path_of("gallery", "path"), source=source,
        threshold=threshold, far=far, num_threads=get("model", "num_threads"), interpreter=get("model", "interpreter"),
        detect=get("detector", "enabled"), detector_path=path_of("detector", "path"),
        detector_variant=get("detector", "variant"), min_face_score=min_score, detector_input_size=input_size,
        people_dir=path_of("gallery", "people"),
        required_hits=hits, window=window, cooldown_seconds=cooldown, max_fps=get("source", "max_fps"),
        log_path=path_of("log", "path"), action=action, command=command,
        command_timeout=get("action", "timeout_seconds"), action_callable=get("action", "callable"),
        liveness_callable=liveness, base_dir=base_dir,
    )


def _toml_module() -> Any:
    try:
        import tomllib  # Python >= 3.11

        return tomllib
    except ImportError:
        pass
    try:
        import tomli  # the same parser, for Python < 3.11

        return tomli
    except ImportError:
        raise ConfigError(f"reading the TOML configuration needs Python >= 3.11 (tomllib) or the tomli package; "
                          f"this is Python {sys.version.split()[0]}: run `pip install tomli`") from None


def _has_type(value: Any, kind: type) -> bool:
    if isinstance(value, bool):  # TOML booleans are not numbers here
        return kind is bool
    if kind is float:
        return isinstance(value, (int, float))
    return isinstance(value, kind)


def _type_name(kind: type) -> str:
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false",
            list: "a list"}.get(kind, kind.__name__)


def _suggest(word: str, choices: Any) -> str:
    close = closest(word, choices, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# --------------------------------------------------------------------------------------------
# Access log and door actions
# --------------------------------------------------------------------------------------------

LOG_FIELDS = ("time", "decision", "person", "score", "threshold", "far", "threshold_source", "model", "hits", "window",
              "frame")


class AccessLog:
    """Append-only JSON lines, one per decision. Each line is flushed and fsynced before
    :meth:`write` returns: decisions are rare, and an access log that loses the last entries
    on a power cut is no audit trail."""

    def __init__(self, path: os.PathLike | str, model_fingerprint: str) -> None:
        self.path = Path(path)
        self.model_fingerprint = model_fingerprint
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8")

    def write(self, decision: Decision, *, frame: Optional[str] = None, when: Optional[datetime] = None,
              **extra: Any) -> dict:
        """Append one decision; returns the record written."""
        record = {
            "time": (when or datetime.now().astimezone()).isoformat(timespec="milliseconds"),
            "decision": decision.action,
            "person": decision.person if decision.person is not None else "unknown",
            "score": None if decision.score is None else round(float(decision.score), 4),
            "threshold": round(float(decision.threshold), 4),
            "far": decision.far,
            "threshold_source": decision.threshold_source,
            "model": self.model_fingerprint,
            "hits": decision.hits,
            "window": decision.window,
            "frame": frame,
        }
        if decision.closest is not None:
            record["closest"] = decision.closest
        record.update(extra)
        self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        return record

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "AccessLog":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


DoorAction = Callable[[Decision], None]


def log_open(decision: Decision) -> None:
    """The default door action: no hardware, just say so."""
    logger.info("OPEN for %s (score %.3f, %d of %d frames)", decision.person, decision.score or 0.0,
                decision.hits, decision.window)


class CommandAction:
    """Run a program for every ``open`` (no shell). It gets EDGEFACE_PERSON and EDGEFACE_SCORE in
    its environment. Keep it short: the frame loop waits for it (at most ``timeout`` seconds)."""

    def __init__(self, command: Sequence[str], timeout: float = 10.0) -> None:
        self.command = list(command)
        self.timeout = timeout

    def __call__(self, decision: Decision) -> None:
        env = dict(os.environ, EDGEFACE_PERSON=decision.person or "", EDGEFACE_SCORE=f"{decision.score or 0.0:.4f}")
        result = subprocess.run(self.command, env=env, timeout=self.timeout, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
        if result.returncode != 0:
            output = result.stdout.decode(errors="replace").strip()[-500:]
            raise RuntimeError(f"door command {self.command} exited with {result.returncode}: {output}")


def make_action(config: DoorConfig) -> DoorAction:
    """The door action the configuration names; import/lookup errors are ConfigErrors."""
    if config.action == "log":
        return log_open
    if config.action == "command":
        program = config.command[0]
        candidate = config.base_dir / program if os.sep in program else None
        if shutil.which(program) is None and not (candidate and os.access(candidate, os.X_OK)):
            raise ConfigError(f"[action] command: program {program!r} not found or not executable")
        command = list(config.command)
        if candidate is not None and os.access(candidate, os.X_OK):
            command[0] = str(candidate)
        return CommandAction(command, config.command_timeout)
    return load_callable(config.action_callable or "", config.base_dir, "[action] callable")


def load_callable(spec: str, base_dir: Path, where: str) -> Callable[..., Any]:
    """``module:function`` imported from ``base_dir`` (the config file's folder); errors are ConfigErrors."""
    module_name, _, function_name = spec.partition(":")
    if str(base_dir) not in sys.path:
        sys.path.insert(0, str(base_dir))  # so a gpio_relay.py beside door.toml is importable
    try:
        function = getattr(importlib.import_module(module_name), function_name)
    except Exception as exc:  # whatever the module raises on import (no gpiozero, pin busy) is a setup problem
        raise ConfigError(f"{where} {spec!r} cannot be loaded: {type(exc).__name__}: {exc}") from None
    if not callable(function):
        raise ConfigError(f"{where} {spec!r} is a {type(function).__name__}, not a function")
    return function


# A presentation-attack (liveness) check: (the frame as the source gave it, a path or an H×W×3
# array; the edgeface_runtime FaceResult of the face that decided, with box and keypoints) -> True
# when the face is live. A face match alone cannot tell a person from a printed photo or a phone
# screen showing them; this is where an IR camera, a depth sensor or a liveness model answers that.
LivenessCheck = Callable[[Any, Any], bool]


def check_presentation(decision: Decision, check: Optional[LivenessCheck], image: Any, face: Any) -> Decision:
    """An ``open`` stands only when ``check`` says the deciding face is live. A check that says no,
    or raises, turns it into a ``deny`` (fail closed); without a check the decision is unchanged."""
    if check is None or decision.action != OPEN:
        return decision
    try:
        live = check(image, face) is True
        why = "liveness check rejected the face (a photo or a screen?)"
    except Exception as exc:  # a broken sensor must not open the door
        live, why = False, f"liveness check failed: {type(exc).__name__}: {exc}"
    if live:
        return decision
    return replace(decision, action=DENY, person=None, closest=decision.person, reason=why)


# --------------------------------------------------------------------------------------------
# The loops
# --------------------------------------------------------------------------------------------


@dataclass
class RunSummary:
    frames: int = 0
    opens: int = 0
    denies: int = 0
    bad_frames: int = 0
    stopped_by_signal: bool = False


def verifier_options(config: DoorConfig, **overrides: Any) -> VerifierOptions:
    options = dict(model_path=config.model_path, detector_path=config.detector_path,
                   detector_variant=config.detector_variant, detect=config.detect,
                   gallery_path=config.gallery_path, threshold=config.threshold, far=config.far,
                   min_face_score=config.min_face_score, detector_input_size=config.detector_input_size,
                   num_threads=config.num_threads,
                   interpreter=config.interpreter)
    options.update(overrides)
    return VerifierOptions(**options)


def run_door(config: DoorConfig, *, action: Optional[DoorAction] = None, frames: Optional[Iterator[Frame]] = None,
             stop: Optional[threading.Event] = None, handle_signals: bool = True,
             clock: Callable[[], float] = time.monotonic,
             liveness_check: Optional[LivenessCheck] = None) -> RunSummary:
    """Process frames until the source ends or ``stop`` is set (SIGINT/SIGTERM set it when
    ``handle_signals``): the current frame is always finished, then everything is closed.

    ``action`` overrides the configured door action; ``frames`` the configured source (any
    iterable of :class:`Frame`, e.g. from picamera2); ``liveness_check`` the configured
    presentation-attack check (:data:`LivenessCheck`, consulted before every open).
    """
    _require_file(config.model_path, "[model] path")
    if not config.gallery_path.is_file():
        raise ConfigError(f"gallery {config.gallery_path} ([gallery] path) does not exist; enroll people first: "
                          "door_access.py --config CONFIG enroll")
    stop = stop if stop is not None else threading.Event()
    door_action = action if action is not None else make_action(config)
    liveness = liveness_check if liveness_check is not None else (
        load_callable(config.liveness_callable, config.base_dir, "[liveness] callable")
        if config.liveness_callable else None)
    if liveness is None:
        logger.warning("no presentation-attack check configured ([liveness] callable): a printed photo or a phone "
                       "screen showing an enrolled person can open this door")
    controller = DoorController(config.required_hits, config.window, config.cooldown_seconds)
    summary = RunSummary()
    min_interval = 1.0 / config.max_fps if config.max_fps > 0 else 0.0

    with contextlib.ExitStack() as stack:
        if handle_signals:
            stack.enter_context(_stop_on_signals(stop, summary))
        verifier = stack.enter_context(FaceVerifier(verifier_options(config)))
        choice = verifier.threshold_choice()  # an uncalibrated FAR fails here, not at the first face
        threshold, far = choice.threshold, choice.far
        fingerprint = verifier.embedder.fingerprint
        people = len(verifier.gallery)
        if people == 0:
            logger.warning("gallery %s has nobody enrolled: every face is unknown until someone is enrolled "
                           "(the running door picks up enrolments without a restart)", config.gallery_path)
        access_log = stack.enter_context(AccessLog(config.log_path, fingerprint))
        source = frames if frames is not None else open_frames(config.source)
        if hasattr(source, "close"):
            stack.callback(source.close)  # releases the camera when the loop stops early
        if choice.source == "model":
            logger.warning("the door decides with the model's own threshold, calibrated on its maker's photos, not "
                           "this door's: on a new camera and lighting its real FAR can be far higher. Run "
                           "`door_access.py --config CONFIG calibrate` after enrolling")
        compounded = "" if far is None else (f", a stranger passes as one of {people} people "
                                             f"~{1 - (1 - far) ** people:.2%} per frame")
        logger.info("door running: model %s, %s threshold %.4f%s%s, %d of %d frames, cooldown %g s, source %s",
                    fingerprint[:12], choice.source, threshold, f" (FAR {far:g})" if far else "", compounded,
                    config.required_hits, config.window, config.cooldown_seconds,
                    "custom" if frames is not None else config.source)

        for frame in source:
            started = clock()
            try:
                result = verifier.process_frame(frame.image, color_order=frame.color_order)
            except ImageDecodeError as exc:  # one unreadable file must not stop the door
                summary.bad_frames += 1
                logger.warning("skipping frame %s: %s", frame.label, exc)
                result = None
            summary.frames += 1
            if result is not None:
                face = result.faces[0] if result.faces else None  # the largest face: nearest the door
                decision = controller.update(started, face.identity if face is not None else None)
                if decision is not None:
                    decision = check_presentation(decision, liveness, frame.image, face)
                    _act(decision, frame, door_action, access_log, summary)
            if stop.is_set():
                break
            if min_interval:
                stop.wait(max(0.0, started + min_interval - clock()))
                if stop.is_set():
                    break
    logger.info("door stopped after %d frames (%s): %d open, %d deny, %d unreadable",
                summary.frames, "signal" if summary.stopped_by_signal else ("stop requested" if stop.is_set()
                                                                            else "end of source"),
                summary.opens, summary.denies, summary.bad_frames)
    return summary


def _act(decision: Decision, frame: Frame, door_action: DoorAction, access_log: AccessLog,
         summary: RunSummary) -> None:
    if decision.action == DENY:
        summary.denies += 1
        logger.info("DENY %s (closest %s, score %.3f)", decision.reason or "unknown face", decision.closest,
                    decision.score if decision.score is not None else float("nan"))
        access_log.write(decision, frame=frame.label, **({"reason": decision.reason} if decision.reason else {}))
        return
    summary.opens += 1
    error = None
    try:
        door_action(decision)
    except Exception as exc:  # a failing relay must be logged, and must not stop the door
        error = f"{type(exc).__name__}: {exc}"
        logger.error("door action failed for %s: %s", decision.person, error)
    access_log.write(decision, frame=frame.label, action_error=error)


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event, summary: RunSummary) -> Iterator[None]:
    """SIGINT/SIGTERM ask the loop to stop after the current frame; a second one interrupts it."""
    if threading.current_thread() is not threading.main_thread():
        logger.debug("not in the main thread: signals are left to the caller")
        yield
        return

    def request_stop(signum: int, _frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        logger.info("%s received: stopping after the current frame", signal.Signals(signum).name)
        summary.stopped_by_signal = True
        stop.set()

    previous = {signum: signal.signal(signum, request_stop) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def enroll_people(config: DoorConfig, people_dir: Optional[os.PathLike | str] = None) -> list:
    """Enroll every ``<people_dir>/<name>/`` folder into the gallery, replacing that person's
    templates (``FaceVerifier.enroll_folders``: photos without a face or unreadable ones are
    skipped and reported; a person with no usable photo keeps any previous templates)."""
    folder = Path(people_dir) if people_dir is not None else config.people_dir
    if folder is None:
        raise ConfigError("no people folder: set [gallery] people in the configuration or pass --people DIR")
    if not folder.is_dir():  # checked before the gallery file is created
        raise ConfigError(f"people folder {folder} does not exist; expected {folder}/<name>/*.jpg")
    _require_file(config.model_path, "[model] path")
    config.gallery_path.parent.mkdir(parents=True, exist_ok=True)
    with FaceVerifier(verifier_options(config)) as verifier:
        return verifier.enroll_folders(folder)


def calibrate_door(config: DoorConfig) -> Any:
    """Set the door's site threshold from its own gallery (the different-person pairs of the
    enrolled people) at the configured FAR (default 1e-3) and store it in the gallery; the
    running door and later runs use it. Returns the ``SiteCalibration``."""
    _require_file(config.model_path, "[model] path")
    if not config.gallery_path.is_file():
        raise ConfigError(f"gallery {config.gallery_path} ([gallery] path) does not exist; enroll people first: "
                          "door_access.py --config CONFIG enroll")
    if config.threshold is not None:
        logger.warning("[model] threshold = %s is set: it keeps deciding over the site threshold; remove it "
                       "to use the calibration", config.threshold)
    with FaceVerifier(verifier_options(config, detect=False)) as verifier:
        return verifier.calibrate(config.far if config.far is not None else 1e-3)


def _require_file(path: Path, what: str) -> None:
    if not path.is_file():
        raise ConfigError(f"{what} {path} is not a file; check the path in the configuration")


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="door_access.py", description="Door access with edgeface-runtime.")
    parser.add_argument("--config", required=True, type=Path, help="TOML configuration (see door.example.toml)")
    parser.add_argument("command", nargs="?", choices=("run", "enroll", "calibrate"), default="run",
                        help="run: the door loop (default); enroll: people/<name>/*.jpg into the gallery; "
                             "calibrate: set the site threshold from the enrolled people")
    parser.add_argument("--people", type=Path, help="enroll: the people folder (default: [gallery] people)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    permanent = (ConfigError, ModelError, GalleryModelMismatchError, InterpreterNotFoundError, UnsupportedOpError)
    try:
        config = load_config(args.config)
        if args.command == "enroll":
            return _print_enroll(enroll_people(config, args.people), config)
        if args.command == "calibrate":
            return _print_calibration(calibrate_door(config), config)
        summary = run_door(config)
    except permanent as exc:
        print(f"door_access: error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except (EdgefaceError, OSError) as exc:  # a locked gallery, a camera unplugged: a restart may cure it
        print(f"door_access: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except ValueError as exc:  # any other bad input (an empty people folder, say): fix it, then restart
        print(f"door_access: error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:  # a second Ctrl-C during a frame
        print("door_access: interrupted", file=sys.stderr)
        return exit_code("interrupted")
    print(f"door_access: {summary.frames} frames, {summary.opens} open, {summary.denies} deny")
    return EXIT_OK


def _print_calibration(record: Any, config: DoorConfig) -> int:
    print(f"site threshold {record.threshold:.4f} at FAR {record.far:g} stored in {config.gallery_path}, from "
          f"{record.impostor_pairs} different-person pairs of {record.people} people (lowest FAR they support: "
          f"{record.min_supported_far:.2g})")
    if record.model_far_on_site is not None:
        print(f"the model's own threshold {record.model_threshold:.4f} would accept {record.model_far_on_site:.2%} "
              "of those pairs")
    if record.warning:
        print(f"warning: {record.warning}")
    return EXIT_OK


def _print_enroll(reports: list, config: DoorConfig) -> int:
    for report in reports:
        if report.enrolled:
            print(f"{report.name}: enrolled from {report.enrolled} of {report.photos} photos")
        else:
            print(f"{report.name}: NOT enrolled - none of {report.photos} photos had a usable face"
                  " (previous templates, if any, kept)")
        for name, reason in report.skipped:
            print(f"  skipped {name}: {reason}")
    enrolled = sum(1 for r in reports if r.enrolled)
    print(f"gallery {config.gallery_path}: {enrolled} of {len(reports)} people enrolled; now set the door's own "
          "threshold: door_access.py --config CONFIG calibrate")
    return EXIT_OK if enrolled == len(reports) else EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
