"""Synthetic rosbag2 recordings for the tests and benchmarks: a known commanded trajectory, the arm
following it one frame late, generated camera frames and an instruction, shaped like a real recording."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from smolvla_common.bags import (
    IMAGE,
    JOINT_STATE,
    JOINT_TRAJECTORY,
    STRING,
    BagWriter,
    typestore,
)
from smolvla_common.joints import SO101_JOINTS
from smolvla_common.timeutil import duration_msg, time_msg_ns, to_nanoseconds

# ------------------------------------------------------------ rosbags messages (as read back from bags)


def header_msg(stamp_ns: int, frame_id: str = ""):
    types = typestore().types
    stamp = time_msg_ns(stamp_ns, types["builtin_interfaces/msg/Time"])
    return types["std_msgs/msg/Header"](stamp=stamp, frame_id=frame_id)


def joint_state_msg(stamp_ns: int, names: Sequence[str], positions: Sequence[float]):
    jointstate_type = typestore().types[JOINT_STATE]
    empty = np.array([], dtype=np.float64)
    return jointstate_type(
        header=header_msg(stamp_ns),
        name=list(names),
        position=np.asarray(positions, dtype=np.float64),
        velocity=empty,
        effort=empty,
    )


def joint_trajectory_msg(
    stamp_ns: int, names: Sequence[str], points: Sequence[tuple[float, Sequence[float]]]
):
    """A JointTrajectory with ``(time_from_start_s, positions)`` points."""
    types = typestore().types
    point_type = types["trajectory_msgs/msg/JointTrajectoryPoint"]
    empty = np.array([], dtype=np.float64)
    return types[JOINT_TRAJECTORY](
        header=header_msg(stamp_ns),
        joint_names=list(names),
        points=[
            point_type(
                positions=np.asarray(p, dtype=np.float64),
                velocities=empty,
                accelerations=empty,
                effort=empty,
                time_from_start=duration_msg(t, types["builtin_interfaces/msg/Duration"]),
            )
            for t, p in points
        ],
    )


def image_msg(stamp_ns: int, rgb: np.ndarray, frame_id: str = ""):
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    height, width = rgb.shape[:2]
    return typestore().types[IMAGE](
        header=header_msg(stamp_ns, frame_id),
        height=height,
        width=width,
        encoding="rgb8",
        is_bigendian=0,
        step=width * 3,
        data=rgb.reshape(-1),
    )


def string_msg(text: str):
    return typestore().types[STRING](data=text)


def synthetic_command(t: np.ndarray | float) -> np.ndarray:
    """A smooth commanded trajectory (rad) of the six SO-101 joints at times ``t`` (s): shape (..., 6).

    The gripper opens and closes (0.1 <-> 0.9 rad) every two seconds so gripper agreement is exercised.
    """
    t = np.asarray(t, dtype=np.float64)[..., None]
    amplitude = np.array([0.6, 0.4, 0.5, 0.3, 0.8, 0.0])
    frequency = np.array([0.25, 0.4, 0.3, 0.5, 0.2, 0.0])
    phase = np.array([0.0, 1.0, 2.0, 0.5, 1.5, 0.0])
    offset = np.array([0.0, -0.3, 0.4, 0.1, 0.0, 0.0])
    body = offset + amplitude * np.sin(2 * np.pi * frequency * t + phase)
    gripper = np.where(np.floor(t / 2.0) % 2 == 0, 0.9, 0.1)
    body[..., 5:6] = gripper
    return body


def synthetic_image(t: float, camera_index: int, height: int = 48, width: int = 64) -> np.ndarray:
    """A generated RGB frame that changes with time (a moving bar on a per-camera colour)."""
    frame = np.zeros((height, width, 3), np.uint8)
    frame[..., camera_index % 3] = 60 + 40 * camera_index
    column = int((t * 20.0) % width)
    frame[:, column : column + 4, :] = 255
    frame[: height // 4, :, 1] = np.uint8(int(t * 10) % 256)
    return frame


def write_synthetic_bag(
    path: str | os.PathLike,
    storage: str = "mcap",
    duration_s: float = 3.0,
    start_s: float = 100.0,
    fps: float = 30.0,
    camera_fps: float = 15.0,
    cameras: Sequence[str] = ("top", "wrist"),
    image_size: tuple[int, int] = (48, 64),
    task: str = "pick up the cube",
    lag_s: float = 1 / 30,
    static_images: bool = False,
    extra: Mapping[str, tuple[str, Sequence[tuple[int, Any]]]] | None = None,
) -> Path:
    """Write a bag shaped like a real recording: what the tests and the README examples evaluate.

    - ``/joint_commands`` (JointTrajectory, ``fps``): header.stamp t, one point holding
      :func:`synthetic_command` of ``t``, ``time_from_start`` ``1/fps`` (as the executor: the action for now);
    - ``/joint_states`` (JointState, ``fps``): the arm follows the command ``lag_s`` late;
    - ``/cameras/<name>/image_raw`` (rgb8, ``camera_fps``): :func:`synthetic_image`;
    - ``/instruction`` (String): ``task`` once, at the start.

    Log times equal header stamps (``start_s`` + t). ``static_images``: every frame of a camera is its t=0
    frame (so results do not depend on which frame was newest).
    ``extra``: topic -> (msgtype, [(log_time_ns, msg)]).
    """
    dt = 1.0 / fps
    start = to_nanoseconds(start_s)
    with BagWriter(path, storage) as bag:
        bag.write("/instruction", STRING, start, string_msg(task))
        events: list[tuple[int, int, str, str, Any]] = []  # (time, order, topic, type, msg)
        for k in range(round(duration_s * fps)):
            t = k * dt
            stamp = start + to_nanoseconds(t)
            events.append(
                (
                    stamp,
                    0,
                    "/joint_states",
                    JOINT_STATE,
                    joint_state_msg(stamp, SO101_JOINTS, synthetic_command(t - lag_s)),
                )
            )
            events.append(
                (
                    stamp,
                    1,
                    "/joint_commands",
                    JOINT_TRAJECTORY,
                    joint_trajectory_msg(stamp, SO101_JOINTS, [(dt, synthetic_command(t))]),
                )
            )
        for index, camera in enumerate(cameras):
            for k in range(round(duration_s * camera_fps)):
                t = k / camera_fps
                stamp = start + to_nanoseconds(t)
                rgb = synthetic_image(0.0 if static_images else t, index, *image_size)
                events.append(
                    (stamp, 2 + index, f"/cameras/{camera}/image_raw", IMAGE, image_msg(stamp, rgb))
                )
        for topic, (msgtype, items) in (extra or {}).items():
            events += [(int(t), 99, topic, msgtype, msg) for t, msg in items]
        for stamp, _, topic, msgtype, msg in sorted(events, key=lambda e: (e[0], e[1])):
            bag.write(topic, msgtype, stamp, msg)
    return Path(path)
