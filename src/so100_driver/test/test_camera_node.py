"""Camera node over real DDS: images, stamps, QoS, diagnostics, loss and recovery, bad parameters.

Sources are a generated video file and image folder (no camera on CI).
"""

import itertools
import os
import re
import threading
import time

import cv2
import numpy as np
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image

from smolvla_common.image_conversion import image_msg_to_rgb
from smolvla_common.parameters import ParameterError
from so100_driver.camera_node import CameraNode

W, H = 40, 30


def make_frames(count, seed=0):
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(count):
        frame = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        frame[: H // 2] = (i * 50 % 256, 200 - i * 30, 17 * i)
        frames.append(frame)
    return frames


def write_video(path, frames, fourcc="FFV1", fps=20.0):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (W, H))
    assert writer.isOpened()
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return str(path)


def decode_all(path):
    cap = cv2.VideoCapture(path)
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    cap.release()
    return frames


def write_folder(folder, frames):
    os.makedirs(folder, exist_ok=True)
    for i, frame in enumerate(frames):
        cv2.imwrite(os.path.join(folder, f"{i:03d}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    return str(folder)


def index_of(rgb, frames):
    for i, frame in enumerate(frames):
        if np.array_equal(rgb, frame):
            return i
    raise AssertionError("received image matches no source frame")


class Harness:
    """A ROS context with an executor thread, a probe node collecting images and diagnostics."""

    def __init__(self):
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.probe = rclpy.create_node("camera_probe", context=self.context)
        self.executor.add_node(self.probe)
        self.images: list[Image] = []
        self.diagnostics: list[DiagnosticStatus] = []
        self.lock = threading.Lock()
        self.nodes: list[CameraNode] = []
        self.probe.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 50)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def subscribe_images(self, topic):
        self.probe.create_subscription(Image, topic, self._on_image, qos_profile_sensor_data)

    def _on_image(self, msg):
        with self.lock:
            self.images.append(msg)

    def _on_diag(self, msg):
        with self.lock:
            self.diagnostics.extend(msg.status)

    def start_camera(self, node_name="camera", **params):
        overrides = [Parameter(k, value=v) for k, v in params.items()]
        node = CameraNode(node_name, context=self.context, parameter_overrides=overrides)
        self.nodes.append(node)
        self.executor.add_node(node)
        return node

    def wait_images(self, count, timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.images) >= count:
                    return list(self.images)
            time.sleep(0.02)
        raise AssertionError(f"received {len(self.images)} of {count} images in {timeout} s")

    def wait_diag(self, predicate, timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                for status in reversed(self.diagnostics):
                    if predicate(status):
                        return status
            time.sleep(0.05)
        with self.lock:
            last = [(s.level, s.message) for s in self.diagnostics[-3:]]
        raise AssertionError(f"no matching diagnostic in {timeout} s; last: {last}")

    def close(self):
        self.executor.shutdown(timeout_sec=5.0)
        for node in self.nodes:
            node.destroy_node()
        self.probe.destroy_node()
        rclpy.shutdown(context=self.context)
        self.thread.join(5.0)
        assert not self.thread.is_alive()
        leaked = [t.name for t in threading.enumerate() if t.name.startswith("capture:")]
        assert not leaked, f"capture threads still running: {leaked}"


@pytest.fixture
def ros():
    harness = Harness()
    yield harness
    harness.close()


def _values(status):
    return {kv.key: kv.value for kv in status.values}


def test_video_frames_arrive_exact_with_capture_stamps(tmp_path, ros):
    frames = make_frames(5)
    video = write_video(tmp_path / "clip.avi", frames)
    ros.subscribe_images("/cameras/front/image_raw")
    node = ros.start_camera(name="front", source=video, fps=30.0, diagnostics_period=0.2)
    assert node.topic == "cameras/front/image_raw"
    before = node.get_clock().now().nanoseconds
    images = ros.wait_images(12)
    after = node.get_clock().now().nanoseconds
    stamps = [rclpy.time.Time.from_msg(m.header.stamp).nanoseconds for m in images]
    assert all(b > a for a, b in itertools.pairwise(stamps)), "stamps strictly increase"
    assert before - int(2e9) < stamps[0] and stamps[-1] <= after
    intervals = np.diff(stamps) / 1e9
    assert np.median(intervals) == pytest.approx(1 / 30.0, rel=0.5)
    indices = []
    for msg in images:
        assert (msg.height, msg.width, msg.encoding, msg.step, msg.header.frame_id) == (
            H,
            W,
            "rgb8",
            W * 3,
            "front_optical_frame",
        )
        indices.append(index_of(image_msg_to_rgb(msg), frames))
    assert all((b - a) % 5 >= 1 for a, b in itertools.pairwise(indices)), indices  # in order, looping
    assert 0 in indices[1:], "the video loops"

    status = ros.wait_diag(
        lambda s: (
            "camera front" in s.name
            and s.level == DiagnosticStatus.OK
            and float(_values(s)["measured_fps"]) > 0
        )
    )
    values = _values(status)
    assert values["state"] == "streaming" and values["source"] == video and status.hardware_id == video
    assert values["topic"] == "/cameras/front/image_raw" and values["resolution"] == f"{W}x{H}"
    assert 15.0 < float(values["measured_fps"]) < 40.0


def test_lossy_mjpg_video_matches_decoded_source_and_resize(tmp_path, ros):
    frames = make_frames(4)
    video = write_video(tmp_path / "clip_mjpg.avi", frames, fourcc="MJPG")
    decoded = [cv2.resize(f, (20, 16), interpolation=cv2.INTER_AREA) for f in decode_all(video)]
    ros.subscribe_images("/cameras/wrist/image_raw")
    ros.start_camera(
        name="wrist", source=video, fps=40.0, resize_width=20, resize_height=16, frame_id="wrist_cam"
    )
    images = ros.wait_images(6)
    for msg in images:
        assert (msg.width, msg.height, msg.header.frame_id) == (20, 16, "wrist_cam")
        index_of(image_msg_to_rgb(msg), decoded)


def test_yaml_style_integer_parameters_are_accepted(tmp_path, ros):
    """YAML gives `fps: 20` (an int) and `source: 0`-style values; they must not crash the node."""
    folder = write_folder(tmp_path / "imgs", make_frames(2))
    ros.subscribe_images("/cameras/ints/image_raw")
    node = ros.start_camera(
        "wrist_camera", name="ints", source=folder, fps=20, reconnect_min_s=1, width=0.0, height=0
    )
    ros.wait_images(2)
    assert node.capture_stats().target_fps == 20.0
    assert node.get_name() == "wrist_camera"
    ros.wait_diag(lambda s: s.name == "wrist_camera: camera ints")


def test_stamps_use_the_node_clock_under_sim_time(tmp_path, ros):
    folder = write_folder(tmp_path / "imgs", make_frames(2))
    clock_pub = ros.probe.create_publisher(Clock, "/clock", 10)
    ros.subscribe_images("/cameras/sim/image_raw")
    node = ros.start_camera(name="sim", source=folder, fps=20.0, use_sim_time=True)
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline and node.get_clock().now().nanoseconds < 1000 * 10**9:
        clock_pub.publish(Clock(clock=rclpy.time.Time(seconds=1000).to_msg()))
        time.sleep(0.05)
    with ros.lock:
        ros.images.clear()
    clock_pub.publish(Clock(clock=rclpy.time.Time(seconds=1000).to_msg()))
    images = ros.wait_images(3)
    assert all(m.header.stamp.sec == 1000 for m in images)


def test_emptied_folder_gives_error_diagnostic_then_recovers(tmp_path, ros):
    frames = make_frames(3)
    folder = write_folder(tmp_path / "imgs", frames)
    ros.subscribe_images("/cameras/top/image_raw")
    ros.start_camera(
        name="top", source=folder, fps=30.0, diagnostics_period=0.1, reconnect_min_s=0.05, reconnect_max_s=0.2
    )
    ros.wait_images(3)
    for name in os.listdir(folder):
        os.remove(os.path.join(folder, name))
    status = ros.wait_diag(lambda s: "camera top" in s.name and s.level == DiagnosticStatus.ERROR)
    assert folder in status.message and "no images" in status.message
    assert _values(status)["state"] == "reconnecting"

    new_frames = make_frames(2, seed=9)
    write_folder(folder, new_frames)
    status = ros.wait_diag(
        lambda s: (
            "camera top" in s.name and _values(s).get("reconnects") == "1" and s.level == DiagnosticStatus.OK
        )
    )
    with ros.lock:
        ros.images.clear()
    images = ros.wait_images(3)
    for msg in images:
        index_of(image_msg_to_rgb(msg), new_frames)


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        (
            {"source": "/definitely/missing/clip.mp4"},
            "parameter 'source' = '/definitely/missing/clip.mp4' does not exist",
        ),
        ({"source": "/dev/video_missing_99"}, "camera device /dev/video_missing_99 not found"),
    ],
)
def test_a_missing_source_keeps_the_node_alive_with_a_clear_error(tmp_path, ros, params, expected):
    """The source may appear later (a camera plugged in): the node reports it and keeps retrying."""
    defaults = {"name": "bad", "source": str(tmp_path), "diagnostics_period": 0.1, "reconnect_min_s": 0.1}
    node = ros.start_camera(**{**defaults, **params})
    status = ros.wait_diag(lambda s: s.level == DiagnosticStatus.ERROR and expected in s.message)
    assert status.name.endswith(f"camera {node.camera_name}")
    time.sleep(0.3)
    assert ros.thread.is_alive()


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"fps": -1.0}, "parameter 'fps' must be in"),
        ({"name": "front cam"}, "parameter 'name' must start with a letter"),
        ({"reliability": "sometimes"}, "parameter 'reliability': expected best_effort or reliable"),
        ({"width": "wide", "height": 480}, "parameter 'width': expected an integer like 0, got 'wide'"),
        ({"width": 640.5, "height": 480}, "parameter 'width': expected an integer like 0, got 640.5"),
        ({"source": True}, "parameter 'source': expected a path or a device index"),
        ({"diagnostics_period": 0.0}, "parameter 'diagnostics_period'"),
    ],
)
def test_bad_parameters_refuse_to_start_with_the_parameter_named(tmp_path, ros, params, expected):
    with pytest.raises(ParameterError, match=re.escape(expected)):
        ros.start_camera(**{"name": "bad", "source": str(tmp_path), **params})
