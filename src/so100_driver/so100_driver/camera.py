"""ROS-free camera capture: frame sources (V4L2 device, video file, image folder) and a capture thread.

The capture thread opens the configured source, paces it to the configured rate, stamps every frame the
moment it is captured, hands RGB frames to a callback, counts dropped frames and keeps retrying with
exponential backoff while the source is missing (device unplugged, file deleted, folder emptied). It never
raises out of the thread: every problem ends up in :class:`CaptureStats` for diagnostics.

``camera_node`` wires this to ROS; everything here is testable without ROS.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

import cv2
import numpy as np

from smolvla_common.parameters import ParameterError

DEVICE = "device"
VIDEO_FILE = "video_file"
IMAGE_FOLDER = "image_folder"

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
SOURCE_HELP = (
    "expected a camera device (/dev/videoN, /dev/v4l/by-id/..., or an index), a video file or an image folder"
)

# Capture states.
CONNECTING = "connecting"  # never opened successfully yet, retrying
STREAMING = "streaming"
RECONNECTING = "reconnecting"  # was streaming, lost the source, retrying
FINISHED = "finished"  # end of a video file / folder with loop=false
STOPPED = "stopped"

# Diagnostic levels (same values as diagnostic_msgs/DiagnosticStatus).
OK, WARN, ERROR = 0, 1, 2

_NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


class CameraConfigError(ParameterError):
    """A camera parameter has an invalid value; the message names the parameter."""


class SourceError(RuntimeError):
    """The source cannot be opened or read right now (missing, unplugged, unreadable); retried later."""


class EndOfStreamError(Exception):
    """A video file or image folder has no more frames in this pass."""


class BadFrameError(Exception):
    """One frame could not be decoded (e.g. a corrupt image in a folder); counted as dropped."""


@dataclass(frozen=True)
class CameraConfig:
    """Capture settings. ``width``/``height`` 0 keep the device's default; ``fps`` 0 uses the source's
    own rate (device mode or video file; 30 for image folders); ``resize_*`` 0 publishes the captured size."""

    source: str
    width: int = 0
    height: int = 0
    fps: float = 30.0
    fourcc: str = ""
    loop: bool = True
    resize_width: int = 0
    resize_height: int = 0
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 5.0

    def validated(self) -> CameraConfig:
        """Return the config with normalised values, or raise :class:`CameraConfigError`."""
        if not str(self.source).strip():
            raise CameraConfigError(f"parameter 'source' is empty; {SOURCE_HELP}")
        for name in ("width", "height", "resize_width", "resize_height"):
            if int(getattr(self, name)) < 0:
                raise CameraConfigError(
                    f"parameter '{name}' must be >= 0 (0 = default), got {getattr(self, name)}"
                )
        if (self.width == 0) != (self.height == 0):
            raise CameraConfigError(
                f"parameters 'width' and 'height' must be set together (got {self.width}x{self.height})"
            )
        if (self.resize_width == 0) != (self.resize_height == 0):
            raise CameraConfigError(
                "parameters 'resize_width' and 'resize_height' must be set together "
                f"(got {self.resize_width}x{self.resize_height})"
            )
        if not (0.0 <= float(self.fps) <= 1000.0):
            raise CameraConfigError(f"parameter 'fps' must be in [0, 1000] (0 = source rate), got {self.fps}")
        fourcc = str(self.fourcc).strip().upper()
        if fourcc and len(fourcc) != 4:
            raise CameraConfigError(
                f"parameter 'fourcc' must be 4 characters like 'MJPG' or 'YUYV' (or empty), "
                f"got {self.fourcc!r}"
            )
        if not (0.0 < self.reconnect_min_s <= self.reconnect_max_s):
            raise CameraConfigError(
                "parameters 'reconnect_min_s' and 'reconnect_max_s' must satisfy 0 < min <= max, "
                f"got {self.reconnect_min_s} and {self.reconnect_max_s}"
            )
        return replace(self, source=str(self.source).strip(), fourcc=fourcc, fps=float(self.fps))


def validate_camera_name(name: str) -> str:
    """Camera names become topic tokens (``/cameras/<name>/image_raw``)."""
    if not _NAME_PATTERN.match(name):
        raise CameraConfigError(
            f"parameter 'name' must start with a letter and contain only letters, digits and '_', "
            f"got {name!r}"
        )
    return name


def is_device_source(source: str) -> bool:
    return source.isdigit() or source.startswith("/dev/")


def classify_source(source: str) -> str:
    """``DEVICE``, ``VIDEO_FILE`` or ``IMAGE_FOLDER``; :class:`SourceError` if a path is missing."""
    if is_device_source(source):
        return DEVICE
    if os.path.isdir(source):
        return IMAGE_FOLDER
    if os.path.isfile(source):
        return VIDEO_FILE
    raise SourceError(f"parameter 'source' = {source!r} does not exist; {SOURCE_HELP}")


class FrameSource(Protocol):
    """One open camera/file/folder. ``grab`` captures (cheap, frame stamped right after), ``retrieve``
    decodes it to RGB."""

    kind: str
    live: bool  # a device delivering at its own pace (never slept on), as opposed to a file/folder we pace
    native_fps: float | None
    description: str
    frame_time: float | None  # after grab: the frame's time on the source's own clock (s), if it has one

    def open(self) -> None: ...
    def grab(self) -> None: ...
    def retrieve(self) -> np.ndarray: ...
    def rewind(self) -> None: ...
    def close(self) -> None: ...


def to_rgb(frame: np.ndarray) -> np.ndarray:
    """OpenCV's BGR / BGRA / gray frame as contiguous RGB uint8."""
    if frame.ndim == 2 or frame.shape[2] == 1:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
    if frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)


def fourcc_to_str(code: float) -> str:
    value = int(code)
    text = "".join(chr((value >> (8 * i)) & 0xFF) for i in range(4))
    return text if text.isprintable() and value else ""


class DeviceSource:
    """A V4L2 camera (``/dev/videoN``, a ``/dev/v4l/by-id/...`` link, or an index)."""

    kind = DEVICE
    live = True

    def __init__(self, config: CameraConfig, api_preference: int = cv2.CAP_V4L2):
        self._config = config
        self._api = api_preference
        self._cap: Any = None
        self.native_fps: float | None = None
        self.frame_time: float | None = None
        self.description = f"camera device {config.source}"
        self.settings = ""

    def open(self) -> None:
        source = self._config.source
        if not source.isdigit() and not os.path.exists(source):
            raise SourceError(f"{self.description} not found (unplugged?)")
        cap = cv2.VideoCapture(int(source) if source.isdigit() else source, self._api)
        if not cap.isOpened():
            cap.release()
            raise SourceError(
                f"could not open {self.description} (in use by another process, or not a capture node?)"
            )
        cfg = self._config
        if cfg.fourcc:  # before the size: many UVC cameras only offer high resolutions with MJPG
            cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*cfg.fourcc))
        if cfg.width:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, cfg.width)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, cfg.height)
        if cfg.fps:
            cap.set(cv2.CAP_PROP_FPS, cfg.fps)
        # Give up on a silent device after 2 s rather than the backend's default (10 s for V4L2), where
        # the backend supports it; the diagnostics report the stall meanwhile either way.
        cap.set(cv2.CAP_PROP_READ_TIMEOUT_MSEC, 2000)
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.native_fps = fps if fps and fps > 0 else None
        width, height = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        fourcc = fourcc_to_str(cap.get(cv2.CAP_PROP_FOURCC))
        self.settings = f"{width}x{height} @ {fps:.1f} fps {fourcc}".strip()
        mismatches = []
        if cfg.width and (width, height) != (cfg.width, cfg.height):
            mismatches.append(f"size {width}x{height} instead of {cfg.width}x{cfg.height}")
        if cfg.fourcc and fourcc and fourcc != cfg.fourcc:
            mismatches.append(f"format {fourcc} instead of {cfg.fourcc}")
        if cfg.fps and self.native_fps and abs(self.native_fps - cfg.fps) > 0.5:
            mismatches.append(f"{self.native_fps:.1f} fps instead of {cfg.fps:.1f}")
        self.mismatch = "; ".join(mismatches)
        self._cap = cap

    def grab(self) -> None:
        if not self._cap.grab():
            gone = not self._config.source.isdigit() and not os.path.exists(self._config.source)
            raise SourceError(f"{self.description} " + ("vanished" if gone else "stopped delivering frames"))
        # V4L2 reports the driver's buffer timestamp here: gaps between frames measured on it are real
        # losses, not our thread being scheduled late.
        position_ms = self._cap.get(cv2.CAP_PROP_POS_MSEC)
        self.frame_time = position_ms / 1000.0 if position_ms and position_ms > 0 else None

    def retrieve(self) -> np.ndarray:
        ok, frame = self._cap.retrieve()
        if not ok or frame is None:
            raise SourceError(f"{self.description} returned no image data")
        return to_rgb(frame)

    def rewind(self) -> None:  # a live device has no end
        pass

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class VideoFileSource:
    """A video file played from the start again at its end (when looping)."""

    kind = VIDEO_FILE
    live = False

    def __init__(self, config: CameraConfig):
        self._path = config.source
        self._cap: Any = None
        self._frames_this_pass = 0
        self.native_fps: float | None = None
        self.frame_time = None
        self.description = f"video file {self._path}"
        self.settings = ""
        self.mismatch = ""

    def open(self) -> None:
        if not os.path.isfile(self._path):
            raise SourceError(f"parameter 'source': {self.description} does not exist")
        if not os.access(self._path, os.R_OK):
            raise SourceError(f"parameter 'source': {self.description} is not readable (permissions)")
        cap = cv2.VideoCapture(self._path)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"parameter 'source': cannot decode {self.description} (not a video?)")
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.native_fps = fps if fps and 0 < fps < 1000 else None
        width, height = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        self.settings = f"{width}x{height} @ {fps:.1f} fps"
        self._cap = cap
        self._frames_this_pass = 0

    def grab(self) -> None:
        if not self._cap.grab():
            if self._frames_this_pass == 0:
                raise SourceError(f"parameter 'source': {self.description} has no decodable frames")
            raise EndOfStreamError
        self._frames_this_pass += 1

    def retrieve(self) -> np.ndarray:
        ok, frame = self._cap.retrieve()
        if not ok or frame is None:
            raise BadFrameError(f"could not decode frame {self._frames_this_pass} of {self.description}")
        return to_rgb(frame)

    def rewind(self) -> None:
        """Reopen rather than seek: seeking is unreliable for some codecs, and a deleted file is noticed."""
        self.close()
        self.open()

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class ImageFolderSource:
    """The images of a folder in name order; the folder is listed again at each pass."""

    kind = IMAGE_FOLDER
    live = False
    native_fps = None
    frame_time = None

    def __init__(self, config: CameraConfig):
        self._folder = config.source
        self._files: list[str] = []
        self._index = 0
        self._current = ""
        self.description = f"image folder {self._folder}"
        self.settings = ""
        self.mismatch = ""

    def open(self) -> None:
        self._files = list_images(self._folder)
        if not self._files:
            raise SourceError(
                f"parameter 'source': {self.description} has no images ({', '.join(IMAGE_EXTENSIONS)})"
            )
        self._index = 0
        self.settings = f"{len(self._files)} images"

    def grab(self) -> None:
        if self._index >= len(self._files):
            raise EndOfStreamError
        self._current = self._files[self._index]
        self._index += 1

    def retrieve(self) -> np.ndarray:
        frame = cv2.imread(self._current, cv2.IMREAD_UNCHANGED)
        if frame is None:
            if not os.path.isfile(self._current):
                raise SourceError(f"{self._current} vanished from {self.description}")
            raise BadFrameError(f"could not decode image {self._current}")
        if frame.dtype != np.uint8:
            frame = cv2.convertScaleAbs(frame, alpha=255.0 / 65535.0)
        return to_rgb(frame)

    def rewind(self) -> None:
        self.open()

    def close(self) -> None:
        self._files = []


def list_images(folder: str) -> list[str]:
    """Image files of ``folder`` sorted by name; raises :class:`SourceError` if it is gone."""
    try:
        names = sorted(os.listdir(folder))
    except FileNotFoundError:
        raise SourceError(f"parameter 'source': image folder {folder} does not exist") from None
    except OSError as exc:
        raise SourceError(f"parameter 'source': cannot list image folder {folder}: {exc.strerror}") from None
    return [os.path.join(folder, n) for n in names if n.lower().endswith(IMAGE_EXTENSIONS)]


def open_source(config: CameraConfig) -> FrameSource:
    """Create and open the source named by ``config.source``."""
    kind = classify_source(config.source)
    source: FrameSource
    if kind == DEVICE:
        source = DeviceSource(config)
    elif kind == VIDEO_FILE:
        source = VideoFileSource(config)
    else:
        source = ImageFolderSource(config)
    source.open()
    return source


@dataclass
class CaptureStats:
    """A snapshot of the capture thread's state, for diagnostics."""

    state: str = CONNECTING
    source: str = ""
    source_kind: str = ""
    settings: str = ""  # what the source actually delivers, e.g. "640x480 @ 30.0 fps MJPG"
    mismatch: str = ""  # requested device settings the driver did not honour
    target_fps: float = 0.0
    measured_fps: float = 0.0
    frames_published: int = 0
    frames_dropped: int = 0
    recent_drops: int = 0  # within the last ``window_s``
    reconnects: int = 0
    last_error: str = ""
    seconds_since_frame: float | None = None
    retry_in_s: float = 0.0
    width: int = 0
    height: int = 0
    window_s: float = 2.0


FrameCallback = Callable[[np.ndarray, Any], None]


@dataclass
class _Pacing:
    """When the next frame is due, and the previous grab's time (on which clock) for gap counting."""

    period: float
    next_due: float
    last_grab: tuple[float, bool] | None = None


class CaptureLoop:
    """Capture on its own thread; ``on_frame(rgb, stamp)`` gets each frame, stamped by ``now()`` at capture.

    ``source_factory`` opens a source from the config (replaceable in tests); ``on_event(level, text)``
    hears about state changes (for logging); ``clock`` is the monotonic clock used for pacing and rates.
    Retries wait ``reconnect_min_s``, doubling up to ``reconnect_max_s``, until a frame gets through again.
    """

    def __init__(
        self,
        config: CameraConfig,
        on_frame: FrameCallback,
        now: Callable[[], Any],
        *,
        source_factory: Callable[[CameraConfig], FrameSource] = open_source,
        on_event: Callable[[int, str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        window_s: float = 2.0,
    ):
        self._config = config.validated()
        self._on_frame = on_frame
        self._now = now
        self._factory = source_factory
        self._event_sink = on_event
        self._clock = clock
        self._window_s = window_s
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stats = CaptureStats(source=self._config.source, window_s=window_s)
        self._publish_times: deque[float] = deque()
        self._drop_times: deque[float] = deque()
        self._last_frame_time: float | None = None
        self._retry_at = 0.0

    # -- control -------------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("capture loop already started")
        self._thread = threading.Thread(target=self._run, name=f"capture:{self._config.source}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop the thread; returns False if it is still blocked (e.g. in a driver call) after ``timeout``."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    def stats(self) -> CaptureStats:
        now = self._clock()
        with self._lock:
            self._trim(now)
            snapshot = replace(self._stats)
            snapshot.recent_drops = len(self._drop_times)
            snapshot.measured_fps = self._fps_locked(now)
            if self._last_frame_time is not None:
                snapshot.seconds_since_frame = now - self._last_frame_time
            snapshot.retry_in_s = (
                max(0.0, self._retry_at - now) if snapshot.state in (CONNECTING, RECONNECTING) else 0.0
            )
        return snapshot

    # -- thread body ---------------------------------------------------------------------------------
    def _run(self) -> None:
        source: FrameSource | None = None
        pacing = _Pacing(0.0, 0.0)
        backoff = self._config.reconnect_min_s
        ever_streamed = False
        try:
            while not self._stop.is_set():
                if source is None:
                    source, backoff = self._open(backoff, ever_streamed)
                    if source is None:
                        continue
                    pacing = _Pacing(1.0 / self._target_fps(source), self._clock())
                    self._source_up(source, pacing.period, reconnected=ever_streamed)
                    ever_streamed = True
                try:
                    if self._capture_once(source, pacing):
                        backoff = self._config.reconnect_min_s
                except EndOfStreamError:
                    if not self._config.loop:
                        self._set_state(FINISHED, f"end of {source.description} (loop is false)")
                        source.close()
                        self._stop.wait()
                        break
                    try:
                        source.rewind()
                    except Exception as exc:
                        source.close()
                        source = None
                        backoff = self._lost(_describe(exc), backoff)
                except BadFrameError as exc:
                    self._add_drops(1, self._clock())
                    with self._lock:
                        self._stats.last_error = str(exc)
                except Exception as exc:  # source lost (SourceError, cv2.error, OSError, ...)
                    source.close()
                    source = None
                    backoff = self._lost(_describe(exc), backoff)
        finally:
            if source is not None:
                source.close()
            with self._lock:
                if self._stats.state != FINISHED:
                    self._stats.state = STOPPED

    def _open(self, backoff: float, ever_streamed: bool) -> tuple[FrameSource | None, float]:
        """The opened source and the next retry delay; None (after waiting ``backoff``) when it failed."""
        try:
            return self._factory(self._config), backoff
        except Exception as exc:  # SourceError, cv2.error, OSError: all retried
            self._source_down(_describe(exc), RECONNECTING if ever_streamed else CONNECTING, backoff)
            self._stop.wait(backoff)
            return None, min(2.0 * backoff, self._config.reconnect_max_s)

    def _capture_once(self, source: FrameSource, pacing: _Pacing) -> bool:
        """Grab one frame at the pace asked for and deliver it; False when none was delivered."""
        period = pacing.period
        if not source.live:
            delay = pacing.next_due - self._clock()
            if delay > 0 and self._stop.wait(delay):
                return False
        source.grab()
        stamp = self._now()
        grabbed = self._clock()
        if source.live:
            device_period = 1.0 / source.native_fps if source.native_fps else period
            # Compare times on one clock only: the driver's where it has one, else ours.
            frame_time = (source.frame_time, True) if source.frame_time is not None else (grabbed, False)
            if pacing.last_grab is not None and pacing.last_grab[1] == frame_time[1]:
                self._count_gap(frame_time[0] - pacing.last_grab[0], device_period, grabbed)
            pacing.last_grab = frame_time
            if grabbed < pacing.next_due - 0.25 * period:
                return False  # device faster than the requested rate: skip (not a drop)
            pacing.next_due = max(pacing.next_due + period, grabbed)
        else:
            late = grabbed - pacing.next_due
            if late >= period:
                missed = int(late // period)
                self._add_drops(missed, grabbed)
                pacing.next_due += missed * period
            pacing.next_due += period
        self._deliver(self._postprocess(source.retrieve()), stamp, grabbed)
        return True

    def _lost(self, error: str, backoff: float) -> float:
        """Report a lost source, wait before reopening (no busy loop on a device that opens but fails)."""
        self._source_down(error, RECONNECTING, backoff)
        self._stop.wait(backoff)
        return min(2.0 * backoff, self._config.reconnect_max_s)

    def _target_fps(self, source: FrameSource) -> float:
        return self._config.fps or source.native_fps or 30.0

    def _postprocess(self, frame: np.ndarray) -> np.ndarray:
        cfg = self._config
        if cfg.resize_width and (frame.shape[1], frame.shape[0]) != (cfg.resize_width, cfg.resize_height):
            frame = cv2.resize(frame, (cfg.resize_width, cfg.resize_height), interpolation=cv2.INTER_AREA)
        return frame

    def _deliver(self, frame: np.ndarray, stamp: Any, grabbed: float) -> None:
        try:
            self._on_frame(frame, stamp)
        except Exception as exc:  # a failing consumer must not kill capture
            self._add_drops(1, grabbed)
            with self._lock:
                self._stats.last_error = f"frame callback failed: {_describe(exc)}"
            return
        with self._lock:
            self._stats.frames_published += 1
            self._stats.height, self._stats.width = int(frame.shape[0]), int(frame.shape[1])
            self._publish_times.append(grabbed)
            self._last_frame_time = grabbed

    def _count_gap(self, gap: float, device_period: float, now: float) -> None:
        if gap > 1.5 * device_period:
            self._add_drops(round(gap / device_period) - 1, now)

    def _add_drops(self, count: int, now: float) -> None:
        if count <= 0:
            return
        with self._lock:
            self._stats.frames_dropped += count
            self._drop_times.extend([now] * count)

    def _source_up(self, source: FrameSource, period: float, reconnected: bool) -> None:
        with self._lock:
            self._stats.state = STREAMING
            self._stats.source_kind = source.kind
            self._stats.settings = getattr(source, "settings", "")
            self._stats.mismatch = getattr(source, "mismatch", "")
            self._stats.target_fps = 1.0 / period
            if reconnected:
                self._stats.reconnects += 1
        text = f"{source.description} opened ({self._stats.settings})"
        if reconnected:
            text = f"{source.description} is back, streaming again ({self._stats.settings})"
        self._on_event(OK, text)
        if self._stats.mismatch:
            self._on_event(WARN, f"{source.description} ignored requested settings: {self._stats.mismatch}")

    def _source_down(self, error: str, state: str, retry_in: float) -> None:
        with self._lock:
            changed = (self._stats.state, self._stats.last_error) != (state, error)
            self._stats.state = state
            self._stats.last_error = error
            self._retry_at = self._clock() + retry_in
        if changed:
            self._on_event(
                ERROR, f"{error}; retrying every {retry_in:.1f}-{self._config.reconnect_max_s:.1f} s"
            )

    def _on_event(self, level: int, text: str) -> None:
        if self._event_sink is None:
            return
        with contextlib.suppress(Exception):  # a broken logger must not stop capture
            self._event_sink(level, text)

    def _set_state(self, state: str, text: str) -> None:
        with self._lock:
            self._stats.state = state
            self._stats.last_error = ""
        self._on_event(OK, text)

    def _trim(self, now: float) -> None:
        horizon = now - self._window_s
        for times in (self._publish_times, self._drop_times):
            while times and times[0] < horizon:
                times.popleft()

    def _fps_locked(self, now: float) -> float:
        times = self._publish_times
        if len(times) < 2:
            return 0.0
        return (len(times) - 1) / max(times[-1] - times[0], 1e-6)


def assess(stats: CaptureStats) -> tuple[int, str]:
    """Diagnostic level (``OK``/``WARN``/``ERROR``) and a one-line message for a capture snapshot."""
    if stats.state in (CONNECTING, RECONNECTING):
        return ERROR, f"{stats.last_error}; next retry in {stats.retry_in_s:.1f} s"
    if stats.state == FINISHED:
        return OK, f"finished: end of {stats.source} reached (loop is false)"
    if stats.state == STOPPED:
        return WARN, "capture stopped"
    expected_period = 1.0 / stats.target_fps if stats.target_fps else 1.0
    since = stats.seconds_since_frame
    stall_limit = max(1.0, 5.0 * expected_period)
    if stats.frames_published == 0 and since is None:
        return WARN, f"{stats.source} open, waiting for the first frame"
    if since is not None and since > stall_limit:
        return ERROR, f"no frame from {stats.source} for {since:.1f} s (stalled or unplugged?)"
    problems = []
    if stats.measured_fps and stats.measured_fps < 0.8 * stats.target_fps:
        problems.append(f"low frame rate {stats.measured_fps:.1f} of {stats.target_fps:.1f} fps")
    if stats.recent_drops:
        problems.append(f"dropped {stats.recent_drops} frames in the last {stats.window_s:.0f} s")
    if stats.mismatch:
        problems.append(f"device ignored settings: {stats.mismatch}")
    if problems:
        return WARN, "; ".join(problems)
    return OK, f"streaming {stats.width}x{stats.height} at {stats.measured_fps:.1f} fps"


def _describe(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if isinstance(exc, SourceError | BadFrameError) else f"{type(exc).__name__}: {text}"
