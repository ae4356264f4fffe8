"""Chunk visualizer node: the measured arm and the predicted action chunk as RViz markers, no TF needed.

Subscribes ``/joint_states`` and ``/smolvla/action_chunk``; publishes ``visualization_msgs/MarkerArray`` on
``/smolvla/chunk_markers`` in the URDF's root frame (``base_link``), stamped zero ("latest"), so RViz shows
them with that fixed frame even when nothing publishes TF:

- ``measured``: the arm at the last joint state, one opaque mesh per URDF visual, at most ``rate_hz``;
- ``ghost``: a translucent arm at action ``ghost_index`` of the last chunk (default -1: its last action);
- ``tip_path`` (LINE_STRIP) and ``tip_points`` (SPHERE_LIST): the tool point (``tip_link``) over the whole
  chunk, coloured from green (first action) to red (last action).

Chunk markers are sent when a chunk arrives, and again every second while ``chunk_lifetime_s`` is 0 (they
then stay until the next chunk), so an RViz started later shows them too. With ``publish_robot_description``
it also publishes the URDF on ``/robot_description`` (transient local) for RViz's RobotModel display and
robot_state_publisher. Forward kinematics lives in :mod:`smolvla_bringup.kinematics`.
"""

from __future__ import annotations

import math
import sys

import numpy as np
from builtin_interfaces.msg import Duration
from geometry_msgs.msg import Point, Pose
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import JointState
from std_msgs.msg import ColorRGBA, String
from visualization_msgs.msg import Marker, MarkerArray

from smolvla_bringup.kinematics import SO101_TIP_LINK, RobotModel, matrix_to_quaternion, parse_urdf
from smolvla_bringup.robot_description import so101_urdf
from smolvla_msgs.msg import ActionChunk
from so100_driver.node_main import run_node

DEFAULTS = {
    "rate_hz": 20.0,  # measured arm: at most this many updates per second
    "joint_states_topic": "/joint_states",
    "chunk_topic": "/smolvla/action_chunk",
    "markers_topic": "/smolvla/chunk_markers",
    "tip_link": SO101_TIP_LINK,
    "ghost_index": -1,  # which action of the chunk the ghost shows; negative counts from the end
    "ghost_rgba": [0.3, 0.65, 1.0, 0.35],
    "line_width": 0.004,  # m
    "chunk_lifetime_s": 0.0,  # 0: chunk markers stay until the next chunk
    "publish_robot_description": True,
    "robot_description_topic": "/robot_description",
}
REFRESH_PERIOD_S = 1.0
PATH_START_RGB = (0.1, 0.85, 0.25)
PATH_END_RGB = (0.95, 0.2, 0.15)
FALLBACK_RGBA = (0.7, 0.7, 0.7, 1.0)


def _color(rgba) -> ColorRGBA:
    return ColorRGBA(r=float(rgba[0]), g=float(rgba[1]), b=float(rgba[2]), a=float(rgba[3]))


def _pose(matrix: np.ndarray) -> Pose:
    pose = Pose()
    pose.position.x, pose.position.y, pose.position.z = (float(v) for v in matrix[:3, 3])
    x, y, z, w = (float(v) for v in matrix_to_quaternion(matrix[:3, :3]))
    pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w = x, y, z, w
    return pose


def _lifetime(seconds: float) -> Duration:
    whole = int(seconds)
    return Duration(sec=whole, nanosec=min(999_999_999, round((seconds - whole) * 1e9)))


def path_colors(count: int) -> list[tuple[float, float, float, float]]:
    """Opaque colours from PATH_START_RGB (first action) to PATH_END_RGB (last), linear in time."""
    fractions = np.linspace(0.0, 1.0, count) if count > 1 else np.zeros(count)
    start, end = np.array(PATH_START_RGB), np.array(PATH_END_RGB)
    return [(*((1 - f) * start + f * end), 1.0) for f in fractions]


class ChunkVisualizerNode(Node):
    """Thin wiring: joint states and chunks in, forward kinematics, markers out (see the module doc)."""

    def __init__(self, node_name: str = "chunk_visualizer", **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        self.robot: RobotModel | None = None
        self.rejected_states = 0
        self.rejected_chunks = 0
        self.chunk_tips: np.ndarray | None = None  # (n, 3) tool point of each action of the last chunk
        self._state: dict[str, float] | None = None
        self._state_is_new = False
        self._chunk_markers: list[Marker] = []
        self._since_refresh = 0.0
        try:
            self.params = {name: self._parameter(name, default) for name, default in DEFAULTS.items()}
            self._check_parameters()
        except ValueError as err:
            self.destroy_node()
            raise ValueError(f"{node_name}: {err}") from err
        try:
            urdf = so101_urdf()
        except FileNotFoundError as err:  # a missing view must not stop the robot graph it runs in
            self.get_logger().error(f"no markers: {err}")
            return
        try:
            self.robot = parse_urdf(urdf)
            tip = self.params["tip_link"]
            if tip not in self.robot.links:
                raise ValueError(f"parameter 'tip_link': no link {tip!r}; links: {list(self.robot.links)}")
        except ValueError as err:
            self.destroy_node()
            raise ValueError(f"{node_name}: {err}") from err
        p = self.params
        self.frame_id = self.robot.root
        self.marker_pub = self.create_publisher(MarkerArray, p["markers_topic"], 10)
        if p["publish_robot_description"]:
            latched = QoSProfile(
                depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
            )
            self.description_pub = self.create_publisher(String, p["robot_description_topic"], latched)
            self.description_pub.publish(String(data=urdf))
        self.create_subscription(
            JointState, p["joint_states_topic"], self._on_joint_state, qos_profile_sensor_data
        )
        self.create_subscription(ActionChunk, p["chunk_topic"], self._on_chunk, 10)
        self.create_timer(1.0 / p["rate_hz"], self._on_timer)
        self.get_logger().info(
            f"chunk visualizer ready: {p['joint_states_topic']} + {p['chunk_topic']} -> {p['markers_topic']} "
            f"(frame {self.frame_id}, tip {p['tip_link']}, {len(self.robot.visuals)} meshes)"
        )

    def _parameter(self, name: str, default):
        """Declare a parameter; return it as the default's type, or ValueError naming it."""
        value = self.declare_parameter(name, default, ParameterDescriptor(dynamic_typing=True)).value
        expected = type(default).__name__ if not isinstance(default, list) else "a list of numbers"
        try:
            if isinstance(default, bool | str):
                if not isinstance(value, type(default)):
                    raise TypeError
                return value
            if isinstance(default, list):
                return [float(v) for v in value]
            if isinstance(value, bool) or (isinstance(default, int) and not float(value).is_integer()):
                raise TypeError
            return type(default)(value)
        except (TypeError, ValueError):
            raise ValueError(f"parameter '{name}' must be {expected}, got {value!r}") from None

    def _check_parameters(self) -> None:
        p = self.params
        if not (math.isfinite(p["rate_hz"]) and p["rate_hz"] > 0):
            raise ValueError(f"parameter 'rate_hz' must be > 0, got {p['rate_hz']}")
        if not (math.isfinite(p["line_width"]) and p["line_width"] > 0):
            raise ValueError(f"parameter 'line_width' must be > 0 (m), got {p['line_width']}")
        if not (math.isfinite(p["chunk_lifetime_s"]) and p["chunk_lifetime_s"] >= 0):
            raise ValueError(
                f"parameter 'chunk_lifetime_s' must be >= 0 (0: forever), got {p['chunk_lifetime_s']}"
            )
        if len(p["ghost_rgba"]) != 4 or not all(0.0 <= v <= 1.0 for v in p["ghost_rgba"]):
            raise ValueError(f"parameter 'ghost_rgba' must be 4 numbers in [0, 1], got {p['ghost_rgba']}")

    # ------------------------------------------------------------------ callbacks

    def _on_joint_state(self, msg: JointState) -> None:
        try:
            self._state = self.robot.positions_from(list(msg.name), list(msg.position))
            self._state_is_new = True
        except ValueError as err:
            self.rejected_states += 1
            self.get_logger().warning(
                f"{self.params['joint_states_topic']}: joint state skipped: {err}", throttle_duration_sec=2.0
            )

    def _on_chunk(self, msg: ActionChunk) -> None:
        names = list(msg.trajectory.joint_names)
        try:
            if not msg.trajectory.points:
                raise ValueError("the chunk has no points")
            actions = [
                self._action(names, point.positions, i) for i, point in enumerate(msg.trajectory.points)
            ]
        except ValueError as err:
            self.rejected_chunks += 1
            self.get_logger().warning(
                f"{self.params['chunk_topic']}: chunk {msg.chunk_id} skipped: {err}",
                throttle_duration_sec=2.0,
            )
            return
        tip = self.params["tip_link"]
        self.chunk_tips = np.array([self.robot.point(action, tip) for action in actions])
        index = min(max(self.params["ghost_index"], -len(actions)), len(actions) - 1)
        self._chunk_markers = [
            *self._arm_markers("ghost", actions[index], self.params["ghost_rgba"]),
            *self._path_markers(self.chunk_tips),
        ]
        lifetime = _lifetime(self.params["chunk_lifetime_s"])
        for marker in self._chunk_markers:
            marker.lifetime = lifetime
        self.marker_pub.publish(MarkerArray(markers=self._chunk_markers))
        self._since_refresh = 0.0

    def _action(self, names: list[str], positions, index: int) -> dict[str, float]:
        try:
            return self.robot.positions_from(names, list(positions))
        except ValueError as err:
            raise ValueError(f"action {index}: {err}") from None

    def _on_timer(self) -> None:
        markers: list[Marker] = []
        if self._state_is_new:
            self._state_is_new = False
            markers += self._arm_markers("measured", self._state, None)
        self._since_refresh += 1.0 / self.params["rate_hz"]
        if (
            self._chunk_markers
            and self.params["chunk_lifetime_s"] == 0
            and self._since_refresh >= REFRESH_PERIOD_S
        ):
            self._since_refresh = 0.0
            markers += self._chunk_markers
        if markers:
            self.marker_pub.publish(MarkerArray(markers=markers))

    # ------------------------------------------------------------------ markers

    def _marker(self, namespace: str, marker_id: int, kind: int) -> Marker:
        marker = Marker(ns=namespace, id=marker_id, type=kind, action=Marker.ADD)
        marker.header.frame_id = self.frame_id  # stamp zero: the latest transform, none needed in this frame
        marker.pose.orientation.w = 1.0
        return marker

    def _arm_markers(self, namespace: str, positions: dict[str, float], rgba) -> list[Marker]:
        """One MESH_RESOURCE marker per URDF visual at ``positions``; ``rgba`` None: the URDF's colours."""
        poses = self.robot.link_poses(positions)
        markers = []
        for i, visual in enumerate(self.robot.visuals):
            marker = self._marker(namespace, i, Marker.MESH_RESOURCE)
            marker.mesh_resource = visual.mesh
            marker.pose = _pose(poses[visual.link] @ visual.origin)
            marker.scale.x, marker.scale.y, marker.scale.z = visual.scale
            marker.color = _color(rgba if rgba is not None else visual.rgba or FALLBACK_RGBA)
            markers.append(marker)
        return markers

    def _path_markers(self, tips: np.ndarray) -> list[Marker]:
        if len(tips) == 1:
            tips = np.repeat(tips, 2, axis=0)  # a LINE_STRIP needs two points
        points = [Point(x=float(x), y=float(y), z=float(z)) for x, y, z in tips]
        colors = [_color(c) for c in path_colors(len(points))]
        line = self._marker("tip_path", 0, Marker.LINE_STRIP)
        line.scale.x = self.params["line_width"]
        spheres = self._marker("tip_points", 0, Marker.SPHERE_LIST)
        spheres.scale.x = spheres.scale.y = spheres.scale.z = 2.0 * self.params["line_width"]
        for marker in (line, spheres):
            marker.points, marker.colors = points, colors
            marker.color = colors[-1]
        return [line, spheres]


def main(args: list[str] | None = None) -> int:
    return run_node(ChunkVisualizerNode, "chunk_visualizer_node", args)


if __name__ == "__main__":
    sys.exit(main())
