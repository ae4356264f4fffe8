"""The demo's probe: a passive node that records what the sim graph does."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState
from trajectory_msgs.msg import JointTrajectory

from smolvla_common.image_conversion import msg_to_rgb
from smolvla_common.joints import SO101_JOINTS
from smolvla_common.timeutil import clock_seconds, seconds
from smolvla_msgs.msg import ActionChunk, ExecutorStatus, PolicyStatus


@dataclass
class Recording:
    joint_states: list[tuple[float, list[float]]] = field(default_factory=list)  # (stamp s, rad)
    commands: list[tuple[float, list[float]]] = field(default_factory=list)
    chunks: list[dict] = field(default_factory=list)
    executor: object = None  # latest smolvla_msgs/ExecutorStatus
    policy: object = None  # latest smolvla_msgs/PolicyStatus
    frames: dict[str, object] = field(default_factory=dict)  # camera -> latest Image message
    idle_at_first_chunk: int | None = None


class DemoProbe(Node):
    """Records joint states, commands, chunks, statuses and the newest camera frames (relative topics)."""

    def __init__(self, context, cameras: list[str]):
        super().__init__("demo_probe", context=context)
        self.lock = threading.Lock()
        self.data = Recording()
        self.create_subscription(JointState, "joint_states", self._on_state, 50)
        self.create_subscription(JointTrajectory, "joint_commands", self._on_command, 50)
        self.create_subscription(ActionChunk, "smolvla/action_chunk", self._on_chunk, 10)
        self.create_subscription(ExecutorStatus, "smolvla/executor_status", self._on_executor, 10)
        self.create_subscription(PolicyStatus, "smolvla/policy_status", self._on_policy, 10)
        for name in cameras:
            self.create_subscription(
                Image,
                f"cameras/{name}/image_raw",
                lambda m, n=name: self._on_image(n, m),
                qos_profile_sensor_data,
            )

    def now(self) -> float:
        return clock_seconds(self)

    @staticmethod
    def _ordered(names, values) -> list[float] | None:
        index = {n: i for i, n in enumerate(names)}
        if any(j not in index for j in SO101_JOINTS) or len(values) != len(names):
            return None
        return [float(values[index[j]]) for j in SO101_JOINTS]

    def _on_state(self, msg) -> None:
        row = self._ordered(list(msg.name), list(msg.position))
        if row is not None:
            with self.lock:
                self.data.joint_states.append((seconds(msg.header.stamp), row))

    def _on_command(self, msg) -> None:
        row = self._ordered(list(msg.joint_names), list(msg.points[0].positions)) if msg.points else None
        if row is not None:
            with self.lock:
                self.data.commands.append((seconds(msg.header.stamp), row))

    def _on_chunk(self, msg) -> None:
        names = list(msg.trajectory.joint_names)
        rows = [self._ordered(names, list(p.positions)) for p in msg.trajectory.points]
        with self.lock:
            status = self.data.executor
            if self.data.idle_at_first_chunk is None and status is not None:
                self.data.idle_at_first_chunk = int(status.idle_ticks)
            self.data.chunks.append(
                {
                    "chunk_id": int(msg.chunk_id),
                    "stamp": seconds(msg.header.stamp),  # action i is for stamp + i * dt
                    "received": self.now(),
                    "dt": seconds(msg.dt),
                    "latency": seconds(msg.inference_latency),
                    "positions": [r for r in rows if r is not None],
                }
            )

    def _on_executor(self, msg) -> None:
        with self.lock:
            self.data.executor = msg

    def _on_policy(self, msg) -> None:
        with self.lock:
            self.data.policy = msg

    def _on_image(self, name: str, msg) -> None:
        with self.lock:
            self.data.frames[name] = msg

    def snapshot_frames(self) -> dict:
        with self.lock:
            frames = dict(self.data.frames)
        return {name: msg_to_rgb(msg) for name, msg in frames.items()}
