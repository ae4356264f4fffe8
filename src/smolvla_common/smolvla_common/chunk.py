"""An action chunk in plain arrays (ROS-free), and its ``smolvla_msgs/ActionChunk`` message.

Time base: ``positions[i]`` is meant for ``stamp + time_from_start[i]`` (node clock), ``stamp`` being the
stamp of the observation the chunk was computed from.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from smolvla_common.timeutil import duration_msg, seconds, time_msg


@dataclass(frozen=True)
class Chunk:
    """One chunk: ``positions[i]`` (rad, ``joint_names`` order) is for ``stamp + time_from_start[i]``."""

    chunk_id: int
    request_id: int
    stamp: float
    dt: float
    joint_names: tuple[str, ...]
    time_from_start: np.ndarray  # (N,) s
    positions: np.ndarray  # (N, J) rad

    @classmethod
    def regular(
        cls,
        chunk_id: int,
        request_id: int,
        stamp: float,
        dt: float,
        joint_names: Sequence[str],
        positions: np.ndarray,
    ) -> Chunk:
        """A chunk whose action ``i`` is at ``i * dt``."""
        positions = np.asarray(positions, float)
        times = np.arange(len(positions)) * dt
        return cls(chunk_id, request_id, stamp, dt, tuple(joint_names), times, positions)


def check_chunk(chunk: Chunk) -> None:
    """A chunk's own consistency: N x J finite positions, action ``i`` at ``i * dt``; ValueError if not."""
    positions = np.asarray(chunk.positions, float)
    times = np.asarray(chunk.time_from_start, float)
    joints = len(chunk.joint_names)
    if positions.ndim != 2 or len(positions) == 0 or positions.shape[1] != joints:
        raise ValueError(f"expected N x {joints} positions, got shape {positions.shape}")
    if times.shape != (len(positions),):
        raise ValueError(f"{len(times)} time_from_start values for {len(positions)} actions")
    if not np.all(np.isfinite(positions)):
        raise ValueError("positions contain NaN or inf")
    if not np.all(np.isfinite(times)) or np.any(np.diff(times) <= 0):
        raise ValueError("time_from_start is not strictly increasing")
    if not (chunk.dt > 0 and math.isfinite(chunk.dt)):
        raise ValueError(f"dt must be positive, got {chunk.dt}")
    if np.max(np.abs(times - np.arange(len(times)) * chunk.dt)) > max(1e-6, 0.01 * chunk.dt):
        raise ValueError(f"time_from_start is not i * dt (dt = {chunk.dt:.6f} s)")


def chunk_from_msg(msg: Any) -> Chunk:
    """Plain arrays from an ActionChunk; raises ValueError when the points are ragged."""
    points = msg.trajectory.points
    widths = {len(p.positions) for p in points}
    if len(widths) > 1:
        raise ValueError(f"points have different numbers of positions {sorted(widths)}")
    width = widths.pop() if widths else len(msg.trajectory.joint_names)
    positions = np.array([list(p.positions) for p in points], float).reshape(len(points), width)
    return Chunk(
        chunk_id=int(msg.chunk_id),
        request_id=int(msg.request_id),
        stamp=seconds(msg.header.stamp),
        dt=seconds(msg.dt),
        joint_names=tuple(msg.trajectory.joint_names),
        time_from_start=np.array([seconds(p.time_from_start) for p in points], float),
        positions=positions,
    )


def chunk_msg(
    chunk: Chunk,
    stamp,
    task: str = "",
    policy_id: str = "",
    inference_start: float = 0.0,
    inference_latency: float = 0.0,
) -> Any:
    """The ActionChunk of ``chunk``; ``stamp`` is the observation's header stamp (a Time message)."""
    from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

    from smolvla_msgs.msg import ActionChunk

    msg = ActionChunk(chunk_id=chunk.chunk_id, request_id=chunk.request_id, task=task, policy_id=policy_id)
    msg.header.stamp = stamp
    msg.trajectory = JointTrajectory(joint_names=list(chunk.joint_names))
    msg.trajectory.points = [
        JointTrajectoryPoint(positions=[float(v) for v in row], time_from_start=duration_msg(t))
        for row, t in zip(chunk.positions, chunk.time_from_start, strict=True)
    ]
    msg.dt = duration_msg(chunk.dt)
    msg.inference_start = time_msg(inference_start)
    msg.inference_latency = duration_msg(inference_latency)
    return msg
