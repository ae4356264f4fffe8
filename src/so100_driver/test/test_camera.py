"""ROS-free capture: sources, pacing, stamping, drop counting, loss and recovery of the source.

Video files and image folders are generated in pytest tmp dirs and read back through OpenCV for real.
There is no V4L2 device on CI machines; device behaviour is exercised with a video file behind a
``/dev/v4l/by-id``-style symlink opened through FFmpeg instead of V4L2, and (for live-rate logic only)
with a scripted stand-in source, as each test's docstring says.
"""

import os
import shutil
import threading
import time

import cv2
import numpy as np
import pytest

from so100_driver import camera as cam

W, H = 32, 24


def make_frames(count: int, seed: int = 0) -> list[np.ndarray]:
    """RGB frames with a distinct flat colour per frame (plus noise), so a frame's index is recognisable."""
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(count):
        frame = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        frame[: H // 2] = (i * 37 % 256, 255 - i * 23 % 256, i * 11 % 256)
        frames.append(frame)
    return frames


def write_video(path, frames, fps=10.0, fourcc="FFV1") -> str:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (W, H))
    assert writer.isOpened(), f"OpenCV cannot write {fourcc} here"
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return str(path)


def write_folder(folder, frames) -> str:
    os.makedirs(folder, exist_ok=True)
    for i, frame in enumerate(frames):
        assert cv2.imwrite(os.path.join(folder, f"frame_{i:04d}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    return str(folder)


def frame_index(rgb: np.ndarray, frames: list[np.ndarray]) -> int:
    """Index of the reference frame closest to ``rgb`` (robust to lossy codecs)."""
    errors = [np.abs(rgb.astype(int) - f.astype(int)).mean() for f in frames]
    return int(np.argmin(errors))


class Collector:
    def __init__(self):
        self.frames: list[np.ndarray] = []
        self.stamps: list[int] = []
        self.lock = threading.Lock()
        self._counter = 0

    def now(self):
        self._counter += 1
        return time.monotonic_ns()

    def __call__(self, rgb, stamp):
        with self.lock:
            self.frames.append(rgb.copy())
            self.stamps.append(stamp)

    def wait_for(self, count, timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.frames) >= count:
                    return
            time.sleep(0.01)
        raise AssertionError(f"only {len(self.frames)} of {count} frames within {timeout} s")


def wait_until(predicate, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def loops():
    """Start capture loops through this fixture so they are always stopped."""
    started = []

    def start(config, on_frame, now, **kwargs):
        loop = cam.CaptureLoop(config, on_frame, now, **kwargs)
        started.append(loop)
        loop.start()
        return loop

    yield start
    for loop in started:
        assert loop.stop(timeout=5.0), "capture thread did not stop"


# -- configuration ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "parameter"),
    [
        ({"source": "  "}, "'source'"),
        ({"width": -1, "height": 10}, "'width'"),
        ({"width": 640}, "'width' and 'height'"),
        ({"resize_width": 100}, "'resize_width' and 'resize_height'"),
        ({"fps": -5.0}, "'fps'"),
        ({"fourcc": "MJPEG"}, "'fourcc'"),
        ({"reconnect_min_s": 0.0}, "'reconnect_min_s'"),
    ],
)
def test_bad_parameters_name_the_parameter(changes, parameter):
    with pytest.raises(cam.CameraConfigError, match=parameter):
        cam.CameraConfig(**{"source": "/dev/video0", **changes}).validated()


def test_config_is_normalised():
    config = cam.CameraConfig(source=" /dev/video2 ", fourcc="mjpg", fps=15).validated()
    assert (config.source, config.fourcc, config.fps) == ("/dev/video2", "MJPG", 15.0)


def test_camera_name_must_be_a_topic_token():
    assert cam.validate_camera_name("wrist_1") == "wrist_1"
    for bad in ("", "1front", "front cam", "a/b"):
        with pytest.raises(cam.CameraConfigError, match="'name'"):
            cam.validate_camera_name(bad)


def test_classify_source(tmp_path):
    video = write_video(tmp_path / "v.avi", make_frames(2))
    assert cam.classify_source("/dev/video0") == cam.DEVICE
    assert cam.classify_source("/dev/v4l/by-id/usb-cam-video-index0") == cam.DEVICE
    assert cam.classify_source("3") == cam.DEVICE
    assert cam.classify_source(str(tmp_path)) == cam.IMAGE_FOLDER
    assert cam.classify_source(video) == cam.VIDEO_FILE
    with pytest.raises(cam.SourceError, match=r"parameter 'source' = '.*nope.mp4' does not exist"):
        cam.classify_source(str(tmp_path / "nope.mp4"))


# -- sources ------------------------------------------------------------------------------------------


def test_video_file_source_reads_every_frame_exactly_in_rgb(tmp_path):
    frames = make_frames(5)
    source = cam.open_source(cam.CameraConfig(source=write_video(tmp_path / "v.avi", frames, fps=12.0)))
    try:
        assert source.kind == cam.VIDEO_FILE and source.native_fps == pytest.approx(12.0)
        for expected in frames:
            source.grab()
            np.testing.assert_array_equal(source.retrieve(), expected)
        with pytest.raises(cam.EndOfStreamError):
            source.grab()
        source.rewind()
        source.grab()
        np.testing.assert_array_equal(source.retrieve(), frames[0])
    finally:
        source.close()


@pytest.mark.parametrize(("fourcc", "suffix"), [("mp4v", ".mp4"), ("MJPG", ".avi")])
def test_lossy_containers_play_like_opencv_decodes_them(tmp_path, fourcc, suffix):
    frames = make_frames(4)
    video = write_video(tmp_path / f"v{suffix}", frames, fourcc=fourcc)
    reference = cv2.VideoCapture(video)
    source = cam.open_source(cam.CameraConfig(source=video))
    try:
        for i in range(len(frames)):
            ok, expected = reference.read()
            assert ok
            source.grab()
            got = source.retrieve()
            np.testing.assert_array_equal(got, cv2.cvtColor(expected, cv2.COLOR_BGR2RGB))
            assert frame_index(got, frames) == i
        with pytest.raises(cam.EndOfStreamError):
            source.grab()
    finally:
        source.close()
        reference.release()


def test_unreadable_or_undecodable_files_give_clear_errors(tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"this is not a video" * 10)
    with pytest.raises(
        cam.SourceError, match=r"parameter 'source': (cannot decode|video file .* has no decodable)"
    ):
        source = cam.open_source(cam.CameraConfig(source=str(junk)))
        source.grab()
    if os.geteuid() != 0:  # root reads anything
        locked = tmp_path / "locked.avi"
        write_video(locked, make_frames(2))
        locked.chmod(0)
        with pytest.raises(cam.SourceError, match="not readable"):
            cam.open_source(cam.CameraConfig(source=str(locked)))


def test_image_folder_source_orders_by_name_and_converts_formats(tmp_path):
    frames = make_frames(3)
    folder = write_folder(tmp_path / "imgs", frames)
    (tmp_path / "imgs" / "notes.txt").write_text("not an image")
    gray = frames[0][:, :, 0]
    cv2.imwrite(os.path.join(folder, "z_gray.png"), gray)
    bgra = np.dstack([cv2.cvtColor(frames[1], cv2.COLOR_RGB2BGR), np.full((H, W), 9, np.uint8)])
    cv2.imwrite(os.path.join(folder, "z_rgba.png"), bgra)
    source = cam.open_source(cam.CameraConfig(source=folder))
    got = []
    with pytest.raises(cam.EndOfStreamError):
        while True:
            source.grab()
            got.append(source.retrieve())
    assert len(got) == 5
    for expected, actual in zip(frames, got[:3], strict=True):
        np.testing.assert_array_equal(actual, expected)
    np.testing.assert_array_equal(got[3], np.dstack([gray] * 3))
    np.testing.assert_array_equal(got[4], frames[1])


def test_empty_folder_is_unavailable(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(cam.SourceError, match="has no images"):
        cam.open_source(cam.CameraConfig(source=str(tmp_path / "empty")))


def test_missing_device_names_the_device():
    with pytest.raises(cam.SourceError, match=r"camera device /dev/video_does_not_exist_42 not found"):
        cam.open_source(cam.CameraConfig(source="/dev/video_does_not_exist_42"))


# -- capture loop -------------------------------------------------------------------------------------


def test_loop_plays_a_video_in_order_and_loops(tmp_path, loops):
    frames = make_frames(4)
    sink = Collector()
    loop = loops(cam.CameraConfig(source=write_video(tmp_path / "v.avi", frames), fps=100.0), sink, sink.now)
    sink.wait_for(10)
    indices = [frame_index(f, frames) for f in sink.frames[:10]]
    assert indices == [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]
    for i, frame in zip(indices, sink.frames[:10], strict=True):
        np.testing.assert_array_equal(frame, frames[i])
    assert all(b > a for a, b in zip(sink.stamps, sink.stamps[1:], strict=False)), "stamps must increase"
    stats = loop.stats()
    assert (
        stats.state == cam.STREAMING
        and stats.source_kind == cam.VIDEO_FILE
        and (stats.width, stats.height) == (W, H)
    )


def test_loop_stops_at_the_end_without_loop(tmp_path, loops):
    frames = make_frames(3)
    sink = Collector()
    loop = loops(
        cam.CameraConfig(source=write_video(tmp_path / "v.avi", frames), fps=200.0, loop=False),
        sink,
        sink.now,
    )
    wait_until(lambda: loop.stats().state == cam.FINISHED, what="finished state")
    assert [frame_index(f, frames) for f in sink.frames] == [0, 1, 2]
    assert cam.assess(loop.stats())[0] == cam.OK


def test_paces_to_the_file_rate_or_the_parameter(tmp_path, loops):
    """Loose real-time bounds: never faster than requested; not absurdly slower even on a loaded machine."""
    video = write_video(tmp_path / "v.avi", make_frames(5), fps=25.0)
    for fps_param, expected_rate in ((0.0, 25.0), (50.0, 50.0)):
        sink = Collector()
        started = time.monotonic()
        loop = loops(cam.CameraConfig(source=video, fps=fps_param), sink, sink.now)
        time.sleep(1.0)
        loop.stop()
        elapsed = time.monotonic() - started
        count = len(sink.frames)
        assert loop.stats().target_fps == pytest.approx(expected_rate)
        assert 0.4 * expected_rate <= count <= expected_rate * elapsed + 2, (fps_param, count, elapsed)


def test_resize(tmp_path, loops):
    sink = Collector()
    loops(
        cam.CameraConfig(
            source=write_video(tmp_path / "v.avi", make_frames(2)), resize_width=16, resize_height=8
        ),
        sink,
        sink.now,
    )
    sink.wait_for(2)
    assert sink.frames[0].shape == (8, 16, 3)


def test_slow_consumer_is_counted_as_dropped_frames(tmp_path, loops):
    frames = make_frames(3)
    sink = Collector()

    def slow(rgb, stamp):
        sink(rgb, stamp)
        time.sleep(0.1)  # 5 periods at 50 fps

    loop = loops(cam.CameraConfig(source=write_video(tmp_path / "v.avi", frames), fps=50.0), slow, sink.now)
    sink.wait_for(5)
    stats = loop.stats()
    assert stats.frames_dropped >= 3 * 4 - 2
    level, message = cam.assess(stats)
    assert level == cam.WARN and "dropped" in message


def test_corrupt_image_is_dropped_and_named(tmp_path, loops):
    frames = make_frames(2)
    folder = write_folder(tmp_path / "imgs", frames)
    (tmp_path / "imgs" / "frame_0000b.png").write_bytes(b"\x89PNG broken")
    sink = Collector()
    loop = loops(cam.CameraConfig(source=folder, fps=100.0), sink, sink.now)
    sink.wait_for(4)
    stats = loop.stats()
    assert stats.frames_dropped >= 1 and "frame_0000b.png" in stats.last_error
    assert [frame_index(f, frames) for f in sink.frames[:4]] == [0, 1, 0, 1]


def test_failing_callback_does_not_kill_capture(tmp_path, loops):
    calls = []

    def broken(rgb, stamp):
        calls.append(stamp)
        raise RuntimeError("publisher gone")

    loop = loops(
        cam.CameraConfig(source=write_video(tmp_path / "v.avi", make_frames(2)), fps=100.0),
        broken,
        time.monotonic,
    )
    wait_until(lambda: len(calls) >= 5, what="callback calls")
    stats = loop.stats()
    assert (
        stats.state == cam.STREAMING and "publisher gone" in stats.last_error and stats.frames_published == 0
    )


def test_failing_event_sink_does_not_kill_capture(tmp_path, loops):
    def broken_logger(level, text):
        raise ValueError("logger broken")

    sink = Collector()
    loops(
        cam.CameraConfig(source=write_video(tmp_path / "v.avi", make_frames(2)), fps=100.0),
        sink,
        sink.now,
        on_event=broken_logger,
    )
    sink.wait_for(3)


def test_emptied_folder_reports_and_recovers(tmp_path, loops):
    frames = make_frames(3)
    folder = write_folder(tmp_path / "imgs", frames)
    sink = Collector()
    events = []
    config = cam.CameraConfig(source=folder, fps=50.0, reconnect_min_s=0.05, reconnect_max_s=0.2)
    loop = loops(config, sink, sink.now, on_event=lambda level, text: events.append((level, text)))
    sink.wait_for(3)
    for name in os.listdir(folder):
        os.remove(os.path.join(folder, name))
    wait_until(lambda: loop.stats().state == cam.RECONNECTING, what="reconnecting state")
    level, message = cam.assess(loop.stats())
    assert level == cam.ERROR and folder in message and "no images" in message
    assert any(lvl == cam.ERROR and folder in text for lvl, text in events)

    new_frames = make_frames(2, seed=5)
    write_folder(folder, new_frames)
    wait_until(lambda: loop.stats().state == cam.STREAMING, what="streaming again")
    count = len(sink.frames)
    sink.wait_for(count + 2)
    assert frame_index(sink.frames[-1], new_frames + frames) < 2  # fresh content flows
    assert loop.stats().reconnects == 1
    assert any("is back" in text for _, text in events)


def test_deleted_video_reports_and_recovers(tmp_path, loops):
    frames = make_frames(3)
    video = write_video(tmp_path / "v.avi", frames)
    backup = shutil.copy(video, tmp_path / "backup.avi")
    sink = Collector()
    loop = loops(
        cam.CameraConfig(source=video, fps=100.0, reconnect_min_s=0.05, reconnect_max_s=0.1), sink, sink.now
    )
    sink.wait_for(2)
    os.remove(video)
    wait_until(lambda: loop.stats().state == cam.RECONNECTING, what="reconnecting state")
    assert "does not exist" in loop.stats().last_error and video in loop.stats().last_error
    shutil.copy(backup, video)
    wait_until(lambda: loop.stats().state == cam.STREAMING, what="streaming again")
    count = len(sink.frames)
    sink.wait_for(count + 3)
    assert loop.stats().reconnects == 1


def test_missing_source_at_start_backs_off_then_starts(tmp_path, loops):
    target = tmp_path / "later"
    attempts = []

    def counting_factory(config):
        attempts.append(time.monotonic())
        return cam.open_source(config)

    sink = Collector()
    config = cam.CameraConfig(source=str(target), fps=50.0, reconnect_min_s=0.05, reconnect_max_s=0.4)
    loop = loops(config, sink, sink.now, source_factory=counting_factory)
    time.sleep(1.0)
    stats = loop.stats()
    assert (
        stats.state == cam.CONNECTING
        and "parameter 'source'" in stats.last_error
        and str(target) in stats.last_error
    )
    gaps = np.diff(attempts)
    assert 4 <= len(attempts) <= 10, attempts  # 0.05, 0.1, 0.2, 0.4, 0.4 ... not a busy loop
    assert gaps[-1] > 2.5 * gaps[0]
    write_folder(target, make_frames(2))
    sink.wait_for(2, timeout=5.0)
    assert loop.stats().reconnects == 0  # first successful open is not a reconnect


def test_device_path_vanishes_and_comes_back(tmp_path, loops):
    """Stand-in for a USB camera: a /dev/v4l/by-id-style symlink to a video file, opened through FFmpeg
    (no V4L2 device exists on CI). Removing the link and reaching the end of the stream is what an unplug
    looks like to the device source; recreating the link is the replug."""
    frames = make_frames(4)
    video = write_video(tmp_path / "v.avi", frames)
    link = tmp_path / "by-id" / "usb-Fake_Cam-video-index0"
    link.parent.mkdir()
    link.symlink_to(video)
    config = cam.CameraConfig(source=str(link), fps=0.0, reconnect_min_s=0.05, reconnect_max_s=0.1)
    sink = Collector()
    loop = loops(config, sink, sink.now, source_factory=lambda c: _opened(FileBackedDevice(c)))
    sink.wait_for(1)
    link.unlink()
    wait_until(lambda: loop.stats().state == cam.RECONNECTING, what="device lost")
    level, message = cam.assess(loop.stats())
    assert level == cam.ERROR and str(link) in message and ("vanished" in message or "not found" in message)
    assert [frame_index(f, frames) for f in sink.frames] == [0, 1, 2, 3]
    link.symlink_to(video)
    wait_until(lambda: loop.stats().state == cam.STREAMING, what="device back")
    sink.wait_for(5)
    assert loop.stats().reconnects == 1


class FileBackedDevice(cam.DeviceSource):
    """The real DeviceSource reading a video file through FFmpeg, with frames arriving at the file's rate
    like a camera's would (a file decodes as fast as it can otherwise)."""

    def __init__(self, config):
        super().__init__(config, api_preference=cv2.CAP_FFMPEG)

    def grab(self):
        time.sleep(1.0 / self.native_fps)
        super().grab()


def _opened(source):
    source.open()
    return source


class ScriptedLiveSource:
    """Stand-in for a V4L2 device (none exists on CI) delivering frames at its own pace: frame k is ready
    at open time + sum(gaps[:k+1]), whenever it is asked for (a late reader does not shift the schedule),
    and carries that time as its driver timestamp like V4L2 buffers do."""

    kind = cam.DEVICE
    live = True
    description = "camera device scripted"
    settings = "scripted"
    mismatch = ""

    def __init__(self, native_fps, gaps):
        self.native_fps = native_fps
        self._ready_at = list(np.cumsum(gaps))
        self._start = None
        self.grabs = 0
        self.frame_time = None

    def open(self):
        pass

    def grab(self):
        if self._start is None:
            self._start = time.monotonic()
        if not self._ready_at:
            time.sleep(0.01)
            raise cam.SourceError("camera device scripted vanished")
        self.frame_time = self._start + self._ready_at.pop(0)
        time.sleep(max(0.0, self.frame_time - time.monotonic()))
        self.grabs += 1

    def retrieve(self):
        return np.zeros((H, W, 3), np.uint8)

    def rewind(self):
        pass

    def close(self):
        pass


def test_live_source_faster_than_requested_is_decimated_not_dropped(loops):
    source = ScriptedLiveSource(native_fps=25.0, gaps=[0.04] * 20)
    sink = Collector()
    started = time.monotonic()
    loop = loops(
        cam.CameraConfig(source="/dev/video9", fps=10.0, reconnect_min_s=5, reconnect_max_s=5),
        sink,
        sink.now,
        source_factory=lambda c: source,
    )
    wait_until(lambda: source.grabs >= 20, what="20 grabs")
    stats = loop.stats()
    elapsed = time.monotonic() - started  # ~0.8 s: ~8 of the 20 frames at 10 fps
    assert 5 <= stats.frames_published <= 10 * elapsed + 2, (stats.frames_published, elapsed)
    assert stats.frames_dropped == 0


def test_live_source_gaps_count_as_dropped_frames(loops):
    source = ScriptedLiveSource(native_fps=25.0, gaps=[0.04] * 5 + [0.2] + [0.04] * 5)
    sink = Collector()
    loop = loops(
        cam.CameraConfig(source="/dev/video9", fps=25.0, reconnect_min_s=5, reconnect_max_s=5),
        sink,
        sink.now,
        source_factory=lambda c: source,
    )
    wait_until(lambda: source.grabs >= 11, what="11 grabs")
    stats = loop.stats()
    assert 3 <= stats.frames_dropped <= 6, stats.frames_dropped  # the 200 ms gap hides 4 frames at 25 fps


# -- assessment -----------------------------------------------------------------------------------------


def test_assess_levels():
    base = dict(source="/dev/video0", target_fps=30.0, width=640, height=480, frames_published=100)
    ok = cam.CaptureStats(state=cam.STREAMING, measured_fps=29.9, seconds_since_frame=0.03, **base)
    assert cam.assess(ok) == (cam.OK, "streaming 640x480 at 29.9 fps")
    slow = cam.CaptureStats(state=cam.STREAMING, measured_fps=12.0, seconds_since_frame=0.05, **base)
    assert cam.assess(slow)[0] == cam.WARN and "low frame rate 12.0 of 30.0" in cam.assess(slow)[1]
    stalled = cam.CaptureStats(state=cam.STREAMING, measured_fps=0.0, seconds_since_frame=3.0, **base)
    assert (
        cam.assess(stalled)[0] == cam.ERROR
        and "no frame from /dev/video0 for 3.0 s" in cam.assess(stalled)[1]
    )
    mismatch = cam.CaptureStats(
        state=cam.STREAMING,
        measured_fps=30.0,
        seconds_since_frame=0.01,
        mismatch="format YUYV instead of MJPG",
        **base,
    )
    assert cam.assess(mismatch) == (cam.WARN, "device ignored settings: format YUYV instead of MJPG")
    lost = cam.CaptureStats(
        state=cam.RECONNECTING, last_error="camera device /dev/video0 vanished", retry_in_s=1.5
    )
    assert cam.assess(lost) == (cam.ERROR, "camera device /dev/video0 vanished; next retry in 1.5 s")


def test_source_that_opens_but_never_delivers_is_retried_with_backoff(loops):
    """Scripted stand-in for a device that opens but fails every read (e.g. USB bandwidth exhausted)."""
    opens = []

    def factory(config):
        opens.append(time.monotonic())
        return ScriptedLiveSource(native_fps=30.0, gaps=[])  # grab raises SourceError right away

    sink = Collector()
    config = cam.CameraConfig(source="/dev/video9", reconnect_min_s=0.05, reconnect_max_s=0.2)
    loop = loops(config, sink, sink.now, source_factory=factory)
    time.sleep(1.0)
    stats = loop.stats()
    assert 3 <= len(opens) <= 10, len(opens)  # 0.05 + 0.1 + 0.2 + 0.2 ... not a busy loop
    assert stats.state == cam.RECONNECTING and "vanished" in stats.last_error and not sink.frames
