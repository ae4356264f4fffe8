"""The policy node over real DDS with a real tiny SmolVLA checkpoint (own ROS domain per test session).

A helper node plays the robot side: it publishes camera images, /joint_states and /instruction, sends
ChunkRequests and records ActionChunks and PolicyStatus messages.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Callable

import numpy as np
import pytest
import rclpy
from builtin_interfaces.msg import Duration
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rcl_interfaces.msg import Log
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String
from trajectory_msgs.msg import JointTrajectoryPoint

from smolvla_common.image_conversion import rgb_to_compressed_msg, rgb_to_image_msg
from smolvla_common.joints import SO101_JOINTS
from smolvla_common.parameters import ParameterError
from smolvla_common.timeutil import seconds
from smolvla_msgs.msg import ActionChunk, ChunkRequest, PolicyStatus
from smolvla_policy.policy_node import PolicyNode

RANGE_MIN, RANGE_MAX = 1000, 3000  # every joint's range in the `calibration_file` fixture

DT = 1 / 30


def wait_for(predicate: Callable[[], object], timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class Robot(Node):
    """Publishes images (30 Hz) and joint states (50 Hz) stamped now; records chunks and statuses."""

    def __init__(self, context, cameras=("top", "wrist"), compressed=()):
        super().__init__("fake_robot", context=context)
        self.chunks: list[ActionChunk] = []
        self.statuses: list[PolicyStatus] = []
        self.joint_stamps: list = []
        self.positions = [0.1, -0.3, 0.5, 0.2, 0.0, 0.3]
        self.joint_names = list(SO101_JOINTS)
        self.images = {c: np.full((48, 64, 3), 60 * (i + 1), np.uint8) for i, c in enumerate(cameras)}
        self.image_override: dict[str, Image] = {}
        self.compressed = set(compressed)
        self.publishing = True
        self.image_pubs = {}
        for camera in cameras:
            if camera in self.compressed:
                from sensor_msgs.msg import CompressedImage

                self.image_pubs[camera] = self.create_publisher(
                    CompressedImage, f"/cameras/{camera}/compressed", 1
                )
            else:
                self.image_pubs[camera] = self.create_publisher(Image, f"/cameras/{camera}/image_raw", 1)
        self.state_pub = self.create_publisher(JointState, "/joint_states", 1)
        latched = QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
        )
        self.instruction_pub = self.create_publisher(String, "/instruction", latched)
        self.request_pub = self.create_publisher(ChunkRequest, "/smolvla/request", 10)
        self.create_subscription(ActionChunk, "/smolvla/action_chunk", self.chunks.append, 10)
        self.create_subscription(PolicyStatus, "/smolvla/policy_status", self.statuses.append, 50)
        self.diagnostics: list[DiagnosticArray] = []
        self.create_subscription(DiagnosticArray, "/diagnostics", self.diagnostics.append, 50)
        self.create_timer(1 / 30, self._publish_images)
        self.create_timer(1 / 50, self._publish_state)
        self.request_id = 0

    def _publish_images(self) -> None:
        if not self.publishing:
            return
        stamp = self.get_clock().now().to_msg()
        for camera, pub in self.image_pubs.items():
            if camera in self.image_override:
                msg = self.image_override[camera]
                msg.header.stamp = stamp
            elif camera in self.compressed:
                msg = rgb_to_compressed_msg(self.images[camera], stamp=stamp)
            else:
                msg = rgb_to_image_msg(self.images[camera], stamp=stamp)
            pub.publish(msg)

    def _publish_state(self) -> None:
        if not self.publishing:
            return
        msg = JointState(name=list(self.joint_names), position=list(self.positions))
        msg.header.stamp = self.get_clock().now().to_msg()
        self.joint_stamps.append(msg.header.stamp)
        self.state_pub.publish(msg)

    def instruct(self, text: str) -> None:
        self.instruction_pub.publish(String(data=text))

    def request(self, must_go: bool = True, pending: list[list[float]] | None = None, task: str = "") -> int:
        self.request_id += 1
        msg = ChunkRequest(request_id=self.request_id, must_go=must_go, task=task)
        msg.header.stamp = self.get_clock().now().to_msg()
        if pending:
            msg.pending.joint_names = list(SO101_JOINTS)
            msg.pending.points = [
                JointTrajectoryPoint(positions=p, time_from_start=Duration(nanosec=int(i * DT * 1e9)))
                for i, p in enumerate(pending)
            ]
        self.request_pub.publish(msg)
        return self.request_id

    def chunk_for(self, request_id: int) -> ActionChunk | None:
        return next((c for c in self.chunks if c.request_id == request_id), None)

    def status_with(self, text: str) -> PolicyStatus | None:
        return next((s for s in reversed(self.statuses) if text in s.message), None)


class Rig:
    """Policy node + fake robot in one context, spun by a SingleThreadedExecutor thread."""

    def __init__(
        self, checkpoint, calibration_file, instruction: str | None = "pick up the cube", robot=None, **params
    ):
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.robot = Robot(self.context, **(robot or {}))
        if instruction is not None:
            self.robot.instruct(instruction)  # published before the policy node exists: latched
        defaults = {
            "checkpoint": str(checkpoint),
            "cameras": ["top", "wrist"],
            "calibration_file": str(calibration_file),
            "fps": 30,  # an int, as YAML writes it, for a float parameter
            "warmup": False,
            "status_period_s": 0.2,
        }
        overrides = [Parameter(k, value=v) for k, v in {**defaults, **params}.items()]
        self.node = PolicyNode(context=self.context, parameter_overrides=overrides)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.executor.add_node(self.robot)
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self) -> None:
        while not self._stop.is_set():
            self.executor.spin_once(timeout_sec=0.05)

    def wait_ready(self, timeout: float = 20.0) -> None:
        wait_for(lambda: self.node.state == PolicyStatus.STATE_READY, timeout, f"READY ({self.node.message})")
        wait_for(
            lambda: self.robot.request_pub.get_subscription_count() > 0, 5.0, "request subscription matched"
        )
        wait_for(lambda: self.node._joint_state is not None, 5.0, "joint states reaching the node")

    def close(self) -> None:
        if self._stop.is_set():
            return  # closed already
        self._stop.set()
        self.thread.join(timeout=5.0)
        time.sleep(0.2)  # callbacks already handed to the executor's thread pool finish first
        self.executor.shutdown()
        self.node.destroy_node()
        self.robot.destroy_node()
        rclpy.shutdown(context=self.context)


@pytest.fixture
def rig_factory(tiny_checkpoint, calibration_file):
    rigs: list[Rig] = []

    def make(**kwargs) -> Rig:
        kwargs.setdefault("checkpoint", tiny_checkpoint)
        kwargs.setdefault("calibration_file", calibration_file)
        rig = Rig(**kwargs)
        rigs.append(rig)
        return rig

    yield make
    for rig in rigs:
        rig.close()


def test_request_is_answered_with_a_timed_chunk_in_radians(rig_factory):
    rig = rig_factory()
    robot = rig.robot
    wait_for(lambda: robot.statuses, 5.0, "a first PolicyStatus")
    assert robot.statuses[0].state == PolicyStatus.STATE_LOADING
    rig.wait_ready()
    request_id = robot.request()
    chunk = wait_for(lambda: robot.chunk_for(request_id), 10.0, "the ActionChunk")
    assert chunk.chunk_id == 1
    assert chunk.task == "pick up the cube"  # the latched instruction reached the late-started node
    assert chunk.policy_id == str(rig.node.p["checkpoint"])
    assert list(chunk.trajectory.joint_names) == list(SO101_JOINTS)
    points = chunk.trajectory.points
    assert len(points) == 10
    assert (chunk.dt.sec, chunk.dt.nanosec) == (0, round(DT * 1e9))
    for i, point in enumerate(points):
        assert point.time_from_start.sec + point.time_from_start.nanosec * 1e-9 == pytest.approx(
            i * DT, abs=1e-9
        )
        assert all(math.isfinite(x) and abs(x) < math.pi for x in point.positions)
    assert chunk.header.stamp in robot.joint_stamps  # stamped with the joint state it continues from
    stamp = chunk.header.stamp.sec + chunk.header.stamp.nanosec * 1e-9
    start = chunk.inference_start.sec + chunk.inference_start.nanosec * 1e-9
    assert 0 <= start - stamp < 0.5
    latency = chunk.inference_latency.sec + chunk.inference_latency.nanosec * 1e-9
    assert 0 < latency < 10  # the first call of an unwarmed model is slow on a loaded 2-core machine
    status = wait_for(lambda: [s for s in robot.statuses if s.chunks_published >= 1], 2.0, "status counters")[
        -1
    ]
    assert status.requests_received >= 1 and status.task == "pick up the cube"
    assert status.device == "cpu/float32"

    def diagnostic_values():
        for array in reversed(robot.diagnostics):
            for entry in array.status:
                values = {kv.key: kv.value for kv in entry.values}
                if "policy" in entry.name and values.get("chunks_published") == "1":
                    return entry, values
        return None

    entry, values = wait_for(diagnostic_values, 3.0, "diagnostics after the chunk")
    assert entry.level == DiagnosticStatus.OK and entry.message.startswith("ready")
    assert 0 <= float(values["last_image_age_top_s"]) < 0.5 and "last_image_age_wrist_s" in values


def test_bad_inputs_are_refused_and_reported_without_crashing(rig_factory):
    rig = rig_factory()
    robot = rig.robot
    rig.wait_ready()

    def expect_refusal(arrived: Callable[[], bool], text: str) -> None:
        wait_for(arrived, 5.0, "the bad input reaching the node")
        mark = len(robot.statuses)
        robot.request()
        wait_for(lambda: any(text in s.message for s in robot.statuses[mark:]), 5.0, f"status with {text!r}")

    robot.positions = [0.0, math.nan, 0.0, 0.0, 0.0, 0.0]
    expect_refusal(
        lambda: math.isnan(rig.node._joint_state.position[1]),
        "non-finite positions (NaN/inf) for ['shoulder_lift']",
    )
    robot.positions = [0.0] * 6

    bad = rgb_to_image_msg(np.zeros((48, 64, 3), np.uint8))
    bad.encoding = "32FC1"
    robot.image_override["top"] = bad
    expect_refusal(
        lambda: rig.node._images["top"].encoding == "32FC1",
        "camera 'top' on /cameras/top/image_raw: unsupported image encoding '32FC1'",
    )
    robot.image_override["top"] = rgb_to_image_msg(np.zeros((80, 100, 3), np.uint8))
    expect_refusal(
        lambda: rig.node._images["top"].width == 100,
        "camera 'top' is 100x80 but the checkpoint was trained on 64x48",
    )
    robot.image_override.clear()

    robot.instruct("")
    expect_refusal(
        lambda: rig.node._instruction == "",
        "no task: publish an instruction on /instruction or set the task parameter",
    )
    robot.instruct("x" * 10_000)
    wait_for(lambda: robot.status_with("instruction refused: 10000 characters"), 5.0, "instruction refusal")
    expect_refusal(lambda: True, "instruction has 10000 characters, more than max_task_chars 1000")

    assert rig.node.counters["observations_refused"] >= 5
    robot.instruct("stack the blocks")
    request_id = robot.request()
    chunk = wait_for(lambda: robot.chunk_for(request_id), 10.0, "a chunk once the inputs are good again")
    assert chunk.task == "stack the blocks"
    assert rig.node.state == PolicyStatus.STATE_READY


def test_missing_camera_topic_is_reported(rig_factory):
    rig = rig_factory(robot={"cameras": ("top",)})
    robot = rig.robot
    rig.wait_ready()
    robot.request()
    wait_for(
        lambda: robot.status_with("no image received from camera 'wrist' on /cameras/wrist/image_raw"),
        5.0,
        "missing camera report",
    )
    assert not robot.chunks


def test_stale_observations_are_refused(rig_factory):
    rig = rig_factory(max_observation_age_s=0.3)
    robot = rig.robot
    rig.wait_ready()
    robot.publishing = False  # the robot goes silent: its last data ages beyond max_observation_age_s
    time.sleep(0.5)
    robot.request()
    wait_for(lambda: robot.status_with("older than max_observation_age_s 0.3"), 5.0, "stale data report")


def test_compressed_jpeg_camera_and_request_task_override(rig_factory):
    rig = rig_factory(
        robot={"compressed": ("wrist",)},
        camera_topics=["/cameras/top/image_raw", "/cameras/wrist/compressed"],
    )
    robot = rig.robot
    rig.wait_ready()
    request_id = robot.request(task="open the drawer")
    chunk = wait_for(lambda: robot.chunk_for(request_id), 10.0, "chunk from a jpeg camera")
    assert chunk.task == "open the drawer"


def test_latest_request_wins_and_rtc_uses_pending_actions(rig_factory):
    rig = rig_factory(rtc=True)
    robot = rig.robot
    rig.wait_ready()
    pending = [[0.1 + 0.01 * i, -0.3, 0.5, 0.2, 0.0, 0.3] for i in range(8)]
    ids = [robot.request(pending=pending) for _ in range(5)]
    wait_for(lambda: robot.chunk_for(ids[-1]), 10.0, "the answer to the newest request")
    time.sleep(0.3)
    assert len(robot.chunks) < len(ids)  # older requests were superseded, not queued
    assert "RTC not used" not in rig.node.message


ADDED_LATENCY_S = 0.6


def test_added_latency_holds_each_chunk_back_and_is_reported(rig_factory):
    rig = rig_factory(added_latency_s=ADDED_LATENCY_S, warmup=True)
    robot = rig.robot
    rig.wait_ready()
    delays, latencies = [], []
    for _ in range(2):
        sent = time.monotonic()
        request_id = robot.request()
        chunk = wait_for(lambda rid=request_id: robot.chunk_for(rid), 10.0, "the held-back chunk")
        delays.append(time.monotonic() - sent)
        latencies.append(seconds(chunk.inference_latency))
    # The tiny model answers in tens of ms: without the hold each chunk would arrive long before 0.6 s.
    for delay, latency in zip(delays, latencies, strict=True):
        assert ADDED_LATENCY_S <= latency < ADDED_LATENCY_S + 0.5, (delays, latencies)
        assert delay >= latency - 0.02, (delays, latencies)  # held before publishing, not only reported
    status = wait_for(lambda: [s for s in robot.statuses if s.chunks_published >= 2], 3.0, "status")[-1]
    held = seconds(status.last_inference_latency)
    assert held >= ADDED_LATENCY_S


def test_noise_seed_makes_a_run_repeatable(rig_factory):
    """Two nodes started with the same noise_seed answer the same observations with the same chunks
    (warm-up included); without a seed, sampling differs from chunk to chunk."""

    def chunks(count: int, **params) -> list[list[list[float]]]:
        rig = rig_factory(warmup=True, **params)
        rig.wait_ready()
        out = []
        for _ in range(count):
            request_id = rig.robot.request()
            chunk = wait_for(lambda rid=request_id: rig.robot.chunk_for(rid), 10.0, "the ActionChunk")
            out.append([list(p.positions) for p in chunk.trajectory.points])
        rig.close()
        return out

    first, again = chunks(2, noise_seed=11), chunks(2, noise_seed=11)
    assert first == again
    assert first[0] != first[1]
    unseeded = chunks(2)
    assert unseeded[0] != unseeded[1] and unseeded[0] != first[0]


def test_continuous_mode_publishes_without_requests(rig_factory):
    rig = rig_factory(trigger="continuous", continuous_period_s=0.1, rtc=True)
    robot = rig.robot
    rig.wait_ready()
    wait_for(lambda: len(robot.chunks) >= 3, 10.0, "three continuous chunks")
    assert rig.node.last_chunk.rtc_delay_steps is not None  # guided by the previous chunk it published
    assert all(c.request_id == 0 for c in robot.chunks)
    ids = [c.chunk_id for c in robot.chunks]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


def test_a_volatile_instruction_publisher_reaches_the_node_without_a_qos_warning(rig_factory):
    """`ros2 topic pub /instruction ...` offers volatile durability: the volatile subscription receives it,
    and the transient-local one (for latched instructions) is incompatible with it on purpose, quietly."""
    rig = rig_factory(instruction=None)
    logs: list[Log] = []
    reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
    rosout = rig.robot.create_subscription(Log, "/rosout", logs.append, reliable)
    wait_for(lambda: rosout.get_publisher_count() >= 2, 5.0, "/rosout of the policy node matched")
    time.sleep(0.5)
    publisher = rig.robot.create_publisher(String, "/instruction", reliable)  # volatile, like ros2 topic pub
    wait_for(lambda: publisher.get_subscription_count() >= 1, 5.0, "the volatile subscription matched")

    def delivered() -> bool:
        publisher.publish(String(data="wave"))
        time.sleep(0.1)
        return rig.node._instruction == "wave"

    wait_for(delivered, 5.0, "the volatile instruction reaching the node")
    wait_for(lambda: rig.robot.status_with("instruction: 'wave'"), 5.0, "the instruction in the status")
    time.sleep(1.0)  # the incompatible-QoS event, if any, is logged on discovery
    policy_logs = [log.msg for log in logs if log.name == "policy"]
    assert not [text for text in policy_logs if "incompatible" in text.lower()], policy_logs


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"checkpoint": "/nonexistent/checkpoint"}, "does not exist"),
        ({"cameras": ["front"]}, "checkpoint expects image features"),
        ({"units": "radians"}, "cannot be radians"),
        ({"calibration_file": ""}, "calibration_file"),
    ],
)
def test_checkpoint_errors_keep_the_node_alive_in_error_state(rig_factory, params, message):
    rig = rig_factory(**params)
    robot = rig.robot
    status = wait_for(
        lambda: next((s for s in robot.statuses if s.state == PolicyStatus.STATE_ERROR), None),
        10.0,
        "ERROR status",
    )
    assert message in status.message
    count = len(robot.statuses)
    wait_for(lambda: len(robot.statuses) > count + 1, 3.0, "periodic status after the error")
    robot.request()
    time.sleep(0.2)
    assert not robot.chunks


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"trigger": "sometimes"},
            "parameter 'trigger': expected one of ('request', 'continuous'), got 'sometimes'",
        ),
        ({"max_task_chars": "lots"}, "parameter 'max_task_chars': expected an integer like 1000, got 'lots'"),
        ({"cameras": ["top", "top"]}, "parameter 'cameras'"),
        (
            {"added_latency_s": -0.1},
            "parameter 'added_latency_s': expected a finite value >= 0 (s), got -0.1",
        ),
        ({"noise_scale": -0.5}, "parameter 'noise_scale': expected a finite number >= 0, got -0.5"),
    ],
)
def test_bad_parameters_refuse_to_start_with_the_parameter_named(params, message):
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        with pytest.raises(ParameterError, match=re.escape(message)):
            PolicyNode(
                context=context, parameter_overrides=[Parameter(k, value=v) for k, v in params.items()]
            )
    finally:
        rclpy.shutdown(context=context)
