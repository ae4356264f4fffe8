"""Chunk visualizer node: the measured arm and the predicted action chunk as RViz markers, no TF needed.

Subscribes ``joint_states`` and ``smolvla/action_chunk``; publishes ``visualization_msgs/MarkerArray`` on
``smolvla/chunk_markers`` in the URDF's root frame (``base_link``), stamped zero ("latest"), so RViz shows
them with that fixed frame even when nothing publishes TF (topics are relative: namespace or remap them):

- ``measured``: the arm at the last joint state, one opaque mesh per URDF visual, at most ``rate_hz``;
- ``ghost``: a translucent arm at action ``ghost_index`` of the last chunk (default -1: its last action);
- ``tip_path`` (LINE_STRIP) and ``tip_points`` (SPHERE_LIST): the tool point (``tip_link``) over the whole
  chunk, coloured from green (first action) to red (last action).

Chunk markers are sent when a chunk arrives, and again every second while ``chunk_lifetime_s`` is 0 (they
then stay until the next chunk), so an RViz started later shows them too. With ``publish_robot_description``
it also publishes the URDF on ``robot_description`` (transient local) for RViz's RobotModel display and
robot_state_publisher. Forward kinematics lives in :mod:`smolvla_bringup.kinematics`.
"""

from __future__ import annotations

import math
import sys

import numpy as np
from geometry_msgs.msg import Point, Pose
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import JointState
from std_msgs.msg import ColorRGBA, String
from visualization_msgs.msg import Marker, MarkerArray

from smolvla_bringup.kinematics import SO101_TIP_LINK, RobotModel, matrix_to_quaternion, parse_urdf
from smolvla_bringup.robot_description import so101_urdf
from smolvla_common.node_main import run_node
from smolvla_common.parameters import ParameterError, declare_parameters, invalid, require
from smolvla_common.qos import LATCHED
from smolvla_common.timeutil import duration_msg
from smolvla_msgs.msg import ActionChunk

DEFAULTS = {
    "rate_hz": 20.0,  # measured arm: at most this many updates per second
    "tip_link": SO101_TIP_LINK,
    "ghost_index": -1,  # which action of the chunk the ghost shows; negative counts from the end
    "ghost_rgba": [0.3, 0.65, 1.0, 0.35],
    "line_width": 0.004,  # m
    "chunk_lifetime_s": 0.0,  # 0: chunk markers stay until the next chunk
    "publish_robot_description": True,
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
            self.params = declare_parameters(self, DEFAULTS)
            self._check_parameters()
        except ParameterError:
            self.destroy_node()
            raise
        try:
            urdf = so101_urdf()
        except FileNotFoundError as err:  # a missing view must not stop the robot graph it runs in
            self.get_logger().error(f"no markers: {err}")
            return
        self.robot = parse_urdf(urdf)
        tip = self.params["tip_link"]
        if tip not in self.robot.links:
            self.destroy_node()
            raise invalid("tip_link", f"a link of the URDF {list(self.robot.links)}", tip)
        p = self.params
        self.frame_id = self.robot.root
        self.marker_pub = self.create_publisher(MarkerArray, "smolvla/chunk_markers", 10)
        if p["publish_robot_description"]:
            self.description_pub = self.create_publisher(String, "robot_description", LATCHED)
            self.description_pub.publish(String(data=urdf))
        self.states_topic = self.create_subscription(
            JointState, "joint_states", self._on_joint_state, qos_profile_sensor_data
        ).topic_name
        self.chunks_topic = self.create_subscription(
            ActionChunk, "smolvla/action_chunk", self._on_chunk, 10
        ).topic_name
        self.create_timer(1.0 / p["rate_hz"], self._on_timer)
        self.get_logger().info(
            f"chunk visualizer ready: {self.states_topic} + {self.chunks_topic} -> "
            f"{self.marker_pub.topic_name} "
            f"(frame {self.frame_id}, tip {p['tip_link']}, {len(self.robot.visuals)} meshes)"
        )

    def _check_parameters(self) -> None:
        p = self.params
        require(math.isfinite(p["rate_hz"]) and p["rate_hz"] > 0, "rate_hz", "a rate > 0 (Hz)", p["rate_hz"])
        require(
            math.isfinite(p["line_width"]) and p["line_width"] > 0,
            "line_width",
            "a width > 0 (m)",
            p["line_width"],
        )
        lifetime = p["chunk_lifetime_s"]
        require(
            math.isfinite(lifetime) and lifetime >= 0,
            "chunk_lifetime_s",
            "a time >= 0 (0: forever)",
            lifetime,
        )
        rgba = p["ghost_rgba"]
        require(
            len(rgba) == 4 and all(0.0 <= v <= 1.0 for v in rgba), "ghost_rgba", "4 numbers in [0, 1]", rgba
        )

    # ------------------------------------------------------------------ callbacks

    def _on_joint_state(self, msg: JointState) -> None:
        try:
            self._state = self.robot.positions_from(list(msg.name), list(msg.position))
            self._state_is_new = True
        except ValueError as err:
            self.rejected_states += 1
            self.get_logger().warning(
                f"{self.states_topic}: joint state skipped: {err}", throttle_duration_sec=2.0
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
                f"{self.chunks_topic}: chunk {msg.chunk_id} skipped: {err}",
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
        lifetime = duration_msg(self.params["chunk_lifetime_s"])
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
